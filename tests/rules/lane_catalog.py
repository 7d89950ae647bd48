"""A lane's catalog file for tests that post documents: real rows, written by the real store.

`LaneCatalog` keeps one store's view as a dict and writes each version into the lane's catalog
file through agent.catalog.store.CatalogStore (the hash checked as for any delta), so a
document is checked by agent.documents.rules against exactly what a lane would hold. It is
the seam for tests below the broker: the end-to-end tests load the catalog at head office.

`standard()` is what the local API suites trade with: the items, tax rates (with the VAT_STD
change of 2024-07-01), stores, staff, customers, suppliers and couriers their documents name,
prices of lanesync.samples, and PriceOverride=allowed (those suites send prices of their own;
tests/rules checks the override rules).
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

from agent.catalog.store import CatalogStore
from agent.catalog.view import CatalogView
from protocol import catalog as c
from protocol.identity import LaneId

Key = tuple[str, str]


class LaneCatalog:
    def __init__(self, path: Path, lane: LaneId) -> None:
        self.path = path
        self.lane = lane
        self.rows: dict[Key, dict[str, Any]] = {}
        self.version = 0
        self._written: dict[Key, dict[str, Any]] = {}

    def put(self, dataset: str, **values: Any) -> LaneCatalog:
        ds = c.DATASETS[dataset]
        row = c.check_row(ds, values)
        self.rows[(dataset, ds.key_of(row))] = row
        return self

    def drop(self, dataset: str, key: str) -> LaneCatalog:
        del self.rows[(dataset, key)]
        return self

    def setting(self, name: str, value: str) -> LaneCatalog:
        return self.put("settings", scope="chain", name=name, value=value)

    def publish(self) -> int:
        """Write the rows as the next version (one delta, applied whole); returns it."""
        changes: list[c.Change] = [
            (d, k, self.rows.get((d, k)))
            for d, k in sorted(self.rows.keys() | self._written.keys())
            if self.rows.get((d, k)) != self._written.get((d, k))
        ]
        target = self.version + 1
        h = c.view_hash((c.DATASETS[d], r) for (d, _k), r in self.rows.items())
        _in_thread(self._apply(target, changes, h, len(self.rows)))
        self.version = target
        self._written = dict(self.rows)
        return target

    async def _apply(self, target: int, changes: list[c.Change], h: bytes, n: int) -> None:
        async with CatalogStore(self.path, self.lane.store) as store:
            await store.apply_delta(store.held.version, target, changes, h, n)

    def create_empty(self) -> None:
        """The file a lane has before its first version arrives (version 0)."""
        _in_thread(self._touch())

    async def _touch(self) -> None:
        async with CatalogStore(self.path, self.lane.store):
            pass

    def view(self) -> CatalogView:
        return CatalogView(self.path, self.lane)


def _in_thread(coro: Any) -> None:
    """Run `coro` to the end on a loop of its own, whether or not the caller is in one."""
    failure: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(coro)
        except BaseException as exc:
            failure.append(exc)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    if failure:
        raise failure[0]


def store_row(store: str, **kw: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": store,
        "name": f"Store {store}",
        "timezone": "UTC",
        "currency": "EUR",
        "can_receive_stock": True,
        "active": True,
    }
    row.update(kw)
    return row


ITEMS = [  # code, tax code, price (lanesync.samples' items, and P1 of the API suites)
    ("P1", "VAT_STD", 100),
    ("P1000", "VAT_STD", 1899),
    ("P2000", "VAT_RED", 249),
    ("P3000", "VAT_RED", 179),
    ("P4000", "VAT_STD", 1250),
    ("P5000", "VAT_STD", 399),
    ("P6000", "VAT_RED", 129),
]


GTIN_P1000 = "5901234123457"  # tests/pan's GTIN-13 whose digits also pass Luhn


def standard(path: Path, lane: LaneId, *, publish: bool = True) -> LaneCatalog:
    cat = LaneCatalog(path, lane)
    for code, tax, price in ITEMS:
        gtins = {"gtins": [GTIN_P1000]} if code == "P1000" else {}
        cat.put("items", code=code, description=f"Item {code}", tax_code=tax, variant=False,
                active=True, **gtins)  # fmt: skip
        cat.put("prices", item=code, valid_from="2000-01-01", price=price)
    cat.put("tax_rates", code="VAT_STD", valid_from="2000-01-01", rate_bp=1900)
    cat.put("tax_rates", code="VAT_STD", valid_from="2024-07-01", rate_bp=2000)
    cat.put("tax_rates", code="VAT_RED", valid_from="2000-01-01", rate_bp=700)
    cat.put("tax_rates", code="ZERO", valid_from="2000-01-01", rate_bp=0)
    for store in (lane.store, "S1", "S2", "S3", "A", "B"):
        cat.put("stores", **store_row(store))
    for staff in ("E1", "E2", "E7", "E9", "E042"):
        cat.put("staff", id=staff, name=f"Staff {staff}", active=True)
    for cust in ("C1", "C2", "C1000", "C2000", "C3000", "C9"):
        cat.put("customers", code=cust, name=f"Customer {cust}", account_allowed=True,
                active=True)  # fmt: skip
    cat.put("suppliers", code="SUP1", name="Supplier 1", active=True)
    cat.put("couriers", code="DHL", name="DHL", active=True)
    for code in ("DAMAGED", "FAULTY", "RESALE", "RETURN"):
        cat.put("txn_types", code=code, name=f"Return {code}", inventory_effect="none")
    cat.setting("PriceOverride", "allowed")
    if publish:
        cat.publish()
    return cat
