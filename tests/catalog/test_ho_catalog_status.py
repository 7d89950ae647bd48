"""The status page and /api/status: each lane's catalog version against its store's head, which
lanes lag, and whether the store registry is enforced yet (both backends)."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from headoffice.catalog import load as loader
from headoffice.catalog import versions
from headoffice.catalog.publisher import PublisherStats
from headoffice.db import SqliteDatabase
from headoffice.projections import PROJECTIONS
from headoffice.statuspage import collect, render_fragment, status_app
from protocol.identity import LaneId
from protocol.runtime.httpserver import HttpServer
from tests import pgutil
from tests.pgutil import Backend

backend = pgutil.backend  # the fixture, parametrised over SQLite and PostgreSQL
STORES = "id,name,timezone,currency,price_zone,can_receive_stock,active\n"


def test_lanes_behind_their_stores_head_are_shown(backend: Backend, tmp_path: Path) -> None:
    store = backend.store()
    try:
        for lane in (
            LaneId("S1", "L1"),
            LaneId("S1", "L2"),
            LaneId("S2", "L1"),
            LaneId("S9", "L1"),
        ):
            store.note_hello(lane, 1, 0, 1_700_000_000_000)
        store.commit()
        data = collect(backend.target)
        assert data["catalog"]["registry_enforced"] is False
        assert "No store registry yet: every store is accepted" in render_fragment(data)
        assert not any(ln["catalog_lag"] for ln in data["lanes"])

        path = tmp_path / "s.csv"
        path.write_text(STORES + "S1,One,UTC,EUR,Z1,1,1\nS2,Two,UTC,EUR,,1,1\n", encoding="utf-8")
        loader.load_file(store.sql, "stores", path)  # version 1: every store's view
        path = tmp_path / "p.csv"
        path.write_text("item,zone,valid_from,price\nA1,Z1,2026-01-01,5\n", encoding="utf-8")
        loader.load_file(store.sql, "prices", path)  # version 2: S1's zone only
        assert versions.view(store.sql, "S1").version == 2
        assert versions.view(store.sql, "S2").version == 1
        # what the lanes said in hello/status (wave/reg's ingest writes this column)
        for (s, ln), v in {
            ("S1", "L1"): 2,
            ("S1", "L2"): 1,
            ("S2", "L1"): 1,
            ("S9", "L1"): 0,
        }.items():
            store.sql.begin()
            store.sql.execute(
                "UPDATE lanes SET catalog_version = ? WHERE store = ? AND lane = ?", (v, s, ln)
            )
            store.sql.commit()
    finally:
        store.close()
    data = collect(backend.target)
    cat = data["catalog"]
    assert (cat["latest"], cat["registry_enforced"], cat["stores_registered"]) == (2, True, 2)
    assert cat["heads"] == {"S1": 2, "S2": 1}
    assert cat["lagging"] == ["S1/L2"]
    lanes = {(ln["store"], ln["lane"]): ln for ln in data["lanes"]}
    assert {k: (v["catalog"], v["catalog_head"], v["catalog_lag"]) for k, v in lanes.items()} == {
        ("S1", "L1"): (2, 2, False),
        ("S1", "L2"): (1, 2, True),
        ("S2", "L1"): (1, 1, False),  # version 2 did not touch S2's view: not behind
        ("S9", "L1"): (0, None, False),  # unregistered: no head to be behind
    }
    stores = {s["store"]: s for s in data["stores"]}
    assert (stores["S1"]["catalog_head"], stores["S1"]["catalog_lagging"]) == (2, 1)
    assert stores["S9"]["registered"] is False
    page = render_fragment(data)
    assert "1 lanes behind their store's head: S1/L2" in page
    assert "v1 behind v2" in page
    assert "unregistered" in page


async def test_api_status_shows_the_head_publisher(tmp_path: Path) -> None:
    store = SqliteDatabase(tmp_path / "ho.db", projections=PROJECTIONS)
    store.close()
    stats = PublisherStats(connected=False, heads_published=7, version_seen=3)
    app = status_app(tmp_path / "ho.db", publisher=stats)
    async with HttpServer(app, "127.0.0.1:0") as server, aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{server.port}/api/status") as r:
            pub = (await r.json())["catalog"]["publisher"]
        assert (pub["connected"], pub["heads_published"], pub["version_seen"]) == (False, 7, 3)
        stats.connected = True
        async with http.get(f"http://127.0.0.1:{server.port}/fragment") as r:
            assert "Catalog heads: publisher connected, 7 heads published" in await r.text()
