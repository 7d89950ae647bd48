"""The store registry end to end (issue 14 item 4): a real lane (journal + replicator) of a
store head office does not know, through a real Mosquitto into head-office Ingest, on SQLite
and PostgreSQL (and two PostgreSQL workers on one shared subscription).

The lane of the typo store S01 sells while unregistered: head office acks everything (its
backlog drains to 0), holds every entry (`unregistered store S01`) and applies none. The
catalog then registers S01 (a `stores` load, as `lanesync catalog load stores FILE` does)
while the lane keeps selling: every entry the lane confirmed is applied once, in seq order,
and head office's replica equals the lane's journal.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

from agent import config as agent_config
from agent.journal import Journal
from agent.replicator import Replicator
from headoffice.catalog import load
from headoffice.ingest import Ingest
from lanesync.broker import MosquittoBroker
from protocol.identity import LaneId
from tests.pgutil import Backend, pg_schema

LANE = LaneId("S01", "L1")
BEFORE, DURING = 120, 60


def lane_cfg(tmp_path: Path, port: int) -> agent_config.AgentConfig:
    return agent_config.parse(
        {
            "store": LANE.store,
            "lane": LANE.lane,
            "journal": {"path": str(tmp_path / "lane.db")},
            "api": {"socket": str(tmp_path / "lane.sock")},
            "broker": {"port": port, "keepalive": 5},
            "replication": {
                "linger_ms": 2,
                "batch_max_entries": 20,
                "ack_timeout_s": 2.0,
                "backoff_initial_s": 0.05,
                "backoff_max_s": 0.3,
            },
        }
    )


def load_stores(backend: Backend, tmp_path: Path, *ids: str) -> None:
    path = tmp_path / f"stores-{len(ids)}.csv"
    rows = [f"{i},Store {i},Europe/Amsterdam,EUR,1,1" for i in ids]
    path.write_text("\n".join(["id,name,timezone,currency,can_receive_stock,active", *rows]))
    store = backend.store()
    try:
        assert load.load_file(store.sql, "stores", path).version is not None
    finally:
        store.close()


def sale(n: int) -> dict[str, Any]:
    return {"kind": "sale", "register_no": f"T{10000 + n}", "total": 100 + n}


def lane_journal(path: Path) -> list[tuple[int, str, bytes]]:
    import sqlite3  # noqa: PLC0415

    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT seq, txn_id, hash FROM entries ORDER BY seq").fetchall()
        return [(s, t, bytes(h)) for s, t, h in rows]
    finally:
        db.close()


async def wait_for(what: str, check: Any, timeout: float = 30) -> None:
    async with asyncio.timeout(timeout):
        while not await asyncio.to_thread(check):
            await asyncio.sleep(0.05)
    assert await asyncio.to_thread(check), what


async def run(backend: Backend, tmp_path: Path, port: int, workers: list[Ingest]) -> None:
    load_stores(backend, tmp_path, "S001", "S002")
    cfg = lane_cfg(tmp_path, port)

    def ho_count() -> int:
        return int(backend.query("SELECT count(*) FROM journal WHERE store = 'S01'")[0][0])

    def held_open() -> int:
        return int(
            backend.query("SELECT count(*) FROM held WHERE store = 'S01' AND state = 'held'")[0][0]
        )

    async with contextlib.AsyncExitStack() as stack:
        for w in workers:
            await stack.enter_async_context(w)
        for w in workers:
            await asyncio.wait_for(w.ready.wait(), 10)
        journal = await stack.enter_async_context(Journal(cfg.journal_path, LANE))
        await stack.enter_async_context(Replicator(journal, cfg))
        for n in range(1, BEFORE + 1):
            await journal.append("sale", sale(n))
        async with asyncio.timeout(30):
            while journal.acked_seq < BEFORE:
                await asyncio.sleep(0.02)
        assert journal.backlog == 0  # acked past: nothing waits on the till
        assert ho_count() == 0
        assert backend.query("SELECT count(*) FROM documents WHERE store = 'S01'") == [(0,)]
        assert held_open() == BEFORE
        [(reason,)] = backend.query("SELECT DISTINCT reason FROM held WHERE store = 'S01'")
        assert reason == "unregistered store S01"

        async def sell_on() -> None:
            for n in range(BEFORE + 1, BEFORE + DURING + 1):
                await journal.append("sale", sale(n))
                if n % 10 == 0:
                    await asyncio.sleep(0.01)

        selling = asyncio.create_task(sell_on())
        await asyncio.sleep(0.05)
        await asyncio.to_thread(load_stores, backend, tmp_path, "S001", "S002", "S01")
        await selling
        total = BEFORE + DURING
        async with asyncio.timeout(30):
            while journal.acked_seq < total:
                await asyncio.sleep(0.02)
        await wait_for("every entry applied", lambda: ho_count() == total)
        await wait_for("nothing held", lambda: held_open() == 0)
    order = "id" if backend.is_pg else "rowid"
    ho = backend.query(
        f"SELECT seq, txn_id, hash FROM journal WHERE store = 'S01' ORDER BY {order}"
    )
    # once each, in seq order (the order rows were written), equal to the lane's journal
    assert [(s, t, bytes(h)) for s, t, h in ho] == lane_journal(cfg.journal_path)
    assert backend.query("SELECT count(*) FROM documents WHERE store = 'S01'") == [(total,)]
    released = sum(w.stats.entries_released for w in workers)
    held_total = sum(w.stats.entries_unregistered for w in workers)
    assert released == held_total >= BEFORE


async def test_an_unregistered_lane_is_held_then_applied_once_in_order(
    backend: Backend, broker: MosquittoBroker, tmp_path: Path
) -> None:
    ingest = Ingest(backend.config(broker={"port": broker.port, "keepalive": 5}))
    await run(backend, tmp_path, broker.port, [ingest])


async def test_two_postgres_workers_release_once_in_order(
    broker: MosquittoBroker, tmp_path: Path
) -> None:
    with pg_schema() as url:
        backend = Backend("postgres", url)
        workers = [
            Ingest(
                backend.config(
                    broker={
                        "port": broker.port,
                        "keepalive": 5,
                        "share_group": "ingest",
                        "client_id": f"lanesync-headoffice-{n}",
                    }
                )
            )
            for n in (1, 2)
        ]
        await run(backend, tmp_path, broker.port, workers)
