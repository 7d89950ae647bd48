"""`lanesync status` on a store box: the catalog version held, the head seen, and lagging."""

from __future__ import annotations

import time
from pathlib import Path

from agent import config as agent_config
from agent import status
from agent.catalog.store import CatalogStore
from protocol import catalog as c
from tests.catalog.lane_helpers import LANE, ScriptedHeadOffice, items_view


def make_config(tmp_path: Path) -> agent_config.AgentConfig:
    return agent_config.parse(
        {
            "store": LANE.store,
            "lane": LANE.lane,
            "journal": {"path": str(tmp_path / "journal.db")},
            "api": {"socket": str(tmp_path / "api.sock")},
        }
    )


async def hold_version_1(path: Path, ho: ScriptedHeadOffice) -> None:
    async with CatalogStore(path, LANE.store) as store:
        rep = c.SnapshotReply.from_map(
            (await ho.request(c.OP_SNAPSHOT, {"version": 0, "chunk": 0, "size": 500}, 1)).result
        )
        await store.begin("snapshot", 0, 1, rep.hash, rep.rows, chunks=1, size=500)
        await store.stage(0, rep.changes)
        await store.finish()
        await store.note_head(1, int(time.time() * 1000))


async def test_status_shows_the_version_held_and_that_it_is_up_to_date(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    assert cfg.catalog_path == tmp_path / "journal-catalog.db"
    ho = ScriptedHeadOffice()
    ho.publish(items_view(12))
    await hold_version_1(cfg.catalog_path, ho)
    rep = status.collect(cfg)
    assert rep.catalog is not None
    assert (rep.catalog.version, rep.catalog.rows, rep.catalog.head_version) == (1, 12, 1)
    assert rep.as_dict()["catalog"]["behind"] is False
    assert "catalog     version 1 (12 rows), head 1: up to date" in status.render(rep)
    assert not [p for p in rep.problems if "catalog" in p]


async def test_a_lane_behind_its_head_for_long_is_a_problem(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    ho = ScriptedHeadOffice()
    ho.publish(items_view(12))
    await hold_version_1(cfg.catalog_path, ho)
    old = int((time.time() - 600) * 1000)  # head 3 published ten minutes ago, still not held
    async with CatalogStore(cfg.catalog_path, LANE.store) as store:
        await store.note_head(3, old)
        await store.begin("snapshot", 1, 3, bytes(32), 40, chunks=4, size=10)
        await store.stage(0, [])
    rep = status.collect(cfg)
    assert rep.catalog is not None
    assert rep.as_dict()["catalog"]["behind"] is True
    text = status.render(rep)
    assert "head 3: BEHIND, staging snapshot of version 3: 1/4 chunks" in text
    assert any(
        "catalog behind: holds version 1, the store's head is 3 since 10m ago" in p
        for p in rep.problems
    )


def test_a_lane_that_never_loaded_says_so(tmp_path: Path) -> None:
    rep = status.collect(make_config(tmp_path))
    assert rep.catalog is not None
    assert not rep.catalog.exists
    assert "catalog     none yet" in status.render(rep)
