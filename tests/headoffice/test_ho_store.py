"""Head-office stores + plan_batch: exactly-once apply, gaps, chain checks, quarantine and
counters. Every store test runs on SQLite and on PostgreSQL (the `backend` fixture)."""

from __future__ import annotations

from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import msgpack
import pytest

from headoffice.db import Database, SqliteDatabase
from headoffice.db.base import LaneState, plan_batch
from headoffice.projections import PROJECTIONS
from protocol.chain import genesis
from protocol.identity import LaneId
from protocol.messages import Entry, JournalBatch, Status
from protocol.runtime import migrations as schema
from tests.headoffice.ho_helpers import LANE, LaneSim, query, sale_doc
from tests.pgutil import Backend

NOW = 1_700_000_000_000


@pytest.fixture
def store(backend: Backend) -> Iterator[Database]:
    s = backend.store()
    yield s
    s.close()


@pytest.fixture
def sim() -> LaneSim:
    s = LaneSim()
    s.add_many(10)
    return s


def counters(backend: Backend) -> dict[str, int]:
    return dict(backend.query("SELECT name, value FROM counters"))


def count(backend: Backend, table: str) -> int:
    return int(backend.query(f"SELECT count(*) FROM {table}")[0][0])


def test_sqlite_schema_and_pragmas(tmp_path: Path) -> None:
    path = tmp_path / "ho.db"
    store = SqliteDatabase(path, projections=PROJECTIONS)
    try:
        assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert store.db.execute("PRAGMA synchronous").fetchone()[0] == 2
    finally:
        store.close()
    latest = max(schema.load(resources.files("headoffice.db.schema").iterdir()))
    assert query(path, "PRAGMA user_version") == [(latest,)]


def test_in_order_batches_advance_hwm(store: Database, sim: LaneSim, backend: Backend) -> None:
    res = store.apply_batch(sim.batch(1, 3), NOW)
    assert (res.hwm, res.applied, res.redelivered, res.resend_from, res.reason) == (
        3,
        3,
        0,
        None,
        None,
    )
    store.commit()
    res = store.apply_batch(sim.batch(4, 6), NOW)
    assert (res.hwm, res.applied) == (6, 3)
    store.commit()
    state = store.lane_state(LANE, sim.epoch)
    assert state is not None
    assert (state.hwm, state.last_hash) == (6, sim.entries[5].hash)
    assert backend.query("SELECT hwm, last_hash FROM lanes") == [(6, sim.entries[5].hash)]
    assert count(backend, "documents") == 6
    stored = backend.query("SELECT seq, txn_id, body, hash, applied FROM journal ORDER BY seq")
    assert [(r[0], r[1], r[2], r[3], r[4]) for r in stored] == [
        (e.seq, e.txn_id, e.body, e.hash, 1) for e in sim.entries[:6]
    ]


def test_redelivered_batch_applies_nothing(store: Database, sim: LaneSim, backend: Backend) -> None:
    store.apply_batch(sim.batch(1, 3), NOW)
    store.commit()
    res = store.apply_batch(sim.batch(1, 3), NOW)
    assert (res.hwm, res.applied, res.redelivered, res.quarantined) == (3, 0, 3, False)
    store.commit()
    assert count(backend, "journal") == 3
    assert count(backend, "documents") == 3
    assert backend.query("SELECT redelivered FROM lanes") == [(3,)]
    assert counters(backend)["entries_redelivered"] == 3


def test_overlapping_batch_applies_only_new_tail(
    store: Database, sim: LaneSim, backend: Backend
) -> None:
    store.apply_batch(sim.batch(1, 3), NOW)
    res = store.apply_batch(sim.batch(2, 6), NOW)
    assert (res.hwm, res.applied, res.redelivered) == (6, 3, 2)
    store.commit()
    assert [r[0] for r in backend.query("SELECT seq FROM journal ORDER BY seq")] == [
        1,
        2,
        3,
        4,
        5,
        6,
    ]
    assert count(backend, "documents") == 6


