"""Ingest by store, not by message (issue 17.4): PostgreSQL workers own stores through leases.

With a shared subscription the broker spreads one lane's batches over the workers, so a batch
can overtake its predecessor and wait `gap_hold_ms`, and brokers without `$share` (NATS,
RabbitMQ) can run one worker only. Here each worker (`ingest.leases = true`, `lanesync
headoffice --worker N`) holds leases on a set of stores and subscribes, with plain
subscriptions, to those stores' topics only (`{prefix}/{store}/+/{channel}`): one lane's
messages always reach one worker, in the order the lane published them.

The tables (schema_pg 0009): `ingest_workers`, a heartbeat row per worker, and
`ingest_leases`, a row per known store with its holder and the lease's expiry. Every
`lease_ttl_s / 4` each worker renews its heartbeat and its leases, reads the live workers and
the stores, and computes its share by rendezvous hashing over the live workers' ids
(deterministic, so every worker computes the same split without talking to the others, and a
worker joining or leaving moves only its own share). It gives up the stores that are no longer
its own and takes those that are, once free.

Fencing, so a store is never held by two workers: a lease is taken only with
`UPDATE ... WHERE holder IS NULL OR expires_at <= now() OR holder = me`. The holder giving a
store up first unsubscribes, waits until everything it had received for that store is
committed (the pipeline's barrier, `drained`), then releases the row; the new holder
subscribes only after that (or after the old lease expired: a dead or stalled holder). A
holder accepts a store's messages only until `lease_ttl_s - margin` after the start of its
last successful renewal, measured on its own clock, which is before the database's expiry, so a
worker that cannot renew (database or thread stalled) stops applying before another can take
over. Behind the leases, the database's per-lane row locks still keep every lane's order.

Messages published while nobody is subscribed to a store (the handover's window, a killed
holder) are lost at the broker, never at head office: lanes keep every entry until it is
acked. So a worker that takes a store asks each of its lanes to resend from head office's
committed mark (an ack with `resend_from`), instead of leaving them to their ack timeout.

Where the stores come from: the store registry (the catalog's `stores` rows), every store in
`lanes`, and first contact: one worker holds the discovery role (the lease row `*`, never a
store id) and subscribes on a connection of its own to every lane's hello and status. A
message of a store it has never heard of adds the store's row and is applied by that worker;
from the next heartbeat the store belongs to its owner, which takes it and prompts its lanes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiomqtt
import psycopg

from headoffice.config import HeadOfficeConfig
from headoffice.db.postgres import connect, redact
from headoffice.inbox import Inbox, store_of
from headoffice.ingest.applier import CHANNEL_TYPES
from headoffice.ingest.stats import IngestStats
from protocol import codec
from protocol.errors import ProtocolError
from protocol.identity import Channel, LaneId, check_segment
from protocol.messages import Ack
from protocol.runtime import brokerconn

log = logging.getLogger("headoffice.ingest.leases")

DISCOVERY = "*"  # the discovery role's lease row: not a topic segment, so never a store
TICKS_PER_TTL = 4  # heartbeats per lease time: three may fail before a lease lapses
MARGIN = 0.25  # of the ttl: a holder stops accepting this long before the database's expiry
SYNC_EVERY_S = 5.0  # how often the registry's and `lanes`' stores are added to the lease rows
FILTERS_PER_PACKET = 64  # subscriptions per SUBSCRIBE / UNSUBSCRIBE packet

T = TypeVar("T")


def _weight(worker: str, store: str) -> bytes:
    return hashlib.blake2b(f"{worker}\0{store}".encode(), digest_size=8).digest()


def owner(store: str, workers: Iterable[str]) -> str:
    """The rendezvous (highest random weight) owner of `store` among `workers`."""
    return max(workers, key=lambda w: _weight(w, store))


def assign(stores: Iterable[str], workers: Iterable[str]) -> dict[str, str]:
    """Every store's worker: rendezvous hashing with bounded load. Plain rendezvous splits
    a few dozen stores unevenly (15 stores over 3 workers came out 10/5/0), so each store, in
    sorted order, goes to the highest-weight worker that has fewer than ceil(stores/workers):
    even within one store, the same on every worker, and a worker joining or leaving moves
    little more than its own share."""
    names = sorted(stores)
    ws = sorted(set(workers))
    if not ws:
        return {}
    cap = -(-len(names) // len(ws))
    load = dict.fromkeys(ws, 0)
    out: dict[str, str] = {}
    for store in names:
        for w in sorted(ws, key=lambda w: _weight(w, store), reverse=True):
            if load[w] < cap:
                out[store] = w
                load[w] += 1
                break
    return out


@dataclass(slots=True)
class LeaseStats:
    """What the leases count: on the worker's heartbeat row (operators, tests)."""

    takeovers: int = 0  # stores this worker acquired
    given_up: int = 0  # stores it released for another worker
    lost: int = 0  # leases it found expired or taken at renewal
    prompts: int = 0  # resend requests sent to lanes of acquired stores
    discovered: int = 0  # stores first heard through the discovery role
    dropped: int = 0  # messages refused because their store is not (or no longer) held
    held: set[str] = field(default_factory=set)


