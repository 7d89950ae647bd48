"""The local API over its Unix socket: confirmations, problems, open sales, transits, scans."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

from agent.config import ApiConfig
from hardware.events import ScanEvent
from hardware.queue import ScanQueue
from tests.api.api_helpers import running_api, sale

COURIER = {"dest_store": "S2", "by": {"type": "courier", "id": "DHL"}}


async def test_post_document_confirms_after_commit_and_dedupes(tmp_path: Path) -> None:
    async with running_api(tmp_path) as (api, c):
        doc = sale(txn_id="01890a5d-ac96-774b-bcce-b302099a8057")
        status, out, _ = await c.call("POST", "/v1/documents", doc)
        assert status == 201
        assert out["seq"] == api.journal.last_seq == 1
        assert out["duplicate"] is False
        assert out["register_no"] == "T10001"
        # Durable: the committed row is visible to another connection already.
        found = await api.store.journaled(out["txn_id"])
        assert found is not None
        assert found[1]["register_no"] == "T10001"
        status, again, _ = await c.call("POST", "/v1/documents", doc)
        assert status == 200
        assert again["duplicate"]
        assert again["seq"] == 1
        assert again["register_no"] == "T10001"
        other = sale(txn_id=doc["txn_id"], total=1)  # same id, different sale: refused
        status, prob, ctype = await c.call(
            "POST", "/v1/documents", {**other, "total": 3977, "customer": "C9"}
        )
        assert (status, ctype, prob["field"]) == (409, "application/problem+json", "txn_id")
        status, nxt, _ = await c.call("POST", "/v1/documents", sale())
        assert nxt["register_no"] == "T10002"  # the refused resubmission burned no number


async def test_problems_name_the_field(tmp_path: Path) -> None:
    async with running_api(tmp_path) as (_api, c):
        bad = sale()
        bad["lines"][0]["qty"] = "two"
        status, prob, ctype = await c.call("POST", "/v1/documents", bad)
        assert (status, ctype, prob["field"]) == (422, "application/problem+json", "$.lines[0].qty")
        async with c.session.post(
            "http://lane/v1/documents",
            data=b'{"kind": "sale", "total": 1.5}',
            headers={"Content-Type": "application/json"},
        ) as r:
            assert r.status == 422
            assert (await r.json())["field"] == "$.total"
        async with c.session.post(
            "http://lane/v1/documents", data=b"{", headers={"Content-Type": "application/json"}
        ) as r:
            assert r.status == 400
            assert r.content_type == "application/problem+json"
        status, prob, _ = await c.call(
            "POST",
            "/v1/documents",
            sale(
                payments=[
                    {
                        "tender": "card",
                        "amount": 4000,
                        "token": "5500000000000004",
                        "scheme": "mc",
                        "last4": "0004",
                    }
                ]
            ),
        )
        assert (status, prob["field"]) == (422, "$.payments[0].token")
        # every refusal is counted for `lanesync status` and the metrics
        assert _api.counters.quarantined == 4


async def test_open_sale_runs_beside_a_transit(tmp_path: Path) -> None:
    async with running_api(tmp_path) as (api, c):
        _, s, _ = await c.call("POST", "/v1/sales", {"staff": "E042"})
        _, t, _ = await c.call("POST", "/v1/sales", {})
        _, t, _ = await c.call("POST", f"/v1/sales/{t['id']}/mode", {"mode": 8})
        assert t["mode"] == 8
        status, prob, _ = await c.call("POST", f"/v1/sales/{t['id']}/lines", {"item": "P1000"})
        assert (status, prob["field"]) == (422, "$.qty")  # SaleTransitPromptQty
        await c.call("POST", f"/v1/sales/{t['id']}/lines", {"item": "P1000", "qty": "4.000"})
        await c.call(
            "POST",
            f"/v1/sales/{s['id']}/lines",
            {"item": "P3000", "qty": "2.000", "unit_price": 179, "tax_code": "VAT_RED"},
        )
        status, prob, _ = await c.call("POST", f"/v1/sales/{t['id']}/park")
        assert (status, prob["field"]) == (409, "mode")
        status, parked, _ = await c.call("POST", f"/v1/sales/{s['id']}/park")
        assert parked["state"] == "parked"
        await c.call("POST", f"/v1/sales/{s['id']}/resume")
        status, done, _ = await c.call(
            "POST", f"/v1/sales/{s['id']}/payments", {"tender": "cash", "amount": 500}
        )
        assert status == 201
        assert done["completed"]
        assert done["document"]["change"] == 142
        status, prob, _ = await c.call(
            "POST", f"/v1/sales/{t['id']}/payments", {"tender": "cash", "amount": 0 + 1}
        )
        assert (status, prob["field"]) == (422, "$.transit.dest_store")
        status, done, _ = await c.call(
            "POST",
            f"/v1/sales/{t['id']}/payments",
            {"tender": "cash", "amount": 1, "transit": COURIER},
        )
        assert status == 201, done
        doc = done["document"]
        assert doc["kind"] == "transit_inventory"
        assert doc["dest_store"] == "S2"
        assert doc["sscc"].startswith("0570353801")
        assert len(doc["sscc"]) == 18
        assert doc["sscc"] in doc["label"]
        assert "TO S2" in doc["label"]
        assert done["sscc"] == doc["sscc"]
        _, listing, _ = await c.call("GET", "/v1/sales")
        assert listing["open"] == []
        assert api.journal.last_seq == 2


async def test_transit_carriers_follow_the_settings(tmp_path: Path) -> None:
    no_courier = {"PurchTransitAllowCourier": "0"}
    async with running_api(tmp_path, settings=no_courier) as (_api, c):
        _, t, _ = await c.call("POST", "/v1/sales", {"mode": 8})
        status, prob, _ = await c.call("PUT", f"/v1/sales/{t['id']}/transit", COURIER)
        assert (status, prob["field"]) == (422, "$.by.type")
        assert "PurchTransitAllowCourier" in prob["detail"]
        staff = {"dest_store": "S2", "by": {"type": "staff", "id": "E042"}}
        status, _, _ = await c.call("PUT", f"/v1/sales/{t['id']}/transit", staff)
        assert status == 200


async def test_each_transit_gets_its_own_sscc(tmp_path: Path) -> None:
    async with running_api(tmp_path) as (_api, c):
        seen = set()
        for _ in range(3):
            _, t, _ = await c.call("POST", "/v1/sales", {"mode": 8})
            await c.call("POST", f"/v1/sales/{t['id']}/lines", {"item": "P1", "qty": "1.000"})
            _, done, _ = await c.call(
                "POST",
                f"/v1/sales/{t['id']}/payments",
                {"tender": "cash", "amount": 1, "transit": COURIER},
            )
            seen.add(done["sscc"])
        direct = {
            "kind": "transit_inventory",
            "dest_store": "S3",
            "by": {"type": "supplier", "id": "SUP1"},
            "lines": [{"item": "P1", "qty": "2.000"}],
        }
        status, out, _ = await c.call("POST", "/v1/documents", direct)
        assert status == 201
        seen.add(out["sscc"])
        assert len(seen) == 4


async def test_scans_stream_as_server_sent_events(tmp_path: Path) -> None:
    queue = ScanQueue()
    async with running_api(tmp_path, scans=queue) as (api, c):
        async with c.session.get("http://lane/v1/scans?limit=2") as r:
            assert r.headers["Content-Type"].startswith("text/event-stream")
            await r.content.readline()  # the opening comment: subscribed now
            while not api.hub.subscribers:
                await asyncio.sleep(0.01)
            now = datetime.now(UTC)
            queue.put(
                ScanEvent(
                    raw="]C0000123456789012",
                    label="00123456789012",
                    kind="gtin",
                    source="s1",
                    time=now,
                    gtin="00123456789012",
                )
            )
            queue.put(
                ScanEvent(
                    raw="]C100157035381410375177",
                    label="157035381410375177",
                    kind="sscc",
                    source="s1",
                    time=now,
                    is_sscc=True,
                    sscc="157035381410375177",
                )
            )
            body = (await r.text()).strip().split("\n\n")
        events = [dict(line.split(": ", 1) for line in block.split("\n")) for block in body]
        assert [e["event"] for e in events] == ["scan", "scan"]
        assert json.loads(events[1]["data"])["is_sscc"] is True
        assert api.counters.scan_errors == 0
        api.hub.publish(
            ScanEvent(
                raw="]E04006381333932",
                label="4006381333932",
                kind="invalid",
                source="s1",
                time=now,
                error="wrong check digit",
            )
        )
        assert api.counters.scan_errors == 1


async def test_openapi_and_tcp_token(tmp_path: Path) -> None:
    api_cfg = ApiConfig(socket=str(tmp_path / "api.sock"), tcp="127.0.0.1:0", token="s3cret")
    async with running_api(tmp_path, api=api_cfg) as (api, c):
        _, doc, _ = await c.call("GET", "/v1/openapi.json")
        assert doc["openapi"].startswith("3.1")
        assert "/v1/documents" in doc["paths"]
        url = f"http://127.0.0.1:{api.tcp_port}/v1/status"
        async with aiohttp.ClientSession() as s:
            async with s.get(url) as r:
                assert r.status == 401
            async with s.get(url, headers={"Authorization": "Bearer s3cret"}) as r:
                assert r.status == 200
