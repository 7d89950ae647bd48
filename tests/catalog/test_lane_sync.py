"""agent.catalog.sync against a scripted head office: which path it takes, and that every path
ends on head office's view (hash compared) or keeps the version it held."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from agent.catalog.store import CatalogStore
from agent.catalog.sync import CatalogSync
from agent.config import CatalogConfig
from agent.replicator import RequestTimeout
from protocol import catalog as c
from tests.catalog.lane_helpers import LANE, ScriptedHeadOffice, item, items_view, row, view_hash

FAST = CatalogConfig(chunk_rows=10, window=3, retry_initial_s=0.02, retry_max_s=0.05)


async def settle(sync: CatalogSync, version: int, timeout: float = 5.0) -> None:
    """Wait until the lane holds `version` and the sync is caught up with the head."""
    async with asyncio.timeout(timeout):
        while not (sync.version == version and sync.caught_up.is_set()):
            await asyncio.sleep(0.005)


def ops(ho: ScriptedHeadOffice) -> list[str]:
    return [op for op, _ in ho.requests]


async def test_a_new_lane_loads_a_snapshot_in_chunks_with_a_window(tmp_path: Path) -> None:
    ho = ScriptedHeadOffice()
    ho.publish(items_view(95))
    async with (
        CatalogStore(tmp_path / "catalog.db", LANE.store) as store,
        CatalogSync(store, FAST) as sync,
    ):
        sync.on_head(ho.head(), ho.request)
        await settle(sync, 1)
        assert store.held.hash == view_hash(ho.versions[1])
        assert store.held.rows == 95
        chunks = sorted(a["chunk"] for op, a in ho.requests if op == c.OP_SNAPSHOT)
        assert chunks == list(range(10))  # each chunk asked once
        assert sync.stats.snapshots == 1
        assert await store.transfer() is None


async def test_a_small_change_applies_from_the_head_with_no_request(tmp_path: Path) -> None:
    ho = ScriptedHeadOffice()
    view = items_view(20)
    ho.publish(view)
    async with (
        CatalogStore(tmp_path / "catalog.db", LANE.store) as store,
        CatalogSync(store, FAST) as sync,
    ):
        sync.on_head(ho.head(), ho.request)
        await settle(sync, 1)
        ho.requests.clear()
        k, r = row("prices", item="I000003", valid_from="2026-03-01", price=1299)
        view[k] = r
        ho.publish(view)
        sync.on_head(ho.head(), ho.request)
        await settle(sync, 2)
        assert ho.requests == []
        assert sync.stats.inline == 1
        assert store.held.hash == view_hash(view)


async def test_a_lane_that_missed_versions_asks_for_delta_pages(tmp_path: Path) -> None:
    ho = ScriptedHeadOffice()
    ho.page_size = 7
    view = items_view(30)
    ho.publish(view)
    async with (
        CatalogStore(tmp_path / "catalog.db", LANE.store) as store,
        CatalogSync(store, FAST) as sync,
    ):
        sync.on_head(ho.head(), ho.request)
        await settle(sync, 1)
        ho.requests.clear()
        for i in range(0, 30, 2):  # version 2: 15 descriptions changed
            view[("items", f"I{i:06d}")] = item(f"I{i:06d}", description="New text")
        ho.publish(view)
        for i in range(5):  # version 3: 5 removed; the lane hears only of version 3
            del view[("items", f"I{i:06d}")]
        ho.publish(view)
        sync.on_head(ho.head(inline=True), ho.request)  # prev 2 != held 1: not inline
        await settle(sync, 3)
        assert set(ops(ho)) == {c.OP_DELTA}
        assert len(ho.requests) == 3  # 5 removals and 12 changes, in pages of 7
        assert ho.requests[1][1]["after"] == ["items", "I000008"]
        assert (store.held.rows, store.held.hash) == (25, view_hash(view))
        assert sync.stats.deltas == 1


async def test_snapshot_needed_and_a_hash_mismatch_both_end_in_a_snapshot(tmp_path: Path) -> None:
    ho = ScriptedHeadOffice()
    view = items_view(12)
    ho.publish(view)
    async with (
        CatalogStore(tmp_path / "catalog.db", LANE.store) as store,
        CatalogSync(store, FAST) as sync,
    ):
        sync.on_head(ho.head(), ho.request)
        await settle(sync, 1)
        # Head office cannot make a delta from 1 (pruned): it says so, the lane re-loads.
        view[("items", "I000001")] = item("I000001", variant=True)
        ho.publish(view)
        ho.publish(view | {("items", "X1"): item("X1")})
        ho.no_delta_from.add(1)
        sync.on_head(ho.head(inline=False), ho.request)
        await settle(sync, 3)
        assert sync.stats.snapshots == 2
        assert store.held.hash == view_hash(ho.versions[3])
        # An inline delta that does not add up to the head's hash: rolled back, snapshot.
        ho.publish(view)  # version 4 removes X1
        real = ho.hash_of(4)
        ho.corrupt.add(4)
        bad_head = ho.head()
        ho.corrupt.discard(4)
        sync.on_head(bad_head, ho.request)
        async with asyncio.timeout(5):
            while sync.stats.mismatches == 0:
                await asyncio.sleep(0.005)
        # The snapshot it then takes holds head office's true view of version 4, which still
        # differs from the bad head: the lane says so and keeps retrying, never trusting it.
        async with asyncio.timeout(5):
            while sync.stats.failures == 0:
                await asyncio.sleep(0.005)
        assert store.held.version == 4
        assert store.held.hash == real
        sync.on_head(ho.head(), ho.request)  # the true head: caught up
        await settle(sync, 4)


async def test_a_cut_link_mid_snapshot_resumes_from_the_staged_chunks(tmp_path: Path) -> None:
    ho = ScriptedHeadOffice()
    ho.publish(items_view(100))
    path = tmp_path / "catalog.db"
    served = 0

    def cut_after_four(op: str, args: dict[str, Any]) -> None:
        nonlocal served
        served += 1
        if served > 4:
            raise RequestTimeout("head office is unreachable (no broker connection)")

    ho.before = cut_after_four
    async with CatalogStore(path, LANE.store) as store, CatalogSync(store, FAST) as sync:
        sync.on_head(ho.head(), ho.request)
        async with asyncio.timeout(5):
            while sync.stats.failures == 0:
                await asyncio.sleep(0.005)
        assert store.held.version == 0  # nothing half visible
        staged = await store.transfer()
        assert staged is not None
        # Chunks answered before the cut are staged (one in flight when the cut came may be
        # lost with it): at least the first, at most the four served.
        assert 1 <= len(staged.parts) <= 4
    # The agent restarts (a new store and sync on the same file) with the link back.
    ho.before = None
    ho.requests.clear()
    async with CatalogStore(path, LANE.store) as store, CatalogSync(store, FAST) as sync:
        sync.on_head(ho.head(), ho.request)
        await settle(sync, 1)
        fetched = sorted(a["chunk"] for _op, a in ho.requests)
        assert set(fetched).isdisjoint(staged.parts)
        assert len(fetched) == 10 - len(staged.parts)
        assert store.held.hash == view_hash(ho.versions[1])


async def test_an_expired_snapshot_starts_over_at_the_current_version(tmp_path: Path) -> None:
    ho = ScriptedHeadOffice()
    ho.publish(items_view(40))
    path = tmp_path / "catalog.db"
    async with CatalogStore(path, LANE.store) as store:
        first = c.SnapshotReply.from_map(
            (await ho.request(c.OP_SNAPSHOT, {"version": 0, "chunk": 0, "size": 10}, 1)).result
        )
        await store.begin("snapshot", 0, 1, first.hash, first.rows, chunks=4, size=10)
        await store.stage(0, first.changes)
    ho.publish(items_view(41))
    ho.expired.add(1)
    async with CatalogStore(path, LANE.store) as store, CatalogSync(store, FAST) as sync:
        sync.on_head(ho.head(), ho.request)
        await settle(sync, 2)
        assert store.held.hash == view_hash(ho.versions[2])


async def test_offline_the_lane_keeps_its_version_and_retries(tmp_path: Path) -> None:
    ho = ScriptedHeadOffice()
    view = items_view(10)
    ho.publish(view)
    async with (
        CatalogStore(tmp_path / "catalog.db", LANE.store) as store,
        CatalogSync(store, FAST) as sync,
    ):
        sync.on_head(ho.head(), ho.request)
        await settle(sync, 1)
        held = store.held

        def down(op: str, args: dict[str, Any]) -> None:
            raise RequestTimeout("head office is unreachable (no broker connection)")

        ho.before = down
        for i in range(300):
            view[("items", f"N{i}")] = item(f"N{i}")
        ho.publish(view)  # too big to ride inline
        sync.on_head(ho.head(), ho.request)
        async with asyncio.timeout(5):
            while sync.stats.failures < 3:
                await asyncio.sleep(0.005)
        assert store.held == held
        assert store.head_version == 2
        ho.before = None
        await settle(sync, 2)
        assert store.held.rows == 310


async def test_a_head_for_another_store_or_garbage_is_refused(tmp_path: Path) -> None:
    ho = ScriptedHeadOffice(store="S2")
    ho.publish(items_view(3))
    async with (
        CatalogStore(tmp_path / "catalog.db", LANE.store) as store,
        CatalogSync(store, FAST) as sync,
    ):
        sync.on_head(ho.head(), ho.request)
        sync.on_head(b"\xc1 not msgpack", ho.request)
        sync.on_head(b"", ho.request)  # a cleared retained head: withdrawn, not refused
        await asyncio.sleep(0.05)
        assert sync.stats.refused_heads == 2
        assert sync.stats.heads == 3
        assert ho.requests == []
        assert store.held.version == 0


@pytest.mark.parametrize("chunk_rows", [1, c.MAX_SNAPSHOT_CHUNK])
async def test_chunk_sizes_at_both_limits_end_identical(tmp_path: Path, chunk_rows: int) -> None:
    ho = ScriptedHeadOffice()
    ho.publish(items_view(7))
    cfg = CatalogConfig(chunk_rows=chunk_rows, window=4, retry_initial_s=0.02)
    async with (
        CatalogStore(tmp_path / "catalog.db", LANE.store) as store,
        CatalogSync(store, cfg) as sync,
    ):
        sync.on_head(ho.head(), ho.request)
        await settle(sync, 1)
        assert store.held.hash == view_hash(ho.versions[1])


async def test_an_unexpected_failure_is_logged_and_retried_not_fatal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ho = ScriptedHeadOffice()
    ho.publish(items_view(5))
    calls = 0

    def broken_once(op: str, args: dict[str, Any]) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a defect somewhere below the sync")

    ho.before = broken_once
    async with (
        CatalogStore(tmp_path / "catalog.db", LANE.store) as store,
        CatalogSync(store, FAST) as sync,
    ):
        sync.on_head(ho.head(), ho.request)
        await settle(sync, 1)
        assert sync.stats.failures == 1
        assert "unexpected failure" in caplog.text
