"""A store's batch whose entry body nests 990 deep used to kill head office (issue 12: a
RecursionError in the card-number scan, and the broker redelivered it on restart). Sent to a
real head office through a real Mosquitto, with a valid hash chain: head office stays up,
answers the lane, keeps serving the others, and keeps no card number hidden at the bottom."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import msgpack
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from lanesync import samples, stack
from lanesync.stack import Component
from protocol import codec
from protocol.chain import entry_hash, genesis
from protocol.identity import Channel, LaneId, Topics
from protocol.messages import Ack, Entry, JournalBatch
from tests.pan.pan_cases import digits_view
from tests.pan.pan_stack import MqttTap, PanStack

PAN = 4111111111111111
TXN = "0190f3a4-7b2c-7def-8a01-{:012d}"


def deep_body(depth: int, leaf: Any) -> bytes:
    """msgpack of {"kind": "sale", "ext": [[[...leaf...]]]}, written byte by byte (1.2 kB)."""
    head = msgpack.packb({"kind": "sale", "ext": None})[:-1]  # drop the nil
    return head + b"\x91" * depth + msgpack.packb(leaf)


def batch(lane: LaneId, bodies: list[bytes]) -> bytes:
    epoch, prev, entries = 7, genesis(lane, 7), []
    first = prev
    for seq, body in enumerate(bodies, 1):
        txn, ts = TXN.format(seq), 1_722_500_000_000 + seq
        prev = entry_hash(prev, seq, "sale", txn, ts, body)
        entries.append(Entry(seq, "sale", txn, ts, body, prev))
    return codec.encode(JournalBatch(lane, epoch, first, entries))


def acks(tap: MqttTap, lane: LaneId) -> list[Ack]:
    topic = Topics().topic(lane, Channel.ACK)
    out = []
    for t, payload in tap.payloads():
        if t == topic:
            msg = codec.decode(payload)
            assert isinstance(msg, Ack)
            out.append(msg)
    return out


def wait_for(cond: Any, timeout: float, what: str, ho: Component) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert ho.proc is not None
        assert ho.proc.poll() is None, f"head office died: {ho.log_tail()}"
        assert time.monotonic() < deadline, f"{what} within {timeout}s\n{ho.log_tail()}"
        time.sleep(0.05)


def test_a_body_nested_990_deep_does_not_take_head_office_down(
    tmp_path: Path, broker_factory: Any
) -> None:
    broker = broker_factory()
    work = tmp_path / "ho"
    work.mkdir()
    base = stack.headoffice(work, broker.port)
    ho = Component(base.name, ["--log-level", "DEBUG", *base.argv], work)
    tap = MqttTap(broker.port).start()
    pub = paho.Client(CallbackAPIVersion.VERSION2, client_id="pan-forger")
    try:
        ho.start().wait_notify("STATUS=subscribed", timeout=30)
        pub.connect("127.0.0.1", broker.port)
        pub.loop_start()
        forger, honest = LaneId("S9", "L1"), LaneId("S8", "L1")
        bodies = [deep_body(990, "clean"), deep_body(990, PAN), deep_body(990, "clean")]
        assert all(len(b) < 1300 for b in bodies)
        topic = Topics().topic(forger, Channel.JOURNAL)
        pub.publish(topic, batch(forger, bodies), qos=1).wait_for_publish(10)
        wait_for(lambda: acks(tap, forger), 20, "an ack for the forged batch", ho)

        sale = msgpack.packb(samples.sale(__import__("random").Random(1), "S8", "L1", 1))
        topic = Topics().topic(honest, Channel.JOURNAL)
        pub.publish(topic, batch(honest, [sale]), qos=1).wait_for_publish(10)
        wait_for(
            lambda: any(a.hwm == 1 for a in acks(tap, honest)), 20, "the honest lane acked", ho
        )
        # Invariant 9: the card-number entry (seq 2) is held at its seq, so the forged lane's
        # mark moves past it instead of stalling there.
        wait_for(lambda: any(a.hwm == 3 for a in acks(tap, forger)), 20, "the mark past 2", ho)
    finally:
        pub.loop_stop()
        pub.disconnect()
        ho.stop(timeout=10.0)
        tap.stop()
    kept = [p for p in PanStack.kept_files(work) if p.name.startswith("headoffice")]
    assert kept
    with sqlite3.connect(work / f"{base.name}.db") as db:
        held = db.execute("SELECT seq, code, body FROM held WHERE store = 'S9'").fetchall()
        journaled = {s for (s,) in db.execute("SELECT seq FROM journal WHERE store = 'S9'")}
    assert [(seq, code, body) for seq, code, body in held] == [(2, "card_number", None)]
    assert 2 not in journaled
    for path in kept:
        data = path.read_bytes()
        assert str(PAN) not in digits_view(data), path
        assert PAN.to_bytes(8, "big") not in data, path
