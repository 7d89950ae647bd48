"""GroupApplier.apply_group driven synchronously with raw (topic, bytes) messages, and
headoffice.toml validation.

apply_group is what the ingest's writer thread runs for every group of MQTT messages; here the
test is the writer thread, with a real store (SQLite and PostgreSQL: the `backend` fixture)
and no broker.
"""

from __future__ import annotations

import hashlib
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

from headoffice.config import load, parse
from headoffice.db import Database, DatabaseError, PostgresDatabase, SqliteDatabase
from headoffice.ingest import Ingest
from protocol import codec
from protocol.errors import ConfigError
from protocol.identity import Channel, LaneId, Topics
from protocol.messages import Ack, Hello, Reply, Request, Status
from protocol.pan import mask_bytes
from tests.headoffice.ho_helpers import LANE, LaneSim, sale_doc
from tests.pgutil import Backend, pg_connect

TOPICS = Topics()
JOURNAL = TOPICS.topic(LANE, Channel.JOURNAL)
HELLO = TOPICS.topic(LANE, Channel.HELLO)
STATUS = TOPICS.topic(LANE, Channel.STATUS)
REQUEST = TOPICS.topic(LANE, Channel.REQUEST)


@pytest.fixture
def ingest(backend: Backend) -> Iterator[Ingest]:
    store = backend.store()
    ing = Ingest(backend.config(), database_factory=lambda: store)
    # What __aenter__ does on the writer thread, minus the MQTT session.
    ing.applier.database = store
    try:
        yield ing
    finally:
        store.close()
        ing.shutdown_threads()


def quarantine(backend: Backend) -> list[tuple[Any, ...]]:
    return backend.query(
        "SELECT topic, store, lane, reason, raw, times FROM quarantine ORDER BY id"
    )


def hello(epoch: int, last_seq: int = 0, lane: LaneId = LANE) -> bytes:
    return codec.encode(Hello(lane, epoch, last_seq, 1, "0.1.0", 0))


def test_garbage_bytes_quarantined(ingest: Ingest, backend: Backend) -> None:
    raw = b"\xc1\x00garbage"
    assert ingest.applier.apply_group([(JOURNAL, raw)]) == []
    [(topic, store, lane, reason, stored, times)] = quarantine(backend)
    assert (topic, store, lane, stored, times) == (JOURNAL, "S001", "L01", raw, 1)
    assert reason.startswith("payload: not valid msgpack")
    assert ingest.stats.quarantined == 1
    assert ingest.stats.messages == 1
    assert ingest.stats.groups == 1
    # the same garbage again is counted, not stored twice
    ingest.applier.apply_group([(JOURNAL, raw)])
    assert [r[5] for r in quarantine(backend)] == [2]
    assert dict(backend.query("SELECT name, value FROM counters"))["quarantined"] == 2


def test_oversized_message_quarantined(backend: Backend) -> None:
    store = backend.store()
    cfg = backend.config(ingest={"max_message_bytes": 1024})
    ing = Ingest(cfg, database_factory=lambda: store)
    ing.applier.database = store
    try:
        raw = codec.encode(Hello(LANE, 1, 0, 1, "x" * 2000, 0))
        assert ing.applier.apply_group([(HELLO, raw)]) == []
    finally:
        store.close()
        ing.shutdown_threads()
    [(_, _, _, reason, stored, _)] = quarantine(backend)
    assert "exceeds the 1024 byte limit" in reason
    assert stored == raw


def test_bad_topic_quarantined(ingest: Ingest, backend: Backend) -> None:
    raw = hello(1)
    ingest.applier.apply_group(
        [("lanesync/v1/S001/L01/x/hello", raw), ("elsewhere/S001/L01/hello", raw)]
    )
    rows = quarantine(backend)
    assert [(r[0], r[1], r[2], r[4]) for r in rows] == [
        ("lanesync/v1/S001/L01/x/hello", None, None, raw),
        ("elsewhere/S001/L01/hello", None, None, raw),
    ]
    assert all(r[3].startswith("topic: ") for r in rows)


