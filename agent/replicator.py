"""Drains the journal to head office over MQTT, and carries request/reply.

On every connect the lane says hello (epoch, last seq, first unacked seq) and starts sending from
its acked mark. Batches are cut by count, bytes and a short linger; at most `window` batches are
published but not yet acknowledged by head office. A PUBACK only means the broker has a batch;
an entry leaves the outbox only when head office's ack moves the high-water mark past it
(invariant 2). If acks stop coming, or head office asks for a resend, the lane rewinds to the
acked mark and sends again: head office drops what it already has. Reconnects back off
exponentially with full jitter, capped (tenacity).

A session is only up once the broker's SUBACK answers its one SUBSCRIBE and grants the ack
topic (refused or unanswered, the connect fails and backs off). And if acks still stop
while head office's announcement says it is online, `STALL_RENEW_AFTER` ack timeouts in a row
with no ack at all end the session and open a new one (subscribing again), with the reconnect
backoff: a session whose ack subscription the broker lost would otherwise resend forever.

Head office announces each of its processes, retained on `{prefix}/headoffice` (issue 16.2):
when the lane sees an incarnation it has not seen before, head office restarted and may have
lost batches it had received but not committed, so the lane rewinds to its acked mark and says
hello at once rather than waiting `ack_timeout_s`. The hello says which protocol versions the
lane speaks and carries its chain hashes at its acked seq and a few below (the proof, issue
16.7); head office answers with the version to use and its verdict (a range, when the
checkpoints only bound where the chains differ, is narrowed to the seq with OP_PROOF_NARROW
requests, off the send path), or with a rewind (it was
restored from an older copy: resend what it lost, from the retention) or a refusal (this
journal is behind head office's copy of its own epoch: sending on would fork the chain, so
nothing more is sent and `stats.refused` says why).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, Self

import aiomqtt
import tenacity
from paho.mqtt.reasoncodes import ReasonCode

from agent.config import AgentConfig
from agent.journal import Journal, JournalError
from agent.journal.journal import new_txn_id
from protocol import codec, proof
from protocol.errors import LanesyncError, ProtocolError
from protocol.identity import Channel
from protocol.messages import (
    SUPPORTED_VERSIONS,
    Ack,
    HeadOffice,
    Hello,
    JournalBatch,
    Reply,
    Request,
    Status,
)
from protocol.requests import OP_PROOF_NARROW
from protocol.runtime import brokerconn
from protocol.runtime.tasks import Tasks
from protocol.runtime.version import VERSION

log = logging.getLogger(__name__)


MIN_HEALTHY_SESSION_S = 5.0
# Consecutive ack timeouts without a single ack, while head office says it is online, after
# which the session is renewed (30 s with the default ack_timeout_s of 10 s). Not a config
# key: fewer renews a healthy-looking session on a slow head office for nothing, more leaves a
# deaf lane stuck for longer; the ack timeout already scales it.
STALL_RENEW_AFTER = 3
_TCP_NODELAY = (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class LinkDown(LanesyncError):
    """The MQTT session ended; the replicator reconnects."""


class RequestTimeout(LanesyncError):
    """Head office did not answer a request in time."""


class SessionStalled(LanesyncError):
    """Connected, head office online, but no ack for several ack timeouts: the session is
    renewed (the broker may have lost its ack subscription)."""


@dataclass(slots=True)
class ReplicatorStats:
    connected: bool = False
    connects: int = 0
    reconnects: int = 0
    batches_sent: int = 0
    entries_sent: int = 0
    rewinds: int = 0
    stale_acks: int = 0  # acks behind one already received (another ingest worker's), ignored
    last_error: str | None = None
    last_ack_at: float | None = None
    ho_hwm: int | None = None
    ho_incarnation: int | None = None  # head office's latest announced process (16.2)
    ho_online: bool | None = None  # what its announcement or last will said
    ho_version: str | None = None  # the lanesync release its announcement named (18.3)
    ho_protocols: tuple[int, ...] = ()  # the protocol versions it serves
    ho_restarts_seen: int = 0  # new incarnations seen, each answered with a resend at once
    session_renewals: int = 0  # sessions ended because no ack came while head office was online
    protocol: int | None = None  # the version head office said to use
    proof: str | None = None  # head office's verdict on the chains (16.7)
    proof_requests: int = 0  # narrowing requests head office answered (a range to the seq)
    proof_not_narrowed: str | None = None  # why the last range verdict was left a range
    restores_seen: int = 0  # head office restored from an older copy: resent from its mark
    refused: str | None = None  # head office refuses this journal's epoch: nothing is sent


class CatalogHeads(Protocol):
    """Who takes the store's retained catalog heads (agent.catalog.sync.CatalogSync)."""

    @property
    def version(self) -> int: ...

    def on_head(
        self, payload: bytes, request: Callable[[str, dict[str, Any], float], Awaitable[Reply]]
    ) -> None: ...