def test_gap_asks_for_resend_and_stores_nothing(
    store: Database, sim: LaneSim, backend: Backend
) -> None:
    store.apply_batch(sim.batch(1, 3), NOW)
    store.commit()
    res = store.apply_batch(sim.batch(5, 7), NOW)
    assert (res.hwm, res.applied, res.resend_from) == (3, 0, 4)
    assert res.reason == "gap: expected seq 4, batch starts at 5"
    store.commit()
    assert count(backend, "journal") == 3
    assert backend.query("SELECT hwm, gaps, lane_last_seq FROM lanes") == [(3, 1, 7)]
    assert counters(backend)["gaps"] == 1
    # a gap from the very start asks for seq 1
    other = LaneSim(LaneId("S001", "L02"))
    other.add_many(3)
    assert store.apply_batch(other.batch(2, 3), NOW).resend_from == 1


def test_wrong_prev_hash_refused(store: Database, sim: LaneSim, backend: Backend) -> None:
    store.apply_batch(sim.batch(1, 3), NOW)
    good = sim.batch(4, 6)
    bad = JournalBatch(good.lane, good.epoch, b"\x00" * 32, good.entries)
    res = store.apply_batch(bad, NOW)
    assert res.quarantined
    assert (res.hwm, res.applied, res.resend_from) == (3, 0, None)
    assert res.reason is not None
    assert "hash chain broken before seq 4" in res.reason
    store.commit()
    assert count(backend, "journal") == 3
    # the genuine batch still applies afterwards
    assert store.apply_batch(good, NOW).applied == 3


@pytest.mark.parametrize("what", ["hash", "body", "kind_field"])
def test_tampered_entry_refused_valid_prefix_applied(
    store: Database, sim: LaneSim, backend: Backend, what: str
) -> None:
    store.apply_batch(sim.batch(1, 3), NOW)
    batch = sim.batch(4, 8)
    entries = list(batch.entries)
    e = entries[2]  # seq 6
    if what == "hash":
        entries[2] = e._replace(hash=bytes(32))
    elif what == "body":
        entries[2] = e._replace(body=msgpack.packb(sale_doc(6, amount=1)))
    else:
        entries[2] = e._replace(ts=e.ts + 1)
    res = store.apply_batch(JournalBatch(batch.lane, batch.epoch, batch.prev_hash, entries), NOW)
    assert res.quarantined
    assert res.reason is not None
    assert res.reason.startswith("hash chain broken at seq 6:")
    assert (res.hwm, res.applied) == (5, 2)
    store.commit()
    assert [r[0] for r in backend.query("SELECT seq FROM journal ORDER BY seq")] == [1, 2, 3, 4, 5]
    assert backend.query("SELECT hwm, last_hash FROM lanes") == [(5, sim.entries[4].hash)]
    # the lane resending the genuine entries carries on from the valid prefix
    res = store.apply_batch(sim.batch(4, 8), NOW)
    assert (res.hwm, res.applied, res.redelivered) == (8, 3, 2)


def test_txn_replayed_under_new_epoch_applied_once(store: Database, backend: Backend) -> None:
    old = LaneSim(epoch=1)
    shared_txn = "0190f3a4-7b2c-7def-8a01-23456789abcd"
    old.add(sale_doc(1), txn_id=shared_txn)
    old.add()
    store.apply_batch(old.batch(1, 2), NOW)
    store.commit()

    # the lane's journal was recreated (new epoch) and the POS resubmitted the same document
    new = LaneSim(epoch=2)
    new.add(sale_doc(1), txn_id=shared_txn)
    new.add()
    res = store.apply_batch(new.batch(1, 2), NOW)
    assert (res.hwm, res.applied, res.duplicate_txn) == (2, 1, 1)
    store.commit()
    assert count(backend, "documents") == 3
    assert backend.query("SELECT epoch, seq FROM documents WHERE txn_id = ?", (shared_txn,)) == [
        (1, 1)
    ]
    assert backend.query(
        "SELECT epoch, seq, applied FROM journal WHERE txn_id = ? ORDER BY epoch",
        (shared_txn,),
    ) == [(1, 1, 1), (2, 1, 0)]
    assert backend.query("SELECT epoch, hwm FROM lanes ORDER BY epoch") == [(1, 2), (2, 2)]
    assert counters(backend)["duplicate_txn_ids"] == 1