@dataclass(slots=True)
class Beat:
    """One heartbeat's reading: the live workers, every store's row, the leases renewed."""

    workers: list[str]
    stores: list[str]
    renewed: set[str]


class LeaseTable:
    """The lease tables' SQL, on a connection of its own (autocommit), used by one thread."""

    def __init__(self, url: str, worker: str, ttl_s: float) -> None:
        self.url, self.worker, self.ttl_s = url, worker, ttl_s
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = None

    def _c(self) -> psycopg.Connection[tuple[Any, ...]]:
        if self._conn is None or self._conn.closed:
            self._conn = connect(self.url)
            # a statement that hangs must not hold the heartbeat beyond the lease
            self._conn.execute(f"SET statement_timeout = {int(self.ttl_s * 1000)}")
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def sync_stores(self) -> None:
        """Add a row for every store the registry or `lanes` knows, and the discovery role."""
        self._c().execute(
            "INSERT INTO ingest_leases (store) "
            "SELECT %s UNION SELECT DISTINCT store FROM lanes "
            "UNION SELECT key FROM catalog_rows WHERE dataset = 'stores' "
            "AND until_version IS NULL ON CONFLICT DO NOTHING",
            (DISCOVERY,),
        )

    def add(self, stores: Iterable[str]) -> None:
        self._c().execute(
            "INSERT INTO ingest_leases (store) SELECT unnest(%s::text[]) ON CONFLICT DO NOTHING",
            (list(stores),),
        )

    def beat(self, counters: dict[str, int]) -> Beat:
        """Heartbeat, renew this worker's unexpired leases, read the workers and stores."""
        c = self._c()
        with c.transaction():
            c.execute(
                "INSERT INTO ingest_workers (worker, expires_at, stores, entries_applied, gaps, "
                "gaps_held, takeovers) VALUES (%s, now() + make_interval(secs => %s), "
                "%s, %s, %s, %s, %s) ON CONFLICT (worker) DO UPDATE SET "
                "expires_at = EXCLUDED.expires_at, stores = EXCLUDED.stores, "
                "entries_applied = EXCLUDED.entries_applied, gaps = EXCLUDED.gaps, "
                "gaps_held = EXCLUDED.gaps_held, takeovers = EXCLUDED.takeovers",
                (
                    self.worker,
                    self.ttl_s,
                    counters["stores"],
                    counters["entries_applied"],
                    counters["gaps"],
                    counters["gaps_held"],
                    counters["takeovers"],
                ),
            )
            renewed = c.execute(
                "UPDATE ingest_leases SET expires_at = now() + make_interval(secs => %s) "
                "WHERE holder = %s AND expires_at > now() RETURNING store",
                (self.ttl_s, self.worker),
            ).fetchall()
            workers = c.execute(
                "SELECT worker FROM ingest_workers WHERE expires_at > now() ORDER BY worker"
            ).fetchall()
            stores = c.execute("SELECT store FROM ingest_leases").fetchall()
        return Beat([w for (w,) in workers], [s for (s,) in stores], {s for (s,) in renewed})

    def acquire(self, stores: Iterable[str]) -> set[str]:
        """Take the leases of `stores` that are free, expired or already this worker's."""
        rows = (
            self._c()
            .execute(
                "UPDATE ingest_leases SET holder = %s, "
                "expires_at = now() + make_interval(secs => %s), since = now() "
                "WHERE store = ANY(%s) "
                "AND (holder IS NULL OR expires_at <= now() OR holder = %s) RETURNING store",
                (self.worker, self.ttl_s, list(stores), self.worker),
            )
            .fetchall()
        )
        return {s for (s,) in rows}

    def release(self, stores: Iterable[str]) -> None:
        self._c().execute(
            "UPDATE ingest_leases SET holder = NULL, expires_at = NULL "
            "WHERE holder = %s AND store = ANY(%s)",
            (self.worker, list(stores)),
        )

    def leave(self, counters: dict[str, int]) -> None:
        """Release every lease and end the heartbeat (its row stays, expired, with the last
        counters): the others rebalance at once instead of after the lease time."""
        c = self._c()
        with c.transaction():
            c.execute(
                "UPDATE ingest_leases SET holder = NULL, expires_at = NULL WHERE holder = %s",
                (self.worker,),
            )
            c.execute(
                "UPDATE ingest_workers SET expires_at = now(), stores = 0, entries_applied = %s,"
                " gaps = %s, gaps_held = %s, takeovers = %s WHERE worker = %s",
                (
                    counters["entries_applied"],
                    counters["gaps"],
                    counters["gaps_held"],
                    counters["takeovers"],
                    self.worker,
                ),
            )

    def lanes(self, stores: Iterable[str]) -> list[tuple[str, str, int, int]]:
        """Each lane of `stores` in its newest epoch, with head office's committed mark."""
        rows = (
            self._c()
            .execute(
                "SELECT DISTINCT ON (store, lane) store, lane, epoch, hwm FROM lanes "
                "WHERE store = ANY(%s) ORDER BY store, lane, last_seen DESC, epoch DESC",
                (list(stores),),
            )
            .fetchall()
        )
        return [(str(s), str(ln), int(e), int(h)) for s, ln, e, h in rows]


