"""Ingest as a shared-subscription worker: a batch that arrives ahead of its predecessor is held
and retried for `ingest.gap_hold_ms` before the lane is asked to resend.

The test is the ingest's writer thread (apply_group called directly) over a real SqliteDatabase;
what another worker would commit in between is played by applying the predecessor later.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest

from headoffice.config import parse
from headoffice.db import SqliteDatabase
from headoffice.ingest import Ingest
from headoffice.projections import PROJECTIONS
from protocol import codec
from protocol.chain import entry_hash, genesis
from protocol.identity import Channel, LaneId, Topics
from protocol.messages import Ack, Entry, JournalBatch

LANE = LaneId("S1", "L1")
EPOCH = 77
TOPIC = Topics().topic(LANE, Channel.JOURNAL)


def chain(n: int) -> list[Entry]:
    out: list[Entry] = []
    prev = genesis(LANE, EPOCH)
    for seq in range(1, n + 1):
        body = msgpack.packb({"kind": "sale", "total": seq})
        txn, ts = str(uuid.uuid4()), 1_700_000_000_000 + seq
        prev = entry_hash(prev, seq, "sale", txn, ts, body)
        out.append(Entry(seq, "sale", txn, ts, body, prev))
    return out


ENTRIES = chain(20)


def batch(first: int, last: int) -> tuple[str, bytes]:
    prev = genesis(LANE, EPOCH) if first == 1 else ENTRIES[first - 2].hash
    return TOPIC, codec.encode(JournalBatch(LANE, EPOCH, prev, ENTRIES[first - 1 : last]))


def make_ingest(path: Path, **ingest: int) -> Ingest:
    cfg = parse(
        {
            "database": {"path": str(path)},
            "broker": {"share_group": "ingest"},
            "ingest": ingest,
        }
    )
    ing = Ingest(cfg)
    # what __aenter__ does on the writer thread, minus MQTT
    ing.applier.database = SqliteDatabase(path, projections=PROJECTIONS)
    return ing


@pytest.fixture
def ingest(tmp_path: Path) -> Iterator[Ingest]:
    ing = make_ingest(tmp_path / "ho.db", gap_hold_ms=300)
    try:
        yield ing
    finally:
        assert ing.applier.database is not None
        ing.applier.database.close()
        ing.shutdown_threads()


def journal_seqs(path: Path) -> list[int]:
    db = sqlite3.connect(path)
    try:
        return [r[0] for r in db.execute("SELECT seq FROM journal ORDER BY rowid")]
    finally:
        db.close()


def test_share_group_defaults_to_a_hold_and_plain_ingest_to_none(tmp_path: Path) -> None:
    shared = parse({"database": {"path": "x.db"}, "broker": {"share_group": "ingest"}})
    assert shared.ingest.gap_hold_ms == 500
    assert parse({"database": {"path": "x.db"}}).ingest.gap_hold_ms == 0


def test_batch_ahead_of_its_predecessor_waits_for_it(ingest: Ingest, tmp_path: Path) -> None:
    assert ingest.applier.apply_group([batch(1, 2)]) == [Ack(LANE, EPOCH, 2)]
    # 5..8 arrives while another worker still holds 3..4: no answer yet, nothing counted
    assert ingest.applier.apply_group([batch(5, 8)]) == []
    assert (ingest.stats.gaps_held, ingest.stats.gaps) == (1, 0)
    # an empty retry (what the apply loop runs when nothing arrives) keeps holding it
    assert ingest.applier.apply_group([]) == []
    # the predecessor arrives: both applied in seq order, one ack, no resend asked
    assert ingest.applier.apply_group([batch(3, 4)]) == [Ack(LANE, EPOCH, 8)]
    assert (ingest.stats.gaps_closed, ingest.stats.gaps) == (1, 0)
    assert journal_seqs(tmp_path / "ho.db") == list(range(1, 9))


def test_held_batches_of_one_lane_apply_in_seq_order(ingest: Ingest, tmp_path: Path) -> None:
    ingest.applier.apply_group([batch(1, 2)])
    assert ingest.applier.apply_group([batch(9, 12), batch(5, 8)]) == []
    assert ingest.applier.apply_group([batch(3, 4)]) == [Ack(LANE, EPOCH, 12)]
    assert journal_seqs(tmp_path / "ho.db") == list(range(1, 13))
    assert ingest.stats.gaps == 0


def test_a_real_gap_is_answered_after_the_hold(ingest: Ingest, tmp_path: Path) -> None:
    ingest.applier.apply_group([batch(1, 2)])
    assert ingest.applier.apply_group([batch(5, 8)]) == []
    time.sleep(0.35)  # gap_hold_ms = 300: the batch before it is really lost
    [ack] = ingest.applier.apply_group([])
    assert isinstance(ack, Ack)
    assert (ack.hwm, ack.resend_from) == (2, 3)
    assert ingest.stats.gaps == 1
    assert journal_seqs(tmp_path / "ho.db") == [1, 2]
    assert ingest.applier.waiting == []  # renamed from _held: "held" now means held entries


def test_without_a_hold_the_gap_is_answered_at_once(tmp_path: Path) -> None:
    ing = make_ingest(tmp_path / "ho.db", gap_hold_ms=0)
    try:
        ing.applier.apply_group([batch(1, 2)])
        [ack] = ing.applier.apply_group([batch(5, 8)])
        assert isinstance(ack, Ack)
        assert ack.resend_from == 3
        assert ing.stats.gaps_held == 0
    finally:
        assert ing.applier.database is not None
        ing.applier.database.close()
        ing.shutdown_threads()
