"""Entries head office cannot apply are held at their seq (invariant 9), and nothing a store
sends takes other messages, other lanes or head office down with it (issue 12).

Driven through GroupApplier.apply_group (the writer thread's work) with real chained batches, on
SQLite and PostgreSQL (the `backend` fixture).
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import uuid
from importlib import resources
from typing import Any

import msgpack
import pytest

from headoffice.db import SqliteDatabase
from headoffice.db.base import QUARANTINE_KEEP_BYTES
from headoffice.ingest import Ingest, LaneMarks
from headoffice.ingest import applier as ingest_module
from headoffice.projections import PROJECTIONS
from headoffice.transit import projection
from protocol import codec
from protocol.identity import Channel, LaneId
from protocol.messages import Ack, Hello
from protocol.pan import mask_bytes
from protocol.runtime import migrations as schema
from tests.headoffice.ho_helpers import (
    LaneSim,
    deep_sale,
    journal_msg,
    sale_doc,
    topic,
    writer_ingest,
)
from tests.pgutil import Backend

PAN = "4111111111111111"
SSCC = "357035380100000010"
A = LaneId("S001", "L01")
B = LaneId("S002", "L01")


def held_rows(backend: Backend) -> list[tuple[Any, ...]]:
    return backend.query(
        "SELECT store, lane, epoch, seq, kind, txn_id, code, reason, state FROM held ORDER BY id"
    )


def journal_seqs(backend: Backend, lane: LaneId) -> list[int]:
    return [
        r[0]
        for r in backend.query(
            "SELECT seq FROM journal WHERE store = ? AND lane = ? ORDER BY seq",
            (lane.store, lane.lane),
        )
    ]


def transit(**over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "kind": "transit_inventory",
        "register_no": "T10001",
        "transit_no": "T10001",
        "sscc": SSCC,
        "source_store": "S001",
        "dest_store": "S002",
        "by": {"type": "staff", "id": "E7"},
        "currency": "EUR",
        "staff": "E7",
        "lines": [{"line_no": 1, "item": "P1000", "qty": "5.000"}],
    }
    doc.update(over)
    return doc


def adjustment(*lines: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "stock_adjustment", "reason": "COUNT", "lines": list(lines)}


# --- held at its seq ----------------------------------------------------------------------------


def test_a_refused_entry_never_stalls_its_lane(backend: Backend) -> None:
    """The 5th of 40 entries carries a card number: the other 39 apply in order, the ack
    covers all 40, the held entry is kept once (redeliveries do not add to it), and the hash
    chain is verified across it (a batch that does not chain from it is refused)."""
    sim = LaneSim(A)
    for n in range(1, 41):
        sim.add(sale_doc(n, note=f"card {PAN}") if n == 5 else sale_doc(n))
    with writer_ingest(backend) as ing:
        out = ing.applier.apply_group([journal_msg(sim, 1, 10)])
        assert out == [Ack(A, sim.epoch, 10)]
        out = ing.applier.apply_group([journal_msg(sim, 11, 25), journal_msg(sim, 26, 40)])
        assert out == [Ack(A, sim.epoch, 40)]
        # a redelivery of everything: nothing applied or held again
        assert ing.applier.apply_group([journal_msg(sim, 1, 40)]) == [Ack(A, sim.epoch, 40)]
        assert ing.stats.entries_redelivered == 40
        # the next batch must chain from entry 40 (whose chain runs through the held entry)
        sim.add()
        good = sim.batch(41, 41)
        forged = type(good)(good.lane, good.epoch, bytes(32), good.entries)
        [ack] = ing.applier.apply_group([(topic(A), codec.encode(forged))])
        assert isinstance(ack, Ack)
        assert ack.hwm == 40
        assert ack.reason is not None
        assert "hash chain broken" in ack.reason
        assert ing.applier.apply_group([(topic(A), codec.encode(good))]) == [Ack(A, sim.epoch, 41)]
    assert journal_seqs(backend, A) == [n for n in range(1, 42) if n != 5]
    [(store, lane, epoch, seq, kind, txn, code, reason, state)] = held_rows(backend)
    assert (store, lane, epoch, seq, kind, txn, code, state) == (
        "S001",
        "L01",
        sim.epoch,
        5,
        "sale",
        sim.entries[4].txn_id,
        "card_number",
        "held",
    )
    assert PAN not in reason
    assert backend.query("SELECT hwm, last_hash FROM lanes") == [(41, sim.entries[40].hash)]
    assert backend.query("SELECT count(*) FROM documents") == [(40,)]
    counters = dict(backend.query("SELECT name, value FROM counters"))
    assert counters["entries_held"] == 1


BAD_BODIES: list[tuple[str, str, dict[str, Any], str]] = [
    # kind, label, document, the path the reason must name
    ("stock_adjustment", "qty Infinity", adjustment({"item": "P1", "qty": "Infinity"}), "qty"),
    ("stock_adjustment", "qty 1e30", adjustment({"item": "P1", "qty": "1e30"}), "qty"),
    ("stock_adjustment", "qty NaN", adjustment({"item": "P1", "qty": "NaN"}), "qty"),
    ("stock_adjustment", "qty 1.5", adjustment({"item": "P1", "qty": "1.5"}), "qty"),
    (
        "stock_adjustment",
        "qty ten digits",
        adjustment({"item": "P1", "qty": "1234567890.000"}),
        "qty",
    ),
    ("stock_adjustment", "qty as int", adjustment({"item": "P1", "qty": 10**18}), "qty"),
    ("stock_adjustment", "item a list", adjustment({"item": ["P1"], "qty": "1.000"}), "item"),
    ("stock_adjustment", "item too long", adjustment({"item": "P" * 65, "qty": "1.000"}), "item"),
    ("stock_adjustment", "lines a map", {"kind": "stock_adjustment", "lines": {"a": 1}}, "lines"),
    (
        "stock_adjustment",
        "line numbers twice",
        adjustment(
            {"line_no": 1, "item": "P1", "qty": "1.000"},
            {"line_no": 1, "item": "P2", "qty": "1.000"},
        ),
        "line_no",
    ),
    ("transit_inventory", "sscc a list", transit(sscc=[SSCC]), "sscc"),
    ("transit_inventory", "sscc a map", transit(sscc={"x": SSCC}), "sscc"),
    ("transit_inventory", "sscc short", transit(sscc="3570"), "sscc"),
    ("transit_inventory", "dest a list", transit(dest_store=["S002"]), "dest_store"),
    ("transit_inventory", "dest not a store", transit(dest_store="S/2"), "dest_store"),
    ("transit_inventory", "source another store", transit(source_store="S009"), "source_store"),
    ("transit_inventory", "by a list", transit(by=["staff"]), "by"),
    ("transit_inventory", "negative qty", transit(lines=[{"item": "P1", "qty": "-1.000"}]), "qty"),
    ("transit_inventory", "no number", transit(register_no=None, transit_no=None), "register_no"),
    (
        "transit_inventory_accept",
        "no source",
        {"kind": "transit_inventory_accept", "sscc": SSCC},
        "source_store",
    ),
    (
        "transit_inventory_accept",
        "received_at huge",
        {
            "kind": "transit_inventory_accept",
            "sscc": SSCC,
            "source_store": "S001",
            "ext": {"received_at": "soon"},
        },
        "received_at",
    ),
]


@pytest.mark.parametrize(
    ("kind", "label", "doc", "path"), BAD_BODIES, ids=[b[1] for b in BAD_BODIES]
)
def test_a_body_head_office_cannot_project_is_held_and_its_group_commits(
    backend: Backend, kind: str, label: str, doc: dict[str, Any], path: str
) -> None:
    """Before: such a batch, with a valid chain, made the transit projection raise and rolled
    back the whole ingest group. Now: the entry is held with the field at fault, the rest of
    its batch and every other message of the group commit."""
    bad, honest = LaneSim(A), LaneSim(B)
    bad.add()
    bad.add(doc, kind=kind)
    bad.add(adjustment({"item": "P1", "qty": "2.000"}), kind="stock_adjustment")
    honest.add_many(3)
    with writer_ingest(backend) as ing:
        out = ing.applier.apply_group(
            [
                journal_msg(honest, 1, 2),
                journal_msg(bad, 1, 3),
                (topic(B, Channel.HELLO), codec.encode(Hello(B, honest.epoch, 3, 1, "1", 0))),
                journal_msg(honest, 3, 3),
            ]
        )
        assert sorted((a.lane.store, a.hwm) for a in out if isinstance(a, Ack)) == [
            ("S001", 3),
            ("S002", 3),
        ]
        assert ing.stats.groups_split == 0  # the first line of defence caught it
    assert journal_seqs(backend, A) == [1, 3]
    assert journal_seqs(backend, B) == [1, 2, 3]
    [row] = held_rows(backend)
    assert (row[3], row[4], row[6]) == (2, kind, "invalid_body")
    assert f"head office cannot apply a {kind}: $" in row[7]
    assert path in row[7]
    # the held row keeps the exact bytes for a release after the data or rule is fixed
    [(body, masked)] = backend.query("SELECT body, body_masked FROM held")
    assert (bytes(body), masked) == (bad.entries[1].body, None)
    # the later stock adjustment of that lane was projected
    assert backend.query("SELECT location, item, qty FROM stock") == [("S001", "P1", 2000)]


def test_undecodable_and_non_map_bodies_of_projected_kinds_are_held(backend: Backend) -> None:
    sim = LaneSim(A)
    sim.add(kind="transit_inventory", body=b"\xc1\xc1")
    sim.add(kind="stock_adjustment", body=msgpack.packb([1, 2]))
    deep: Any = 1
    for _ in range(990):
        deep = [deep]
    sim.add(kind="stock_adjustment", body=msgpack.packb({"kind": "x", "lines": deep}))
    sim.add(kind="transit_inventory_accept", body=b"")
    sim.add()
    with writer_ingest(backend) as ing:
        assert ing.applier.apply_group([journal_msg(sim, 1, 5)]) == [Ack(A, sim.epoch, 5)]
    assert journal_seqs(backend, A) == [5]
    rows = held_rows(backend)
    assert [(r[3], r[6]) for r in rows] == [(n, "invalid_body") for n in (1, 2, 3, 4)]
    assert "not a msgpack document" in rows[0][7]
    assert "must be a map, got list" in rows[1][7]


def test_a_deeply_nested_sale_body_does_not_stop_anything(backend: Backend) -> None:
    """msgpack nested 990 deep in an entry's body (it killed head office with a RecursionError
    in the card-number scan): the entry is applied or held, the lane moves on and the other
    lanes of the group are applied."""
    bad, honest = LaneSim(A), LaneSim(B)
    bad.add(body=deep_sale())
    bad.add()
    honest.add_many(2)
    with writer_ingest(backend) as ing:
        out = ing.applier.apply_group([journal_msg(bad, 1, 2), journal_msg(honest, 1, 2)])
    assert sorted((a.lane.store, a.hwm) for a in out if isinstance(a, Ack)) == [
        ("S001", 2),
        ("S002", 2),
    ]
    held = [r[3] for r in held_rows(backend)]
    assert sorted(journal_seqs(backend, A) + held) == [1, 2]
    assert journal_seqs(backend, B) == [1, 2]


def test_an_entry_that_fails_only_in_the_database_is_held_and_the_rest_commits(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second line of defence: a failure nobody foresaw while applying one entry (here
    the projection raising, as a database constraint would) rolls the group back; it is
    applied again message by message, that batch entry by entry, and only the failing entry
    is held (apply_failed). The other lanes' batches commit."""
    real = projection.apply_entry

    def failing(db: Any, lane: LaneId, e: Any, doc: Any) -> str | None:
        if e.seq == 2 and lane == A:
            raise ValueError("a constraint nobody foresaw")
        return real(db, lane, e, doc)

    monkeypatch.setattr(projection, "apply_entry", failing)
    bad, honest = LaneSim(A), LaneSim(B)
    bad.add()
    bad.add(adjustment({"item": "P1", "qty": "1.000"}), kind="stock_adjustment")
    bad.add(adjustment({"item": "P1", "qty": "2.000"}), kind="stock_adjustment")
    honest.add_many(2)
    with writer_ingest(backend) as ing:
        out = ing.applier.apply_group(
            [journal_msg(honest, 1, 1), journal_msg(bad, 1, 3), journal_msg(honest, 2, 2)]
        )
        assert sorted((a.lane.store, a.hwm) for a in out if isinstance(a, Ack)) == [
            ("S001", 3),
            ("S002", 2),
        ]
        assert ing.stats.groups_split == 1
        assert ing.stats.entries_held == 1
    assert journal_seqs(backend, A) == [1, 3]
    assert journal_seqs(backend, B) == [1, 2]
    [row] = held_rows(backend)
    assert (row[3], row[6]) == (2, "apply_failed")
    assert "ValueError: a constraint nobody foresaw" in row[7]
    assert backend.query("SELECT location, item, qty FROM stock") == [("S001", "P1", 2000)]
    assert backend.query("SELECT hwm, last_hash FROM lanes WHERE store = 'S001'") == [
        (3, bad.entries[2].hash)
    ]


