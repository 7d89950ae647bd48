"""The head-office status page in a real headless Chromium (item 6).

The page is served from a seeded head-office database; the test reads what a person sees
(the rendered text), changes the database, waits for the page to refresh by itself, and keeps a
screenshot in test-artifacts/statuspage.png. It skips only when Chromium cannot be found
(`./run test` installs Debian's `chromium` package when it runs as root).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
import pytest

from headoffice.db import SqliteDatabase
from headoffice.db.base import check_batch
from headoffice.ingest import IngestStats
from headoffice.projections import PROJECTIONS
from headoffice.statuspage import collect, ingest_figures, render_fragment, status_app
from protocol.chain import entry_hash, genesis
from protocol.identity import LaneId
from protocol.messages import Entry, JournalBatch, Status
from protocol.runtime.httpserver import HttpServer
from tests.ops.ops_helpers import query

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def _now_ms() -> int:
    return int(time.time() * 1000)


def _seed(db_path: Path) -> None:
    """Two stores: S001 with two online lanes (one lagging), S002 offline with a quarantine."""
    store = SqliteDatabase(db_path, projections=PROJECTIONS)
    now = _now_ms()
    try:
        for lane_id, n_applied, lane_last in (
            (LaneId("S001", "L1"), 40, 40),
            (LaneId("S001", "L2"), 10, 17),
            (LaneId("S002", "L1"), 5, 5),
        ):
            epoch = 7
            prev = genesis(lane_id, epoch)
            entries = []
            for seq in range(1, n_applied + 1):
                body = b"\x81\xa4kind\xa4sale"
                txn = f"{lane_id.store}-{lane_id.lane}-{seq}"
                h = entry_hash(prev, seq, "sale", txn, now, body)
                entries.append(Entry(seq, "sale", txn, now, body, h))
                prev = h
            batch = JournalBatch(lane_id, epoch, genesis(lane_id, epoch), entries)
            store.apply_batch(check_batch(batch, PROJECTIONS), now)
            store.note_hello(lane_id, epoch, lane_last, now)
            state = "offline" if lane_id.store == "S002" else "online"
            store.save_status(Status(lane_id, state, "0.1.0", lane_last - n_applied, now))
        store.quarantine(
            "lanesync/v1/S002/L1/journal",
            LaneId("S002", "L1"),
            "payload is too large <b>1200000</b>",
            b"x",
            now,
        )
        store.commit()
    finally:
        store.close()


def _journal_transit(db_path: Path, lane: LaneId, seq: int) -> None:
    """The lane's next journal entry: a transit-inventory document, ingested as usual."""
    store = SqliteDatabase(db_path, projections=PROJECTIONS)
    try:
        state = store.lane_state(lane, 7)
        assert state is not None
        assert state.hwm == seq - 1
        doc = {
            "kind": "transit_inventory",
            "register_no": "TX0042",
            "transit_no": "TX0042",
            "sscc": "357035380100000010",
            "source_store": lane.store,
            "dest_store": "S002",
            "by": {"type": "courier", "id": "DHL"},
            "currency": "EUR",
            "lines": [{"line_no": 1, "item": "P1000", "qty": "3.000"}],
        }
        body = msgpack.packb(doc, use_bin_type=True)
        now = _now_ms()
        txn = "01936f5e-0000-7000-8000-000000000042"
        h = entry_hash(state.last_hash, seq, "transit_inventory", txn, now, body)
        entry = Entry(seq, "transit_inventory", txn, now, body, h)
        res = store.apply_batch(
            check_batch(JournalBatch(lane, 7, state.last_hash, [entry]), PROJECTIONS), now
        )
        assert res.applied == 1, res
        store.commit()
    finally:
        store.close()


