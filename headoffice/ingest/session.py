"""The MQTT half of ingest: connect, subscribe, reconnect, announce, and the three-stage
pipeline that feeds the group applier (headoffice.ingest.applier) and publishes its acks.

MQTT messages are queued by a receiver task in the inbox (headoffice.inbox: bounded, fair per
store); a processor task hands groups of them to the decoder thread, where each is decoded and
checked against its topic and schema (any exception there refuses that one message), then to
the database on one dedicated writer thread (the single writer), where each is applied, held or
quarantined, and the whole group is committed in one transaction. Acks (high-water marks, or
resend-from on a gap) are published only after that commit returned (invariant 2). A crash
before the commit loses nothing: lanes resend from the last ack.

Several ingest processes (workers) can share one MQTT shared subscription (`broker.share_group`)
over PostgreSQL. The broker then spreads one lane's batches over the workers, so batch k+1 can
reach worker B while worker A still holds batch k. The database locks the lane rows at the start of
each group, which serialises the two when A already holds the lock; otherwise B sees a gap. B
holds such a batch and retries it with its next groups for up to `ingest.gap_hold_ms` before it
asks the lane to resend: asking at once would turn every such race into a resend storm.

Every process announces itself (issue 16.2): once subscribed it publishes, retained on
`{prefix}/headoffice`, a HeadOffice message with an incarnation of its own, and the broker
publishes the offline twin as its last will. A lane resends from its acked mark as soon as it
sees a new incarnation instead of after its ack timeout.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import re
import secrets
import select
import socket
import time
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

import aiomqtt
import tenacity

from headoffice.config import HeadOfficeConfig
from headoffice.db import Database, DatabaseError, open_database
from headoffice.db.projection import Projections
from headoffice.inbox import Inbox
from headoffice.ingest.applier import CHANNEL_TYPES, GroupApplier, Prepared, RequestHandler
from headoffice.ingest.leases import StoreLeases
from headoffice.ingest.stats import IngestStats
from headoffice.projections import PROJECTIONS
from protocol import codec
from protocol.identity import Channel
from protocol.messages import (
    SUPPORTED_VERSIONS,
    Ack,
    HeadOffice,
    Reply,
)
from protocol.runtime import brokerconn
from protocol.runtime.clock import now_ms
from protocol.runtime.tasks import Tasks
from protocol.runtime.version import VERSION

log = logging.getLogger("headoffice.ingest")

_CRASH_AFTER_COMMIT = int(os.environ.get("LANESYNC_FAULT_CRASH_AFTER_COMMIT") or 0)
HEALTHY_SESSION_S = 5.0  # a broker session that lasted this long resets the reconnect backoff
ACK_GROUPS_PENDING = 64  # committed groups whose acks may wait for publishing (then ingest waits)


READS_PER_WAKEUP = 256  # packets read each time the socket is readable (then others run)


class _IngestClient(brokerconn.Client):  # a CONNACK deadline of its own (16.3)
    """aiomqtt's client, reading many packets each time head office's socket is readable.

    aiomqtt 2.5 registers a reader that calls paho's loop_read() once, and paho reads one
    packet then (aiomqtt/client.py `_on_socket_open`, paho `loop_read`: max_packets is the
    number of messages in flight, at least 1): one packet per event-loop iteration. With the
    decoder and writer threads busy, an iteration waits for the GIL, so head office read a
    flood from one store at 1,500 messages a second or less, and everything behind it waited
    in the broker's queue for head office, honest batches included (p99 4.3 s in `lanesync
    bench flood`; 1.1 s reading this way). This registers, after aiomqtt's own reader, one
    for the same socket (asyncio keeps one reader per fd: the last) that reads while the
    socket has data, up to READS_PER_WAKEUP packets; errors end the connection as aiomqtt's
    reader does.
    """

    def _on_socket_open(self, client: Any, userdata: Any, sock: Any) -> None:
        super()._on_socket_open(client, userdata, sock)

        def read_many() -> None:
            try:
                for _ in range(READS_PER_WAKEUP):
                    client.loop_read()
                    if client.socket() is None:
                        return
                    pending = getattr(sock, "pending", None)
                    if pending is not None and pending() > 0:
                        continue
                    if not select.select([sock], [], [], 0)[0]:
                        return
            except Exception as exc:  # noqa: BLE001 - as aiomqtt's reader: the link broke
                if not self._disconnected.done():
                    self._disconnected.set_exception(exc)

        self._loop.call_soon_threadsafe(self._loop.add_reader, sock.fileno(), read_many)


def _inbox_queue(
    inbox: Inbox, accepts: Callable[[str], bool] | None = None
) -> type[asyncio.Queue[aiomqtt.Message]]:
    """aiomqtt's incoming-message queue (its `queue_type`) that hands each message to the
    inbox the moment paho delivers it.

    With aiomqtt's own queue every message first waited in an unbounded FIFO and was moved to
    the inbox by the message iterator, which costs a task and an asyncio.wait per message:
    under a flood that FIFO grew faster than it drained and kept an honest store's batches
    behind the flood before the inbox could serve them in turn. aiomqtt 2.5 calls put_nowait
    (from paho's on_message, on the event loop), get and qsize on it (aiomqtt/client.py).
    `accepts` (a lease worker's) refuses messages of stores the worker does not hold.
    """

    class ToInbox(asyncio.Queue[aiomqtt.Message]):
        def put_nowait(self, item: aiomqtt.Message) -> None:
            if accepts is not None and not accepts(item.topic.value):
                return
            payload = item.payload
            raw = bytes(payload) if isinstance(payload, bytes | bytearray) else b""
            inbox.put(item.topic.value, raw)

    return ToInbox


class Ingest:
    """Async context manager running head-office ingest until cancelled: the broker
    session (its tasks through protocol.runtime.tasks.Tasks) around a GroupApplier."""

    def __init__(
        self,
        config: HeadOfficeConfig,
        database_factory: Callable[[], Database] | None = None,
        handlers: dict[str, RequestHandler] | None = None,
        *,
        announce: bool = True,
        projections: Projections = PROJECTIONS,
    ) -> None:
        """`announce=False` leaves out the retained announcement (issue 16.2's "before" in
        tests/sync: lanes then notice a restart only by their ack timeout). `projections`
        check batches on the decoder thread and go to the database it opens."""
        self.config = config
        self.announce = announce
        self.incarnation = secrets.randbits(63) | 1
        self.topics = config.topics
        self.stats = IngestStats(incarnation=self.incarnation)
        self._database_factory = database_factory or (lambda: open_database(config, projections))
        self._writer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="ho-writer")
        self._decoder = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="ho-decoder")
        ing = config.ingest
        self._inbox = Inbox(
            store_messages=ing.queue_messages_per_store,
            store_bytes=ing.queue_bytes_per_store,
            total_bytes=4 * ing.queue_bytes_per_store,
            stats=self.stats.inbox,
        )
        self.applier = GroupApplier(
            config, self.stats, handlers=handlers, projections=projections, inbox=self._inbox
        )
        self._tasks = Tasks("ingest")
        self._main: asyncio.Task[None] | None = None
        self._commits = 0
        self._groups_taken = 0  # groups the prepare loop took off the inbox (this session)
        self._groups_done = 0  # of those, the ones the apply loop finished (committed or not)
        self._progress = asyncio.Event()  # set whenever a group is taken or finished
        self.leases: StoreLeases | None = None  # this session's, with ingest.leases
        self.ready = asyncio.Event()  # set once subscribed: used by sd_notify READY and tests

    async def __aenter__(self) -> Self:
        loop = asyncio.get_running_loop()
        self.applier.database = await loop.run_in_executor(self._writer, self._database_factory)
        await self._tasks.__aenter__()
        self._main = self._tasks.start(self._run(), "broker session")
        return self

    @property
    def session(self) -> asyncio.Task[None] | None:
        """The task running the broker session (None before `async with`); cancelling it
        stops ingest like a crash, its received groups never applied (tests/sync)."""
        return self._main

    @property
    def writer(self) -> concurrent.futures.ThreadPoolExecutor:
        """The single thread that owns the database: every transaction runs on it, so a job
        holding it stalls commits (tests/sync uses that to keep batches unacknowledged)."""
        return self._writer

    @property
    def inbox(self) -> Inbox:
        """The bounded per-store queue between paho and the decoder thread."""
        return self._inbox

    def shutdown_threads(self) -> None:
        """Stop the writer and decoder threads, waiting for their jobs. __aexit__ does this; a
        caller driving `applier` without `async with` (tests) calls it itself."""
        self._writer.shutdown(wait=True)
        self._decoder.shutdown(wait=True)

    async def ping(self) -> None:
        """A round trip through the single writer thread (the watchdog's probe): it is not
        stuck behind a hung transaction."""
        await asyncio.get_running_loop().run_in_executor(self._writer, lambda: None)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._tasks.stop()
        database = self.applier.database
        if database is not None:
            await asyncio.get_running_loop().run_in_executor(self._writer, database.close)
        self.shutdown_threads()

    # --- MQTT -----------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            retrying = tenacity.AsyncRetrying(
                wait=tenacity.wait_random_exponential(multiplier=0.5, max=15),
                retry=tenacity.retry_if_exception_type((aiomqtt.MqttError, OSError)),
                before_sleep=lambda s: log.warning(
                    "head office: broker connection failed (%s); retrying",
                    s.outcome.exception() if s.outcome else None,
                ),
            )
            async for attempt in retrying:
                with attempt:
                    await self._session()

    async def _session(self) -> None:
        b = self.config.broker
        connected_at: float | None = None
        self._groups_taken = self._groups_done = 0  # the barrier counts this session's groups
        leases = self.leases = (
            StoreLeases(self.config, self._inbox, self.stats, self._drained)
            if self.config.ingest.leases
            else None
        )
        try:
            # A persistent session (clean_session=False) makes the broker queue QoS 1 batches
            # while head office is down, so a restart does not wait for lanes' ack timeouts.
            # Not for a shared-subscription worker: Mosquitto keeps giving a disconnected
            # persistent member its turn of the round robin and queues those messages for it
            # (eclipse-mosquitto/mosquitto#1747), so a dead worker would sit on a share of
            # every lane's batches. With a clean session the broker serves only live members;
            # what was in flight to a killed one is resent by its lane (gap or ack timeout).
            async with brokerconn.connect(
                b,
                b.client_id,
                cls=_IngestClient,
                will=(
                    aiomqtt.Will(
                        self.topics.headoffice(), self._announcement("offline"), qos=1, retain=True
                    )
                    if self.announce
                    else None
                ),
                # Lease workers too: their subscriptions follow their leases, and a dead
                # worker's session must not keep receiving its stores' batches.
                clean_session=b.share_group is not None or leases is not None,
                max_inflight_messages=100,
                # paho leaves Nagle on: acks would wait for the lane's delayed ACK (~40 ms).
                socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
                queue_type=_inbox_queue(self._inbox, leases.accepts if leases else None),
            ) as client:
                # A group's acks go out together (up to group_max_messages, paho keeps 100 in
                # flight); aiomqtt logs a warning per publish beyond 10 pending, which at fleet
                # scale was thousands of log lines a minute spent on the ingest thread.
                client.pending_calls_threshold = 10 * self.config.ingest.group_max_messages
                self.stats.connected = True
                self.stats.connects += 1
                connected_at = time.monotonic()
                subscribed = asyncio.Event()
                if leases is None:
                    for channel in CHANNEL_TYPES:
                        filt = (
                            self.topics.shared(b.share_group, channel)
                            if b.share_group
                            else self.topics.all_lanes(channel)
                        )
                        await client.subscribe(filt, qos=1)
                    subscribed.set()
                async with asyncio.TaskGroup() as tg:
                    if leases is not None:  # subscribes to the stores it takes
                        tg.create_task(leases.run(client, subscribed), name="ingest-leases")
                    tg.create_task(self._receive(client), name="ingest-receive")
                    tg.create_task(self._process(client), name="ingest-process")
                    tg.create_task(self._subscribed(client, subscribed), name="ingest-announce")
        except* aiomqtt.MqttError as eg:
            if connected_at is None or time.monotonic() - connected_at < HEALTHY_SESSION_S:
                raise eg.exceptions[0] from None
            # A session that ran for a while and broke is not one more failed attempt: return,
            # so _run reconnects with its backoff reset instead of counting every drop of the
            # process's life until each reconnect waits up to 15 s.
            log.warning("head office: broker connection lost (%s); reconnecting", eg.exceptions[0])
        except* AttributeError as eg:
            # retried by _run like any failed connection
            raise aiomqtt.MqttError(brokerconn.socket_race_failure(eg)) from None
        finally:
            if self.stats.connected:
                self.stats.broker_lost_at = time.time()
            self.stats.connected = False
            if leases is not None:
                await leases.close(self.ping)

    async def _subscribed(self, client: aiomqtt.Client, subscribed: asyncio.Event) -> None:
        """Once subscribed (a lease worker: after its first heartbeat took its stores), say so
        and announce this process."""
        await subscribed.wait()
        b = self.config.broker
        log.info("head office: subscribed on %s:%d", b.host, b.port)
        if self.announce:
            # after subscribing: the resends this triggers must find us listening
            await client.publish(
                self.topics.headoffice(), self._announcement("online"), qos=1, retain=True
            )
        self.ready.set()

    async def _drained(self, stores: set[str]) -> None:
        """The pipeline's barrier for a lease worker giving `stores` up: returns once nothing
        of theirs waits in the inbox and every group taken before that finished applying."""
        while any(self._inbox.holds(s) for s in stores):
            await self._next_group()
        mark = self._groups_taken
        while self._groups_done < mark:
            await self._next_group()

    async def _next_group(self) -> None:
        """Wait until the pipeline takes or finishes a group."""
        self._progress.clear()
        await self._progress.wait()

    def _announcement(self, state: str) -> bytes:
        worker = re.sub(r"[^A-Za-z0-9_.:-]", "_", self.config.broker.client_id)[:64] or "ho"
        return codec.encode(
            HeadOffice(
                "online" if state == "online" else "offline",
                self.incarnation,
                worker,
                VERSION,
                SUPPORTED_VERSIONS,
                now_ms(),
            )
        )

    async def _receive(self, client: aiomqtt.Client) -> None:
        """Messages reach the inbox as paho delivers them (`_inbox_queue`); aiomqtt's message
        iterator is awaited only because it raises MqttError when the connection is lost."""
        async for _ in client.messages:
            pass  # never reached: the inbox queue hands aiomqtt nothing to iterate over

    async def _process(self, client: aiomqtt.Client) -> None:
        """Three stages: the decoder thread prepares group N+1 (decode, schema, hash chain,
        card-number scan) while the writer thread applies and commits group N, while the acks
        of group N-1 are published. Publishing waits for the broker's PUBACK of each ack,
        which under a flood queues behind the flood's messages on head office's connection;
        the next group does not wait for that (an ack lost with head office is harmless: the
        lane resends and gets it again)."""
        prepared: asyncio.Queue[list[Prepared]] = asyncio.Queue(maxsize=1)
        acks: asyncio.Queue[list[Ack | Reply]] = asyncio.Queue(maxsize=ACK_GROUPS_PENDING)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._prepare_loop(prepared), name="ingest-prepare")
            tg.create_task(self._apply_loop(prepared, acks), name="ingest-apply")
            tg.create_task(self._ack_loop(client, acks), name="ingest-acks")

    async def _prepare_loop(self, out: asyncio.Queue[list[Prepared]]) -> None:
        loop = asyncio.get_running_loop()
        max_count = self.config.ingest.group_max_messages
        max_bytes = 4 * self.config.ingest.max_message_bytes
        share = max(1, max_count // 8)
        inbox = self._inbox
        while True:
            group = await inbox.group(max_count, max_bytes, share)
            self._groups_taken += 1
            self._progress.set()
            await out.put(
                await loop.run_in_executor(self._decoder, self.applier.prepare_group, group)
            )

    async def _apply_loop(
        self, prepared: asyncio.Queue[list[Prepared]], acks: asyncio.Queue[list[Ack | Reply]]
    ) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                # With batches held for a gap, wake up to retry them even when nothing arrives;
                # with entries held for the registry, to notice the store's registration.
                async with asyncio.timeout(self.applier.wake_after()):
                    group = await prepared.get()
            except TimeoutError:
                group = []
            applied_before = self.stats.entries_applied
            try:
                out = await loop.run_in_executor(self._writer, self.applier.apply_group, group)
            except DatabaseError as exc:
                # Nothing committed, nothing acked: lanes resend after their ack timeout.
                self.stats.commit_failures += 1
                log.error("head office: %d messages not committed: %s", len(group), exc)
                continue
            finally:
                if group:
                    self._groups_done += 1
                    self._progress.set()
            if self.stats.entries_applied > applied_before:
                self._crash_point_after_commit()
            if out:
                await acks.put(out)  # waits only when ACK_GROUPS_PENDING groups are behind

    async def _ack_loop(
        self, client: aiomqtt.Client, acks: asyncio.Queue[list[Ack | Reply]]
    ) -> None:
        """Publish committed groups' acks and replies in commit order, without waiting for
        one group's PUBACKs before sending the next (each publish is handed to paho when its
        task starts, in the order the tasks were made). At most ACK_GROUPS_PENDING groups
        wait for their PUBACKs; then the oldest is awaited."""
        pending: deque[asyncio.Task[list[None]]] = deque()
        try:
            while True:
                out = await acks.get()
                pending.append(
                    asyncio.ensure_future(
                        asyncio.gather(*(self._publish(client, msg) for msg in out))
                    )
                )
                while pending and (pending[0].done() or len(pending) > ACK_GROUPS_PENDING):
                    await pending.popleft()  # raises MqttError if the connection broke
        finally:
            for task in pending:
                task.cancel()

    def _crash_point_after_commit(self) -> None:
        """Fault injection for the end-to-end tests: with LANESYNC_FAULT_CRASH_AFTER_COMMIT=N
        head office dies abruptly (as under kill -9) right after its Nth commit that applied
        journal entries, before that commit's acks leave: the one instant a test cannot hit
        from outside on purpose. (Hellos, statuses and a lane's catalog requests commit too,
        in an order no test controls, so they are not counted.)"""
        self._commits += 1
        if self._commits == _CRASH_AFTER_COMMIT:
            log.critical("fault injection: exiting after commit %d, before its acks", self._commits)
            os._exit(137)

    async def _publish(self, client: aiomqtt.Client, msg: Ack | Reply) -> None:
        channel = Channel.ACK if isinstance(msg, Ack) else Channel.REPLY
        payload = codec.encode(msg, on_withheld=_log_withheld)
        await client.publish(self.topics.topic(msg.lane, channel), payload, qos=1)


def _log_withheld(reply: Reply) -> None:
    log.error("reply to %s withheld: %s", reply.lane, reply.error)