def test_same_txn_twice_in_one_batch_applied_once(store: Database, backend: Backend) -> None:
    sim = LaneSim()
    txn = "0190f3a4-7b2c-7def-8a01-000000000001"
    sim.add(sale_doc(1), txn_id=txn)
    sim.add(sale_doc(1), txn_id=txn)
    res = store.apply_batch(sim.batch(1, 2), NOW)
    assert (res.hwm, res.applied, res.duplicate_txn) == (2, 1, 1)
    store.commit()
    assert backend.query("SELECT seq, applied FROM journal ORDER BY seq") == [(1, 1), (2, 0)]


@pytest.mark.parametrize(
    "extra",
    [
        {"note": "paid with 4111 1111 1111 1111"},
        {"payments": [{"pan": "5555-5555-5555-4444"}]},
        {"card": 378282246310005},  # an integer PAN is a card number too
    ],
)
def test_pan_body_refused(store: Database, backend: Backend, extra: dict[str, object]) -> None:
    """The entry is held at its seq (the mark and the chain move past it) and its card
    number is nowhere: not in the reason, not in any file of the database."""
    sim = LaneSim()
    sim.add()
    sim.add(sale_doc(2, **extra))
    sim.add()
    res = store.apply_batch(sim.batch(1, 3), NOW)
    assert not res.quarantined
    assert (res.hwm, res.applied, res.held) == (3, 2, 1)
    store.commit()
    [(seq, code, reason)] = backend.query("SELECT seq, code, reason FROM held")
    assert (seq, code) == (2, "card_number")
    assert reason.startswith("entry seq 2: $.")
    assert "card number" in reason
    assert not any(pan in reason for pan in ("4111", "5555", "3782"))
    assert backend.query("SELECT seq FROM journal ORDER BY seq") == [(1,), (3,)]
    assert backend.query("SELECT hwm, last_hash FROM lanes") == [(3, sim.entries[2].hash)]
    pan_body = sim.entries[1].body
    if backend.is_pg:
        # Every byte column head office writes: none holds the entry.
        held = backend.query(
            "SELECT body FROM journal UNION ALL SELECT raw FROM quarantine "
            "UNION ALL SELECT body_masked FROM held"
        )
        assert all(pan_body not in bytes(r[0]) for r in held)
    else:
        files = [p for p in Path(backend.target).parent.iterdir() if p.name.startswith("ho.db")]
        assert pan_body not in b"".join(p.read_bytes() for p in files)


def test_quarantine_dedupes(store: Database, backend: Backend) -> None:
    topic = "lanesync/v1/S001/L01/journal"
    store.quarantine(topic, LANE, "bad", b"\x01\x02", NOW)
    store.quarantine(topic, LANE, "bad", b"\x01\x02", NOW + 5)
    store.quarantine(topic, LANE, "worse", b"\x01\x02", NOW + 6)
    store.quarantine(topic, None, "bad", b"\x03", NOW + 7)
    store.commit()
    assert backend.query(
        "SELECT topic, store, lane, reason, raw, times, first_at, last_at FROM quarantine "
        "ORDER BY id",
    ) == [
        (topic, "S001", "L01", "bad", b"\x01\x02", 2, NOW, NOW + 5),
        (topic, "S001", "L01", "worse", b"\x01\x02", 1, NOW + 6, NOW + 6),
        (topic, None, None, "bad", b"\x03", 1, NOW + 7, NOW + 7),
    ]
    assert counters(backend)["quarantined"] == 4