def test_whatever_the_decoder_raises_refuses_one_message(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The protocol's decoder is the seam: anything it raises (a RecursionError killed head
    office) quarantines that one message with the reason; the others apply."""
    real = codec.decode
    poison = b"\x81\xa1v\x01poison"

    def decode(buf: bytes, max_size: int = codec.DEFAULT_MAX_MESSAGE) -> Any:
        if buf == poison:
            raise RecursionError("maximum recursion depth exceeded")
        return real(buf, max_size)

    monkeypatch.setattr(ingest_module.codec, "decode", decode)
    sim = LaneSim(B)
    sim.add_many(2)
    with writer_ingest(backend) as ing:
        out = ing.applier.apply_group([(topic(A), poison), journal_msg(sim, 1, 2)])
        assert out == [Ack(B, sim.epoch, 2)]
    [(reason, raw)] = backend.query("SELECT reason, raw FROM quarantine")
    assert reason == (
        "head office could not read this message: RecursionError: maximum recursion depth exceeded"
    )
    assert bytes(raw) == poison


# --- txn_id ownership (stores are isolated) ------------------------------------------------------


@pytest.mark.parametrize("order", ["owner first", "forger first"])
def test_a_txn_id_belongs_to_the_lane_that_applied_it_first(backend: Backend, order: str) -> None:
    """Store S666 sends a document with a txn_id store S001's lane journaled. Whichever comes
    first keeps the document; the other entry is held with both lanes named (never dropped
    without a trace, never displacing the applied document), and both lanes move on."""
    txn = str(uuid.uuid4())
    owner, forger = LaneSim(A), LaneSim(LaneId("S666", "L01"), epoch=6)
    owner.add(sale_doc(1, total=1899), txn_id=txn)
    owner.add()
    forger.add(sale_doc(1, total=1), txn_id=txn)
    forger.add()
    first, second = (owner, forger) if order == "owner first" else (forger, owner)
    with writer_ingest(backend) as ing:
        assert ing.applier.apply_group([journal_msg(first, 1, 2)]) == [
            Ack(first.lane, first.epoch, 2)
        ]
        assert ing.applier.apply_group([journal_msg(second, 1, 2)]) == [
            Ack(second.lane, second.epoch, 2)
        ]
        assert ing.stats.entries_held == 1
        assert ing.stats.duplicate_txn_ids == 0
    [doc] = backend.query("SELECT store, lane, epoch, seq FROM documents WHERE txn_id = ?", (txn,))
    assert doc == (first.lane.store, first.lane.lane, first.epoch, 1)
    [row] = held_rows(backend)
    assert (row[0], row[3], row[5], row[6]) == (second.lane.store, 1, txn, "txn_conflict")
    assert f"belongs to lane {first.lane} (epoch {first.epoch}, seq 1)" in row[7]
    assert (
        f"this entry from lane {second.lane} (epoch {second.epoch}) comes from another store"
        in row[7]
    )
    # the held entry keeps its bytes: a confirmed sale is never lost, an operator decides
    [(body,)] = backend.query("SELECT body FROM held")
    assert bytes(body) == second.entries[0].body
    assert journal_seqs(backend, second.lane) == [2]
    assert journal_seqs(backend, first.lane) == [1, 2]


def test_the_same_document_resubmitted_by_its_store_is_a_duplicate(backend: Backend) -> None:
    """A POS resubmitting into a recreated journal (new epoch), the same bytes: applied once
    and journaled as a duplicate, as before. Two such copies in one group, too."""
    txn = str(uuid.uuid4())
    old, new = LaneSim(A, epoch=1), LaneSim(A, epoch=2)
    old.add(sale_doc(1), txn_id=txn)
    new.add(sale_doc(1), txn_id=txn)
    new.add(sale_doc(1), txn_id=txn)
    with writer_ingest(backend) as ing:
        ing.applier.apply_group([journal_msg(old, 1, 1)])
        ing.applier.apply_group([journal_msg(new, 1, 2)])
        assert (ing.stats.duplicate_txn_ids, ing.stats.entries_held) == (2, 0)
    assert backend.query("SELECT epoch, seq, applied FROM journal ORDER BY epoch, seq") == [
        (1, 1, 1),
        (2, 1, 0),
        (2, 2, 0),
    ]
    assert held_rows(backend) == []


# --- bounded memory: epochs per lane -------------------------------------------------------------


def test_new_epochs_beyond_the_cap_are_refused_counted_and_folded(backend: Backend) -> None:
    with writer_ingest(backend, max_epochs_per_lane=5) as ing:
        group = [
            (topic(A, Channel.HELLO), codec.encode(Hello(A, 1000 + n, 0, 1, "1", 0)))
            for n in range(12)
        ]
        acks = ing.applier.apply_group(group)
        assert [a.epoch for a in acks if isinstance(a, Ack)] == [1000 + n for n in range(5)]
        assert ing.stats.epochs_refused == 7
        # a batch of a known epoch still applies; one of a new epoch is refused too
        known, new = LaneSim(A, epoch=1000), LaneSim(A, epoch=99)
        known.add()
        new.add()
        out = ing.applier.apply_group([journal_msg(known, 1, 1), journal_msg(new, 1, 1)])
        assert out == [Ack(A, 1000, 1)]
        assert ing.stats.epochs_refused == 8
        # another lane of the store has its own cap
        other = LaneId("S001", "L02")
        assert ing.applier.apply_group(
            [(topic(other, Channel.HELLO), codec.encode(Hello(other, 1, 0, 1, "1", 0)))]
        ) == [Ack(other, 1, 0)]
    assert backend.query("SELECT count(*) FROM lanes WHERE lane = 'L01'") == [(5,)]
    rows = backend.query("SELECT topic, times, reason FROM quarantine ORDER BY id")
    assert [(r[0], r[1]) for r in rows] == [
        (topic(A, Channel.HELLO), 7),
        (topic(A, Channel.JOURNAL), 1),
    ]
    assert "already has 5 epochs on record" in rows[0][2]
    counters = dict(backend.query("SELECT name, value FROM counters"))
    assert counters["epochs_refused"] == 8


def test_hellos_for_ever_new_lanes_do_not_grow_memory(tmp_path: Any) -> None:
    """What head office keeps per lane in memory is bounded: the acked marks (LaneMarks) and
    the SQLite store's cache of lane positions."""
    marks = LaneMarks(per_lane=4, lanes=100)
    for n in range(5000):
        marks[("S1", f"L{n // 20}", n)] = n  # 250 lanes, 20 epochs each
    assert len(marks) == 100 * 4
    assert len(list(marks)) == len(marks)
    assert marks.dropped == 5000 - len(marks)
    assert [k[2] for k in marks if k[1] == "L249"] == [4996, 4997, 4998, 4999]
    assert not any(k[1] == "L149" for k in marks)  # the 101st most recent lane
    store = SqliteDatabase(tmp_path / "ho.db", projections=PROJECTIONS)
    store.max_cached_lanes = 50
    try:
        for n in range(120):
            store.note_hello(LaneId("S1", f"L{n}"), 7, 0, 1)
            store.commit()
        assert store.cached_lane_count <= 50
        # a forgotten lane is read back from the database
        assert store.lane_state(LaneId("S1", "L0"), 7) is not None
    finally:
        store.close()