class StoreLeases:
    """One worker's leases for the life of one broker session: `run` heartbeats, takes and
    gives up stores and subscribes `client` accordingly; `accepts` tells the receiver which
    messages to queue; `close` releases everything (after the writer settled)."""

    def __init__(
        self,
        config: HeadOfficeConfig,
        inbox: Inbox,
        stats: IngestStats,
        drained: Callable[[set[str]], Awaitable[None]],
    ) -> None:
        assert config.database_url is not None  # config.parse refuses leases without it
        self.config = config
        self.worker = config.broker.client_id
        self.ttl_s = config.ingest.lease_ttl_s
        self.topics = config.topics
        self.inbox = inbox
        self.ingest_stats = stats
        self.stats = LeaseStats()
        self._drained = drained
        self._table = LeaseTable(config.database_url, self.worker, self.ttl_s)
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="ho-leases")
        self.held = self.stats.held  # leases the database says this worker holds
        self.accepting: set[str] = set()  # stores whose messages go to the inbox
        self.valid_until = 0.0  # monotonic: accept nothing after it without a renewal
        self.known: set[str] = set()
        self._leaving: dict[str, asyncio.Task[None]] = {}
        self._discovery: asyncio.Task[None] | None = None
        self._synced_at = -SYNC_EVERY_S
        self._split: tuple[tuple[str, ...], tuple[str, ...], set[str]] = ((), (), set())

    def accepts(self, topic: str) -> bool:
        """Whether a message on `topic` is for a store this worker holds (receiver side)."""
        if store_of(topic) in self.accepting and time.monotonic() < self.valid_until:
            return True
        self.stats.dropped += 1
        return False

    async def _db(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    async def run(self, client: aiomqtt.Client, ready: asyncio.Event) -> None:
        interval = self.ttl_s / TICKS_PER_TTL
        while True:
            started = time.monotonic()
            try:
                await self._tick(client, started)
                ready.set()
            except psycopg.Error as exc:
                log.warning("ingest leases: %s: %s", redact(self.config.database_url or ""), exc)
                await self._db(self._table.close)
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))

    async def _tick(self, client: aiomqtt.Client, started: float) -> None:
        if started - self._synced_at >= SYNC_EVERY_S:
            await self._db(self._table.sync_stores)
            self._synced_at = started
        beat = await self._db(self._table.beat, self._counters())
        self.valid_until = started + self.ttl_s * (1 - MARGIN)
        lost = self.held - beat.renewed
        if lost:  # expired under us (a stall) or taken: stop at once, the lanes resend
            self.stats.lost += len(lost)
            log.warning("ingest leases: %d store leases lapsed: %s", len(lost), _few(lost))
            await self._forget(client, lost)
        self.known = set(beat.stores)
        if self.worker not in beat.workers:
            return  # our own heartbeat not visible yet (cannot happen after the upsert)
        # The discovery role is sticky: its holder keeps it (moving it would miss the hellos
        # sent meanwhile); the others only try to take it when it is free or expired.
        mine = self._mine(beat) | {DISCOVERY}
        give_up = self.held - mine - set(self._leaving)
        if give_up:
            task = asyncio.ensure_future(self._give_up(client, give_up))
            task.add_done_callback(_log_failure)
            for s in give_up:
                self._leaving[s] = task
        want = mine - self.held - set(self._leaving)
        if want:
            taken = await self._db(self._table.acquire, want)
            if taken:
                await self._take(client, taken)
        self._discover_if_held()

    def _mine(self, beat: Beat) -> set[str]:
        """This worker's share of the stores (computed again only when stores or workers
        changed)."""
        stores = tuple(sorted(s for s in beat.stores if s != DISCOVERY))
        workers = tuple(beat.workers)
        if (stores, workers) != self._split[:2]:
            split = assign(stores, workers)
            self._split = (stores, workers, {s for s, w in split.items() if w == self.worker})
        return self._split[2]

    def _counters(self) -> dict[str, int]:
        st = self.ingest_stats
        return {
            "stores": len(self.held),
            "entries_applied": st.entries_applied,
            "gaps": st.gaps,
            "gaps_held": st.gaps_held,
            "takeovers": self.stats.takeovers,
        }

    async def _take(self, client: aiomqtt.Client, stores: set[str]) -> None:
        """Subscribe to newly leased stores, then ask their lanes to resend from head office's
        committed mark (what was published while nobody listened is gone from the broker)."""
        self.held |= stores
        real = sorted(stores - {DISCOVERY})
        self.accepting |= set(real)
        self.stats.takeovers += len(stores)
        await _subscribe(client, [self._filter(s, ch) for s in real for ch in CHANNEL_TYPES])
        log.info("ingest leases: %s took %d stores: %s", self.worker, len(stores), _few(stores))
        if real:
            lanes = await self._db(self._table.lanes, real)
            self.stats.prompts += len(lanes)
            await asyncio.gather(
                *(
                    client.publish(
                        self.topics.topic(LaneId(s, ln), Channel.ACK),
                        codec.encode(
                            Ack(LaneId(s, ln), epoch, hwm, hwm + 1, f"store taken by {self.worker}")
                        ),
                        qos=1,
                    )
                    for s, ln, epoch, hwm in lanes
                )
            )

    async def _give_up(self, client: aiomqtt.Client, stores: set[str]) -> None:
        """Unsubscribe, wait until what was received for `stores` is committed, release."""
        try:
            real = sorted(stores - {DISCOVERY})
            await _unsubscribe(client, [self._filter(s, ch) for s in real for ch in CHANNEL_TYPES])
            self.accepting -= stores
            if DISCOVERY in stores:
                await self._stop_discovery()
            await self._drained(set(real))
            await self._db(self._table.release, stores)
            self.held -= stores
            self.stats.given_up += len(stores)
            log.info("ingest leases: %s gave up %d stores", self.worker, len(stores))
        finally:
            for s in stores:
                self._leaving.pop(s, None)

    async def _forget(self, client: aiomqtt.Client, stores: set[str]) -> None:
        """Leases this worker no longer holds: refuse their messages and drop what waits."""
        self.accepting -= stores
        self.held -= stores
        for s in stores:
            self.inbox.drop(s)
        if DISCOVERY in stores:
            await self._stop_discovery()
        real = sorted(stores - {DISCOVERY})
        await _unsubscribe(client, [self._filter(s, ch) for s in real for ch in CHANNEL_TYPES])

    def _filter(self, store: str, channel: Channel) -> str:
        return f"{self.topics.prefix}/{store}/+/{channel.value}"

    # --- discovery: hellos of stores nobody holds a row for --------------------------------

    def _discover_if_held(self) -> None:
        if DISCOVERY in self.held and DISCOVERY not in self._leaving and self._discovery is None:
            self._discovery = asyncio.ensure_future(self._discover())

    async def _stop_discovery(self) -> None:
        task, self._discovery = self._discovery, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _discover(self) -> None:
        """A connection of its own subscribed to every lane's hello and status (overlapping
        filters on one connection would deliver a held store's messages twice). The status is
        retained and sent every 15 s: a store whose hello was missed (say, while the role
        moved between workers) is found by it, at once where the broker gives retained
        messages to a wildcard subscription, else within 15 s."""
        b = self.config.broker
        while True:
            try:
                async with brokerconn.connect(
                    b, f"{b.client_id}-discovery", clean_session=True
                ) as c:
                    await c.subscribe(
                        [(self.topics.all_lanes(ch), 1) for ch in (Channel.HELLO, Channel.STATUS)]
                    )
                    async for msg in c.messages:
                        await self._first_contact(msg)
            except (aiomqtt.MqttError, OSError, psycopg.Error) as exc:
                log.warning("ingest leases: discovery: %s; retrying", exc)
                await asyncio.sleep(1.0)

    async def _first_contact(self, msg: aiomqtt.Message) -> None:
        topic = msg.topic.value
        store = store_of(topic)
        if store in self.known:
            return  # its holder has it through its own subscription
        payload = msg.payload if isinstance(msg.payload, bytes | bytearray) else b""
        try:
            check_segment(store, "store")
        except ProtocolError:
            self.inbox.put(topic, bytes(payload))  # quarantined by the applier, never a row
            return
        self.known.add(store)
        self.stats.discovered += 1
        await self._db(self._table.add, [store])
        log.info("ingest leases: first contact from store %s", store)
        self.inbox.put(topic, bytes(payload))

    # --- the end of the session ------------------------------------------------------------

    async def close(self, settle: Callable[[], Awaitable[None]]) -> None:
        """Stop accepting, let the writer finish its group (`settle`), drop what still waits
        for the held stores, then release every lease and leave the workers' table."""
        self.accepting.clear()
        self.valid_until = 0.0
        leaving = set(self._leaving.values())
        for task in leaving:
            task.cancel()
        await asyncio.gather(*leaving, return_exceptions=True)
        await self._stop_discovery()
        try:
            await settle()
            for s in self.held:
                self.inbox.drop(s)
            await self._db(self._table.leave, self._counters())
        except psycopg.Error as exc:
            log.warning("ingest leases: could not release (they expire by themselves): %s", exc)
        finally:
            self.held.clear()
            await self._db(self._table.close)
            self._thread.shutdown(wait=True)


async def _subscribe(client: aiomqtt.Client, filters: list[str]) -> None:
    for i in range(0, len(filters), FILTERS_PER_PACKET):
        await client.subscribe([(f, 1) for f in filters[i : i + FILTERS_PER_PACKET]])


async def _unsubscribe(client: aiomqtt.Client, filters: list[str]) -> None:
    for i in range(0, len(filters), FILTERS_PER_PACKET):
        await client.unsubscribe(filters[i : i + FILTERS_PER_PACKET])


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("ingest leases: giving stores up failed: %s", task.exception())


def _few(stores: Iterable[str]) -> str:
    names = sorted(stores)
    return ", ".join(names[:5]) + (f" (+{len(names) - 5})" if len(names) > 5 else "")
