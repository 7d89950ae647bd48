"""The replicator against a real Mosquitto and a scripted head office.

The scripted head office is a plain aiomqtt client: it sees exactly what the lane publishes and
answers with the acks each test chooses, so hello, batching, the in-flight window, resend-from,
the ack timeout and the retained status with its last will are observed on the wire.
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
from lanesync.proxy import TcpProxy
from protocol import codec
from protocol.identity import Channel, LaneId, Topics
from protocol.messages import Ack, Hello, JournalBatch, Message, Status
from protocol.runtime.brokerconn import is_client_socket_race

LANE = LaneId("S1", "L1")
TOPICS = Topics()


def make_config(tmp_path: Path, port: int, **replication: Any) -> agent_config.AgentConfig:
    return agent_config.parse(
        {
            "store": LANE.store,
            "lane": LANE.lane,
            "journal": {"path": str(tmp_path / "journal.db")},
            "broker": {"port": port, "keepalive": 2},
            "replication": {"linger_ms": 0, "backoff_initial_s": 0.05, "backoff_max_s": 0.3}
            | replication,
            "api": {"socket": str(tmp_path / "api.sock")},
        }
    )


class ScriptedHeadOffice:
    """Collects what the lane sends; the test publishes acks with `ack()`."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.messages: asyncio.Queue[Message] = asyncio.Queue()

    async def run(self) -> None:
        async for m in self.client.messages:
            msg = codec.decode(bytes(m.payload))
            await self.messages.put(msg)

    async def next(self, kind: type[Message], timeout: float = 5.0) -> Any:
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.messages.get()
                if isinstance(msg, kind):
                    return msg

    async def nothing(self, kind: type[Message], within: float) -> None:
        with contextlib.suppress(TimeoutError):
            msg = await self.next(kind, within)
            pytest.fail(f"unexpected {msg!r}")

    async def ack(self, epoch: int, hwm: int, resend_from: int | None = None) -> None:
        await self.client.publish(
            TOPICS.topic(LANE, Channel.ACK),
            codec.encode(Ack(LANE, epoch, hwm, resend_from, "test")),
            qos=1,
        )


@contextlib.asynccontextmanager
async def scripted_ho(port: int) -> AsyncIterator[ScriptedHeadOffice]:
    async with aiomqtt.Client("127.0.0.1", port, identifier="scripted-ho") as client:
        for ch in (Channel.JOURNAL, Channel.HELLO):
            await client.subscribe(TOPICS.all_lanes(ch), qos=1)
        ho = ScriptedHeadOffice(client)
        task = asyncio.create_task(ho.run(), name="scripted-ho")
        try:
            yield ho
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await task


async def fill(journal: Journal, n: int) -> None:
    await asyncio.gather(*(journal.append("sale", {"kind": "sale", "n": i}) for i in range(n)))


