"""A lane's catalog file for the lookup tests, written through the catalog store's own apply
path (agent.catalog.store.CatalogStore.apply_delta: canonical rows, refs, the view hash checked
before COMMIT), exactly as a delta from head office is applied. No mock of the file or the view.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent.catalog.store import CatalogStore, Held
from protocol import catalog as c

Key = tuple[str, str]
View = dict[Key, dict[str, Any]]

TEA_GTINS = ["4006381333931", "96385074"]  # valid GS1 check digits
UPC = "036000291452"  # a UPC-A (GTIN-12): scanned as 0036000291452, AI (01) 00036000291452


def add(view: View, dataset: str, **values: Any) -> None:
    ds = c.DATASETS[dataset]
    row = c.check_row(ds, values)
    view[(dataset, ds.key_of(row))] = row


def sample_view() -> View:
    """Store S1 (lane S1/L1 of tests/api) in Pacific/Auckland, zone NORTH, prices in NZD."""
    v: View = {}
    add(v, "items", code="TEA", gtins=TEA_GTINS, description="Green tea", tax_code="STD",
        variant=False, active=True)  # fmt: skip
    add(v, "items", code="TEAPOT", gtins=[UPC], description="Teapot", tax_code="STD",
        variant=False, active=True)  # fmt: skip
    add(v, "items", code="TEA-OLD", description="Old tea", tax_code="RED", variant=False,
        active=False)  # fmt: skip
    add(v, "items", code="MUG", description="Mug", tax_code="NONE", variant=True, active=True)
    for sid, name, tz, zone, recv, active in (
        ("S1", "High St", "Pacific/Auckland", "NORTH", True, True),
        ("S2", "Mall", "UTC", None, False, True),
        ("S3", "Old", "UTC", None, True, False),
        ("S4", "Depot", "UTC", None, True, True),
    ):
        extra = {"price_zone": zone} if zone else {}
        add(v, "stores", id=sid, name=name, timezone=tz, currency="NZD", can_receive_stock=recv,
            active=active, **extra)  # fmt: skip
    add(v, "prices", item="TEA", valid_from="2026-01-01", price=500)
    add(v, "prices", item="TEA", valid_from="2026-06-01", price=550)
    add(v, "prices", item="TEA", zone="NORTH", valid_from="2026-03-01", price=520)
    add(v, "prices", item="TEA", store="S1", valid_from="2026-09-01", price=480)
    add(v, "prices", item="TEAPOT", valid_from="2026-01-01", price=3999)
    add(v, "prices", item="TEA-OLD", valid_from="2026-01-01", price=100)
    add(v, "tax_rates", code="STD", valid_from="2020-01-01", rate_bp=1500)
    add(v, "tax_rates", code="STD", valid_from="2026-07-01", rate_bp=1700)
    add(v, "tax_rates", code="RED", valid_from="2020-01-01", rate_bp=500)
    add(v, "staff", id="E7", name="Ana", store="S1", active=True)
    add(v, "staff", id="E8", name="Ben", active=False)
    add(v, "customers", code="C1", name="Acme", account_allowed=True, active=True)
    add(v, "suppliers", code="SUP1", name="Leaf Co", active=True)
    add(v, "suppliers", code="SUP2", name="Gone Ltd", active=False)
    add(v, "couriers", code="DHL", name="DHL", active=True)
    add(v, "txn_types", code="RET0", name="Return, no stock", inventory_effect="none")
    add(v, "txn_types", code="SALE", name="Sale", inventory_effect="decrease")
    add(v, "settings", scope="chain", name="PurchRecvAmountVariation", value="25")
    add(v, "settings", scope="store", store="S1", name="PurchRecvAmountVariation", value="30")
    add(v, "settings", scope="chain", name="PriceOverride", value="refused")
    add(v, "settings", scope="lane", store="S1", lane="L1", name="SaleTransitPromptQty",
        value="0")  # fmt: skip
    add(v, "settings", scope="lane", store="S1", lane="L2", name="PurchReceiveNoUnexp",
        value="1")  # fmt: skip
    add(v, "settings", scope="chain", name="ReturnTxnType", value="RET0")
    return v


def view_hash(view: View) -> bytes:
    return c.view_hash((c.DATASETS[d], r) for (d, _k), r in view.items())


class CatalogFile:
    """The lane's catalog file and the versions applied to it, one delta each."""

    def __init__(self, path: Path, store: str = "S1") -> None:
        self.path = path
        self.store = store
        self.view: View = {}
        self.version = 0

    async def apply(self, new: View, version: int | None = None) -> Held:
        target = version or self.version + 1
        changes = [
            (k[0], k[1], new.get(k))
            for k in sorted(self.view.keys() | new.keys())
            if self.view.get(k) != new.get(k)
        ]
        async with CatalogStore(self.path, self.store) as store:
            held = await store.apply_delta(self.version, target, changes, view_hash(new), len(new))
        self.view, self.version = dict(new), target
        return held