def test_payload_for_another_store_quarantined(ingest: Ingest, backend: Backend) -> None:
    sim = LaneSim(LaneId("S002", "L01"))
    sim.add_many(2)
    raw = codec.encode(sim.batch(1, 2))
    assert ingest.applier.apply_group([(JOURNAL, raw)]) == []
    [(topic, store, lane, reason, stored, _)] = quarantine(backend)
    assert (topic, store, lane, stored) == (JOURNAL, "S001", "L01", raw)
    assert reason == "payload is for S002/L01 but was published under S001/L01's topic"
    assert backend.query("SELECT count(*) FROM journal") == [(0,)]
    assert backend.query("SELECT count(*) FROM lanes") == [(0,)]


@pytest.mark.parametrize(
    ("topic", "raw", "words"),
    [
        (STATUS, hello(1), "a hello message does not belong on status"),
        (JOURNAL, codec.encode(Ack(LANE, 1, 5)), "a ack message does not belong on journal"),
        (TOPICS.topic(LANE, Channel.ACK), codec.encode(Ack(LANE, 1, 5)), "does not belong on ack"),
        (
            TOPICS.topic(LANE, Channel.REPLY),
            codec.encode(Reply(LANE, "c", True)),
            "a rep message does not belong on reply",
        ),
        (HELLO, codec.encode(Status(LANE, "online", "0.1.0")), "a status message does not belong"),
    ],
)
def test_message_on_wrong_channel_quarantined(
    ingest: Ingest, backend: Backend, topic: str, raw: bytes, words: str
) -> None:
    assert ingest.applier.apply_group([(topic, raw)]) == []
    [(qtopic, _, _, reason, stored, _)] = quarantine(backend)
    assert (qtopic, stored) == (topic, raw)
    assert words in reason
    assert backend.query("SELECT count(*) FROM lanes") == [(0,)]


def test_hello_acks_current_hwm(ingest: Ingest, backend: Backend) -> None:
    sim = LaneSim()
    sim.add_many(4)
    assert ingest.applier.apply_group([(HELLO, hello(sim.epoch, 4))]) == [Ack(LANE, sim.epoch, 0)]
    ingest.applier.apply_group([(JOURNAL, codec.encode(sim.batch(1, 3)))])
    out = ingest.applier.apply_group([(HELLO, hello(sim.epoch, 4))])
    assert out == [Ack(LANE, sim.epoch, 3)]
    assert backend.query("SELECT hwm, lane_last_seq FROM lanes") == [(3, 4)]


def test_good_batch_acks_hwm(ingest: Ingest, backend: Backend) -> None:
    sim = LaneSim()
    sim.add_many(6)
    out = ingest.applier.apply_group([(JOURNAL, codec.encode(sim.batch(1, 3)))])
    assert out == [Ack(LANE, sim.epoch, 3)]
    # two batches of one lane in one group: one ack with the final mark
    out = ingest.applier.apply_group(
        [(JOURNAL, codec.encode(sim.batch(4, 5))), (JOURNAL, codec.encode(sim.batch(6, 6)))]
    )
    assert out == [Ack(LANE, sim.epoch, 6)]
    assert ingest.stats.entries_applied == 6
    assert ingest.stats.lane_hwm == {("S001", "L01", sim.epoch): 6}
    assert backend.query("SELECT count(*) FROM documents") == [(6,)]
    # redelivery acks the same mark and applies nothing
    assert ingest.applier.apply_group([(JOURNAL, codec.encode(sim.batch(1, 6)))]) == [
        Ack(LANE, sim.epoch, 6)
    ]
    assert ingest.stats.entries_redelivered == 6
    assert backend.query("SELECT count(*) FROM journal") == [(6,)]


