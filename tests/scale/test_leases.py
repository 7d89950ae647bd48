"""Ingest by store (issue 17.4): PostgreSQL workers owning stores through leases.

The fencing of the lease rows against a real PostgreSQL, then three `lanesync headoffice
--worker N` processes with `ingest.leases` on NATS's MQTT listener (no shared subscriptions),
60 lanes of 15 stores, one worker killed with SIGKILL mid-run: its stores are held by the
others within 5 s, nothing lost, nothing duplicated, order kept, and no batch was ever held
for a predecessor (every worker's `gaps_held` on its heartbeat row stays 0).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from headoffice.db.postgres import PostgresDatabase
from headoffice.ingest.leases import DISCOVERY, LeaseTable, assign, owner
from headoffice.projections import PROJECTIONS
from lanesync import stack
from lanesync.broker import Broker
from lanesync.fleet import Fleet, read_postgres, verify
from tests.pgutil import pg_connect, pg_schema

LANES = 60  # four to a store: 15 stores
RATE = 2.0
REPLICATION = {"ack_timeout_s": 5.0, "backoff_initial_s": 0.1, "backoff_max_s": 1.0}
TAKEOVER_S = 5.0


def test_a_lease_is_held_by_one_worker_until_released_or_expired() -> None:
    with pg_schema() as url:
        PostgresDatabase(url, projections=PROJECTIONS).close()  # schema 9
        a, b = LeaseTable(url, "wa", 0.5), LeaseTable(url, "wb", 0.5)
        try:
            a.add(["S1", "S2"])
            assert a.acquire(["S1"]) == {"S1"}
            assert b.acquire(["S1", "S2"]) == {"S2"}  # S1 is a's
            assert a.beat(_counters()).renewed == {"S1"}
            a.release(["S1"])
            assert b.acquire(["S1"]) == {"S1"}
            assert a.acquire(["S1"]) == set()
            time.sleep(0.7)  # b's leases expire without a heartbeat
            assert a.acquire(["S1"]) == {"S1"}
            beat = b.beat(_counters())
            assert beat.renewed == set()  # b finds S1 gone: it stops accepting it
            assert beat.workers == ["wb"]  # a's heartbeat expired too
            b.leave(_counters())
            assert b.acquire(["S2"]) == {"S2"}
        finally:
            a.close()
            b.close()


def test_rendezvous_moves_only_the_leaving_workers_stores() -> None:
    stores = [f"S{i:04d}" for i in range(300)] + [DISCOVERY]
    three = {s: owner(s, ["w1", "w2", "w3"]) for s in stores}
    two = {s: owner(s, ["w1", "w3"]) for s in stores}
    assert all(two[s] == three[s] for s in stores if three[s] != "w2")


@pytest.mark.parametrize("n", [15, 16, 251])
def test_the_split_is_even_and_a_leaving_worker_moves_little_else(n: int) -> None:
    stores = [f"S{i:04d}" for i in range(1, n)] + [DISCOVERY]
    three = assign(stores, ["w1", "w2", "w3"])
    counts = sorted(sum(1 for o in three.values() if o == w) for w in ("w1", "w2", "w3"))
    assert counts[-1] - counts[0] <= 2, counts
    assert set(three) == set(stores)
    two = assign(stores, ["w1", "w3"])
    moved = [s for s in stores if three[s] != "w2" and two[s] != three[s]]
    assert len(moved) <= max(2, n // 10), moved


def _counters() -> dict[str, int]:
    return dict.fromkeys(("stores", "entries_applied", "gaps", "gaps_held", "takeovers"), 0)


def _holders(url: str) -> dict[str, str | None]:
    with pg_connect(url) as db:
        rows = db.execute(
            "SELECT store, CASE WHEN expires_at > now() THEN holder END FROM ingest_leases "
            "WHERE store <> %s",
            (DISCOVERY,),
        ).fetchall()
    return dict(rows)


def _workers(url: str) -> list[tuple[Any, ...]]:
    with pg_connect(url) as db:
        return db.execute(
            "SELECT worker, gaps_held, takeovers FROM ingest_workers ORDER BY worker"
        ).fetchall()


async def _settled(url: str, workers: set[str], stores: int, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        held = await asyncio.to_thread(_holders, url)
        if len(held) == stores and set(held.values()) == workers:
            return held
        assert time.monotonic() < deadline, f"leases did not settle: {held} {_workers(url)}"
        await asyncio.sleep(0.1)


@pytest.mark.parametrize("broker_kind", ["nats", "mosquitto", "rabbitmq"])
async def test_three_lease_workers_one_killed_stores_taken_over(
    tmp_path: Path, broker: Broker
) -> None:
    with pg_schema() as url:
        workers = stack.headoffice_workers(
            tmp_path, broker.port, 3, database_url=url, share_group=None, leases=True
        )
        ids = {f"lanesync-headoffice-shared-w{n}" for n in (1, 2, 3)}
        try:
            for w in workers:
                w.start()
            for w in workers:
                await asyncio.to_thread(w.wait_notify, "STATUS=subscribed", 60)
            async with Fleet(LANES, broker.port, replication=REPLICATION) as fleet:
                await fleet.wait_connected(30)
                held = await _settled(url, ids, LANES // 4, 20)
                before = await fleet.trickle(RATE, 3.0)
                victim = "lanesync-headoffice-shared-w2"
                its_stores = {s for s, h in held.items() if h == victim}
                assert its_stores
                trickling = asyncio.create_task(fleet.trickle(3 * RATE, 3.0))
                await asyncio.sleep(0.5)  # mid-run: batches of its stores in flight
                acked_before_kill = fleet.acked
                assert workers[1].kill() == -9
                killed_at = time.monotonic()
                now = await _settled(url, ids - {victim}, LANES // 4, TAKEOVER_S + 5)
                taken_over_s = time.monotonic() - killed_at
                after = await trickling
                after += await fleet.trickle(RATE, 2.0)
                await fleet.wait_drained(60)
                confirmed = list(fleet.confirmed())
                lane_stats = fleet.stats()
            for w in (workers[0], workers[2]):
                assert w.proc is not None
                assert w.proc.poll() is None, w.log_tail()
        finally:
            for w in workers:
                w.stop()
        rows, documents = await asyncio.to_thread(read_postgres, url)
        beats = await asyncio.to_thread(_workers, url)
    assert taken_over_s < TAKEOVER_S, taken_over_s
    assert all(now[s] != victim for s in its_stores)
    verdict = verify(confirmed, rows, documents)
    assert verdict.ok, (verdict, lane_stats)
    assert verdict.lanes == LANES
    assert verdict.confirmed == before + after
    assert verdict.at_head_office == verdict.documents == verdict.confirmed
    assert 0 < acked_before_kill < verdict.confirmed
    # every worker's counter of batches held for a predecessor (its last heartbeat, or its
    # clean exit) is 0; the survivors took the victim's stores over
    assert sorted(b[0] for b in beats) == sorted(ids)
    assert [b[1] for b in beats] == [0, 0, 0], beats
    survivors = {b[0]: b[2] for b in beats if b[0] != victim}
    assert sum(survivors.values()) >= LANES // 4, beats
