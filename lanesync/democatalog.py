"""The demo's master data: a small chain catalog loaded at head office the way an operator does.

The items, prices and tax rates are the ones lanesync.samples sells from, so the tills' sales
and head office's catalog agree. Files are written as CSV and loaded with the real command
(`lanesync catalog --config headoffice.toml load DATASET FILE`); a lane's copy is read from its
own catalog file with agent.catalog.view, the way the agent itself reads it.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from agent.catalog.view import CatalogView
from agent.config import CatalogConfig, catalog_path
from lanesync import samples, stack
from protocol.identity import LaneId

VALID_FROM = "2020-01-01"


class DemoCatalog:
    """Head office's catalog for the demo's stores and lanes, and what each lane holds."""

    def __init__(self, workdir: Path, ho_config: Path, lanes: Sequence[LaneId]) -> None:
        self.workdir = workdir
        self.dir = workdir / "catalog"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ho_config = ho_config
        self.lanes = list(lanes)
        self.prices = {code: price for code, _, price, _ in samples.ITEMS}
        self.version = 0

    # --- head office ----------------------------------------------------------------------

    def _write(self, name: str, header: Sequence[str], rows: Iterable[Sequence[object]]) -> Path:
        path = self.dir / f"{name}.csv"
        with path.open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(rows)
        return path

    def load(self, dataset: str, path: Path) -> None:
        """`lanesync catalog load`, as an operator runs it; the new version from its JSON."""
        done = subprocess.run(  # noqa: S603 - argv built here, no shell
            [
                sys.executable,
                "-m",
                "lanesync.cli",
                "catalog",
                "--config",
                str(self.ho_config),
                "load",
                dataset,
                str(path),
                "--json",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"lanesync catalog load {dataset}: {done.stderr.strip()}")
        self.version = max(self.version, _version_of(done.stdout))

    def load_initial(self) -> int:
        stores = sorted({lane.store for lane in self.lanes})
        files = [
            (
                "stores",
                self._write(
                    "stores",
                    ("id", "name", "timezone", "currency", "can_receive_stock", "active"),
                    [(s, f"Demo store {s}", "Europe/Dublin", "EUR", 1, 1) for s in stores],
                ),
            ),
            (
                "lanes",
                self._write(
                    "lanes",
                    ("store", "lane", "name", "active"),
                    [(x.store, x.lane, f"Till {x.lane}", 1) for x in self.lanes],
                ),
            ),
            (
                "tax_rates",
                self._write(
                    "tax_rates",
                    ("code", "valid_from", "rate_bp"),
                    [(code, VALID_FROM, bp) for code, bp in sorted(samples.TAX_RATE_BP.items())],
                ),
            ),
            (
                "items",
                self._write(
                    "items",
                    ("code", "description", "tax_code", "variant", "active"),
                    [(code, name, tax, 0, 1) for code, name, _, tax in samples.ITEMS],
                ),
            ),
            ("prices", self._prices_file()),
            (
                "customers",
                self._write(
                    "customers",
                    ("code", "name", "account_allowed", "active"),
                    [(c, f"Customer {c}", 1, 1) for c in samples.CUSTOMERS if c is not None],
                ),
            ),
        ]
        for dataset, path in files:
            self.load(dataset, path)
        return self.version

    def _prices_file(self) -> Path:
        return self._write(
            "prices",
            ("item", "valid_from", "price"),
            [(code, VALID_FROM, price) for code, price in sorted(self.prices.items())],
        )

    def change_price(self, item: str, price: int) -> int:
        """Load the whole price list again with one price changed (what an ERP exports): head
        office keeps only the one changed row as the new version."""
        self.prices[item] = price
        self.load("prices", self._prices_file())
        return self.version

    # --- the lanes ------------------------------------------------------------------------

    def _file(self, lane: LaneId) -> Path:
        """The lane's catalog file where the agent keeps it (no [catalog] path: the default)."""
        return catalog_path(stack.journal_path(self.workdir, lane), CatalogConfig())

    def held(self, lane: LaneId) -> int:
        """The catalog version the lane holds complete (0 while it has none)."""
        path = self._file(lane)
        if not path.exists():
            return 0
        try:
            with CatalogView(path, lane) as view:
                return view.version
        except Exception:  # noqa: BLE001 - a file still being created reads as nothing yet
            return 0

    def price_on(self, lane: LaneId, item: str) -> int | None:
        """The price the lane charges for `item` now, read from its own catalog file."""
        with CatalogView(self._file(lane), lane) as view:
            p = view.price(item, datetime.now(UTC))
        return None if p is None else p.price

    def wait_all(
        self, version: int, timeout: float, started: float | None = None
    ) -> dict[str, float]:
        """Seconds from `started` (default now) until each lane holds `version`; a lane that
        does not within `timeout` is missing from the answer."""
        t0 = time.monotonic() if started is None else started
        reached: dict[str, float] = {}
        while len(reached) < len(self.lanes) and time.monotonic() - t0 < timeout:
            for lane in self.lanes:
                if str(lane) not in reached and self.held(lane) >= version:
                    reached[str(lane)] = time.monotonic() - t0
            time.sleep(0.02)
        return reached


def _version_of(out: str) -> int:
    data = json.loads(out)
    version = data.get("version")
    return int(version) if version else 0