# --- quarantine rows: capped, masked ------------------------------------------------------------


def test_quarantine_keeps_4_kib_masked_with_length_and_hash(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    big = f"pay {PAN} ".encode() * 10 + b"\x00" * (3 * 1024 * 1024)
    # a refusal whose reason quotes a value: a txn_id that is a card number
    bad_txn = msgpack.packb(
        {
            "v": 1,
            "t": "batch",
            "store": "S001",
            "lane": "L01",
            "epoch": 1,
            "first_seq": 1,
            "prev_hash": bytes(32),
            "entries": [["sale", "4111 1111 1111 1111", 1, b"", bytes(32)]],
        }
    )
    caplog.set_level(logging.WARNING)
    with writer_ingest(backend, max_message_bytes=4 * 1024 * 1024) as ing:
        ing.applier.apply_group([(topic(A), big), (topic(A), bad_txn)])
    rows = backend.query("SELECT reason, raw, raw_len, raw_sha256 FROM quarantine ORDER BY id")
    (_, raw1, len1, sha1), (r2, _, len2, sha2) = rows
    assert len(bytes(raw1)) == QUARANTINE_KEEP_BYTES
    assert bytes(raw1) == mask_bytes(big)[:QUARANTINE_KEEP_BYTES]
    assert PAN.encode() not in bytes(raw1)
    assert b"************1111" in bytes(raw1)
    assert (len1, bytes(sha1)) == (len(big), hashlib.sha256(big).digest())
    assert "4111 1111 1111 1111" not in r2
    assert "txn_id" in r2  # the reason names the field; it quotes no value (protocol.screen)
    assert (len2, bytes(sha2)) == (len(bad_txn), hashlib.sha256(bad_txn).digest())
    assert PAN not in caplog.text
    assert "4111 1111 1111 1111" not in caplog.text


def test_rows_quarantined_before_schema_4_are_masked_when_the_store_opens(
    backend: Backend,
) -> None:
    store = backend.store()  # creates the schema
    raw = f"card {PAN} ".encode() + b"z" * 10_000
    # a row as schema 3 wrote it: the payload whole, the reason as it came
    store.sql.begin()
    store.sql.execute(
        "INSERT INTO quarantine (first_at, last_at, topic, reason, raw, fingerprint) "
        "VALUES (1, 1, 't', ?, ?, ?)",
        (f"bad txn_id '{PAN}'", raw, b"f" * 32),
    )
    store.sql.commit()
    store.close()
    backend.store().close()
    [(reason, kept, length, digest)] = backend.query(
        "SELECT reason, raw, raw_len, raw_sha256 FROM quarantine"
    )
    assert PAN not in reason
    assert bytes(kept) == mask_bytes(raw)[:QUARANTINE_KEEP_BYTES]
    assert (length, bytes(digest)) == (len(raw), hashlib.sha256(raw).digest())


def test_a_schema_3_database_migrates_with_its_rows(tmp_path: Any) -> None:
    """An existing head-office file (schema 3) with a whole, unmasked quarantine row."""
    path = tmp_path / "ho.db"
    db = sqlite3.connect(path, isolation_level=None)
    migrations = schema.load(resources.files("headoffice.db.schema").iterdir())
    for _, script in schema.plan(0, {v: s for v, s in migrations.items() if v <= 3}, "test"):
        db.executescript(script)
    raw = PAN.encode() + b"y" * 5000
    db.execute(
        "INSERT INTO quarantine (first_at, last_at, topic, reason, raw, fingerprint) "
        "VALUES (1, 1, 't', 'r', ?, ?)",
        (raw, b"f" * 32),
    )
    db.close()
    SqliteDatabase(path, projections=PROJECTIONS).close()
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA user_version").fetchone()[0] == max(migrations)
        kept, length = db.execute("SELECT raw, raw_len FROM quarantine").fetchone()
    finally:
        db.close()
    assert (len(kept), length) == (QUARANTINE_KEEP_BYTES, len(raw))
    assert PAN.encode() not in kept


def test_ingest_stats_lane_marks_follow_the_acks(backend: Backend) -> None:
    sim = LaneSim(A)
    sim.add_many(2)
    with writer_ingest(backend) as ing:
        assert isinstance(ing, Ingest)
        ing.applier.apply_group([journal_msg(sim, 1, 2)])
        assert dict(ing.stats.lane_hwm) == {("S001", "L01", sim.epoch): 2}


def test_refusals_of_a_flooding_store_are_counted_on_one_row_per_topic(backend: Backend) -> None:
    """While the inbox sheds a store's messages, its refused messages are counted, not kept
    one row each (a flood must not become a disk flood): one row per topic and group, the
    first kept, `times` the count. Another store's refusals are kept as usual."""
    flood = LaneId("SFLOOD", "L1")
    with writer_ingest(backend) as ing:
        ing.inbox.record_shed("SFLOOD")  # the inbox just shed one of its messages
        assert ing.inbox.flooding("SFLOOD")
        assert not ing.inbox.flooding("S002")
        group = [(topic(flood), b"\xc1garbage %d" % n) for n in range(50)]
        group.append((topic(B), b"\xc1other"))
        ing.applier.apply_group(group)
        ing.applier.apply_group(group[:10])
        assert ing.stats.quarantined == 61
    rows = backend.query("SELECT store, times, raw, reason FROM quarantine ORDER BY store DESC")
    assert [(r[0], r[1], bytes(r[2])) for r in rows] == [
        ("SFLOOD", 60, b"\xc1garbage 0"),
        ("S002", 1, b"\xc1other"),
    ]
    assert "SFLOOD sends faster than head office applies" in rows[0][3]
    assert "the first was: payload: " in rows[0][3]
    assert dict(backend.query("SELECT name, value FROM counters"))["quarantined"] == 61
