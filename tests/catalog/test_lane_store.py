"""agent.catalog.store: a version becomes visible whole, hash-checked, and staging survives."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from agent.catalog.store import CatalogStore, CatalogStoreError, HashMismatch
from protocol import catalog as c
from tests.catalog.lane_helpers import LANE, ScriptedHeadOffice, item, items_view, row, view_hash


def count_rows(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return int(db.execute("SELECT count(*) FROM rows").fetchone()[0])
    finally:
        db.close()


async def load_snapshot(store: CatalogStore, ho: ScriptedHeadOffice, size: int = 10) -> None:
    first = c.SnapshotReply.from_map(
        (await ho.request(c.OP_SNAPSHOT, {"version": 0, "chunk": 0, "size": size}, 1)).result
    )
    await store.begin(
        "snapshot", 0, first.version, first.hash, first.rows, chunks=first.chunks, size=size
    )
    await store.stage(0, first.changes)
    for i in range(1, first.chunks):
        args = {"version": first.version, "chunk": i, "size": size}
        rep = c.SnapshotReply.from_map((await ho.request(c.OP_SNAPSHOT, args, 1)).result)
        await store.stage(i, rep.changes)
    await store.finish()


async def test_a_snapshot_staged_in_chunks_becomes_the_held_version_whole(tmp_path: Path) -> None:
    ho = ScriptedHeadOffice()
    ho.publish(items_view(35))
    path = tmp_path / "catalog.db"
    async with CatalogStore(path, LANE.store) as store:
        assert store.held.version == 0
        await load_snapshot(store, ho)
        assert store.held.version == 1
        assert store.held.rows == 35
        assert store.held.hash == view_hash(ho.versions[1])
    async with CatalogStore(path, LANE.store) as store:  # what was committed is what reopens
        assert (store.held.version, store.held.rows) == (1, 35)
        assert await store.transfer() is None
    assert count_rows(path) == 35


async def test_an_inline_delta_applies_and_keeps_the_additive_hash(tmp_path: Path) -> None:
    ho = ScriptedHeadOffice()
    view = items_view(5)
    ho.publish(view)
    async with CatalogStore(tmp_path / "catalog.db", LANE.store) as store:
        await load_snapshot(store, ho)
        view[("items", "I000001")] = item("I000001", description="Renamed")
        del view[("items", "I000002")]
        k, r = row("prices", item="I000001", valid_from="2026-01-01", price=998)
        view[k] = r
        v2 = ho.publish(view)
        changes = ho.changes(1, v2)
        held = await store.apply_delta(1, v2, changes, ho.hash_of(v2), len(view))
        assert (held.version, held.rows) == (2, 5)
        assert held.hash == view_hash(view)


async def test_a_delta_whose_hash_differs_changes_nothing(tmp_path: Path) -> None:
    ho = ScriptedHeadOffice()
    view = items_view(5)
    ho.publish(view)
    path = tmp_path / "catalog.db"
    async with CatalogStore(path, LANE.store) as store:
        await load_snapshot(store, ho)
        before = store.held
        del view[("items", "I000000")]
        v2 = ho.publish(view)
        ho.corrupt.add(v2)
        with pytest.raises(HashMismatch, match=r"version 2.*not applied"):
            await store.apply_delta(1, v2, ho.changes(1, v2), ho.hash_of(v2), len(view))
        assert store.held == before
    assert count_rows(path) == 5  # the removal was rolled back with the rest


async def test_a_snapshot_that_does_not_add_up_is_dropped_and_the_old_version_kept(
    tmp_path: Path,
) -> None:
    ho = ScriptedHeadOffice()
    ho.publish(items_view(12))
    async with CatalogStore(tmp_path / "catalog.db", LANE.store) as store:
        await load_snapshot(store, ho)
        ho.publish(items_view(20))
        ho.corrupt.add(2)
        with pytest.raises(HashMismatch):
            await load_snapshot(store, ho)
        assert (store.held.version, store.held.rows) == (1, 12)
        assert await store.transfer() is None


async def test_staged_chunks_survive_a_reopen_and_finish_later(tmp_path: Path) -> None:
    ho = ScriptedHeadOffice()
    ho.publish(items_view(30))
    path = tmp_path / "catalog.db"
    async with CatalogStore(path, LANE.store) as store:
        first = c.SnapshotReply.from_map(
            (await ho.request(c.OP_SNAPSHOT, {"version": 0, "chunk": 0, "size": 10}, 1)).result
        )
        await store.begin("snapshot", 0, 1, first.hash, first.rows, chunks=3, size=10)
        await store.stage(0, first.changes)
        rep = c.SnapshotReply.from_map(
            (await ho.request(c.OP_SNAPSHOT, {"version": 1, "chunk": 2, "size": 10}, 1)).result
        )
        await store.stage(2, rep.changes)
        with pytest.raises(CatalogStoreError, match="2 of 3 chunks"):
            await store.finish()
    assert count_rows(path) == 0  # nothing visible before the whole snapshot is in
    async with CatalogStore(path, LANE.store) as store:
        t = await store.transfer()
        assert t is not None
        assert (t.kind, t.target, t.chunks, t.size, t.parts) == (
            "snapshot",
            1,
            3,
            10,
            frozenset({0, 2}),
        )
        rep = c.SnapshotReply.from_map(
            (await ho.request(c.OP_SNAPSHOT, {"version": 1, "chunk": 1, "size": 10}, 1)).result
        )
        await store.stage(1, rep.changes)
        held = await store.finish()
        assert (held.version, held.rows, held.hash) == (1, 30, view_hash(ho.versions[1]))


async def test_a_catalog_file_of_another_store_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "catalog.db"
    async with CatalogStore(path, "S1"):
        pass
    with pytest.raises(CatalogStoreError, match=r"holds store S1's view.*store S2"):
        async with CatalogStore(path, "S2"):
            pass


async def test_the_newest_head_seen_is_kept_for_status(tmp_path: Path) -> None:
    path = tmp_path / "catalog.db"
    async with CatalogStore(path, LANE.store) as store:
        await store.note_head(7, 123)
    async with CatalogStore(path, LANE.store) as store:
        assert (store.head_version, store.head_at) == (7, 123)


async def test_a_chunk_staged_twice_counts_once(tmp_path: Path) -> None:
    ho = ScriptedHeadOffice()
    ho.publish(items_view(20))
    async with CatalogStore(tmp_path / "catalog.db", LANE.store) as store:
        chunks = [
            c.SnapshotReply.from_map(
                (await ho.request(c.OP_SNAPSHOT, {"version": 1, "chunk": i, "size": 10}, 1)).result
            )
            for i in range(2)
        ]
        await store.begin("snapshot", 0, 1, chunks[0].hash, 20, chunks=2, size=10)
        for i in (0, 1, 0):  # chunk 0's reply arrives again (a retried request)
            await store.stage(i, chunks[i].changes)
        held = await store.finish()
        assert (held.rows, held.hash) == (20, view_hash(ho.versions[1]))


async def test_chunks_that_repeat_a_row_are_refused_whole(tmp_path: Path) -> None:
    ho = ScriptedHeadOffice()
    ho.publish(items_view(20))
    async with CatalogStore(tmp_path / "catalog.db", LANE.store) as store:
        first = c.SnapshotReply.from_map(
            (await ho.request(c.OP_SNAPSHOT, {"version": 1, "chunk": 0, "size": 10}, 1)).result
        )
        await store.begin("snapshot", 0, 1, first.hash, 20, chunks=2, size=10)
        await store.stage(0, first.changes)
        await store.stage(1, first.changes)  # chunk 1 "holds" chunk 0's rows again
        with pytest.raises(HashMismatch, match="repeat a row"):
            await store.finish()
        assert store.held.version == 0
        assert await store.transfer() is None  # dropped: it cannot become right