def test_gap_acks_resend_from(ingest: Ingest, backend: Backend) -> None:
    sim = LaneSim()
    sim.add_many(8)
    ingest.applier.apply_group([(JOURNAL, codec.encode(sim.batch(1, 2)))])
    [ack] = ingest.applier.apply_group([(JOURNAL, codec.encode(sim.batch(5, 8)))])
    assert isinstance(ack, Ack)
    assert (ack.hwm, ack.resend_from) == (2, 3)
    assert ack.reason == "gap: expected seq 3, batch starts at 5"
    assert ingest.stats.gaps == 1
    assert backend.query("SELECT count(*) FROM journal") == [(2,)]
    # a gap and then the missing entries in one group: applied, but still asked to resend
    # what the gapped batch carried
    [ack] = ingest.applier.apply_group(
        [(JOURNAL, codec.encode(sim.batch(6, 8))), (JOURNAL, codec.encode(sim.batch(3, 4)))]
    )
    assert isinstance(ack, Ack)
    assert (ack.hwm, ack.resend_from) == (4, 5)
    assert ack.reason is not None
    assert "gap" in ack.reason


def test_hash_break_quarantined_with_raw_and_prefix_acked(ingest: Ingest, backend: Backend) -> None:
    sim = LaneSim()
    sim.add_many(4)
    b = sim.batch(1, 4)
    entries = list(b.entries)
    entries[2] = entries[2]._replace(hash=bytes(32))
    raw = codec.encode(type(b)(b.lane, b.epoch, b.prev_hash, entries))
    [ack] = ingest.applier.apply_group([(JOURNAL, raw)])
    assert isinstance(ack, Ack)
    assert (ack.hwm, ack.resend_from) == (2, None)
    assert ack.reason is not None
    assert "hash chain broken at seq 3" in ack.reason
    [(_, _, _, reason, stored, _)] = quarantine(backend)
    assert "hash chain broken at seq 3" in reason
    # kept masked (protocol.pan.mask_bytes may zero 8 bytes of a hash after a 0xcf/0xd3 byte
    # that spell a Luhn-valid number), with the original's length and sha256
    assert stored == mask_bytes(raw)
    assert backend.query("SELECT raw_len, raw_sha256 FROM quarantine") == [
        (len(raw), hashlib.sha256(raw).digest())
    ]


def test_pan_entry_held_masked_and_the_lane_moves_on(ingest: Ingest, backend: Backend) -> None:
    """Invariant 9: the entry with a card number is held at its seq (only a masked copy and
    the sha256 of its body kept), the ack moves past it and the next entry applies."""
    sim = LaneSim()
    sim.add()
    pan_entry = sim.add(sale_doc(2, note="4111111111111111"))
    sim.add()
    raw = codec.encode(sim.batch(1, 3))
    [ack] = ingest.applier.apply_group([(JOURNAL, raw)])
    assert isinstance(ack, Ack)
    assert (ack.hwm, ack.resend_from) == (3, None)
    assert quarantine(backend) == []
    [(store, lane, seq, code, reason, body, masked, length, digest, state)] = backend.query(
        "SELECT store, lane, seq, code, reason, body, body_masked, body_len, body_sha256, state "
        "FROM held"
    )
    assert (store, lane, seq, code, body, state) == ("S001", "L01", 2, "card_number", None, "held")
    assert "entry seq 2" in reason
    assert "card number" in reason
    assert "4111" not in reason
    assert bytes(masked) == mask_bytes(pan_entry.body)
    assert b"4111111111111111" not in bytes(masked)
    assert (length, bytes(digest)) == (len(pan_entry.body), hashlib.sha256(pan_entry.body).digest())
    assert backend.query("SELECT seq FROM journal ORDER BY seq") == [(1,), (3,)]
    # the chain moved on across the held entry
    assert backend.query("SELECT hwm, last_hash FROM lanes") == [(3, sim.entries[2].hash)]
    assert (ingest.stats.entries_applied, ingest.stats.entries_held) == (2, 1)