def test_rollback_drops_lane_cache(store: Database, sim: LaneSim, backend: Backend) -> None:
    store.apply_batch(sim.batch(1, 3), NOW)
    store.commit()
    res = store.apply_batch(sim.batch(4, 6), NOW)
    assert res.hwm == 6
    store.quarantine("t", LANE, "r", b"", NOW)
    store.rollback()
    state = store.lane_state(LANE, sim.epoch)
    assert state is not None
    assert state.hwm == 3  # read back from the database, not the rolled-back cache
    assert count(backend, "journal") == 3
    assert count(backend, "quarantine") == 0
    res = store.apply_batch(sim.batch(4, 6), NOW)
    assert (res.hwm, res.applied, res.redelivered) == (6, 3, 0)
    store.commit()
    assert backend.query("SELECT hwm FROM lanes") == [(6,)]
    assert "quarantined" not in counters(backend)  # rolled-back counters are not persisted


def test_rollback_of_a_new_lane(store: Database, sim: LaneSim, backend: Backend) -> None:
    store.apply_batch(sim.batch(1, 3), NOW)
    store.rollback()
    assert store.lane_state(LANE, sim.epoch) is None
    assert store.apply_batch(sim.batch(1, 3), NOW).applied == 3
    store.commit()
    assert count(backend, "documents") == 3


def test_commit_persists_counters(store: Database, sim: LaneSim, backend: Backend) -> None:
    store.commit()  # nothing to do outside a transaction
    assert counters(backend) == {}
    store.apply_batch(sim.batch(1, 3), NOW)
    store.apply_batch(sim.batch(2, 4), NOW)
    store.commit()
    assert counters(backend) == {"entries_applied": 4, "entries_redelivered": 2}
    store.apply_batch(sim.batch(5, 6), NOW)
    store.apply_batch(sim.batch(8, 8), NOW)
    store.commit()
    assert counters(backend) == {"entries_applied": 6, "entries_redelivered": 2, "gaps": 1}


def test_hello_and_status(store: Database, backend: Backend) -> None:
    state = store.note_hello(LANE, 5, 42, NOW)
    assert (state.hwm, state.lane_last_seq, state.last_hash) == (0, 42, genesis(LANE, 5))
    store.save_status(Status(LANE, "online", "0.1.0", 7, NOW))
    store.save_status(Status(LANE, "offline", "0.1.0", 9, NOW + 1))
    store.commit()
    assert backend.query("SELECT epoch, hwm, lane_last_seq, last_seen FROM lanes") == [
        (5, 0, 42, NOW)
    ]
    assert backend.query("SELECT state, backlog, at FROM lane_status") == [("offline", 9, NOW + 1)]


def test_reopen_keeps_hwm(backend: Backend, sim: LaneSim) -> None:
    s = backend.store()
    s.apply_batch(sim.batch(1, 4), NOW)
    s.commit()
    s.apply_batch(sim.batch(5, 6), NOW)  # not committed: lost on close, lane will resend
    s.close()
    s = backend.store()
    try:
        state = s.lane_state(LANE, sim.epoch)
        assert state is not None
        assert (state.hwm, state.last_hash) == (4, sim.entries[3].hash)
        res = s.apply_batch(sim.batch(3, 7), NOW)
        assert (res.hwm, res.applied, res.redelivered) == (7, 3, 2)
        s.commit()
    finally:
        s.close()
    assert count(backend, "documents") == 7


# --- plan_batch as a pure function ----------------------------------------------------------


def state_at(sim: LaneSim, hwm: int) -> LaneState:
    last = sim.entries[hwm - 1].hash if hwm else genesis(sim.lane, sim.epoch)
    return LaneState(sim.lane, sim.epoch, hwm, last)


@pytest.mark.parametrize(
    ("hwm", "first", "last", "new", "redelivered", "gap"),
    [
        (0, 1, 3, [1, 2, 3], 0, None),
        (3, 1, 3, [], 3, None),
        (3, 1, 2, [], 2, None),
        (3, 2, 5, [4, 5], 2, None),
        (3, 4, 4, [4], 0, None),
        (3, 5, 6, [], 0, 4),
        (0, 2, 2, [], 0, 1),
    ],
)
def test_plan_batch(
    sim: LaneSim, hwm: int, first: int, last: int, new: list[int], redelivered: int, gap: int | None
) -> None:
    plan = plan_batch(state_at(sim, hwm), sim.batch(first, last))
    assert [e.seq for e in plan.new] == new
    assert (plan.redelivered, plan.gap_from, plan.refusal) == (redelivered, gap, None)


