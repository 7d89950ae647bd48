"""The lane side without head office: empty prompt, unreachable head office, SSCC scan events."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from hardware.events import ScanEvent
from tests.api.api_helpers import running_api
from tests.transit.transit_helpers import SSCC1


async def test_empty_prompt_does_nothing_and_no_head_office_fails_cleanly(tmp_path: Path) -> None:
    async with running_api(tmp_path) as (api, c):
        for body in (None, {}, {"sscc": ""}, {"transit_no": "  ", "sscc": None}):
            status, out, _ = await c.call("POST", "/v1/transit/receive", body)
            assert status == 204, out
        status, out, ctype = await c.call("POST", "/v1/transit/receive", {"sscc": SSCC1})
        assert (status, out["code"], ctype) == (503, "unreachable", "application/problem+json")
        status, out, _ = await c.call("POST", "/v1/transit/receive", {"sscc": "123"})
        assert (status, out["field"]) == (422, "$.sscc")
        status, out, _ = await c.call("POST", "/v1/transit/receive", {"dest_store": "B"})
        assert status == 422  # no search by anything but an exact key
        status, out, _ = await c.call("POST", "/v1/transit/receive/nope/accept", {})
        assert status == 404
        status, _, _ = await c.call("GET", "/v1/transit/receive")
        assert status == 405  # no listing of pending transits
        assert api.journal.last_seq == 0  # nothing journaled


async def test_sscc_scan_pushes_a_transit_event(tmp_path: Path) -> None:
    async with running_api(tmp_path) as (api, c):
        async with c.session.get("http://lane/v1/scans?limit=2") as r:
            await r.content.readline()
            await r.content.readline()
            scan = ScanEvent(
                f"]C1000{SSCC1}",
                SSCC1,
                "sscc",
                "test",
                datetime.now(UTC),
                is_sscc=True,
                sscc=SSCC1,
            )
            api.hub.publish(scan)
            events = []
            while len(events) < 2:
                line = (await r.content.readline()).decode()
                if line.startswith("data: "):
                    events.append(json.loads(line[6:]))
        assert events[0]["event"] == "scan"
        assert events[1]["event"] == "transit"
        assert (events[1]["ok"], events[1]["code"], events[1]["sscc"]) == (
            False,
            "unreachable",
            SSCC1,
        )
