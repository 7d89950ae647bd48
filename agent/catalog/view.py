"""What a lane asks of its catalog: items, prices, tax rates, stores, people, settings.

`CatalogView` reads the lane's catalog file (agent.catalog.store) on a connection of its own.
Every answer comes from one read transaction, so it sees one complete version (WAL: a version
committed meanwhile shows from the next call on). Lookups use the primary key (a row's key, or
the range of its first key column) or the `refs` table (GTINs, setting names), a few rows
each; the rules (store > zone > chain, latest `valid_from` on or before the store's local date,
lane > store > chain > default) are applied here, in one place.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from agent.catalog.store import decode_row
from protocol import catalog as contract
from protocol.identity import LaneId

log = logging.getLogger(__name__)

Row = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Price:
    """An item's price for this store on a day, and which row it came from."""

    item: str
    price: int  # minor units
    valid_from: str
    scope: str  # "store", "zone" or "chain"


class CatalogView:
    """Read-only lookups over the lane's catalog file; a context manager (closes its connection)."""

    def __init__(self, path: str | Path, lane: LaneId) -> None:
        self.path = Path(path)
        self.lane = lane
        # check_same_thread off: the agent reads from its event loop and from worker threads;
        # each call runs its queries in one read transaction of its own.
        self._db = sqlite3.connect(
            f"file:{self.path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
        )
        self._depth = 0  # nested _read()s share the outer read transaction (one_version())

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        if self._depth:
            yield self._db
            return
        self._db.execute("BEGIN")
        self._depth = 1
        try:
            yield self._db
        finally:
            self._depth = 0
            self._db.execute("COMMIT")

    @contextmanager
    def one_version(self) -> Iterator[Self]:
        """Every lookup made inside sees one version: a document is checked against one
        catalog version, never half of one and half of the next (WAL keeps the read's
        snapshot until it ends). One caller at a time: the document rules run on the
        event loop, synchronously."""
        with self._read():
            # A deferred BEGIN takes its snapshot at the first read: read now.
            self._db.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()
            yield self

    @staticmethod
    def _by_ref(db: sqlite3.Connection, dataset: str, ref: str) -> list[Row]:
        rows = db.execute(
            "SELECT r.body FROM refs f JOIN rows r ON r.dataset = f.dataset AND r.key = f.key"
            " WHERE f.dataset = ? AND f.ref = ? ORDER BY r.key",
            (dataset, ref),
        ).fetchall()
        return [decode_row(dataset, bytes(b)) for (b,) in rows]

    @staticmethod
    def _by_key(db: sqlite3.Connection, dataset: str, key: str) -> list[Row]:
        found = db.execute(
            "SELECT body FROM rows WHERE dataset = ? AND key = ?", (dataset, key)
        ).fetchone()
        return [] if found is None else [decode_row(dataset, bytes(found[0]))]

    @staticmethod
    def _by_prefix(db: sqlite3.Connection, dataset: str, first: str) -> list[Row]:
        """Rows whose first key column is `first` (a range of the primary key)."""
        sep = contract.KEY_SEP
        after = chr(ord(sep) + 1)
        rows = db.execute(
            "SELECT body FROM rows WHERE dataset = ? AND key >= ? AND key < ? ORDER BY key",
            (dataset, first + sep, first + after),
        ).fetchall()
        return [decode_row(dataset, bytes(b)) for (b,) in rows]

    @staticmethod
    def _all(db: sqlite3.Connection, dataset: str) -> list[Row]:
        rows = db.execute(
            "SELECT body FROM rows WHERE dataset = ? ORDER BY key", (dataset,)
        ).fetchall()
        return [decode_row(dataset, bytes(b)) for (b,) in rows]

    def _one(self, dataset: str, key: str) -> Row | None:
        with self._read() as db:
            found = self._by_key(db, dataset, key)
        return found[0] if found else None

    # --- what the view holds --------------------------------------------------------------

    @property
    def version(self) -> int:
        """The complete catalog version the lane holds (0: none yet)."""
        with self._read() as db:
            row = db.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()
        return int(row[0]) if row else 0

    # --- items and prices -----------------------------------------------------------------

    def item(self, code: str) -> Row | None:
        return self._one("items", code)

    def item_by_gtin(self, gtin: str) -> Row | None:
        with self._read() as db:
            found = self._by_ref(db, "items", f"gtin:{gtin}")
        return found[0] if found else None

    def store(self, store_id: str | None = None) -> Row | None:
        """A store's row (this lane's own store by default)."""
        return self._one("stores", store_id or self.lane.store)

    def local_date(self, at: datetime, store: Row | None = None) -> date:
        """The date at `at` in this store's time zone (its `stores` row; UTC if it has none)."""
        zone = UTC if store is None else _zone(store.get("timezone"))
        if at.tzinfo is None:
            raise ValueError("at must be an aware datetime (a moment, not a wall-clock time)")
        return at.astimezone(zone).date()

    def price(self, item: str, at: datetime) -> Price | None:
        """The item's price for this store at moment `at`: the store's own price, else its
        price zone's, else the chain's, each the latest `valid_from` on or before the store's
        local date; None if no price is valid yet."""
        with self._read() as db:
            stores = self._by_key(db, "stores", self.lane.store)
            store = stores[0] if stores else None
            prices = self._by_prefix(db, "prices", item)
        day = self.local_date(at, store).isoformat()
        zone = None if store is None else store.get("price_zone")
        best: dict[str, Row] = {}
        for p in prices:
            if p["valid_from"] > day:
                continue
            if p.get("store") is not None:
                scope = "store" if p["store"] == self.lane.store else None
            elif p.get("zone") is not None:
                scope = "zone" if p["zone"] == zone else None
            else:
                scope = "chain"
            if scope is not None and (
                scope not in best or p["valid_from"] > best[scope]["valid_from"]
            ):
                best[scope] = p
        for scope in ("store", "zone", "chain"):
            if scope in best:
                p = best[scope]
                return Price(item, int(p["price"]), p["valid_from"], scope)
        return None

    def tax_rate(self, code: str, on: date) -> int | None:
        """The rate of tax code `code` on day `on` in basis points (the latest valid_from on or
        before it), or None if the code has no rate yet on that day."""
        day = on.isoformat()
        with self._read() as db:
            rates = [r for r in self._by_prefix(db, "tax_rates", code) if r["valid_from"] <= day]
        if not rates:
            return None
        return int(max(rates, key=lambda r: r["valid_from"])["rate_bp"])

    # --- stores, people, transaction types ------------------------------------------------

    def stores_receiving_stock(self) -> list[Row]:
        """Active stores that can receive stock, by id (the transit store selector)."""
        with self._read() as db:
            stores = self._all(db, "stores")
        return [s for s in stores if s["active"] and s["can_receive_stock"]]

    def staff(self, staff_id: str) -> Row | None:
        return self._one("staff", staff_id)

    def customer(self, code: str) -> Row | None:
        return self._one("customers", code)

    def supplier(self, code: str) -> Row | None:
        return self._one("suppliers", code)

    def courier(self, code: str) -> Row | None:
        return self._one("couriers", code)

    def txn_type(self, code: str) -> Row | None:
        return self._one("txn_types", code)

    # --- settings -------------------------------------------------------------------------

    def setting(self, name: str) -> Any:
        """This lane's value of setting `name`: lane > store > chain > the declared default;
        Currency and Timezone, with no setting row, are the store's own. An undeclared name
        raises protocol.catalog.CatalogError ("did you mean")."""
        contract.setting(name)
        with self._read() as db:
            rows = self._by_ref(db, "settings", name)
            store = self._by_key(db, "stores", self.lane.store) if name in _FROM_STORE else []
        value = contract.resolve_setting(rows, name, self.lane.store, self.lane.lane)
        if value is None and store:
            value = store[0].get(_FROM_STORE[name])
        return value

    def settings(self) -> dict[str, Any]:
        """Every declared setting's value for this lane, as `setting` resolves each, read in
        one pass (a document reads them all: one query, not one per name)."""
        with self._read() as db:
            rows = self._all(db, "settings")
            store = self._by_key(db, "stores", self.lane.store)
        values: dict[str, Any] = {}
        for name in contract.SETTINGS:
            value = contract.resolve_setting(rows, name, self.lane.store, self.lane.lane)
            if value is None and store and name in _FROM_STORE:
                value = store[0].get(_FROM_STORE[name])
            values[name] = value
        return values


_FROM_STORE = {"Currency": "currency", "Timezone": "timezone"}


def _zone(name: Any) -> ZoneInfo:
    try:
        return ZoneInfo(str(name))
    except (ZoneInfoNotFoundError, ValueError):
        # Head office checks the name's form, not that this box's tzdata knows it. Prices and
        # rates then go by the UTC date (at most a day off), rather than refusing every sale.
        log.error("catalog: time zone %r is unknown to this box's tzdata; using UTC", name)
        return ZoneInfo("UTC")
