"""SSCC serials leased from head office in blocks (issue 15.5): head office's `sscc_lease`
handler on a real store (SQLite and PostgreSQL), and the lane's lease client on a real
journal file, asking that handler through the request seam (the replicator's request();
tests/stock/test_sscc_e2e.py runs the same over a real broker between real processes)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest

from agent.documents.sscc import NoSerialLeft, SsccLeases, SsccScheme, check_sscc
from agent.journal import Journal
from agent.open_docs.store import LaneStore
from headoffice.db import Database
from headoffice.operations import request_handlers
from headoffice.sscc import server as srv
from protocol.identity import LaneId
from protocol.messages import Reply, Request
from protocol.requests import OP_SSCC_LEASE

A1, A2, B1 = LaneId("A", "L1"), LaneId("A", "L2"), LaneId("B", "L1")
SCHEME = SsccScheme("5703538", "01")


@pytest.fixture
def store(backend: Any) -> Any:
    s = backend.store()
    yield s
    s.close()


def ask(
    store: Database, lane: LaneId, corr: str | None = None, *, raw: bool = False, **args: Any
) -> Reply:
    if type(args.get("epoch")) is int and not raw:
        args["epoch"] = [args["epoch"] >> 32, args["epoch"] & 0xFFFFFFFF]
    req = Request(lane, corr or str(uuid.uuid4()), OP_SSCC_LEASE, args)
    reply = srv.lease(store, req, 1_700_000_000_000)
    store.commit()
    return reply


def test_blocks_never_overlap_across_lanes_epochs_and_retries(store: Database) -> None:
    assert request_handlers()["sscc_lease"] is srv.lease  # registered with head office
    a = ask(store, A1, count=10, epoch=1)
    b = ask(store, B1, count=5, epoch=(1 << 62) | 9)
    retry_corr = str(uuid.uuid4())
    c = ask(store, A1, retry_corr, count=3, epoch=2)  # A/L1's journal recreated: epoch 2
    again = ask(store, A1, retry_corr, count=3, epoch=2)  # the same request retried
    d = ask(store, A2, count=1, epoch=1)
    blocks = [(r.result["first"], r.result["last"]) for r in (a, b, c, d)]
    assert blocks == [(1, 10), (11, 15), (16, 18), (19, 19)]
    assert again.ok
    assert (again.result["first"], again.result["last"]) == (16, 18)
    rows = srv.leases(store)
    assert [(r["store"], r["lane"], r["epoch"], r["first"], r["last"]) for r in rows] == [
        ("A", "L1", 1, 1, 10),
        ("B", "L1", (1 << 62) | 9, 11, 15),
        ("A", "L1", 2, 16, 18),
        ("A", "L2", 1, 19, 19),
    ]
    assert [r["store"] for r in srv.leases(store, "B")] == ["B"]
    stolen = ask(store, B1, retry_corr, count=3, epoch=2)  # another lane reusing the id
    assert not stolen.ok
    assert stolen.result["code"] == "bad_request"


def test_refusals_name_the_field_and_the_exhausted_range(store: Database) -> None:
    for args, field in (
        ({"count": 0, "epoch": 1}, "count"),
        ({"count": srv.MAX_BLOCK + 1, "epoch": 1}, "count"),
        ({"count": "5", "epoch": 1}, "count"),
        ({"count": 5}, "epoch"),
        ({"count": 5, "epoch": 4611686018427387905}, "epoch"),  # not as halves
        ({"count": 5, "epoch": [1 << 31, 0]}, "epoch"),
        ({"count": 5, "epoch": 1, "size": 2}, "size"),
    ):
        r = ask(store, A1, raw=True, **args)
        assert not r.ok, args
        assert (r.result["code"], r.result["field"]) == ("bad_request", field), r
        assert field in (r.error or "")
    assert ask(store, A1, count=8, epoch=1, max=10).ok
    full = ask(store, A1, count=8, epoch=1, max=10)
    assert not full.ok
    assert full.result["code"] == "exhausted"
    assert "used up to 8" in (full.error or "")
    assert srv.leases(store)[-1]["last"] == 8  # nothing recorded for the refusal


async def _sscc(lanes: LaneStore) -> str:
    return SCHEME.make(await lanes.next_sscc_serial())


async def test_lane_leases_blocks_uses_them_offline_and_asks_before_running_out(
    tmp_path: Path, store: Database
) -> None:
    online = True
    asked: list[int] = []

    async def request(op: str, args: dict[str, Any], timeout: float) -> Reply:
        if not online:
            raise TimeoutError("head office is unreachable (test: link down)")
        hi, lo = args["epoch"]
        asked.append(hi << 32 | lo)
        reply = srv.lease(store, Request(A1, str(uuid.uuid4()), op, args), 1)
        store.commit()
        return reply

    seen: list[str] = []
    path = tmp_path / "journal.db"
    async with Journal(path, A1) as journal, LaneStore(path) as lanes:
        first_epoch = journal.epoch
        async with SsccLeases(
            path, journal.epoch, request, SCHEME, block=4, low_water=2, poll_s=0.02
        ) as leases:
            for _ in range(100):
                if await leases.remaining() >= 2:
                    break
                await asyncio.sleep(0.02)
            assert await leases.remaining() == 4  # one block of 4 at start
            online = False  # the link goes down: the block serves transits offline
            seen += [await _sscc(lanes) for _ in range(4)]
            with pytest.raises(NoSerialLeft, match="no SSCC serial left"):
                await _sscc(lanes)
            online = True  # back: the client asks by itself
            for _ in range(200):
                if await leases.remaining() >= 2:
                    break
                await asyncio.sleep(0.02)
            # below the low-water mark (2) it asked again before running out
            seen += [await _sscc(lanes) for _ in range(3)]
            for _ in range(200):
                if await leases.remaining() >= 2:
                    break
                await asyncio.sleep(0.02)
            assert await leases.remaining() >= 2
            seen += [await _sscc(lanes) for _ in range(2)]
    # the journal is recreated (a new epoch, or a replaced box): nothing of it is kept
    for p in tmp_path.glob("journal.db*"):
        p.unlink()
    async with Journal(path, A1) as journal, LaneStore(path) as lanes:
        assert journal.epoch != first_epoch
        async with SsccLeases(
            path, journal.epoch, request, SCHEME, block=4, low_water=2, poll_s=0.02
        ) as leases:
            for _ in range(100):
                if await leases.remaining() >= 2:
                    break
                await asyncio.sleep(0.02)
            seen += [await _sscc(lanes) for _ in range(3)]
    assert len(seen) == 12
    assert len(set(seen)) == len(seen), seen  # no SSCC twice, across both epochs
    for s in seen:
        check_sscc(s, "sscc")
    assert set(asked) == {first_epoch, journal.epoch}
    epochs = {r["epoch"] for r in srv.leases(store)}
    assert epochs == {first_epoch, journal.epoch}


async def test_a_lane_that_never_leased_keeps_its_local_counter(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    async with Journal(path, A1), LaneStore(path) as lanes:
        assert [await lanes.next_sscc_serial() for _ in range(3)] == [1, 2, 3]
