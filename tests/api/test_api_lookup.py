"""Master data for the till over the local API (agent.catalog.lookup), from a real lane catalog
file applied through the catalog store, on the real API socket; offline by construction (the
API runs without a replicator)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hardware.events import ScanEvent
from hardware.interpret import interpret
from hardware.queue import ScanQueue
from tests.api.api_helpers import LANE, Client, agent_config, running_api
from tests.api.catalog_fixture import TEA_GTINS, UPC, CatalogFile, add, sample_view

JULY = "2026-07-02T09:00:00%2B12:00"  # Auckland morning; '+' escaped in a query string
PROBLEM = "application/problem+json"


async def catalog(tmp: Path) -> CatalogFile:
    f = CatalogFile(agent_config(tmp).catalog_path, LANE.store)
    await f.apply(sample_view())
    return f


async def get(c: Client, path: str) -> tuple[int, Any, str]:
    return await c.call("GET", path)


async def test_no_catalog_yet_is_503_naming_it(tmp_path: Path) -> None:
    async with running_api(tmp_path, standard_catalog=False) as (_api, c):
        for path in ("/v1/items/TEA", "/v1/items?gtin=4006381333931", "/v1/settings",
                     "/v1/stores?can_receive_stock=1", "/v1/catalog"):  # fmt: skip
            status, body, ctype = await get(c, path)
            assert (status, ctype) == (503, PROBLEM), path
            assert body["title"] == "No catalog yet"
            assert body["catalog_version"] == 0


async def test_item_by_code_with_price_and_tax_of_the_day(tmp_path: Path) -> None:
    await catalog(tmp_path)
    async with running_api(tmp_path) as (_api, c):
        status, tea, _ = await get(c, f"/v1/items/TEA?at={JULY}")
        assert status == 200
        assert tea["catalog_version"] == 1
        assert tea["gtins"] == TEA_GTINS
        assert tea["on"] == "2026-07-02"
        # Zone NORTH's price (520 from March) beats the chain's 550 from June; 17 % from July.
        assert tea["price"] == {
            "amount": 520, "currency": "NZD", "valid_from": "2026-03-01", "scope": "zone"
        }  # fmt: skip
        assert tea["tax"] == {"code": "STD", "rate_bp": 1700}
        # The store's local date decides: 2026-08-31T13:00Z is already 1 September in Auckland.
        _, sept, _ = await get(c, "/v1/items/TEA?at=2026-08-31T13:00:00Z")
        assert sept["on"] == "2026-09-01"
        assert sept["price"]["amount"] == 480
        assert sept["price"]["scope"] == "store"
        _, june, _ = await get(c, "/v1/items/TEA?at=2026-06-30T00:00:00%2B12:00")
        assert june["tax"]["rate_bp"] == 1500
        # No price and no rate yet is said, not invented.
        _, mug, _ = await get(c, f"/v1/items/MUG?at={JULY}")
        assert mug["price"] is None
        assert mug["tax"] == {"code": "NONE", "rate_bp": None}
        assert mug["gtins"] == []
        # An inactive item is found, and says so (the till refuses it, with the reason).
        status, old, _ = await get(c, "/v1/items/TEA-OLD")
        assert (status, old["active"]) == (200, False)


async def test_unknown_code_is_404_naming_it_and_the_version(tmp_path: Path) -> None:
    await catalog(tmp_path)
    async with running_api(tmp_path) as (_api, c):
        status, body, ctype = await get(c, "/v1/items/NOPE")
        assert (status, ctype) == (404, PROBLEM)
        assert body["detail"] == "no item 'NOPE' in catalog version 1"
        assert (body["field"], body["catalog_version"]) == ("code", 1)
        status, body, _ = await get(c, "/v1/customers/C9")
        assert (status, body["field"], body["detail"]) == (
            404, "code", "no customer 'C9' in catalog version 1"
        )  # fmt: skip
        status, body, _ = await get(c, "/v1/items/TEA?at=yesterday")
        assert (status, body["field"]) == (422, "at")
        status, body, _ = await get(c, "/v1/items/TEA?at=2026-07-01T10:00:00")
        assert (status, body["field"]) == (422, "at")  # a wall-clock time is not a moment


async def test_gtin_lookup_matches_every_length_it_is_written_in(tmp_path: Path) -> None:
    await catalog(tmp_path)
    async with running_api(tmp_path) as (_api, c):
        for form in (UPC, "0" + UPC, "00" + UPC):  # label, EAN-13 read, AI (01)
            status, body, _ = await get(c, f"/v1/items?gtin={form}")
            assert status == 200, form
            assert [i["code"] for i in body["items"]] == ["TEAPOT"]
            assert body["items"][0]["price"]["amount"] == 3999
            assert body["catalog_version"] == 1
        _, body, _ = await get(c, "/v1/items?gtin=00000096385074")  # GTIN-8 as GTIN-14
        assert [i["code"] for i in body["items"]] == ["TEA"]
        status, body, ctype = await get(c, "/v1/items?gtin=5012345678900")
        assert (status, ctype, body["field"], body["catalog_version"]) == (404, PROBLEM, "gtin", 1)
        assert body["detail"] == "no item with GTIN '5012345678900' in catalog version 1"
        status, body, _ = await get(c, "/v1/items?gtin=4006381333932")  # wrong check digit
        assert (status, body["field"]) == (422, "gtin")
        status, body, _ = await get(c, f"/v1/items?gtin={UPC}&prefix=T")
        assert (status, body["field"]) == (422, "gtin")


async def test_search_by_prefix_pages_with_a_limit(tmp_path: Path) -> None:
    await catalog(tmp_path)
    async with running_api(tmp_path) as (_api, c):
        _, page, _ = await get(c, "/v1/items?prefix=TEA&limit=2")
        assert [i["code"] for i in page["items"]] == ["TEA", "TEA-OLD"]
        assert page["next"] == "TEA-OLD"
        assert all("price" in i and "tax" in i for i in page["items"])
        _, rest, _ = await get(c, f"/v1/items?prefix=TEA&limit=2&after={page['next']}")
        assert [i["code"] for i in rest["items"]] == ["TEAPOT"]
        assert rest["next"] is None
        _, none, _ = await get(c, "/v1/items?prefix=ZZ")
        assert (none["items"], none["next"]) == ([], None)
        _, every, _ = await get(c, "/v1/items")
        assert [i["code"] for i in every["items"]] == ["MUG", "TEA", "TEA-OLD", "TEAPOT"]
        for bad in ("prefix=%7C", "limit=0", "limit=501", "limit=x"):
            status, body, _ = await get(c, f"/v1/items?{bad}")
            assert (status, body["field"]) == (422, bad.split("=")[0]), bad


async def test_people_parties_and_transaction_types(tmp_path: Path) -> None:
    await catalog(tmp_path)
    async with running_api(tmp_path) as (_api, c):
        _, ana, _ = await get(c, "/v1/staff/E7")
        assert ana == {"catalog_version": 1, "id": "E7", "name": "Ana", "store": "S1",
                       "active": True}  # fmt: skip
        _, staff, _ = await get(c, "/v1/staff?active=1")
        assert [s["id"] for s in staff["staff"]] == ["E7"]
        _, staff, _ = await get(c, "/v1/staff")
        assert [s["id"] for s in staff["staff"]] == ["E7", "E8"]
        _, acme, _ = await get(c, "/v1/customers/C1")
        assert (acme["name"], acme["account_allowed"]) == ("Acme", True)
        _, sup, _ = await get(c, "/v1/suppliers")
        assert [(s["code"], s["active"]) for s in sup["suppliers"]] == [
            ("SUP1", True), ("SUP2", False)
        ]  # fmt: skip
        _, sup, _ = await get(c, "/v1/suppliers?active=1")
        assert [s["code"] for s in sup["suppliers"]] == ["SUP1"]
        _, dhl, _ = await get(c, "/v1/couriers/DHL")
        assert dhl["name"] == "DHL"
        _, types, _ = await get(c, "/v1/txn-types")
        assert {t["code"]: t["inventory_effect"] for t in types["txn_types"]} == {
            "RET0": "none", "SALE": "decrease"
        }  # fmt: skip
        status, body, _ = await get(c, "/v1/couriers/UPS")
        assert (status, body["detail"]) == (404, "no courier 'UPS' in catalog version 1")


async def test_destination_stores_that_can_receive_stock(tmp_path: Path) -> None:
    await catalog(tmp_path)
    async with running_api(tmp_path) as (_api, c):
        _, sel, _ = await get(c, "/v1/stores?can_receive_stock=1")
        # S2 cannot receive stock, S3 is inactive; this lane's own store is marked.
        assert [(s["id"], s["this_store"]) for s in sel["stores"]] == [("S1", True), ("S4", False)]
        _, every, _ = await get(c, "/v1/stores")
        assert [s["id"] for s in every["stores"]] == ["S1", "S2", "S3", "S4"]
        status, body, _ = await get(c, "/v1/stores?can_receive_stock=0")
        assert (status, body["field"]) == (422, "can_receive_stock")
        _, s4, _ = await get(c, "/v1/stores/S4")
        assert (s4["name"], s4["this_store"]) == ("Depot", False)


async def test_settings_resolve_lane_store_chain_default(tmp_path: Path) -> None:
    await catalog(tmp_path)
    async with running_api(tmp_path) as (_api, c):
        _, body, _ = await get(c, "/v1/settings")
        s = body["settings"]
        assert (body["catalog_version"], body["store"], body["lane"]) == (1, "S1", "L1")
        assert s["PurchRecvAmountVariation"] == 30  # store over chain (25)
        assert s["SaleTransitPromptQty"] is False  # this lane's own row
        assert s["PurchReceiveNoUnexp"] is False  # lane L2's row is not ours: the default
        assert s["PurchTransitAllowStaff"] is True  # declared default
        assert s["PriceOverride"] == "refused"
        assert (s["Currency"], s["Timezone"]) == ("NZD", "Pacific/Auckland")  # the store's row
        assert s["ReturnTxnType"] == "RET0"
        assert "errors" not in body
        _, one, _ = await get(c, "/v1/settings/PurchRecvAmountVariation")
        assert one == {"catalog_version": 1, "name": "PurchRecvAmountVariation", "value": 30}
        status, bad, _ = await get(c, "/v1/settings/PriceOveride")
        assert status == 404
        assert "(did you mean PriceOverride?)" in bad["detail"]


async def test_a_new_version_answers_at_once_and_says_so(tmp_path: Path) -> None:
    f = await catalog(tmp_path)
    async with running_api(tmp_path) as (_api, c):
        _, before, _ = await get(c, f"/v1/items/TEA?at={JULY}")
        assert (before["catalog_version"], before["price"]["amount"]) == (1, 520)
        view = sample_view()
        add(view, "prices", item="TEA", store="S1", valid_from="2026-07-01", price=499)
        add(view, "settings", scope="lane", store="S1", lane="L1",
            name="PurchRecvAmountVariation", value="40")  # fmt: skip
        del view[("couriers", "DHL")]
        await f.apply(view, version=5)  # versions may skip numbers (another store's changes)
        _, after, _ = await get(c, f"/v1/items/TEA?at={JULY}")
        assert (after["catalog_version"], after["price"]["amount"]) == (5, 499)
        assert after["price"]["scope"] == "store"
        _, s, _ = await get(c, "/v1/settings/PurchRecvAmountVariation")
        assert (s["catalog_version"], s["value"]) == (5, 40)
        status, gone, _ = await get(c, "/v1/couriers/DHL")
        assert (status, gone["catalog_version"]) == (404, 5)
        _, held, _ = await get(c, "/v1/catalog")
        assert (held["catalog_version"], held["rows"]) == (5, len(view))
        assert "couriers" not in held["datasets"]  # its one row was removed


async def test_an_answer_stays_on_one_version_while_the_next_is_applied(tmp_path: Path) -> None:
    f = await catalog(tmp_path)
    async with running_api(tmp_path) as (api, _c):
        lookup = api.lookup
        view_v2 = sample_view()
        add(view_v2, "prices", item="TEA", store="S1", valid_from="2026-01-01", price=1)
        view = lookup.open_view()
        with view.snapshot():
            assert view.version == 1
            await f.apply(view_v2)  # committed by the writer meanwhile (WAL)
            at = datetime(2026, 7, 2, tzinfo=UTC)
            price = view.price("TEA", at)
            assert price is not None
            assert (view.version, price.price) == (1, 520)  # still all of version 1
        assert lookup.item("TEA", at)["price"]["amount"] == 1
        assert lookup.item("TEA", at)["catalog_version"] == 2


async def scan_events(queue: ScanQueue, c: Client, api: Any, events: list[ScanEvent]) -> list[Any]:
    async with c.session.get(f"http://lane/v1/scans?limit={len(events)}") as r:
        await r.content.readline()  # subscribed
        while not api.hub.subscribers:
            await asyncio.sleep(0.01)
        for e in events:
            queue.put(e)
        body = (await r.text()).strip().split("\n\n")
    blocks = [dict(line.split(": ", 1) for line in b.split("\n")) for b in body]
    return [json.loads(b["data"]) for b in blocks]


async def test_a_gtin_scan_carries_its_item_or_says_unknown(tmp_path: Path) -> None:
    await catalog(tmp_path)
    queue = ScanQueue()
    now = datetime.now(UTC)
    reads = [
        interpret("]E0" + TEA_GTINS[0], source="s1", time=now),  # EAN-13
        interpret("]C10100" + UPC + "10ABC", source="s1", time=now),  # GS1-128 AI (01)+(10)
        interpret("]E05012345678900", source="s1", time=now),  # valid, not in the catalog
        interpret("]C100157035381410375177", source="s1", time=now),  # an SSCC: no item
    ]
    assert reads[1].gtin == "00" + UPC
    async with running_api(tmp_path, scans=queue) as (api, c):
        tea, teapot, unknown, sscc = await scan_events(queue, c, api, reads)
    assert (tea["item_status"], tea["catalog_version"]) == ("found", 1)
    assert tea["item"]["code"] == "TEA"
    assert tea["item"]["price"]["currency"] == "NZD"
    assert isinstance(tea["item"]["price"]["amount"], int)
    assert tea["item"]["tax"]["code"] == "STD"
    assert (teapot["item"]["code"], teapot["item"]["price"]["amount"]) == ("TEAPOT", 3999)
    assert (unknown["item_status"], unknown["item"], unknown["catalog_version"]) == (
        "unknown", None, 1
    )  # fmt: skip
    assert "item_status" not in sscc
    assert sscc["is_sscc"] is True


async def test_a_scan_before_any_catalog_says_so(tmp_path: Path) -> None:
    queue = ScanQueue()
    read = interpret("]E0" + TEA_GTINS[0], source="s1", time=datetime.now(UTC))
    async with running_api(tmp_path, scans=queue, standard_catalog=False) as (api, c):
        (event,) = await scan_events(queue, c, api, [read])
    assert (event["item_status"], event["item"], event["catalog_version"]) == (
        "no_catalog", None, 0
    )  # fmt: skip
