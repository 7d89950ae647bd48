"""A real head-office process behind a real Mosquitto takes what a hostile store publishes
under its own topics (issue 12: one message used to kill head office, or roll back a whole
group) and keeps serving an honest store, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiomqtt

from lanesync import stack
from lanesync.broker import Broker
from protocol import codec
from protocol.identity import Channel, LaneId, Topics
from protocol.messages import Ack
from tests.headoffice.ho_helpers import LaneSim, deep_sale, sale_doc
from tests.pgutil import Backend

TOPICS = Topics()
HOSTILE = LaneId("S666", "L1")
HONEST = LaneId("S001", "L1")


def nested_payload(depth: int) -> bytes:
    """A msgpack map nested `depth` deep, written by hand (msgpack.packb refuses to)."""
    return b"\x81\xa1a" * depth + b"\xa1x"


async def test_head_office_survives_a_hostile_store(
    backend: Backend, broker: Broker, tmp_path: Path
) -> None:
    hostile, honest = LaneSim(HOSTILE, epoch=66), LaneSim(HONEST, epoch=11)
    hostile.add(body=deep_sale())
    hostile.add(
        {"kind": "stock_adjustment", "lines": [{"item": "P1", "qty": "Infinity"}]},
        kind="stock_adjustment",
    )
    hostile.add(
        {"kind": "transit_inventory", "register_no": "T1", "dest_store": "S1", "sscc": ["1"]},
        kind="transit_inventory",
    )
    hostile.add(sale_doc(4, note="4111 1111 1111 1111"))
    hostile.add()
    honest.add_many(6)
    if backend.is_pg:
        ho = stack.headoffice(tmp_path, broker.port, database_url=str(backend.target))
    else:
        ho = stack.headoffice(tmp_path, broker.port)
        backend = Backend("sqlite", tmp_path / "headoffice.db")
    ho.start()
    try:
        ho.wait_notify("STATUS=subscribed", 60)
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="hostile-test") as c:
            await c.subscribe(TOPICS.topic(HONEST, Channel.ACK), qos=1)
            await c.subscribe(TOPICS.topic(HOSTILE, Channel.ACK), qos=1)
            journal = TOPICS.topic(HOSTILE, Channel.JOURNAL)
            poison = [
                nested_payload(990),  # the whole message nested 990 deep
                b"\xc1" * 100,  # not msgpack
                b"\x00" * (3 * 1024 * 1024),  # beyond max_message_bytes
                codec.encode(hostile.batch(1, 5)),  # a valid chain of bad bodies
            ]
            for raw in poison:
                await c.publish(journal, raw, qos=1)
            await c.publish(
                TOPICS.topic(HONEST, Channel.JOURNAL), codec.encode(honest.batch(1, 6)), qos=1
            )
            marks: dict[str, int] = {}
            async with asyncio.timeout(30):
                async for m in c.messages:
                    assert isinstance(m.payload, bytes)
                    ack = codec.decode(m.payload)
                    assert isinstance(ack, Ack)
                    marks[ack.lane.store] = ack.hwm
                    if marks == {"S666": 5, "S001": 6}:
                        break
        assert ho.proc is not None
        assert ho.proc.poll() is None, ho.log_tail()
    finally:
        assert ho.stop() == 0, ho.log_tail()
    assert backend.query("SELECT seq FROM journal WHERE store = 'S001' ORDER BY seq") == [
        (n,) for n in range(1, 7)
    ]
    held = backend.query("SELECT seq, code FROM held ORDER BY seq")
    assert (2, "invalid_body") in held
    assert (3, "invalid_body") in held
    assert (4, "card_number") in held
    applied = [r[0] for r in backend.query("SELECT seq FROM journal WHERE store = 'S666'")]
    assert 5 in applied
    assert sorted(applied + [r[0] for r in held]) == [1, 2, 3, 4, 5]
    quarantined = backend.query("SELECT raw_len FROM quarantine ORDER BY raw_len")
    assert [r[0] for r in quarantined] == sorted([len(nested_payload(990)), 100, 3 * 1024 * 1024])
