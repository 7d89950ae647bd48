"""A lane whose broker session lost its ack subscription renews the session (no lane stalls).

Seen in `lanesync bench fleet --lanes 1000` on a loaded machine: a few lanes stayed connected
and resent on every ack timeout, forever, while head office published their acks; the broker
no longer routed those acks to the lane's session. Here the same state is made on purpose: a
real lane (journal and replicator) and a real head office (ingest over a SQLite file) on a real
Mosquitto, the lane's link through a relay that, on the lane's first connection only, rewrites
the ack topic in its SUBSCRIBE to another topic of the same length. The broker grants it, so
the lane is connected and subscribed as far as its SUBACK says, and head office, which hears
its hello and batches, acks them to a topic that session never receives.

The lane must notice (STALL_RENEW_AFTER ack timeouts without an ack while head office's
announcement says it is online), end the session and reconnect, which subscribes again, and
then everything it journaled is acked, applied at head office exactly once, in seq order.
Without the renewal the lane resends from its acked mark forever and this test times out.

The same relay also refuses the ack topic in the SUBACK (0x80) or drops that SUBACK: the
attempt fails and is retried with backoff, never a session; a refusal of another topic is only
logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agent import config as agent_config
from agent import status as lane_status
from agent.journal import Journal
from agent.operations import Operations
from agent.replicator import MIN_HEALTHY_SESSION_S, STALL_RENEW_AFTER, Replicator
from headoffice import config as ho_config
from headoffice.ingest import Ingest
from lanesync.broker import MosquittoBroker
from protocol.identity import Channel, LaneId, Topics
from protocol.runtime.tasks import cancel_and_wait
from tests.sync.test_sync_restore import query

LANE = LaneId("S5", "L3")
ACK_TOPIC = Topics().topic(LANE, Channel.ACK).encode()
DEAF_TOPIC = ACK_TOPIC[:-1] + b"x"  # same length: the SUBSCRIBE's lengths stay right
ACK_TIMEOUT_S = 1.0
N = 40

SUBSCRIBE = 0x80  # MQTT 3.1.1 fixed header, packet type 8 (flags 0b0010 go with it)
SUBACK = 0x90  # type 9, no flags


async def read_packet(reader: asyncio.StreamReader) -> bytes:
    """One whole MQTT control packet: fixed header, remaining length, the rest (MQTT 3.1.1,
    2.2.3: the length is a base-128 varint of at most four bytes)."""
    head = await reader.readexactly(1)
    length, shift, size = 0, 0, b""
    while True:
        byte = await reader.readexactly(1)
        size += byte
        length |= (byte[0] & 0x7F) << shift
        shift += 7
        if not byte[0] & 0x80:
            break
    return head + size + await reader.readexactly(length)


def subscribed_topics(packet: bytes) -> list[bytes]:
    """The topic filters of a SUBSCRIBE (MQTT 3.1.1, 3.8.3: after the packet id, each filter
    is a 2-byte length, the filter and a requested-QoS byte)."""
    i = 1
    while packet[i] & 0x80:
        i += 1
    i += 3  # the last length byte and the packet id
    topics = []
    while i < len(packet):
        n = int.from_bytes(packet[i : i + 2], "big")
        topics.append(packet[i + 2 : i + 2 + n])
        i += 2 + n + 1
    return topics


class SabotageRelay:
    """A TCP relay in front of the broker that spoils the lane's ack subscription on its first
    `times` connections; every other byte passes as is.

    - `deafen`: the SUBSCRIBE's ack topic becomes DEAF_TOPIC. The broker grants it: the lane's
      session is subscribed, as far as its SUBACK says, to a topic nobody acks on.
    - `refuse`: the SUBACK's code for the ack topic becomes 0x80, as a broker refusing it says.
    - `drop`: the SUBACK for the ack topic never reaches the lane (a broker or lane too loaded
      to answer or read it in time).
    """

    def __init__(
        self, upstream_port: int, mode: str, *, times: int = 1, target: bytes = ACK_TOPIC
    ) -> None:
        assert mode in ("deafen", "refuse", "drop")
        self.target = target  # the subscription spoiled (refuse and drop; deafen: the acks)
        self.upstream_port = upstream_port
        self.mode = mode
        self.times = times
        self.connections = 0
        self.spoiled = 0  # packets rewritten
        self.subscribes = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def __aenter__(self) -> SabotageRelay:
        self._server = await asyncio.start_server(self._accepted, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            await cancel_and_wait(task)
        await self._server.wait_closed()

    def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.get_running_loop().create_task(
            self._serve(reader, writer, spoil=self.connections <= self.times)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, spoil: bool
    ) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        ack_index: list[int] = []  # where the target is in this connection's SUBSCRIBE
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._lane_to_broker(reader, up_writer, spoil, ack_index))
                tg.create_task(self._broker_to_lane(up_reader, writer, spoil, ack_index))
        except* (asyncio.IncompleteReadError, ConnectionError):
            pass  # one side closed: both go
        finally:
            for w in (writer, up_writer):
                w.close()
                with contextlib.suppress(ConnectionError):
                    await w.wait_closed()

    async def _lane_to_broker(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        spoil: bool,
        ack_index: list[int],
    ) -> None:
        while True:
            packet = await read_packet(reader)
            if packet[0] & 0xF0 == SUBSCRIBE:
                self.subscribes += 1
                topics = subscribed_topics(packet)
                if self.target in topics:
                    ack_index.append(topics.index(self.target))
                    if spoil and self.mode == "deafen":
                        assert self.target == ACK_TOPIC
                        packet = packet.replace(ACK_TOPIC, DEAF_TOPIC)
                        self.spoiled += 1
            writer.write(packet)
            await writer.drain()

    async def _broker_to_lane(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        spoil: bool,
        ack_index: list[int],
    ) -> None:
        while True:
            packet = await read_packet(reader)
            if packet[0] == SUBACK and spoil and self.mode != "deafen" and ack_index:
                # Fixed header (2 bytes: a few codes), packet id (2), then one code a topic.
                code = 4 + ack_index.pop(0)
                self.spoiled += 1
                if self.mode == "drop":
                    continue
                packet = packet[:code] + b"\x80" + packet[code + 1 :]
            writer.write(packet)
            await writer.drain()


def lane_config(
    tmp_path: Path, port: int, ack_timeout_s: float = ACK_TIMEOUT_S, **replication: Any
) -> agent_config.AgentConfig:
    return agent_config.parse(
        {
            "store": LANE.store,
            "lane": LANE.lane,
            "journal": {"path": str(tmp_path / "journal.db")},
            "broker": {"port": port, "keepalive": 2},
            "replication": {
                "linger_ms": 0,
                "backoff_initial_s": 0.05,
                "backoff_max_s": 0.3,
                "batch_max_entries": 5,
                "window": 2,
                "ack_timeout_s": ack_timeout_s,
            }
            | replication,
            "api": {"socket": str(tmp_path / "api.sock")},
        }
    )


async def until(what: str, cond: Any, timeout: float) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not cond():
                await asyncio.sleep(0.02)
    except TimeoutError:
        pytest.fail(f"timed out after {timeout:g}s waiting for {what}")


@contextlib.asynccontextmanager
async def head_office(ho_db: Path, port: int) -> AsyncIterator[Ingest]:
    ingest = Ingest(ho_config.parse({"database": {"path": str(ho_db)}, "broker": {"port": port}}))
    async with ingest:
        await ingest.ready.wait()
        yield ingest


async def lane_drains(
    journal: Journal, cfg: agent_config.AgentConfig, ingest: Ingest, relay: SabotageRelay
) -> None:
    """Journal N entries, half before the lane connects; return once all are acked."""
    for i in range(N // 2):
        await journal.append("sale", {"kind": "sale", "n": i})
    async with Replicator(journal, cfg) as rep, Operations(cfg, journal, rep):
        # The deaf session: connected, its SUBACK granted everything, head office online and
        # receiving, yet no ack reaches the lane.
        await until("the deaf session", lambda: rep.stats.connected, 10)
        assert relay.spoiled == 1
        await until("head office online", lambda: rep.stats.ho_online is True, 5)
        await until(
            "head office has the first batches", lambda: ingest.stats.entries_applied >= 5, 5
        )
        assert journal.acked_seq == 0
        for i in range(N // 2, N):  # the lane sells on meanwhile
            await journal.append("sale", {"kind": "sale", "n": i})
        # Renewed after STALL_RENEW_AFTER ack timeouts, then everything is acked.
        await until(
            "every entry acked",
            lambda: journal.acked_seq == N,
            (STALL_RENEW_AFTER + 2) * ACK_TIMEOUT_S + 15,
        )
        assert rep.stats.session_renewals == 1
        assert rep.stats.connects == 2
        assert relay.connections == 2
        assert relay.subscribes == 2  # one SUBSCRIBE per session, for every topic
        assert rep.stats.refused is None
        await until("head office applied all", lambda: ingest.stats.entries_applied == N, 5)
        # The technician sees it: `lanesync status` (its live file is rewritten within
        # LIVE_INTERVAL_S).
        await until(
            "lanesync status to show the renewal",
            lambda: "1 renewed for want of acks" in lane_status.render(lane_status.collect(cfg)),
            lane_status.LIVE_INTERVAL_S + 2,
        )


async def test_lane_renews_a_session_that_hears_no_acks(
    tmp_path: Path, broker: MosquittoBroker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="agent.replicator")
    ho_db = tmp_path / "ho.db"
    async with (
        head_office(ho_db, broker.port) as ingest,
        SabotageRelay(broker.port, "deafen") as relay,
    ):
        cfg = lane_config(tmp_path, relay.port)
        async with Journal(cfg.journal_path, LANE) as journal:
            await lane_drains(journal, cfg, ingest, relay)
    renewal = [r.getMessage() for r in caplog.records if "no ack from head office" in r.message]
    assert len(renewal) == 1
    assert f"lane {LANE}" in renewal[0]
    assert f"{STALL_RENEW_AFTER} ack timeouts in a row" in renewal[0]
    # Head office: each entry once, applied once, in seq order, the lane's own documents.
    lane_txns = [r[0] for r in query(cfg.journal_path, "SELECT txn_id FROM entries ORDER BY seq")]
    assert len(set(lane_txns)) == N
    assert query(ho_db, "SELECT seq FROM journal ORDER BY rowid") == [(s,) for s in range(1, N + 1)]
    assert query(ho_db, "SELECT count(*) FROM journal WHERE applied = 1") == [(N,)]
    assert [r[0] for r in query(ho_db, "SELECT txn_id FROM journal ORDER BY seq")] == lane_txns
    assert query(ho_db, "SELECT count(*) FROM documents") == [(N,)]
    assert query(ho_db, "SELECT count(*) FROM quarantine") == [(0,)]


async def test_a_refused_ack_subscription_fails_the_connect(
    tmp_path: Path, broker: MosquittoBroker, caplog: pytest.LogCaptureFixture
) -> None:
    """A SUBACK refusing the ack topic (0x80) is a failed connect, retried with backoff: the
    lane does not sit in a session that can never hear head office (here well within an ack
    timeout of 30 s, so no ack timeout and no renewal brought it back)."""
    caplog.set_level(logging.WARNING, logger="agent.replicator")
    ho_db = tmp_path / "ho.db"
    refusal = f"the broker refused the subscription to {ACK_TOPIC.decode()} (0x80)"
    async with (
        head_office(ho_db, broker.port) as ingest,
        SabotageRelay(broker.port, "refuse") as relay,
    ):
        cfg = lane_config(tmp_path, relay.port, ack_timeout_s=30.0)
        async with Journal(cfg.journal_path, LANE) as journal:
            for i in range(N):
                await journal.append("sale", {"kind": "sale", "n": i})
            async with Replicator(journal, cfg) as rep:
                await until("every entry acked", lambda: journal.acked_seq == N, 10)
                assert relay.spoiled == 1
                assert relay.connections == 2
                assert rep.stats.last_error == refusal
                assert rep.stats.connects == 1  # the refused attempt was never a session
                assert (rep.stats.session_renewals, rep.stats.rewinds) == (0, 0)
                await until("head office applied all", lambda: ingest.stats.entries_applied == N, 5)
    retried = [r.getMessage() for r in caplog.records if refusal in r.getMessage()]
    assert len(retried) == 1
    assert retried[0].startswith(f"lane {LANE}: link down ({refusal}); retrying in ")
    assert query(ho_db, "SELECT seq FROM journal ORDER BY rowid") == [(s,) for s in range(1, N + 1)]


async def test_a_subscribe_without_suback_is_a_failed_connect(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    """No SUBACK within the publish timeout (aiomqtt then gives up on it: a SUBACK coming later
    is what it logs as 'Unexpected message ID'): the attempt fails and is retried with backoff.
    It is not a session, even though it lasted longer than MIN_HEALTHY_SESSION_S (before, it
    counted as a healthy session that broke, so the lane reconnected at once, without backoff,
    while its previous connection might still be open at the broker)."""
    ho_db = tmp_path / "ho.db"
    async with (
        head_office(ho_db, broker.port) as ingest,
        SabotageRelay(broker.port, "drop") as relay,
    ):
        cfg = lane_config(tmp_path, relay.port, ack_timeout_s=30.0, publish_timeout_s=5.5)
        assert cfg.replication.publish_timeout_s > MIN_HEALTHY_SESSION_S
        async with Journal(cfg.journal_path, LANE) as journal:
            for i in range(N):
                await journal.append("sale", {"kind": "sale", "n": i})
            async with Replicator(journal, cfg) as rep:
                await until("every entry acked", lambda: journal.acked_seq == N, 20)
                assert (relay.spoiled, relay.connections) == (1, 2)
                assert rep.stats.last_error is not None
                assert rep.stats.last_error.startswith(f"no SUBACK for {ACK_TOPIC.decode()}, ")
                assert (rep.stats.connects, rep.stats.reconnects) == (1, 0)
                assert (rep.stats.session_renewals, rep.stats.rewinds) == (0, 0)
                await until("head office applied all", lambda: ingest.stats.entries_applied == N, 5)
    assert query(ho_db, "SELECT seq FROM journal ORDER BY rowid") == [(s,) for s in range(1, N + 1)]


async def test_a_refused_reply_subscription_is_logged_and_the_lane_goes_on(
    tmp_path: Path, broker: MosquittoBroker, caplog: pytest.LogCaptureFixture
) -> None:
    """Only the ack subscription is vital: a broker whose ACL predates another topic (replies
    here) must not stop the lane; the refusal is logged for the technician."""
    caplog.set_level(logging.WARNING, logger="agent.replicator")
    ho_db = tmp_path / "ho.db"
    reply = Topics().topic(LANE, Channel.REPLY)
    async with (
        head_office(ho_db, broker.port) as ingest,
        SabotageRelay(broker.port, "refuse", target=reply.encode()) as relay,
    ):
        cfg = lane_config(tmp_path, relay.port, ack_timeout_s=30.0)
        async with Journal(cfg.journal_path, LANE) as journal:
            for i in range(N):
                await journal.append("sale", {"kind": "sale", "n": i})
            async with Replicator(journal, cfg) as rep:
                await until("every entry acked", lambda: journal.acked_seq == N, 10)
                assert (relay.spoiled, relay.connections) == (1, 1)
                assert (rep.stats.connects, rep.stats.last_error) == (1, None)
                await until("head office applied all", lambda: ingest.stats.entries_applied == N, 5)
    warned = [r.getMessage() for r in caplog.records if "refused the subscription" in r.message]
    assert warned == [
        f"lane {LANE}: the broker refused the subscription to {reply} (0x80); check its ACL"
    ]
