"""The replicator against acks that arrive out of order, as several ingest workers send them.

Workers on one shared subscription publish acks over their own connections, so an ack committed
earlier can reach the lane after a later one. A real Mosquitto carries the traffic; a plain
aiomqtt client plays head office and publishes the acks each test chooses.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from agent import config as agent_config
from agent.journal import Journal
from agent.replicator import Replicator
from lanesync.broker import MosquittoBroker
from protocol import codec
from protocol.identity import Channel, LaneId, Topics
from protocol.messages import Ack, JournalBatch, Message

LANE = LaneId("S1", "L1")
TOPICS = Topics()


def make_config(tmp_path: Path, port: int, **replication: Any) -> agent_config.AgentConfig:
    return agent_config.parse(
        {
            "store": LANE.store,
            "lane": LANE.lane,
            "journal": {"path": str(tmp_path / "journal.db")},
            "broker": {"port": port, "keepalive": 5},
            "replication": {"linger_ms": 0, "batch_max_entries": 10, "window": 3} | replication,
            "api": {"socket": str(tmp_path / "api.sock")},
        }
    )


class Worker:
    """Head office as seen on the wire: collects what the lane sends, publishes chosen acks."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.received: asyncio.Queue[Message] = asyncio.Queue()

    async def run(self) -> None:
        async for m in self.client.messages:
            await self.received.put(codec.decode(bytes(m.payload)))

    async def next_batch(self, timeout: float = 5.0) -> JournalBatch:
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.received.get()
                if isinstance(msg, JournalBatch):
                    return msg

    async def no_batch(self, within: float) -> None:
        with contextlib.suppress(TimeoutError):
            batch = await self.next_batch(within)
            pytest.fail(f"the lane resent seq {batch.first_seq}..{batch.last_seq}")

    async def ack(self, epoch: int, hwm: int, resend_from: int | None = None) -> None:
        await self.client.publish(
            TOPICS.topic(LANE, Channel.ACK),
            codec.encode(Ack(LANE, epoch, hwm, resend_from, "test")),
            qos=1,
        )


@contextlib.asynccontextmanager
async def worker(port: int) -> AsyncIterator[Worker]:
    async with aiomqtt.Client("127.0.0.1", port, identifier="scripted-worker") as client:
        for ch in (Channel.JOURNAL, Channel.HELLO):
            await client.subscribe(TOPICS.all_lanes(ch), qos=1)
        w = Worker(client)
        task = asyncio.create_task(w.run(), name="scripted-worker")
        try:
            yield w
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await task


async def until(predicate: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


async def test_late_ack_from_another_worker_is_ignored(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    cfg = make_config(tmp_path, broker.port, ack_timeout_s=5.0)
    async with worker(broker.port) as ho, Journal(cfg.journal_path, LANE) as journal:
        for i in range(30):
            await journal.append("sale", {"kind": "sale", "n": i})
        async with Replicator(journal, cfg) as rep:
            batches = [await ho.next_batch() for _ in range(3)]
            assert [(b.first_seq, b.last_seq) for b in batches] == [(1, 10), (11, 20), (21, 30)]
            # worker B committed up to 30 and its ack arrives first ...
            await ho.ack(journal.epoch, 30)
            await until(lambda: journal.acked_seq == 30)
            # ... then worker A's ack for 10, and a resend-from A answered before B's commit
            await ho.ack(journal.epoch, 10)
            await ho.ack(journal.epoch, 10, resend_from=11)
            await until(lambda: rep.stats.stale_acks == 2)
            await ho.no_batch(within=0.7)
            assert journal.acked_seq == 30
            assert rep.stats.rewinds == 0
            # new entries still flow from the real mark
            await journal.append("sale", {"kind": "sale", "n": 30})
            nxt = await ho.next_batch()
            assert (nxt.first_seq, nxt.last_seq) == (31, 31)


async def test_ack_behind_long_after_the_last_one_is_obeyed(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    """Head office restored from an older copy really holds less: after the ack timeout with no
    current ack, an ack behind the mark makes the lane resend from it."""
    cfg = make_config(tmp_path, broker.port, ack_timeout_s=0.6)
    async with worker(broker.port) as ho, Journal(cfg.journal_path, LANE) as journal:
        for i in range(20):
            await journal.append("sale", {"kind": "sale", "n": i})
        async with Replicator(journal, cfg) as rep:
            await ho.next_batch()
            await ho.next_batch()
            await ho.ack(journal.epoch, 20)
            await until(lambda: journal.acked_seq == 20)
            await asyncio.sleep(0.8)  # past ack_timeout_s since the last current ack
            await ho.ack(journal.epoch, 5, resend_from=6)
            again = await ho.next_batch()
            assert (again.first_seq, again.last_seq) == (6, 15)
            assert rep.stats.stale_acks == 0
            assert journal.acked_seq == 20  # the outbox mark never goes back
