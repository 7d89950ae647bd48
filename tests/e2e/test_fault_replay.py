"""Duplicated, replayed and reordered journal batches, published by a raw MQTT client.

The batches are the lane's own (cut from its journal file exactly as the replicator cuts them),
published again after head office has them, out of order, and ahead of a gap. Head office must
apply nothing twice, hold nothing past a gap, and ask the lane to resend from the first missing
seq (invariants 3 and 4).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from protocol import codec
from protocol.chain import genesis
from protocol.identity import Channel, LaneId, Topics
from protocol.messages import Ack, Entry, JournalBatch
from tests.e2e.e2e_cluster import Cluster
from tests.e2e.e2e_helpers import (
    all_confirmed,
    assert_exactly_once,
    ho_counters,
    ho_hwm,
    read_lane_journal,
    ro,
    wait_until,
)

LANE = LaneId("S5", "L1")
TOPICS = Topics()


def journal_batches(
    path: Path, lane: LaneId, first: int, last: int, size: int
) -> list[JournalBatch]:
    """Batches of the lane's journal entries first..last, chained like the replicator's."""
    db = ro(path)
    try:
        epoch = int(db.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()[0])
        rows = db.execute(
            "SELECT seq, kind, txn_id, ts, body, hash FROM entries WHERE seq >= ? ORDER BY seq",
            (first - 1,),
        ).fetchall()
    finally:
        db.close()
    entries = {
        int(r[0]): Entry(int(r[0]), r[1], r[2], int(r[3]), bytes(r[4]), bytes(r[5])) for r in rows
    }
    out = []
    for start in range(first, last + 1, size):
        chunk = [entries[s] for s in range(start, min(start + size, last + 1))]
        prev = genesis(lane, epoch) if start == 1 else entries[start - 1].hash
        out.append(JournalBatch(lane, epoch, prev, chunk))
    return out


class RawClient:
    """A bare paho client: publishes as if it were the lane, and records head office's acks."""

    def __init__(self, port: int, lane: LaneId) -> None:
        self.acks: list[Ack] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="e2e-replayer")
        self.client.on_connect = lambda c, *_: c.subscribe(TOPICS.topic(lane, Channel.ACK), qos=1)
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            self.close()
            raise AssertionError("raw client could not subscribe to the ack topic")
        self.topic = TOPICS.topic(lane, Channel.JOURNAL)

    def _on_message(self, _c: object, _u: object, msg: paho.MQTTMessage) -> None:
        ack = codec.decode(bytes(msg.payload))
        assert isinstance(ack, Ack)
        with self._lock:
            self.acks.append(ack)

    def publish(self, batch: JournalBatch) -> None:
        info = self.client.publish(self.topic, codec.encode(batch), qos=1)
        info.wait_for_publish(timeout=10)
        assert info.is_published()

    def acks_since(self, n: int) -> list[Ack]:
        with self._lock:
            return self.acks[n:]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def raw(cluster: Cluster) -> Iterator[RawClient]:
    cluster.start_broker()
    assert cluster.broker is not None
    client = RawClient(cluster.broker.port, LANE)
    try:
        yield client
    finally:
        client.close()


def test_replayed_and_reordered_batches_are_applied_once_and_gaps_asked_again(
    cluster: Cluster, raw: RawClient
) -> None:
    rng = random.Random(7)
    cluster.headoffice()
    wan = cluster.proxy("wan-S5")
    cluster.agent(LANE, port=wan.port, batch_max_entries=25)
    first = cluster.till(LANE, limit=300)
    first.wait_confirmed(300, 20)
    first.stop()
    cluster.wait_drained(LANE, timeout=20)
    journal = cluster.journal(LANE)
    epoch = read_lane_journal(journal).epoch
    n = read_lane_journal(journal).last_seq
    assert n == 300

    def redelivered() -> int:
        return ho_counters(cluster.ho_db).get("entries_redelivered", 0)

    def held() -> int:
        return ho_hwm(cluster.ho_db, LANE, epoch)

    # 1. Everything head office already has, again: twice over, shuffled, and cut differently.
    replays = journal_batches(journal, LANE, 1, n, 25) * 2
    replays += journal_batches(journal, LANE, 7, n, 40)
    rng.shuffle(replays)
    expected = redelivered() + sum(len(b.entries) for b in replays)
    for b in replays:
        raw.publish(b)
    wait_until(lambda: redelivered() == expected, 15, "head office seeing every replay")
    assert held() == n
    assert_exactly_once(cluster.ho_db, journal, LANE, first.confirmed)

    # 2. The lane goes offline and sells on; its new entries arrive out of order and with gaps.
    wan.cut()
    second = cluster.till(LANE, limit=100)
    second.wait_confirmed(100, 20)
    second.stop()
    assert read_lane_journal(journal).last_seq == n + 100
    b1, b2, b3, b4 = journal_batches(journal, LANE, n + 1, n + 100, 25)

    def publish_expect_resend(batch: JournalBatch, resend_from: int) -> None:
        seen = len(raw.acks)
        gaps = ho_counters(cluster.ho_db).get("gaps", 0)
        raw.publish(batch)
        wait_until(
            lambda: any(a.resend_from is not None for a in raw.acks_since(seen)),
            10,
            f"head office asking for a resend after seq {batch.first_seq}",
        )
        asks = [a for a in raw.acks_since(seen) if a.resend_from is not None]
        assert asks[0].resend_from == resend_from, asks
        assert asks[0].hwm == resend_from - 1
        assert asks[0].epoch == epoch
        assert ho_counters(cluster.ho_db).get("gaps", 0) > gaps
        assert held() == resend_from - 1, "head office applied entries past a gap"

    def publish_expect_hwm(batch: JournalBatch, hwm: int) -> None:
        raw.publish(batch)
        wait_until(lambda: held() == hwm, 10, f"head office applying up to seq {hwm}")

    publish_expect_resend(b3, n + 1)  # seqs 51..75 of the new ones before 1..50: a gap
    publish_expect_resend(b2, n + 1)
    publish_expect_hwm(b1, n + 25)
    publish_expect_resend(b4, n + 26)  # still missing b2's seqs: b3 is not applied
    publish_expect_hwm(b2, n + 50)
    publish_expect_hwm(b1, n + 50)  # a replay of what it has changes nothing
    publish_expect_resend(b4, n + 51)
    publish_expect_hwm(b3, n + 75)
    publish_expect_hwm(b4, n + 100)

    # 3. All of it once more, shuffled, then the lane itself comes back and catches up.
    replays = journal_batches(journal, LANE, 1, n + 100, 25)
    rng.shuffle(replays)
    expected = redelivered() + sum(len(b.entries) for b in replays)
    for b in replays:
        raw.publish(b)
    wait_until(lambda: redelivered() == expected, 15, "head office seeing the last replays")

    wan.resume()
    third = cluster.till(LANE, limit=50)
    third.wait_confirmed(50, 20)
    cluster.stop_tills()
    cluster.wait_drained(LANE, timeout=20)
    assert_exactly_once(
        cluster.ho_db,
        journal,
        LANE,
        all_confirmed([first, second, third]),
        min_confirmed=450,
    )
