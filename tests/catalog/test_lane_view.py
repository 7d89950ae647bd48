"""agent.catalog.view: the lookups a lane makes, with the precedence rules of CATALOG.md."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from agent.catalog.store import CatalogStore
from agent.catalog.sync import CatalogSync
from agent.catalog.view import CatalogView
from agent.config import CatalogConfig
from protocol.catalog import CatalogError
from protocol.identity import LaneId
from tests.catalog.lane_helpers import GTINS, LANE, ScriptedHeadOffice, View, item, row


def add(view: View, dataset: str, **values: object) -> None:
    k, r = row(dataset, **values)
    view[k] = r


def sample() -> View:
    view: View = {("items", "TEA"): item("TEA", gtins=GTINS[:2]), ("items", "MUG"): item("MUG")}
    add(view, "stores", id="S1", name="High St", timezone="Pacific/Auckland", currency="NZD",
        price_zone="NORTH", can_receive_stock=True, active=True)  # fmt: skip
    add(view, "stores", id="S2", name="Mall", timezone="UTC", currency="NZD",
        can_receive_stock=False, active=True)  # fmt: skip
    add(view, "stores", id="S3", name="Old", timezone="UTC", currency="NZD",
        can_receive_stock=True, active=False)  # fmt: skip
    add(view, "stores", id="S4", name="Depot", timezone="UTC", currency="NZD",
        can_receive_stock=True, active=True)  # fmt: skip
    add(view, "prices", item="TEA", valid_from="2026-01-01", price=500)
    add(view, "prices", item="TEA", valid_from="2026-06-01", price=550)
    add(view, "prices", item="TEA", zone="NORTH", valid_from="2026-03-01", price=520)
    add(view, "prices", item="TEA", store="S1", valid_from="2026-09-01", price=480)
    add(view, "prices", item="MUG", valid_from="2026-01-01", price=1200)
    add(view, "tax_rates", code="STD", valid_from="2020-01-01", rate_bp=1500)
    add(view, "tax_rates", code="STD", valid_from="2026-07-01", rate_bp=1700)
    add(view, "staff", id="E7", name="Ana", store="S1", active=True)
    add(view, "customers", code="C1", name="Acme", account_allowed=True, active=True)
    add(view, "suppliers", code="SUP1", name="Leaf Co", active=True)
    add(view, "couriers", code="DHL", name="DHL", active=True)
    add(view, "txn_types", code="RET0", name="Return, no stock", inventory_effect="none")
    add(view, "settings", scope="chain", name="PurchRecvAmountVariation", value="25")
    add(view, "settings", scope="store", store="S1", name="PurchRecvAmountVariation", value="30")
    add(view, "settings", scope="lane", store="S1", lane="L1", name="SaleTransitPromptQty",
        value="0")  # fmt: skip
    add(view, "settings", scope="lane", store="S1", lane="L2", name="PurchReceiveNoUnexp",
        value="1")  # fmt: skip
    return view


@pytest.fixture
async def catalog(tmp_path: Path) -> AsyncIterator[Path]:
    ho = ScriptedHeadOffice()
    ho.publish(sample())
    path = tmp_path / "catalog.db"
    async with CatalogStore(path, LANE.store) as store, CatalogSync(store, CatalogConfig()) as s:
        s.on_head(ho.head(), ho.request)
        async with asyncio.timeout(5):
            await s.caught_up.wait()
        yield path


def test_items_by_code_and_gtin(catalog: Path) -> None:
    with CatalogView(catalog, LANE) as v:
        assert v.version == 1
        tea = v.item("TEA")
        assert tea is not None
        assert tea["gtins"] == GTINS[:2]
        assert v.item_by_gtin(GTINS[1]) == tea
        assert v.item_by_gtin(GTINS[2]) is None
        assert v.item("NOPE") is None
        mug = v.item("MUG")
        assert mug is not None
        assert "gtins" not in mug  # absent optional stays absent


def at(day: str, hour: int = 0) -> datetime:
    """Midnight UTC: midday of the same day in Auckland (S1's zone)."""
    y, m, d = map(int, day.split("-"))
    return datetime(y, m, d, hour, tzinfo=UTC)


def test_price_is_store_over_zone_over_chain_latest_valid_from(catalog: Path) -> None:
    with CatalogView(catalog, LANE) as v:
        assert v.price("TEA", at("2025-12-31")) is None  # nothing valid yet
        p = v.price("TEA", at("2026-02-01"))
        assert p is not None
        assert (p.price, p.scope) == (500, "chain")
        p = v.price("TEA", at("2026-03-02"))
        assert p is not None
        assert (p.price, p.scope) == (520, "zone")  # zone beats a later chain price too
        p = v.price("TEA", at("2026-07-01"))
        assert p is not None
        assert (p.price, p.scope) == (520, "zone")
        p = v.price("TEA", at("2026-09-02"))
        assert p is not None
        assert (p.price, p.scope, p.valid_from) == (480, "store", "2026-09-01")
    # Read as store S2 (no price zone): the chain's prices only, the latest valid one.
    with CatalogView(catalog, LaneId("S2", "L1")) as v:
        p = v.price("TEA", at("2026-07-01"))
        assert p is not None
        assert (p.price, p.scope) == (550, "chain")


def test_the_day_is_the_stores_local_date(catalog: Path) -> None:
    with CatalogView(catalog, LANE) as v:
        # 2026-08-31 13:00 UTC is already 1 September in Auckland (UTC+12): S1's own price.
        p = v.price("TEA", datetime(2026, 8, 31, 13, tzinfo=UTC))
        assert p is not None
        assert p.price == 480
        p = v.price("TEA", datetime(2026, 8, 31, 11, tzinfo=UTC))
        assert p is not None
        assert p.price == 520
        with pytest.raises(ValueError, match="aware"):
            v.price("TEA", datetime(2026, 8, 31, 11))  # noqa: DTZ001 - the point of the test


def test_tax_rate_by_code_and_date(catalog: Path) -> None:
    with CatalogView(catalog, LANE) as v:
        assert v.tax_rate("STD", date(2019, 12, 31)) is None
        assert v.tax_rate("STD", date(2026, 6, 30)) == 1500
        assert v.tax_rate("STD", date(2026, 7, 1)) == 1700
        assert v.tax_rate("RED", date(2026, 7, 1)) is None


def test_stores_people_and_transaction_types(catalog: Path) -> None:
    with CatalogView(catalog, LANE) as v:
        assert [s["id"] for s in v.stores_receiving_stock()] == ["S1", "S4"]
        staff = v.staff("E7")
        assert staff is not None
        assert staff["name"] == "Ana"
        customer = v.customer("C1")
        assert customer is not None
        assert customer["account_allowed"] is True
        assert v.supplier("SUP1") is not None
        assert v.courier("DHL") is not None
        assert v.courier("UPS") is None
        ret = v.txn_type("RET0")
        assert ret is not None
        assert ret["inventory_effect"] == "none"


def test_settings_resolve_lane_over_store_over_chain_over_default(catalog: Path) -> None:
    with CatalogView(catalog, LANE) as v:
        assert v.setting("PurchRecvAmountVariation") == 30  # store beats chain
        assert v.setting("SaleTransitPromptQty") is False  # this lane's own
        assert v.setting("PurchReceiveNoUnexp") is False  # L2's row is not ours: default
        assert v.setting("PurchTransitAllowCourier") is True  # declared default
        assert v.setting("Currency") == "NZD"  # no row: the store's own
        assert v.setting("Timezone") == "Pacific/Auckland"
        with pytest.raises(CatalogError, match="did you mean PurchReceiveNoUnexp"):
            v.setting("PurchRecieveNoUnexp")
