"""Head-office ingest: validate, dedupe, apply in seq order, commit, and only then ack.

MQTT messages are queued by a receiver task; a processor task hands groups of them to the store
on one dedicated writer thread (the single writer), where each is decoded, checked against its
topic and schema, applied or quarantined, and the whole group is committed in one transaction.
Acks (high-water marks, or resend-from on a gap) are published only after that commit returned
(invariant 2). A crash before the commit loses nothing: lanes resend from the last ack.

Several ingest processes (workers) can share one MQTT shared subscription (`broker.share_group`)
over PostgreSQL. The broker then spreads one lane's batches over the workers, so batch k+1 can
reach worker B while worker A still holds batch k. The store locks the lane rows at the start of
each group, which serialises the two when A already holds the lock; otherwise B sees a gap. B
holds such a batch and retries it with its next groups for up to `ingest.gap_hold_ms` before it
asks the lane to resend: asking at once would turn every such race into a resend storm.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

import aiomqtt
import tenacity

from headoffice.config import HeadOfficeConfig
from headoffice.store import Store, StoreError, open_store
from headoffice.store.base import ApplyResult, CheckedBatch, check_batch
from protocol import brokerconn, codec
from protocol.errors import ProtocolError
from protocol.identity import Channel, LaneId
from protocol.messages import Ack, Hello, JournalBatch, Message, Reply, Request, Status
from protocol.tasks import cancel_and_wait

log = logging.getLogger(__name__)


_CRASH_AFTER_COMMIT = int(os.environ.get("LANESYNC_FAULT_CRASH_AFTER_COMMIT") or 0)

RequestHandler = Callable[[Store, Request, int], Reply]
HEALTHY_SESSION_S = 5.0  # a broker session that lasted this long resets the reconnect backoff


@dataclass(slots=True)
class Prepared:
    """One received message after the database-free checks: a message or a refusal."""

    topic: str
    raw: bytes
    lane: LaneId | None
    msg: Message | None = None
    checked: CheckedBatch | None = None
    refusal: str | None = None


_EXPECTED: dict[Channel, type[Message]] = {
    Channel.JOURNAL: JournalBatch,
    Channel.HELLO: Hello,
    Channel.STATUS: Status,
    Channel.REQUEST: Request,
}


@dataclass(slots=True)
class IngestStats:
    connected: bool = False
    connects: int = 0
    messages: int = 0
    groups: int = 0
    entries_applied: int = 0
    entries_redelivered: int = 0
    duplicate_txn_ids: int = 0
    gaps: int = 0  # resend requests sent for a gap (after any hold)
    gaps_held: int = 0  # batches that arrived ahead of their predecessor and were held
    gaps_closed: int = 0  # held batches applied once their predecessor was committed
    quarantined: int = 0
    commit_failures: int = 0
    last_commit_at: float | None = None
    lane_hwm: dict[tuple[str, str, int], int] = field(default_factory=dict)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


MAX_HELD = 5_000  # held batches beyond this are answered with a resend at once (memory bound)


@dataclass(slots=True)
class _Held:
    """A batch that arrived ahead of its predecessor, and since when it waits (monotonic)."""

    prepared: Prepared
    since: float


def _gap_key(p: Prepared) -> tuple[str, str, int, int]:
    msg = p.msg
    assert isinstance(msg, JournalBatch)
    return (msg.lane.store, msg.lane.lane, msg.epoch, msg.first_seq)


class Ingest:
    """Async context manager running head-office ingest until cancelled."""

    def __init__(
        self,
        config: HeadOfficeConfig,
        store_factory: Callable[[], Store] | None = None,
        handlers: dict[str, RequestHandler] | None = None,
    ) -> None:
        self.config = config
        self.topics = config.topics
        self.stats = IngestStats()
        self.handlers = dict(handlers or {})
        self._store_factory = store_factory or (lambda: open_store(config))
        self._store: Store | None = None
        self._writer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="ho-writer")
        self._decoder = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="ho-decoder")
        self._queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self._tasks: asyncio.TaskGroup | None = None
        self._main: asyncio.Task[None] | None = None
        self._commits = 0
        self._held: list[_Held] = []  # touched only on the writer thread
        self._group_results: list[ApplyResult] = []  # the group's batches (writer thread)
        self._hold_s = config.ingest.gap_hold_ms / 1000
        # a held batch is retried with every group, and at least this often when none come
        self._hold_retry_s = min(0.05, max(0.005, self._hold_s / 10))
        self.ready = asyncio.Event()  # set once subscribed: used by sd_notify READY and tests

    async def __aenter__(self) -> Self:
        loop = asyncio.get_running_loop()
        self._store = await loop.run_in_executor(self._writer, self._store_factory)
        self._tasks = asyncio.TaskGroup()
        await self._tasks.__aenter__()
        self._main = self._tasks.create_task(self._run(), name="ingest")
        return self

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
        if self._main is not None:
            await cancel_and_wait(self._main)
        if self._tasks is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._tasks.__aexit__(None, None, None)
        store = self._store
        if store is not None:
            await asyncio.get_running_loop().run_in_executor(self._writer, store.close)
        self._writer.shutdown(wait=True)
        self._decoder.shutdown(wait=True)

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
        try:
            # A persistent session (clean_session=False) makes the broker queue QoS 1 batches
            # while head office is down, so a restart does not wait for lanes' ack timeouts.
            # Not for a shared-subscription worker: Mosquitto keeps giving a disconnected
            # persistent member its turn of the round robin and queues those messages for it
            # (eclipse-mosquitto/mosquitto#1747), so a dead worker would sit on a share of
            # every lane's batches. With a clean session the broker serves only live members;
            # what was in flight to a killed one is resent by its lane (gap or ack timeout).
            async with aiomqtt.Client(
                b.host,
                b.port,
                identifier=b.client_id,
                username=b.username,
                password=b.password,
                tls_context=brokerconn.tls_context(b.tls),  # fresh: picks up renewed certs
                keepalive=b.keepalive,
                clean_session=b.share_group is not None,
                max_inflight_messages=100,
                # paho leaves Nagle on: acks would wait for the lane's delayed ACK (~40 ms).
                socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
            ) as client:
                # A group's acks go out together (up to group_max_messages, paho keeps 100 in
                # flight); aiomqtt logs a warning per publish beyond 10 pending, which at fleet
                # scale was thousands of log lines a minute spent on the ingest thread.
                client.pending_calls_threshold = 10 * self.config.ingest.group_max_messages
                self.stats.connected = True
                self.stats.connects += 1
                connected_at = time.monotonic()
                for channel in _EXPECTED:
                    filt = (
                        self.topics.shared(b.share_group, channel)
                        if b.share_group
                        else self.topics.all_lanes(channel)
                    )
                    await client.subscribe(filt, qos=1)
                log.info("head office: subscribed on %s:%d", b.host, b.port)
                self.ready.set()
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self._receive(client), name="ingest-receive")
                    tg.create_task(self._process(client), name="ingest-process")
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
            self.stats.connected = False

    async def _receive(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            payload = message.payload
            raw = bytes(payload) if isinstance(payload, bytes | bytearray) else b""
            self._queue.put_nowait((message.topic.value, raw))

    async def _process(self, client: aiomqtt.Client) -> None:
        """Two-stage pipeline: the decoder thread prepares group N+1 (decode, schema, hash
        chain, card-number scan) while the writer thread applies and commits group N."""
        prepared: asyncio.Queue[list[Prepared]] = asyncio.Queue(maxsize=1)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._prepare_loop(prepared), name="ingest-prepare")
            tg.create_task(self._apply_loop(client, prepared), name="ingest-apply")

    async def _prepare_loop(self, out: asyncio.Queue[list[Prepared]]) -> None:
        loop = asyncio.get_running_loop()
        max_count = self.config.ingest.group_max_messages
        max_bytes = 4 * self.config.ingest.max_message_bytes
        while True:
            group = [await self._queue.get()]
            size = len(group[0][1])
            while len(group) < max_count and size < max_bytes and not self._queue.empty():
                group.append(self._queue.get_nowait())
                size += len(group[-1][1])
            await out.put(await loop.run_in_executor(self._decoder, self.prepare_group, group))

    async def _apply_loop(
        self, client: aiomqtt.Client, prepared: asyncio.Queue[list[Prepared]]
    ) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                # With batches held for a gap, wake up to retry them even when nothing arrives.
                async with asyncio.timeout(self._hold_retry_s if self._held else None):
                    group = await prepared.get()
            except TimeoutError:
                group = []
            try:
                out = await loop.run_in_executor(self._writer, self.apply_group, group)
            except StoreError as exc:
                # Nothing committed, nothing acked: lanes resend after their ack timeout.
                self.stats.commit_failures += 1
                log.error("head office: %d messages not committed: %s", len(group), exc)
                continue
            self._crash_point_after_commit()
            await asyncio.gather(*(self._publish(client, msg) for msg in out))

    def _crash_point_after_commit(self) -> None:
        """Fault injection for the end-to-end tests: with LANESYNC_FAULT_CRASH_AFTER_COMMIT=N
        head office dies abruptly (as under kill -9) right after its Nth commit, before that
        commit's acks leave: the one instant a test cannot hit from outside on purpose."""
        self._commits += 1
        if self._commits == _CRASH_AFTER_COMMIT:
            log.critical("fault injection: exiting after commit %d, before its acks", self._commits)
            os._exit(137)

    async def _publish(self, client: aiomqtt.Client, msg: Ack | Reply) -> None:
        channel = Channel.ACK if isinstance(msg, Ack) else Channel.REPLY
        await client.publish(self.topics.topic(msg.lane, channel), codec.encode(msg), qos=1)

    # --- preparing (decoder thread): no database --------------------------------------------

    def prepare_group(self, group: list[tuple[str, bytes]]) -> list[Prepared]:
        return [self.prepare(topic, raw) for topic, raw in group]

    def prepare(self, topic: str, raw: bytes) -> Prepared:
        """Decode and check one message on its own; a refusal names why."""
        try:
            lane, channel = self.topics.parse(topic)
        except ProtocolError as exc:
            return Prepared(topic, raw, None, refusal=str(exc))
        try:
            msg = codec.decode(raw, self.config.ingest.max_message_bytes)
        except ProtocolError as exc:
            return Prepared(topic, raw, lane, refusal=str(exc))
        if msg.lane != lane:
            return Prepared(
                topic,
                raw,
                lane,
                refusal=f"payload is for {msg.lane} but was published under {lane}'s topic",
            )
        expected = _EXPECTED.get(channel)
        if expected is None or not isinstance(msg, expected):
            return Prepared(
                topic, raw, lane, refusal=f"a {msg.TYPE} message does not belong on {channel}"
            )
        checked = check_batch(msg) if isinstance(msg, JournalBatch) else None
        return Prepared(topic, raw, lane, msg, checked)

    # --- applying (writer thread) ---------------------------------------------------------

    def apply_group(self, group: Sequence[Prepared | tuple[str, bytes]]) -> list[Ack | Reply]:
        """Apply a group of messages in one transaction; returns what to publish after it.

        Raw `(topic, bytes)` pairs are prepared here first (tests and single-threaded use).
        """
        store = self._store
        assert store is not None
        now = now_ms()
        clock = time.monotonic()
        acks: dict[tuple[str, str, int], Ack] = {}
        gaps: dict[tuple[str, str, int], str] = {}
        replies: list[Ack | Reply] = []
        st = self.stats
        st.messages += len(group)
        held, self._held = self._held, []
        work = [h.prepared for h in held]  # older than this group: first
        since = [h.since for h in held]
        for item in group:
            work.append(item if isinstance(item, Prepared) else self.prepare(*item))
            since.append(clock)
        try:
            # Lock every lane the group touches first, in one fixed order (PostgreSQL workers).
            touched = {
                (p.msg.lane, p.msg.epoch) for p in work if isinstance(p.msg, JournalBatch | Hello)
            }
            store.lock_lanes(sorted(touched, key=lambda k: (k[0].store, k[0].lane, k[1])))
            waiting: list[_Held] = []
            for p, t in zip(work, since, strict=True):
                if self._gapped(store, p):
                    waiting.append(_Held(p, t))
                else:
                    self._apply_one(store, p, now, acks, gaps, replies)
            if waiting:
                self._settle_gapped(store, waiting, clock, now, acks, gaps, replies)
            store.commit()
        except StoreError:
            store.rollback()
            self._held = held  # retried with the next group; the new ones come again anyway
            raise
        except Exception as exc:
            store.rollback()
            self._held = held
            raise StoreError(f"ingest failed: {exc!r}") from exc
        finally:
            results, self._group_results = self._group_results, []
        for res in results:
            st.entries_applied += res.applied
            st.duplicate_txn_ids += res.duplicate_txn
        st.groups += 1
        st.last_commit_at = time.time()
        out: list[Ack | Reply] = []
        for key, ack in acks.items():
            st.lane_hwm[key] = ack.hwm
            reason = gaps.get(key)
            if reason is not None and ack.resend_from is None:
                out.append(Ack(ack.lane, ack.epoch, ack.hwm, ack.hwm + 1, reason))
            else:
                out.append(ack)
        return out + replies

    @staticmethod
    def _gapped(store: Store, p: Prepared) -> bool:
        """A batch that starts beyond what head office holds for its lane (after the lock)."""
        msg = p.msg
        if not isinstance(msg, JournalBatch) or p.lane is None:
            return False
        state = store.lane_state(p.lane, msg.epoch)
        return msg.first_seq > (state.hwm if state is not None else 0) + 1

    def _settle_gapped(
        self,
        store: Store,
        waiting: list[_Held],
        clock: float,
        now: int,
        acks: dict[tuple[str, str, int], Ack],
        gaps: dict[tuple[str, str, int], str],
        replies: list[Ack | Reply],
    ) -> None:
        """Apply the gapped batches whose predecessor this group brought; hold the others
        until `gap_hold_ms` has passed, then apply them, which answers with a resend."""
        st = self.stats
        waiting.sort(key=lambda h: _gap_key(h.prepared))
        progress = True
        while waiting and progress:
            progress = False
            still: list[_Held] = []
            for h in waiting:
                if self._gapped(store, h.prepared):
                    still.append(h)
                    continue
                if h.since < clock:
                    st.gaps_closed += 1
                self._apply_one(store, h.prepared, now, acks, gaps, replies)
                progress = True
            waiting = still
        for h in waiting:
            expired = clock - h.since >= self._hold_s
            if expired or len(self._held) >= MAX_HELD:
                self._apply_one(store, h.prepared, now, acks, gaps, replies)  # asks a resend
            else:
                if h.since == clock:
                    st.gaps_held += 1
                self._held.append(h)

    def _apply_one(
        self,
        store: Store,
        p: Prepared,
        now: int,
        acks: dict[tuple[str, str, int], Ack],
        gaps: dict[tuple[str, str, int], str],
        replies: list[Ack | Reply],
    ) -> None:
        st = self.stats
        msg, lane = p.msg, p.lane
        if msg is None or lane is None:
            self._quarantine(store, p.topic, lane, p.refusal or "refused", p.raw, now)
            return
        if isinstance(msg, JournalBatch):
            # Deferred: the group's rows are written together at commit (or before a request
            # reads them); applied/duplicate counts are known then.
            res = store.apply_batch(p.checked or msg, now, defer=True)
            self._group_results.append(res)
            st.entries_redelivered += res.redelivered
            key = (lane.store, lane.lane, msg.epoch)
            if res.resend_from is not None:
                st.gaps += 1
                gaps[key] = res.reason or "gap"
            elif res.quarantined:
                self._quarantine(
                    store,
                    p.topic,
                    lane,
                    res.reason or "refused",
                    b"" if res.card_number else p.raw,
                    now,
                )
            acks[key] = Ack(lane, msg.epoch, res.hwm, res.resend_from, res.reason)
        elif isinstance(msg, Hello):
            state = store.note_hello(lane, msg.epoch, msg.last_seq, now)
            acks[(lane.store, lane.lane, msg.epoch)] = Ack(lane, msg.epoch, state.hwm)
        elif isinstance(msg, Status):
            store.save_status(msg)
        elif isinstance(msg, Request):
            handler = self.handlers.get(msg.op)
            if handler is None:
                replies.append(Reply(lane, msg.corr, False, error=f"unknown operation {msg.op!r}"))
            else:
                store.flush()  # a transit request may read what this group's batches projected
                replies.append(handler(store, msg, now))

    def _quarantine(
        self, store: Store, topic: str, lane: LaneId | None, reason: str, raw: bytes, now: int
    ) -> None:
        self.stats.quarantined += 1
        log.warning("head office: quarantined a message on %s: %s", topic, reason)
        store.quarantine(topic, lane, reason, raw, now)
