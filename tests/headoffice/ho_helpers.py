"""A simulated lane journal that builds head-office batches with real chained hashes, and an
Ingest driven synchronously by the test (the writer thread's apply_group)."""

from __future__ import annotations

import contextlib
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack

from headoffice.db import open_database
from headoffice.ingest import Ingest
from headoffice.projections import PROJECTIONS
from protocol import codec
from protocol.chain import entry_hash, genesis
from protocol.identity import Channel, LaneId, Topics
from protocol.messages import Entry, JournalBatch
from tests.pgutil import Backend

LANE = LaneId("S001", "L01")


def sale_doc(n: int, **extra: Any) -> dict[str, Any]:
    return {"kind": "sale", "register_no": f"T{10000 + n}", "amount": 100 + n, **extra}


def deep_sale(depth: int = 990) -> bytes:
    """A sale whose `ext` is a list nested `depth` deep around a 16-digit run, written by
    hand (msgpack.packb stops at 512): 990 made the card-number walk raise RecursionError."""
    return b"\x82\xa4kind\xa4sale\xa3ext" + b"\x91" * depth + b"\xb0" + b"1234567812345678"


class LaneSim:
    """The entries one lane epoch would journal, chained exactly as agent.journal does."""

    def __init__(self, lane: LaneId = LANE, epoch: int = 1001) -> None:
        self.lane = lane
        self.epoch = epoch
        self.entries: list[Entry] = []

    def head(self) -> bytes:
        return self.entries[-1].hash if self.entries else genesis(self.lane, self.epoch)

    def add(
        self,
        doc: dict[str, Any] | None = None,
        *,
        txn_id: str | None = None,
        kind: str = "sale",
        body: bytes | None = None,
    ) -> Entry:
        seq = len(self.entries) + 1
        if body is None:
            body = msgpack.packb(doc if doc is not None else sale_doc(seq), use_bin_type=True)
        txn = txn_id or str(uuid.uuid4())
        ts = 1_700_000_000_000 + seq
        e = Entry(seq, kind, txn, ts, body, entry_hash(self.head(), seq, kind, txn, ts, body))
        self.entries.append(e)
        return e

    def add_many(self, n: int) -> None:
        for _ in range(n):
            self.add()

    def prev_hash(self, first: int) -> bytes:
        return genesis(self.lane, self.epoch) if first == 1 else self.entries[first - 2].hash

    def batch(self, first: int, last: int) -> JournalBatch:
        return JournalBatch(
            self.lane, self.epoch, self.prev_hash(first), self.entries[first - 1 : last]
        )


def query(path: Path, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Read the head-office file through a separate connection: only what was committed."""
    db = sqlite3.connect(path)
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


@contextlib.contextmanager
def writer_ingest(backend: Backend, **ingest: Any) -> Iterator[Ingest]:
    """An Ingest whose writer thread is the test: apply_group called directly, a real store
    on the backend, no broker (what Ingest.__aenter__ sets up, minus the MQTT session)."""
    cfg = backend.config(ingest=ingest)
    store = open_database(cfg, PROJECTIONS)
    ing = Ingest(cfg, database_factory=lambda: store)
    ing.applier.database = store
    try:
        yield ing
    finally:
        store.close()
        ing.shutdown_threads()


def topic(lane: LaneId, channel: Channel = Channel.JOURNAL) -> str:
    return Topics().topic(lane, channel)


def journal_msg(sim: LaneSim, first: int, last: int) -> tuple[str, bytes]:
    """A (topic, payload) pair of the sim's entries first..last, as MQTT delivers it."""
    return topic(sim.lane), codec.encode(sim.batch(first, last))