def test_unknown_request_op_replies_not_ok(ingest: Ingest) -> None:
    raw = codec.encode(Request(LANE, "corr-7", "nope", {"x": 1}))
    out = ingest.applier.apply_group([(REQUEST, raw)])
    assert out == [Reply(LANE, "corr-7", False, error="unknown operation 'nope'")]


def test_request_handler_reply(ingest: Ingest) -> None:
    def echo(store: Database, req: Request, now: int) -> Reply:
        return Reply(req.lane, req.corr, True, {"echo": req.args})

    ingest.applier.handlers["echo"] = echo
    out = ingest.applier.apply_group(
        [(REQUEST, codec.encode(Request(LANE, "c1", "echo", {"a": [1]})))]
    )
    assert out == [Reply(LANE, "c1", True, {"echo": {"a": [1]}})]


def test_status_saved(ingest: Ingest, backend: Backend) -> None:
    assert (
        ingest.applier.apply_group([(STATUS, codec.encode(Status(LANE, "online", "0.1.0", 5, 9)))])
        == []
    )
    assert backend.query("SELECT store, lane, state, backlog FROM lane_status") == [
        ("S001", "L01", "online", 5)
    ]


def test_acks_and_replies_in_one_group(ingest: Ingest) -> None:
    a, b = LaneSim(), LaneSim(LaneId("S001", "L02"), epoch=7)
    a.add_many(2)
    b.add_many(1)
    out = ingest.applier.apply_group(
        [
            (JOURNAL, codec.encode(a.batch(1, 2))),
            (REQUEST, codec.encode(Request(LANE, "c", "nope"))),
            (TOPICS.topic(b.lane, Channel.JOURNAL), codec.encode(b.batch(1, 1))),
            (JOURNAL, b"junk"),
        ]
    )
    assert out == [
        Ack(LANE, a.epoch, 2),
        Ack(b.lane, 7, 1),
        Reply(LANE, "c", False, error="unknown operation 'nope'"),
    ]


def test_failure_of_one_message_rolls_back_no_other(ingest: Ingest, backend: Backend) -> None:
    """A message that fails while being applied (here a request handler's bug) no longer
    rolls back its group: the group is applied again message by message, the batch commits,
    the junk is quarantined, and the failing request is quarantined and answered."""

    def broken(store: Database, req: Request, now: int) -> Reply:
        raise RuntimeError("handler bug")

    ingest.applier.handlers["broken"] = broken
    sim = LaneSim()
    sim.add_many(3)
    out = ingest.applier.apply_group(
        [
            (JOURNAL, codec.encode(sim.batch(1, 3))),
            (JOURNAL, b"junk"),
            (REQUEST, codec.encode(Request(LANE, "c", "broken"))),
        ]
    )
    assert out == [
        Ack(LANE, sim.epoch, 3),
        Reply(LANE, "c", False, error="head office could not answer (internal error)"),
    ]
    assert backend.query("SELECT count(*) FROM journal") == [(3,)]
    reasons = [r[3] for r in quarantine(backend)]
    assert len(reasons) == 2
    assert reasons[0].startswith("payload: ")  # the junk
    assert reasons[1] == ("head office could not apply this message: RuntimeError: handler bug")
    assert (ingest.stats.groups, ingest.stats.groups_split) == (1, 1)
    # a redelivery of the batch is only redelivered
    assert ingest.applier.apply_group([(JOURNAL, codec.encode(sim.batch(1, 3)))]) == [
        Ack(LANE, sim.epoch, 3)
    ]
    assert ingest.stats.entries_redelivered == 3