def test_collect_and_fragment_without_a_browser(tmp_path: Path) -> None:
    db = tmp_path / "ho.db"
    _seed(db)
    data = collect(db)
    lanes = {(ln["store"], ln["lane"]): ln for ln in data["lanes"]}
    assert lanes[("S001", "L2")]["lag_entries"] == 7
    assert lanes[("S001", "L2")]["online"] == "online"
    assert lanes[("S002", "L1")]["online"] == "offline"
    assert lanes[("S002", "L1")]["quarantined"] == 1
    assert data["open_transits"] == []
    html = render_fragment(data)
    assert "&lt;b&gt;1200000&lt;/b&gt;" in html  # database text is escaped
    assert "No open transits." in html


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cdp:
    """Just enough of the Chrome DevTools Protocol: send a command, await its result."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.ids = itertools.count(1)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        n = next(self.ids)
        await self.ws.send_json({"id": n, "method": method, "params": params})
        async with asyncio.timeout(20):
            while True:
                msg = json.loads((await self.ws.receive()).data)
                if msg.get("id") == n:
                    if "error" in msg:
                        raise AssertionError(f"{method}: {msg['error']}")
                    return dict(msg.get("result", {}))

    async def text(self) -> str:
        r = await self.call(
            "Runtime.evaluate", expression="document.body ? document.body.innerText : ''"
        )
        return str(r["result"]["value"])


@contextlib.asynccontextmanager
async def headless_chromium(tmp_path: Path) -> AsyncIterator[Cdp]:
    exe = _chromium()
    if exe is None:
        pytest.skip(
            "chromium is not installed and could not be installed (apt-get install chromium)"
        )
    port = _free_port()
    proc = subprocess.Popen(
        [
            exe,
            "--headless=new",
            "--no-sandbox",  # tests run as root in a container
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--window-size=1100,800",
            f"--user-data-dir={tmp_path / 'chromium-profile'}",
            f"--remote-debugging-port={port}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        async with aiohttp.ClientSession() as session:
            async with asyncio.timeout(30):
                while True:
                    with contextlib.suppress(aiohttp.ClientError):
                        async with session.get(f"http://127.0.0.1:{port}/json/list") as r:
                            pages = [t for t in await r.json() if t["type"] == "page"]
                            if pages:
                                break
                    await asyncio.sleep(0.1)
            async with session.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                yield Cdp(ws)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def _wait_text(cdp: Cdp, needle: str, timeout: float = 10.0) -> str:
    async with asyncio.timeout(timeout):
        while True:
            text = await cdp.text()
            if needle in text:
                return text
            await asyncio.sleep(0.1)


async def test_status_page_in_headless_chromium(tmp_path: Path) -> None:
    db = tmp_path / "ho.db"
    _seed(db)
    app = status_app(db, refresh_s=0.5, offline_after_s=60)
    async with HttpServer(app, "127.0.0.1:0") as server, headless_chromium(tmp_path) as cdp:
        await cdp.call("Page.enable")
        await cdp.call("Page.navigate", url=f"http://127.0.0.1:{server.port}/")
        text = await _wait_text(cdp, "Open transits")
        assert "2 stores, 3 lanes, 2 online, 1 quarantined messages" in text
        lines = text.splitlines()
        lagging = next(ln for ln in lines if ln.startswith("S001\tL2"))
        assert lagging.split("\t")[2:5] == ["online", "7", "7"]  # state, backlog, lag
        offline = next(ln for ln in lines if ln.startswith("S002\tL1"))
        assert offline.split("\t")[2] == "offline"
        assert "payload is too large <b>1200000</b>" in text  # shown as text, not markup
        assert "No open transits." in text

        # The lane S002/L1 comes back: the page shows it without a reload.
        store = SqliteDatabase(db, projections=PROJECTIONS)
        try:
            store.save_status(Status(LaneId("S002", "L1"), "online", "0.1.0", 0, _now_ms()))
            store.commit()
        finally:
            store.close()
        assert query(db, "SELECT state FROM lane_status WHERE store = 'S002'") == [("online",)]
        text = await _wait_text(cdp, "3 online")
        offline = next(ln for ln in text.splitlines() if ln.startswith("S002\tL1"))
        assert offline.split("\t")[2] == "online"

        # S001/L1 sends a parcel to S002: it appears under open transits without a reload.
        _journal_transit(db, LaneId("S001", "L1"), seq=41)
        text = await _wait_text(cdp, "357035380100000010")
        parcel = next(ln for ln in text.splitlines() if "357035380100000010" in ln)
        assert "TX0042" in parcel
        assert "S001" in parcel
        assert "S002" in parcel
        assert "No open transits." not in text

        shot = await cdp.call("Page.captureScreenshot", format="png")
        ARTIFACTS.mkdir(exist_ok=True)
        png = base64.b64decode(shot["data"])
        assert png.startswith(b"\x89PNG")
        (ARTIFACTS / "statuspage.png").write_bytes(png)


def test_held_entries_and_this_process_figures_on_the_page(tmp_path: Path) -> None:
    db = tmp_path / "ho.db"
    _seed(db)
    store = SqliteDatabase(db, projections=PROJECTIONS)
    try:
        lane = LaneId("S001", "L1")
        state = store.lane_state(lane, 7)
        assert state is not None
        body = msgpack.packb({"kind": "sale", "note": "4111 1111 1111 1111"})
        txn = "01936f5e-0000-7000-8000-000000000099"
        now = _now_ms()
        h = entry_hash(state.last_hash, 41, "sale", txn, now, body)
        entry = Entry(41, "sale", txn, now, body, h)
        res = store.apply_batch(
            check_batch(JournalBatch(lane, 7, state.last_hash, [entry]), PROJECTIONS), now
        )
        store.commit()
        assert (res.held, res.hwm) == (1, 41)
    finally:
        store.close()
    stats = IngestStats()
    stats.inbox.shed = 1234
    stats.inbox.shed_by_store["S666"] = 1234
    data = collect(db)
    data["ingest"] = ingest_figures(stats)
    assert data["held_total"] == 1
    lanes = {(ln["store"], ln["lane"]): ln for ln in data["lanes"]}
    assert lanes[("S001", "L1")]["held"] == 1
    html = render_fragment(data)
    assert "1 held entries" in html
    assert "1234 shed (S666: 1234)" in html
    assert "card_number" in html
    assert "4111" not in html