def test_plan_overlap_checks_batch_and_link(sim: LaneSim) -> None:
    # An overlapping batch must chain from its own prev_hash, and the entry before its new tail
    # must be the one head office holds.
    b = sim.batch(2, 5)
    assert [e.seq for e in plan_batch(state_at(sim, 3), b).new] == [4, 5]
    plan = plan_batch(state_at(sim, 3), JournalBatch(b.lane, b.epoch, bytes(32), b.entries))
    assert plan.new == []
    assert plan.refusal is not None
    assert plan.refusal.startswith("hash chain broken at seq 2")
    other = LaneSim(epoch=sim.epoch + 1)
    other.add_many(5)
    plan = plan_batch(state_at(sim, 3), other.batch(2, 5))
    assert plan.new == []
    assert plan.refusal is not None
    assert "seq 4" in plan.refusal


def _stocked(sim: LaneSim, n: int) -> None:
    """n documents moving stock: sales of one item each, every tenth a refund of two."""
    for _ in range(n):
        k = len(sim.entries) + 1
        refund = k % 10 == 0
        line = {"item": f"P{k % 5}", "qty": "2.000" if refund else "1.000"}
        sim.add(sale_doc(k, lines=[line]), kind="sale_refund" if refund else "sale")


def _moved(entries: list[Entry]) -> dict[str, int]:
    """The stock the applied `entries` move, by item, read from their bodies."""
    out: dict[str, int] = {}
    for e in entries:
        (line,) = msgpack.unpackb(e.body)["lines"]
        qty = int(line["qty"].replace(".", ""))
        out[line["item"]] = out.get(line["item"], 0) + (qty if e.kind == "sale_refund" else -qty)
    return out


def _trace(store: Database) -> list[str]:
    """The SQL the SQLite store runs from now on (nothing on PostgreSQL)."""
    seen: list[str] = []
    if isinstance(store, SqliteDatabase):
        store.db.set_trace_callback(seen.append)
    return seen


