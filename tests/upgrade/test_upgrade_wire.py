"""Protocol v1 bytes recorded by a released lanesync still decode and apply (issue 18).

tests/upgrade/wire_v1/ holds one message of each type encoded by the codec of the release
named in RECORDED_BY (make_wire_fixtures.py). A lane that has not been upgraded yet sends
exactly these bytes; head office must decode each one and apply the batch, on both backends
and through a real broker, and a lane must understand the head-office messages.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any

import aiomqtt

from headoffice.db.base import check_batch
from headoffice.operations import time_handler
from headoffice.projections import PROJECTIONS
from lanesync import stack
from protocol import codec
from protocol.identity import Channel, LaneId, Topics
from protocol.messages import Ack, Hello, JournalBatch, Reply, Request, Status

WIRE = Path(__file__).resolve().parent / "wire_v1"
LANE = LaneId("S001", "L1")
EPOCH = 4_242_424_242_424_242


def recorded(name: str) -> bytes:
    return (WIRE / f"{name}.msgpack").read_bytes()


def test_every_recorded_message_decodes() -> None:
    names = sorted(p.stem for p in WIRE.glob("*.msgpack"))
    assert names == [
        "ack",
        "ack_resend",
        "batch",
        "hello",
        "reply",
        "reply_refused",
        "request",
        "status",
        "status_offline",
    ]
    batch = codec.decode(recorded("batch"))
    assert isinstance(batch, JournalBatch)
    assert (batch.lane, batch.epoch, batch.first_seq, len(batch.entries)) == (LANE, EPOCH, 1, 1)
    assert check_batch(batch, PROJECTIONS).valid == 1  # its chain verifies with today's code
    hello = codec.decode(recorded("hello"))
    assert isinstance(hello, Hello)
    assert (hello.epoch, hello.last_seq, hello.catalog) == (EPOCH, 1, 0)  # no catalog field yet
    assert codec.decode(recorded("ack")) == Ack(LANE, EPOCH, 1)
    assert codec.decode(recorded("ack_resend")) == Ack(LANE, EPOCH, 0, 1, "gap: expected seq 1")
    status = codec.decode(recorded("status"))
    assert isinstance(status, Status)
    assert (status.state, status.backlog, status.catalog) == ("online", 1, 0)
    offline = codec.decode(recorded("status_offline"))
    assert isinstance(offline, Status)
    assert offline.state == "offline"
    request = codec.decode(recorded("request"))
    assert isinstance(request, Request)
    assert (request.op, request.args) == ("time", {})
    reply = codec.decode(recorded("reply"))
    assert isinstance(reply, Reply)
    assert reply.ok
    refused = codec.decode(recorded("reply_refused"))
    assert isinstance(refused, Reply)
    assert (refused.ok, refused.error) == (False, "unknown operation 'nope'")


def test_recorded_batch_and_hello_apply_on_both_backends(backend: Any) -> None:
    store = backend.store()
    try:
        hello = codec.decode(recorded("hello"))
        batch = codec.decode(recorded("batch"))
        assert isinstance(hello, Hello)
        assert isinstance(batch, JournalBatch)
        now = int(time.time() * 1000)
        store.lock_lanes([(LANE, EPOCH)])
        store.note_hello(LANE, hello.epoch, hello.last_seq, now)
        result = store.apply_batch(check_batch(batch, PROJECTIONS), now)
        store.commit()
        assert (result.hwm, result.resend_from) == (1, None)
        request = codec.decode(recorded("request"))
        assert isinstance(request, Request)
        answer = time_handler(store, request, now)
        assert answer.ok
        assert answer.corr == request.corr
    finally:
        store.close()
    rows = backend.query(
        "SELECT seq, kind, txn_id FROM journal WHERE store = ? AND lane = ?",
        (LANE.store, LANE.lane),
    )
    assert rows == [(1, "sale", batch.entries[0].txn_id)]
    assert backend.query("SELECT count(*) FROM documents") == [(1,)]


async def test_recorded_bytes_through_a_real_broker_are_acked(tmp_path: Path, broker: Any) -> None:
    """The bytes as an old lane publishes them: head office acks the batch, answers the
    request, and files the status."""
    ho = stack.headoffice(tmp_path, broker.port)
    ho.start()
    try:
        ho.wait_notify("STATUS=subscribed", timeout=30)
        topics = Topics()
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="old-lane") as client:
            await client.subscribe(topics.topic(LANE, Channel.ACK), qos=1)
            await client.subscribe(topics.topic(LANE, Channel.REPLY), qos=1)
            for name, channel in (
                ("hello", Channel.HELLO),
                ("batch", Channel.JOURNAL),
                ("status", Channel.STATUS),
                ("request", Channel.REQUEST),
            ):
                await client.publish(topics.topic(LANE, channel), recorded(name), qos=1)
            acked, answered = 0, False
            async with asyncio.timeout(15):
                async for message in client.messages:
                    got = codec.decode(bytes(message.payload))  # type: ignore[arg-type]
                    if isinstance(got, Ack):
                        acked = max(acked, got.hwm)
                    elif isinstance(got, Reply):
                        answered = got.ok
                    if acked == 1 and answered:
                        break
        assert (acked, answered) == (1, True)
    finally:
        ho.stop(timeout=5.0)
    with sqlite3.connect(f"file:{tmp_path / 'headoffice.db'}?mode=ro", uri=True) as conn:
        assert conn.execute("SELECT count(*) FROM documents").fetchone() == (1,)
        assert conn.execute(
            "SELECT state, backlog FROM lane_status WHERE store = 'S001' AND lane = 'L1'"
        ).fetchone() == ("online", 1)