def test_database_failure_still_fails_the_whole_group(ingest: Ingest, backend: Backend) -> None:
    """A failure of the database itself (here: its lock held elsewhere, or the connection
    killed) is not one message's fault: nothing is committed or held, lanes resend."""
    sim = LaneSim()
    sim.add_many(3)
    store = ingest.applier.database
    if backend.is_pg:
        assert isinstance(store, PostgresDatabase)
        store.lock_lanes([])  # a transaction on the connection, then the server kills it
        with pg_connect() as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (store.conn.info.backend_pid,))
        blocker = None
    else:
        assert isinstance(store, SqliteDatabase)
        store.db.execute("PRAGMA busy_timeout = 50")
        blocker = sqlite3.connect(backend.target, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(DatabaseError):
            ingest.applier.apply_group(
                [(JOURNAL, codec.encode(sim.batch(1, 3))), (JOURNAL, b"junk")]
            )
    finally:
        if blocker is not None:
            blocker.execute("ROLLBACK")
            blocker.close()
    assert backend.query("SELECT count(*) FROM journal") == [(0,)]
    assert backend.query("SELECT count(*) FROM quarantine") == [(0,)]
    assert backend.query("SELECT count(*) FROM held") == [(0,)]
    assert (ingest.stats.groups, ingest.stats.groups_split) == (0, 0)
    # nothing was acked, so the lane resends; the retry applies cleanly
    assert ingest.applier.apply_group([(JOURNAL, codec.encode(sim.batch(1, 3)))]) == [
        Ack(LANE, sim.epoch, 3)
    ]


def test_replayed_txn_under_new_epoch_via_ingest(ingest: Ingest, backend: Backend) -> None:
    txn = "0190f3a4-7b2c-7def-8a01-23456789abcd"
    old, new = LaneSim(epoch=1), LaneSim(epoch=2)
    old.add(sale_doc(1), txn_id=txn)
    new.add(sale_doc(1), txn_id=txn)
    new.add()
    ingest.applier.apply_group([(JOURNAL, codec.encode(old.batch(1, 1)))])
    out = ingest.applier.apply_group([(JOURNAL, codec.encode(new.batch(1, 2)))])
    assert out == [Ack(LANE, 2, 2)]
    assert ingest.stats.duplicate_txn_ids == 1
    assert backend.query("SELECT count(*) FROM documents") == [(2,)]


def test_non_map_payloads_quarantined(ingest: Ingest, backend: Backend) -> None:
    ingest.applier.apply_group([(JOURNAL, msgpack.packb([1, 2])), (HELLO, msgpack.packb({"v": 3}))])
    reasons = [r[3] for r in quarantine(backend)]
    assert reasons == [
        "payload: must be a map, got list",
        "v: unsupported protocol version 3; this side speaks 1 and 2",
    ]


# --- headoffice.toml ----------------------------------------------------------------------------


def test_config_defaults_and_values() -> None:
    c = parse({})
    assert str(c.database) == "/var/lib/lanesync/headoffice.db"
    assert (c.broker.port, c.broker.share_group) == (1883, None)
    c = parse(
        {
            "database": {"path": "/tmp/ho.db"},
            "broker": {"host": "mq", "port": 1884, "share_group": "ingest", "topic_prefix": "a/b"},
            "ingest": {"group_max_messages": 10},
        }
    )
    assert (c.broker.host, c.broker.port, c.broker.share_group) == ("mq", 1884, "ingest")
    assert c.topics.shared("ingest", Channel.JOURNAL) == "$share/ingest/a/b/+/+/journal"
    assert c.ingest.group_max_messages == 10
    assert c.database_url is None
    c = parse({"database": {"url": "postgresql://ho@db.example/lanesync"}})
    assert c.database_url == "postgresql://ho@db.example/lanesync"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"broker": {"port": "x"}}, "broker.port: must be an integer 1..65535, got 'x'"),
        ({"broker": {"hots": "x"}}, "broker.hots: unknown key"),
        ({"broker": {"topic_prefix": "a/#"}}, "broker.topic_prefix: "),
        ({"broker": {"share_group": "a/b"}}, "broker.share_group: "),
        ({"broker": {"keepalive": 1}}, "broker.keepalive: must be an integer 2..3600"),
        ({"database": {"path": 1}}, "database.path: must be a string"),
        ({"database": {"file": "x"}}, "database.file: unknown key"),
        (
            {"database": {"path": "/tmp/ho.db", "url": "postgresql://h/db"}},
            "database.url: set database.path (SQLite) or database.url, not both",
        ),
        ({"database": {"url": "mysql://h/db"}}, "database.url: must be a postgresql:// URL"),
        ({"database": {"url": 5}}, "database.url: must be a string"),
        ({"ingest": {"max_message_bytes": 10}}, "ingest.max_message_bytes: must be an integer"),
        ({"ingest": {"group_max_messages": 0}}, "ingest.group_max_messages: must be an integer"),
        ({"ingest": []}, "ingest: must be a table"),
        ({"databse": {}}, "databse: unknown key"),
    ],
)
def test_config_errors_name_the_key(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(data)
    assert str(info.value).startswith(message)


def test_config_load(tmp_path: Path) -> None:
    p = tmp_path / "headoffice.toml"
    with pytest.raises(ConfigError, match="no such file"):
        load(p)
    p.write_text("[broker]\nport = 'x'\n")
    with pytest.raises(ConfigError) as info:
        load(p)
    assert str(info.value).startswith(f"{p}: broker.port: ")
    p.write_text('[database]\npath = "/tmp/x.db"\n')
    assert str(load(p).database) == "/tmp/x.db"


def test_group_writes_its_batches_together_and_counts_each_txn_once(
    ingest: Ingest, backend: Backend
) -> None:
    """A group's batches are written together at commit (one documents and one journal
    statement); a txn_id in two batches of one group, or applied in an earlier group, is
    applied once. Again with the same body from the same store it is a duplicate; with other
    content, or from another store, it is held naming both lanes (stores are isolated)."""
    sim, other = LaneSim(), LaneSim(LaneId("S002", "L01"), epoch=77)
    held = sim.add()
    ingest.applier.apply_group([(JOURNAL, codec.encode(sim.batch(1, 1)))])
    shared = str(uuid.uuid4())
    sim.add(txn_id=shared)  # seq 2
    sim.add(txn_id=held.txn_id)  # seq 3: already applied in the first group, other content
    sim.add(sale_doc(2), txn_id=shared)  # seq 4: seq 2 again, the same bytes: a duplicate
    other.add(txn_id=shared)  # the same document journaled by another store's lane
    other.add()
    other_topic = TOPICS.topic(other.lane, Channel.JOURNAL)
    out = ingest.applier.apply_group(
        [(JOURNAL, codec.encode(sim.batch(2, 4))), (other_topic, codec.encode(other.batch(1, 2)))]
    )
    assert sorted((a.lane.store, a.hwm, a.resend_from) for a in out if isinstance(a, Ack)) == [
        ("S001", 4, None),
        ("S002", 2, None),
    ]
    assert ingest.stats.entries_applied == 3  # seq 1, shared (S001 seq 2), S002 seq 2
    assert ingest.stats.duplicate_txn_ids == 1  # S001 seq 4
    assert ingest.stats.entries_held == 2  # S001 seq 3, S002 seq 1
    rows = backend.query("SELECT store, seq, applied FROM journal ORDER BY store, seq")
    assert rows == [("S001", 1, 1), ("S001", 2, 1), ("S001", 4, 0), ("S002", 2, 1)]
    docs = backend.query("SELECT store, seq FROM documents WHERE txn_id = ?", (shared,))
    assert docs == [("S001", 2)]
    held_rows = backend.query("SELECT store, seq, code, reason, body FROM held ORDER BY store")
    assert [(r[0], r[1], r[2], bytes(r[4])) for r in held_rows] == [
        ("S001", 3, "txn_conflict", sim.entries[2].body),
        ("S002", 1, "txn_conflict", other.entries[0].body),
    ]
    assert "belongs to lane S001/L01 (epoch 1001, seq 1)" in held_rows[0][3]
    assert "from lane S001/L01 (epoch 1001) has other content" in held_rows[0][3]
    assert "belongs to lane S001/L01 (epoch 1001, seq 2)" in held_rows[1][3]
    assert "from lane S002/L01 (epoch 77) comes from another store" in held_rows[1][3]