def test_flush_all_new_then_duplicates_mixed_in(store: Database, backend: Backend) -> None:
    """A flush of new documents only, then one where resubmissions (same store, same body),
    conflicts (other content; another store) and a txn_id twice in the flush come between
    new ones, across several lanes, in numbers that span every INSERT size (SQLite: 128 rows
    down to 1): each document applied once, the rest journaled unapplied or held, as the
    rules say, and stock moved by the applied ones only."""
    first = LaneSim(epoch=1)
    _stocked(first, 300)
    trace = _trace(store)
    for lo in range(1, 301, 100):
        store.apply_batch(first.batch(lo, lo + 99), NOW, defer=True)
    store.commit()
    if isinstance(store, SqliteDatabase):  # all new: inserted at once, nothing read first
        assert not [s for s in trace if s.startswith(("SELECT txn_id FROM documents", "ROLLBACK"))]
        # 300 rows in 128 + 128 + 32 + 8 + 4: five statements each (the journal's as well)
        assert sum(s.startswith("INSERT INTO documents") for s in trace) == 5
        assert sum(s.startswith("INSERT INTO journal") for s in trace) == 5
    assert count(backend, "documents") == 300
    trace.clear()

    second = LaneSim(epoch=2)  # the same lane's recreated journal
    other = LaneSim(LaneId("S002", "L01"), epoch=3)  # another store
    applied: list[Entry] = []
    flags: dict[tuple[int, int], int] = {}  # (epoch, seq) -> applied
    held: set[tuple[str, int, int]] = set()
    twice = "0190f3a4-7b2c-7def-8a01-0000000000aa"
    for k in range(1, 238):
        old = first.entries[k - 1]
        if k % 7 == 0:  # the POS resubmitted it: a duplicate
            e = second.add(txn_id=old.txn_id, kind=old.kind, body=old.body)
        elif k == 50:  # the same txn_id with other content: held, the first one stands
            e = second.add(sale_doc(999), txn_id=old.txn_id)
            held.add(("S001", 2, e.seq))
            continue
        elif k in (100, 101):  # one txn_id twice in the flush: applied once
            e = second.add(sale_doc(100, lines=[{"item": "P9", "qty": "1.000"}]), txn_id=twice)
            if k == 100:
                applied.append(e)
            flags[(2, e.seq)] = int(k == 100)
            continue
        else:
            _stocked(second, 1)
            e = second.entries[-1]
            applied.append(e)
        flags[(2, e.seq)] = int(k % 7 != 0)
    for k in range(1, 12):
        if k == 5:  # another store's txn_id: held, never displacing the document
            e = other.add(sale_doc(5), txn_id=first.entries[4].txn_id)
            held.add(("S002", 3, e.seq))
        else:
            _stocked(other, 1)
            applied.append(other.entries[-1])
            flags[(3, other.entries[-1].seq)] = 1
    store.apply_batch(second.batch(1, 120), NOW, defer=True)
    store.apply_batch(other.batch(1, 11), NOW, defer=True)
    store.apply_batch(second.batch(121, 237), NOW, defer=True)
    store.commit()
    if isinstance(store, SqliteDatabase):  # some held already: undone, then looked up first
        assert any(s.startswith("ROLLBACK TO") for s in trace)

    news = len(applied)
    assert count(backend, "documents") == 300 + news
    journal = backend.query("SELECT epoch, seq, applied FROM journal WHERE epoch > 1")
    assert {(r[0], r[1]): r[2] for r in journal} == flags
    assert {
        (r[0], r[1], r[2])
        for r in backend.query("SELECT store, epoch, seq FROM held WHERE code = 'txn_conflict'")
    } == held
    # the documents first applied keep their owner: lane epoch 1
    assert backend.query(
        "SELECT epoch, seq FROM documents WHERE txn_id = ?", (first.entries[49].txn_id,)
    ) == [(1, 50)]
    assert backend.query(
        "SELECT store, epoch, seq FROM documents WHERE txn_id = ?", (first.entries[4].txn_id,)
    ) == [("S001", 1, 5)]
    c = counters(backend)
    assert (c["entries_applied"], c["duplicate_txn_ids"], c["entries_held"]) == (
        300 + news,
        len(flags) - sum(flags.values()),
        2,
    )
    s2 = set(other.entries)
    ours = first.entries + [e for e in applied if e not in s2]
    want = {("S001", i): q for i, q in _moved(ours).items()}
    want |= {("S002", i): q for i, q in _moved([e for e in applied if e in s2]).items()}
    stock = backend.query("SELECT location, item, qty FROM stock")
    assert {(r[0], r[1]): r[2] for r in stock} == {k: v for k, v in want.items() if v}
    # and the lanes moved past every entry, held ones included
    assert backend.query("SELECT store, epoch, hwm FROM lanes ORDER BY epoch") == [
        ("S001", 1, 300),
        ("S001", 2, 237),
        ("S002", 3, 11),
    ]


def test_bytes_still_bind_as_the_same_blobs(tmp_path: Path) -> None:
    """headoffice.db.sqlite registers the identity adapter for bytes: a body and a hash are
    stored as BLOBs of exactly their bytes, and a bytes subclass binds as before."""

    class Sub(bytes):
        pass

    store = SqliteDatabase(tmp_path / "ho.db", projections=PROJECTIONS)
    try:
        db = store.db
        db.execute("CREATE TEMP TABLE b (v ANY)")
        values = [b"", b"\x00\xff body", Sub(b"sub")]
        db.executemany("INSERT INTO b VALUES (?)", [(v,) for v in values])
        assert db.execute("SELECT typeof(v), v FROM b ORDER BY rowid").fetchall() == [
            ("blob", b""),
            ("blob", b"\x00\xff body"),
            ("blob", b"sub"),
        ]
    finally:
        store.close()