class Replicator:
    """Async context manager that runs the replication loop in its own task group."""

    def __init__(
        self,
        journal: Journal,
        config: AgentConfig,
        catalog: CatalogHeads | None = None,
        *,
        on_batch: Callable[[int, int], None] | None = None,
    ) -> None:
        """`on_batch(entries, bytes)` is told of each published batch (the daemon hands it
        agent.metrics.BatchSizes.observe)."""
        self.journal = journal
        self.config = config
        self.lane = config.lane
        self.topics = config.topics
        self.stats = ReplicatorStats()
        self._wake = asyncio.Event()
        self._inflight: deque[int] = deque()  # last seq of each batch awaiting head office's ack
        self._sent = 0  # highest seq published in this session
        self._rewind_to: int | None = None
        self._last_rewind: tuple[int, float] = (0, 0.0)
        self._last_progress = 0.0
        self._last_current_ack = float("-inf")  # when an ack last reached the acked mark
        self._prev_hash: tuple[int, bytes] | None = None  # (seq, hash of seq - 1)
        self._client: aiomqtt.Client | None = None
        self._pending: dict[str, asyncio.Future[Reply]] = {}
        self._corr = 0
        self._tasks = Tasks(f"replicator {self.lane}")
        self._unlisten = journal.on_commit(self._wake.set)
        self._on_batch = on_batch
        self.catalog = catalog
        self._catalog_topic = self.topics.catalog(self.lane.store)
        self._status_now = asyncio.Event()
        self._ho_topic = self.topics.headoffice()
        self._incarnations: set[int] = set()
        self._hello_due = False
        self._recovering = False  # resending below the acked mark for a restored head office
        self._narrowing: asyncio.Task[None] | None = None  # finding where the chains differ
        self._ack_timeouts = 0  # ack timeouts in a row without any ack (STALL_RENEW_AFTER)
        self._last_ack_seen: float | None = None  # monotonic: when an ack last arrived
        self._renewing: str | None = None  # why the sender ended this session (stalled)
        self._stopping = False  # __aexit__ began: no session may start again

    @property
    def batches_in_flight(self) -> int:
        """Batches published in this session that head office has not acknowledged yet (at
        most replication.window): how full the send window is."""
        return len(self._inflight)

    async def __aenter__(self) -> Self:
        await self._tasks.__aenter__()
        self._tasks.start(self._run(), "session")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._unlisten()
        self._stopping = True
        await self._tasks.stop()
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(RequestTimeout("agent is shutting down"))

    # --- connection loop ------------------------------------------------------------------

    async def _run(self) -> None:
        rc = self.config.replication
        while True:
            retrying = tenacity.AsyncRetrying(
                # Full jitter (AWS architecture blog): spreads hundreds of lanes reconnecting
                # after a head-office outage instead of synchronising them.
                wait=tenacity.wait_random_exponential(
                    multiplier=rc.backoff_initial_s, max=rc.backoff_max_s
                ),
                retry=tenacity.retry_if_exception_type((LinkDown, aiomqtt.MqttError, OSError)),
                before_sleep=self._before_sleep,
            )
            async for attempt in retrying:
                with attempt:
                    started = time.monotonic()
                    await self._session()
                    if time.monotonic() - started < MIN_HEALTHY_SESSION_S:
                        # Connected but dropped at once: back off as if it had failed.
                        raise LinkDown("session ended within seconds of connecting")

    def _before_sleep(self, state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0.0
        self.stats.last_error = str(exc)
        log.warning("lane %s: link down (%s); retrying in %.1fs", self.lane, exc, delay)

    async def _session(self) -> None:
        b = self.config.broker
        rc = self.config.replication
        status_topic = self.topics.topic(self.lane, Channel.STATUS)
        will = aiomqtt.Will(
            status_topic, codec.encode(Status(self.lane, "offline", VERSION)), qos=1, retain=True
        )
        failure: str | None = None
        connected_at: float | None = None
        self._renewing = None
        try:
            async with brokerconn.connect(  # a CONNACK deadline of its own (16.3)
                b,
                f"lanesync-{self.lane.store}-{self.lane.lane}",
                will=will,
                clean_session=True,
                timeout=rc.publish_timeout_s,
                max_inflight_messages=rc.window + 16,
                # paho leaves Nagle on: a batch or ack then waits for the peer's delayed ACK
                # (~40 ms on Linux) before it leaves, twice per round trip.
                socket_options=(_TCP_NODELAY,),
            ) as client:
                self._client = client
                # Up only once the broker granted the ack subscription: a refused or unanswered
                # SUBSCRIBE fails this attempt (connected_at unset: it backs off).
                await self._subscribe(client)
                connected_at = time.monotonic()
                self.stats.connected = True
                self.stats.connects += 1
                if self.stats.connects > 1:
                    self.stats.reconnects += 1
                self._ack_timeouts = 0
                log.info("lane %s: connected to %s:%d", self.lane, b.host, b.port)
                await self._publish_status(client, "online")
                self._start_from_acked()
                await self._hello(client)
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self._sender(client), name=f"replicator-send {self.lane}")
                    tg.create_task(self._receiver(client), name=f"replicator-recv {self.lane}")
                    tg.create_task(self._status_loop(client), name=f"replicator-status {self.lane}")
        except* (aiomqtt.MqttError, OSError) as eg:
            failure = "; ".join(str(e) for e in eg.exceptions)
        except* SessionStalled:
            pass  # self._renewing says why, below
        except* AttributeError as eg:
            race = brokerconn.socket_race_failure(eg)
            failure = f"{failure}; {race}" if failure else race
        finally:
            self._client = None
            self.stats.connected = False
        if self._stopping:
            # The stop's cancellation can come out of the session's TaskGroup as the closing
            # client's MqttError instead (Python 3.11's TaskGroup raises its children's errors
            # over the parent's cancellation), which `except*` took for a link drop: _run then
            # reconnected and the stop waited forever while the lane resent.
            raise asyncio.CancelledError
        stalled, self._renewing = self._renewing, None
        if stalled is not None:
            # Renewed on purpose (whatever closing it said): raise, so the next session waits
            # out the reconnect backoff, growing while sessions keep stalling, not a loop.
            raise LinkDown(f"{stalled}; {failure}" if failure else stalled)
        if failure is not None:
            if (
                connected_at is not None
                and time.monotonic() - connected_at >= MIN_HEALTHY_SESSION_S
            ):
                # A healthy session that broke is not one more failed attempt: return, so _run
                # reconnects with the backoff reset. Raising here made every link drop of the
                # process's life count, until each reconnect waited up to backoff_max_s.
                self.stats.last_error = failure
                log.warning("lane %s: link down (%s); reconnecting", self.lane, failure)
                return
            raise LinkDown(failure)

    async def _subscribe(self, client: aiomqtt.Client) -> None:
        """Subscribe to the lane's acks, replies, head office's announcement (retained: who
        runs head office) and, with a catalog, the store's retained catalog head (the broker
        hands it over at every (re)connect, so a lane that was offline learns what it missed),
        in one SUBSCRIBE, and check the SUBACK: without the ack subscription the session is of
        no use (it fails the connect); a refusal of the others is logged.

        aiomqtt's `subscribe` returns the SUBACK's codes without judging them: a 0x80 (the
        broker refused it) comes back as a result, not an error. A grant proves less than it
        says, though: Mosquitto 2.0.11 (Debian 12's) grants QoS 1 to a subscription its ACL
        denies, MQTT 3.1.1 and 5 alike (seen with mosquitto_sub -d), and then delivers nothing
        on it; the renewal in the sender is what catches a session that hears nothing. And
        when the SUBACK is
        late (a loaded broker or lane), aiomqtt gives up after its timeout, raises MqttError and
        drops the pending call, so the SUBACK that arrives later is only logged ('Unexpected
        message ID "N" in on_subscribe callback', aiomqtt/client.py `_on_subscribe`). Either
        way the session has no ack subscription the lane can rely on.
        """
        wanted = [
            self.topics.topic(self.lane, Channel.ACK),
            self.topics.topic(self.lane, Channel.REPLY),
            self._ho_topic,
        ]
        if self.catalog is not None:
            wanted.append(self._catalog_topic)
        try:
            codes = await client.subscribe([(t, 1) for t in wanted])
        except aiomqtt.MqttError as exc:  # "Operation timed out" says neither what nor where
            raise aiomqtt.MqttError(f"no SUBACK for {', '.join(wanted)}: {exc}") from None
        values = [c.value if isinstance(c, ReasonCode) else int(c) for c in codes]
        if len(values) != len(wanted):
            raise aiomqtt.MqttError(
                f"the broker answered {len(values)} of {len(wanted)} subscriptions"
            )
        refused = {t: v for t, v in zip(wanted, values, strict=True) if v >= 0x80}
        if wanted[0] in refused:
            raise aiomqtt.MqttError(
                f"the broker refused the subscription to {wanted[0]} (0x{refused[wanted[0]]:02x})"
            )
        if refused:
            # Replication works without these (requests time out, head-office restarts are
            # noticed by the ack timeout, the catalog waits): an ACL written before they
            # existed must not stop the lane. Said at every session, for the technician.
            log.warning(
                "lane %s: the broker refused the subscription to %s; check its ACL",
                self.lane,
                ", ".join(f"{t} (0x{v:02x})" for t, v in refused.items()),
            )

    async def close_gracefully(self) -> None:
        """Publish the retained offline status before a planned shutdown (no will fires)."""
        client = self._client
        if client is not None:
            with contextlib.suppress(aiomqtt.MqttError):
                await self._publish_status(client, "offline")

    async def _publish_status(self, client: aiomqtt.Client, state: str) -> None:
        status = Status(
            self.lane,
            "online" if state == "online" else "offline",
            VERSION,
            self.journal.backlog,
            int(time.time() * 1000),
            self.catalog.version if self.catalog is not None else 0,
        )
        await client.publish(
            self.topics.topic(self.lane, Channel.STATUS), codec.encode(status), qos=1, retain=True
        )

    def status_soon(self) -> None:
        """Publish the retained status now rather than at the next 15 s tick (a new catalog
        version: head office's status page shows which lanes lag)."""
        self._status_now.set()

    async def _status_loop(self, client: aiomqtt.Client) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(15):
                    await self._status_now.wait()
            self._status_now.clear()
            await self._publish_status(client, "online")

    async def _hello(self, client: aiomqtt.Client) -> None:
        acked = self.journal.acked_seq
        v1 = self.stats.protocol == 1  # head office said to speak 1: a v1 hello
        hello = Hello(
            self.lane,
            self.journal.epoch,
            self.journal.last_seq,
            acked + 1,
            VERSION,
            # not plain now: an entry dated before it but not yet committed (so not in
            # last_seq) would make a late hello look like a restored journal's
            self.journal.clock_bound_ms(),
            self.catalog.version if self.catalog is not None else 0,
            () if v1 else SUPPORTED_VERSIONS,
            () if v1 else await self._proof(acked),
        )
        await client.publish(
            self.topics.topic(self.lane, Channel.HELLO), codec.encode(hello), qos=1
        )

    async def _proof(self, acked: int) -> tuple[tuple[int, bytes], ...]:
        """Chain hashes at the acked seq, then 1, 2, 4 ... below it, and the genesis (seq 0):
        head office finds up to where both chains agree (pruned seqs are left out)."""
        seqs = [acked]
        step = 1
        while acked - step > 0 and len(seqs) < 60:
            seqs.append(acked - step)
            step *= 2
        if acked > 0:
            seqs.append(0)
        out: list[tuple[int, bytes]] = []
        for seq in seqs:
            try:
                out.append((seq, await self.journal.hash_before(seq + 1)))
            except JournalError:
                continue  # pruned (retention): that checkpoint is not offered
        return tuple(out)

    def _start_from_acked(self) -> None:
        self._sent = self.journal.acked_seq
        self._inflight.clear()
        self._rewind_to = None
        self._last_progress = time.monotonic()

    # --- sending --------------------------------------------------------------------------

    async def _sender(self, client: aiomqtt.Client) -> None:
        rc = self.config.replication
        started = time.monotonic()
        topic = self.topics.topic(self.lane, Channel.JOURNAL)
        while True:
            self._wake.clear()
            if self._hello_due:
                self._hello_due = False
                await self._hello(client)
            if self.stats.refused is not None:
                # Head office refused this epoch: sending on would fork the chain. Wait for
                # a reconnect (its hello asks again) or the agent's restart.
                self._inflight.clear()
                await self._wake.wait()
                continue
            if self._rewind_to is not None:
                self._sent = self._rewind_to - 1
                self._inflight.clear()
                self._rewind_to = None
                self._last_progress = time.monotonic()
            elif self._inflight and time.monotonic() - self._last_progress > rc.ack_timeout_s:
                self._ack_timeouts += 1
                if self._ack_timeouts >= STALL_RENEW_AFTER and self.stats.ho_online is True:
                    self._renew_session(started)
                # Head office went quiet (restarted, or lost what the broker handed it):
                # go back to the acked mark; it drops whatever it already committed.
                log.warning(
                    "lane %s: no ack for %.1fs; resending from seq %d",
                    self.lane,
                    rc.ack_timeout_s,
                    self.journal.acked_seq + 1,
                )
                self.stats.rewinds += 1
                self._start_from_acked()
                await self._hello(client)
            if len(self._inflight) < rc.window and self._sent < self.journal.last_seq:
                batch = await self._next_batch(self._sent + 1)
                if batch is not None:
                    payload = codec.encode(batch)
                    await client.publish(topic, payload, qos=1)
                    if not self._inflight:
                        self._last_progress = time.monotonic()
                    self._inflight.append(batch.last_seq)
                    self._sent = batch.last_seq
                    self.stats.batches_sent += 1
                    self.stats.entries_sent += len(batch.entries)
                    if self._on_batch is not None:
                        self._on_batch(len(batch.entries), len(payload))
                continue
            timeout = None
            if self._inflight:
                timeout = max(0.0, rc.ack_timeout_s - (time.monotonic() - self._last_progress))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()

    def _renew_session(self, session_started: float) -> None:
        """No ack for STALL_RENEW_AFTER ack timeouts in a row while head office says it is
        online: the broker may no longer route this lane's acks to this session (its ack
        subscription lost), and resending on it would go on forever. End the session; the
        reconnect subscribes again. Raises SessionStalled."""
        since = max(session_started, self._last_ack_seen or session_started)
        silent = time.monotonic() - since
        self.stats.session_renewals += 1
        self._renewing = (
            f"no ack for {silent:.0f}s ({self._ack_timeouts} ack timeouts) while head office "
            "says it is online; renewing the MQTT session"
        )
        log.warning(
            "lane %s: no ack from head office for %.0fs on this session (%d ack timeouts in a "
            "row) although it says it is online; renewing the MQTT session (subscribing again)",
            self.lane,
            silent,
            self._ack_timeouts,
        )
        raise SessionStalled(self._renewing)

    async def _next_batch(self, first: int) -> JournalBatch | None:
        rc = self.config.replication
        if rc.linger_ms and self.journal.last_seq - first + 1 < rc.batch_max_entries:
            # A short linger lets a burst of sales share one batch.
            await asyncio.sleep(rc.linger_ms / 1000)
        entries = await self.journal.read_from(first, rc.batch_max_entries, rc.batch_max_bytes)
        if not entries:
            return None
        if self._prev_hash is not None and self._prev_hash[0] == first:
            prev = self._prev_hash[1]
        else:
            prev = await self.journal.hash_before(first)
        self._prev_hash = (entries[-1].seq + 1, entries[-1].hash)
        return JournalBatch(self.lane, self.journal.epoch, prev, entries)

    # --- receiving ------------------------------------------------------------------------

    async def _receiver(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            if message.topic.matches(self._ho_topic):
                self._on_headoffice(bytes(message.payload))
                continue
            if self.catalog is not None and message.topic.matches(self._catalog_topic):
                # Not a lanesync message: the head's own schema (protocol.catalog) checks it.
                self.catalog.on_head(bytes(message.payload), self.request)
                continue
            try:
                msg = codec.decode(bytes(message.payload))
            except ProtocolError as exc:
                log.error("lane %s: refused message on %s: %s", self.lane, message.topic, exc)
                continue
            if isinstance(msg, HeadOffice):
                log.error(
                    "lane %s: head-office announcement on %s ignored", self.lane, message.topic
                )
            elif msg.lane != self.lane:
                log.error(
                    "lane %s: message for %s on %s ignored", self.lane, msg.lane, message.topic
                )
            elif isinstance(msg, Ack):
                await self._on_ack(msg)
            elif isinstance(msg, Reply):
                fut = self._pending.pop(msg.corr, None)
                if fut is not None and not fut.done():
                    fut.set_result(msg)
            else:
                log.error("lane %s: unexpected %s message ignored", self.lane, msg.TYPE)

    def _on_headoffice(self, payload: bytes) -> None:
        """A head-office process announced itself (or its last will fired). A new incarnation
        is a restart: resend from the acked mark now, and say hello (issue 16.2)."""
        if not payload:
            return  # a retained message cleared
        try:
            msg = codec.decode(payload)
        except ProtocolError as exc:
            log.error("lane %s: refused head-office announcement: %s", self.lane, exc)
            return
        if not isinstance(msg, HeadOffice):
            log.error("lane %s: a %s message on %s ignored", self.lane, msg.TYPE, self._ho_topic)
            return
        self.stats.ho_online = msg.state == "online"
        if msg.state != "online":
            log.warning("lane %s: head office %s went offline", self.lane, msg.worker)
            return
        self.stats.ho_incarnation = msg.incarnation
        self.stats.ho_version, self.stats.ho_protocols = msg.version, msg.protocols
        if msg.incarnation in self._incarnations:
            return
        first = not self._incarnations
        if len(self._incarnations) > 64:
            self._incarnations.clear()
        self._incarnations.add(msg.incarnation)
        if first:
            return  # what this session's hello already asked for
        self.stats.ho_restarts_seen += 1
        self.stats.refused = None  # a new head office may judge this journal again
        log.info(
            "lane %s: head office restarted (%s); resending from seq %d",
            self.lane,
            msg.worker,
            self.journal.acked_seq + 1,
            extra={"incarnation": msg.incarnation, "seq": self.journal.acked_seq + 1},
        )
        self._rewind_to = self.journal.acked_seq + 1
        self._hello_due = True
        self.stats.rewinds += 1
        self._wake.set()

    async def _on_ack(self, ack: Ack) -> None:
        # Any ack for this lane shows the session's ack subscription works (STALL_RENEW_AFTER).
        self._last_ack_seen = time.monotonic()
        self._ack_timeouts = 0
        if ack.epoch != self.journal.epoch:
            log.info(
                "lane %s: ack for old epoch %d ignored",
                self.lane,
                ack.epoch,
                extra={"epoch": ack.epoch},  # an identifier: never redacted (logsetup)
            )
            return
        now = time.monotonic()
        if ack.protocol is not None:
            self.stats.protocol = ack.protocol
        if ack.proof is not None:
            self.stats.proof = ack.proof
            self._narrow_soon(ack.proof)
        if self.stats.refused is not None and ack.refused is None:
            return  # refused: no ack may mark this journal's entries as held by head office
        if ack.refused is not None:
            if self.stats.refused is None:
                log.error("lane %s: head office refuses this journal: %s", self.lane, ack.refused)
            self.stats.refused = ack.refused
            self._wake.set()
            return
        if ack.rewind and ack.resend_from is not None:
            # Head office lost entries it had acknowledged (restored from an older copy): send
            # them again from the retention, below the acked mark; its acks are current here.
            log.warning("lane %s: %s", self.lane, ack.reason)
            self.stats.restores_seen += 1
            self.stats.ho_hwm = ack.hwm
            self._recovering = True
            self._rewind_to = ack.resend_from
            self._last_rewind = (ack.resend_from, now)
            self.stats.rewinds += 1
            self._wake.set()
            return
        if ack.hwm >= self.journal.acked_seq:
            self._last_current_ack = now
            self._recovering = False
        elif self._recovering:
            pass  # the resends for a restored head office: these acks are current
        elif now - self._last_current_ack < self.config.replication.ack_timeout_s:
            # Several ingest workers on a shared subscription each publish acks, so one
            # committed earlier can arrive after a later one. It says nothing new; obeying its
            # hwm (or resend-from) would rewind the lane over entries head office holds. An ack
            # behind the mark long after the last current one is head office restored from an
            # older copy: that one is obeyed.
            self.stats.stale_acks += 1
            return
        self.stats.ho_hwm = ack.hwm
        self.stats.last_ack_at = time.time()
        hwm = ack.hwm
        if ack.hwm > self.journal.last_seq:
            # The journal was restored from an old copy: its entries past the copy are other
            # documents at seqs head office holds. Marking them acked would drop them from
            # the outbox unsent (an older head office says no more than this ack), so the
            # lane refuses itself, as a v2 head office does in its answer to the hello.
            self.stats.refused = (
                f"head office holds seq {ack.hwm} of epoch {self.journal.epoch} but this "
                f"journal ends at seq {self.journal.last_seq}: it was restored from an old copy"
            )
            log.error(
                "lane %s: %s; nothing more is sent",
                self.lane,
                self.stats.refused,
                extra={"epoch": self.journal.epoch, "seq": self.journal.last_seq, "hwm": ack.hwm},
            )
            self._wake.set()
            return
        if hwm > self.journal.acked_seq:
            try:
                await self.journal.mark_acked(hwm)
            except JournalError as exc:
                log.error("lane %s: could not record ack %d: %s", self.lane, hwm, exc)
                return
            self._last_progress = time.monotonic()
        while self._inflight and self._inflight[0] <= hwm:
            self._inflight.popleft()
        resend = ack.resend_from
        if resend is None and ack.hwm < self._sent and not self._inflight:
            resend = ack.hwm + 1  # head office holds less than we sent and nothing is on its way
        if resend is not None and resend <= self._sent:
            last_to, last_at = self._last_rewind
            # Several in-flight batches past a gap each trigger a resend request; rewinding once
            # per gap is enough.
            if resend != last_to or now - last_at > self.config.replication.ack_timeout_s:
                log.info(
                    "lane %s: head office asks for seq %d on (%s)", self.lane, resend, ack.reason
                )
                self._last_rewind = (resend, now)
                self._rewind_to = resend
                self.stats.rewinds += 1
        self._wake.set()

    # --- narrowing the proof (16.7) ---------------------------------------------------------

    def _narrow_soon(self, verdict: str) -> None:
        """A range verdict ("first difference between ..."): find the exact seq with head
        office, in a task of its own, off the send path; one narrowing at a time."""
        span = proof.range_of(verdict)
        if span is None or (self._narrowing is not None and not self._narrowing.done()):
            return
        if not self._tasks.running:
            return
        self._narrowing = self._tasks.start(
            self._narrow(self.journal.epoch, *span), "proof narrowing"
        )

    async def _narrow(self, epoch: int, good: int, bad: int) -> None:
        """Send our hashes inside good..bad (OP_PROOF_NARROW, bounded per request) until head
        office names the exact first seq where the chains differ. Never fails the replicator:
        a head office that does not know the op, a timeout or anything else leaves the range
        verdict as it is (`stats.proof_not_narrowed` says why)."""
        self.stats.proof_not_narrowed = None
        try:
            why = await self._narrow_rounds(epoch, good, bad)
        except RequestTimeout as exc:
            why = str(exc)
        except (LanesyncError, aiomqtt.MqttError, OSError) as exc:
            why = f"{type(exc).__name__}: {exc}"
            log.warning("lane %s: proof not narrowed: %s", self.lane, why)
        if why is not None:
            log.debug("lane %s: proof not narrowed: %s", self.lane, why)
            self.stats.proof_not_narrowed = why

    async def _narrow_rounds(self, epoch: int, good: int, bad: int) -> str | None:
        """The narrowing's requests; None once the seq is known, else why it stopped."""
        timeout = self.config.replication.publish_timeout_s
        while bad > good + 1:
            if self.journal.epoch != epoch:
                return "the journal's epoch changed"
            hashes: list[list[int | bytes]] = []
            for seq in proof.narrow_seqs(good, bad):
                try:
                    hashes.append([seq, await self.journal.hash_before(seq + 1)])
                except JournalError:
                    continue  # pruned (retention): not offered
            reply = await self.request(OP_PROOF_NARROW, {"epoch": epoch, "hashes": hashes}, timeout)
            if not reply.ok:
                return f"head office refused: {reply.error}"  # an older one: unknown operation
            self.stats.proof_requests += 1
            verdict, upto, differ = (reply.result.get(k) for k in ("verdict", "upto", "differ"))
            if type(verdict) is not str or type(upto) is not int or type(differ) is not int:
                return "head office found no difference in the range"
            if not good <= upto < differ <= bad or (upto, differ) == (good, bad):
                return "no progress (pruned seqs, or head office's rows changed)"
            self.stats.proof = verdict
            good, bad = upto, differ
        return None

    # --- request / reply ------------------------------------------------------------------

    async def request(self, op: str, args: dict[str, Any], timeout: float) -> Reply:
        """Ask head office something; raises RequestTimeout if no reply within `timeout`."""
        client = self._client
        if client is None:
            raise RequestTimeout("head office is unreachable (no broker connection)")
        self._corr += 1
        # A UUID: every string of a request is screened for card numbers, and the former
        # "<epoch hex>-<n>-<ns>" held a Luhn-valid 13-19 digit run in 0.8 % of requests.
        corr = new_txn_id()
        fut: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._pending[corr] = fut
        try:
            async with asyncio.timeout(timeout):
                await client.publish(
                    self.topics.topic(self.lane, Channel.REQUEST),
                    codec.encode(Request(self.lane, corr, op, args)),
                    qos=1,
                )
                return await fut
        except (TimeoutError, aiomqtt.MqttError) as exc:
            raise RequestTimeout(f"head office did not answer {op} within {timeout:g}s") from exc
        finally:
            self._pending.pop(corr, None)