async def test_hello_batches_window_and_outbox_only_on_ho_ack(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    cfg = make_config(tmp_path, broker.port, batch_max_entries=10, window=2)
    async with scripted_ho(broker.port) as ho, Journal(cfg.journal_path, LANE) as journal:
        await fill(journal, 45)
        async with Replicator(journal, cfg):
            hello: Hello = await ho.next(Hello)
            assert (hello.epoch, hello.last_seq, hello.first_unacked) == (journal.epoch, 45, 1)
            b1: JournalBatch = await ho.next(JournalBatch)
            b2: JournalBatch = await ho.next(JournalBatch)
            assert [(b.first_seq, b.last_seq) for b in (b1, b2)] == [(1, 10), (11, 20)]
            # window of 2 batches: nothing more until head office acks
            await ho.nothing(JournalBatch, within=0.5)
            # the broker PUBACKed both, yet nothing left the outbox
            assert journal.acked_seq == 0
            await ho.ack(journal.epoch, 10)
            b3: JournalBatch = await ho.next(JournalBatch)
            assert (b3.first_seq, b3.last_seq) == (21, 30)
            assert journal.acked_seq == 10
            await ho.ack(journal.epoch, 45)
            for _ in range(50):
                if journal.acked_seq == 45:
                    break
                await asyncio.sleep(0.05)
            assert journal.acked_seq == 45
            assert journal.backlog == 0


async def test_resend_from_and_ack_timeout_rewind(tmp_path: Path, broker: MosquittoBroker) -> None:
    cfg = make_config(tmp_path, broker.port, batch_max_entries=5, window=1, ack_timeout_s=0.6)
    async with scripted_ho(broker.port) as ho, Journal(cfg.journal_path, LANE) as journal:
        await fill(journal, 12)
        async with Replicator(journal, cfg):
            await ho.next(Hello)
            first: JournalBatch = await ho.next(JournalBatch)
            assert first.first_seq == 1
            await ho.ack(journal.epoch, 0, resend_from=1)  # "I lost it, send from 1"
            again: JournalBatch = await ho.next(JournalBatch)
            assert (again.first_seq, again.last_seq) == (1, 5)
            assert again.prev_hash == first.prev_hash
            await ho.ack(journal.epoch, 5)
            nxt: JournalBatch = await ho.next(JournalBatch)
            assert nxt.first_seq == 6
            # head office goes quiet: after ack_timeout the lane says hello and resends from 6
            hello: Hello = await ho.next(Hello, timeout=3)
            assert hello.first_unacked == 6
            resent: JournalBatch = await ho.next(JournalBatch, timeout=3)
            assert resent.first_seq == 6
            assert journal.acked_seq == 5


async def test_retained_status_and_last_will(tmp_path: Path, broker: MosquittoBroker) -> None:
    cfg_direct = make_config(tmp_path, broker.port)
    async with TcpProxy("127.0.0.1", broker.port, name="wan") as link:
        cfg = make_config(tmp_path, link.port)
        assert cfg.journal_path == cfg_direct.journal_path
        async with Journal(cfg.journal_path, LANE) as journal, Replicator(journal, cfg) as rep:
            for _ in range(100):
                if rep.stats.connected:
                    break
                await asyncio.sleep(0.05)
            assert rep.stats.connected
            status_topic = TOPICS.topic(LANE, Channel.STATUS)

            async def retained_state() -> str:
                async with aiomqtt.Client("127.0.0.1", broker.port) as c:
                    await c.subscribe(status_topic, qos=1)
                    async with asyncio.timeout(5):
                        async for m in c.messages:
                            s = codec.decode(bytes(m.payload))
                            assert isinstance(s, Status)
                            return s.state
                raise AssertionError("no status")

            assert await retained_state() == "online"
            # The link dies without a DISCONNECT: the broker publishes the lane's last will.
            link.cut()
            for _ in range(50):
                if await retained_state() == "offline":
                    break
                await asyncio.sleep(0.1)
            assert await retained_state() == "offline"
            link.resume()
            for _ in range(100):
                if rep.stats.reconnects >= 1 and await retained_state() == "online":
                    break
                await asyncio.sleep(0.1)
            assert rep.stats.reconnects >= 1
            assert await retained_state() == "online"


async def test_socket_race_inside_the_mqtt_client_is_a_link_failure(
    tmp_path: Path, broker: MosquittoBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """aiomqtt connects on an executor thread while paho's socket callbacks run on the loop; a
    reset in between hands aiomqtt a None socket (`None.fileno()`). Seen with 1000 lanes
    losing their link at once: the replicator stopped. It must retry like any link failure."""
    # The race is inside aiomqtt's private paho socket callback: no public hook reaches it.
    real = aiomqtt.Client._on_socket_register_write
    races = 0

    def racy(self: aiomqtt.Client, client: Any, userdata: Any, sock: Any) -> None:
        nonlocal races
        if races < 2 and self.identifier == "lanesync-S1-L1":  # the lane's, not the HO's
            races += 1
            sock = None  # what paho passes when the loop thread closed it meanwhile
        real(self, client, userdata, sock)

    monkeypatch.setattr(aiomqtt.Client, "_on_socket_register_write", racy)
    cfg = make_config(tmp_path, broker.port)
    async with scripted_ho(broker.port) as ho, Journal(cfg.journal_path, LANE) as journal:
        await fill(journal, 3)
        async with Replicator(journal, cfg) as rep:
            batch: JournalBatch = await ho.next(JournalBatch, timeout=10)
            assert (batch.first_seq, batch.last_seq) == (1, 3)
            assert races == 2
            assert rep.stats.connects == 1  # two attempts failed, the third connected
            assert "socket closed under the client" in (rep.stats.last_error or "")
            await ho.ack(journal.epoch, 3)
            async with asyncio.timeout(5):
                while journal.acked_seq < 3:
                    await asyncio.sleep(0.02)


def test_only_a_library_socket_race_counts_as_a_link_failure() -> None:
    def ours() -> None:
        sock: Any = None
        sock.fileno()

    with pytest.raises(AttributeError) as caught:
        ours()
    assert not is_client_socket_race(caught.value)  # our own bug stays a bug
    assert not is_client_socket_race(AttributeError("raised by hand"))
    assert not is_client_socket_race(OSError("not an AttributeError"))
