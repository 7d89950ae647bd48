"""The head publisher: each store's retained catalog head on `{p}/{store}/catalog`.

It watches the catalog's latest version (a cheap `max(version)` every poll, ~100 ms) and,
when it moves, publishes the head of every store whose view changed, with the delta inline
when it is small (protocol.catalog.INLINE_CHANGES), so a lane holding the previous head
applies it with no round trip. On every connect it publishes every store's head again: a
broker that lost its retained messages (wiped, restarted without persistence) has them back.

Only stores the registry lists (rows of the `stores` dataset) get a head; a store removed from
the registry has its retained head cleared. It has its own MQTT connection (client id
`<head office client id>-catalog`), so a flood of journal batches on ingest's connection does
not hold heads back, and its own read-only database connection, used from one thread.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sqlite3
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiomqtt
import psycopg
import tenacity

from headoffice.catalog import versions
from headoffice.config import HeadOfficeConfig
from headoffice.db import DatabaseError, open_readonly, target
from headoffice.db.sql import Sql
from protocol import catalog as cat
from protocol.runtime import brokerconn, clock
from protocol.runtime.tasks import Component, Loops

log = logging.getLogger(__name__)

T = TypeVar("T")
HEALTHY_SESSION_S = 5.0
_LEADER_SQL = "SELECT pg_try_advisory_lock(hashtext('lanesync-catalog-heads:' || current_schema()))"
PUBLISH_WINDOW = 256  # heads in flight at once (paho keeps 100 unacknowledged, queues the rest)


@dataclass
class PublisherStats:
    connected: bool = False
    connects: int = 0
    heads_published: int = 0
    heads_cleared: int = 0
    version_seen: int = 0  # the latest catalog version the publisher has published for
    last_publish_ms: int = 0
    heads: dict[str, int] = field(default_factory=dict)  # store -> version of its head
    standby: bool = False  # another ingest worker's publisher holds the lock


class HeadPublisher(Component):
    """Publishes store heads while entered (`async with`); reconnects with backoff like
    ingest. Its one task runs through protocol.runtime.tasks.Tasks."""

    def __init__(self, config: HeadOfficeConfig, *, poll_s: float | None = None) -> None:
        self.config = config
        self.topics = config.topics
        self.poll_s = config.catalog.poll_ms / 1000 if poll_s is None else poll_s
        self.stats = PublisherStats()
        self._db = ThreadPoolExecutor(max_workers=1, thread_name_prefix="catalog-heads")
        self._sql: Sql | None = None
        self._catalog: versions.Catalog | None = None
        self._heads: dict[str, cat.CatalogHead] = {}  # the last head published per store
        self._leader = False
        super().__init__("catalog heads")

    def loops(self) -> Loops:
        return [("publish", self.run())]

    # --- database (its one thread) ------------------------------------------------------------

    async def _run_db(self, fn: Any, *args: Any) -> T:
        result: T = await asyncio.get_running_loop().run_in_executor(self._db, fn, *args)
        return result

    def _connection(self) -> tuple[Sql, versions.Catalog] | None:
        if self._sql is None:
            self._sql = open_readonly(target(self.config))
            if self._sql is None:
                return None  # no database file yet (ingest makes it)
            self._catalog = versions.Catalog(self._sql)
        assert self._catalog is not None
        return self._sql, self._catalog

    def drop_connection(self) -> None:
        """Close the database connection (and so give up the publishing lock); the next step
        opens it again. Runs on the database thread, or after the publisher stopped."""
        self._leader = False  # the lock went with the connection
        if self._sql is not None:
            try:
                self._sql.close()
            finally:
                self._sql = self._catalog = None

    def _leads(self, sql: Sql) -> bool:
        """Whether this process publishes. Several ingest workers share one PostgreSQL
        database: the one holding a session advisory lock publishes, the others stand by and
        take over when its connection ends (process gone, link cut), so a slow worker never
        overwrites a newer retained head with an older one. SQLite has one process."""
        if sql.dialect != "postgres":
            return True
        row = sql.fetchone(_LEADER_SQL)
        return bool(row and row[0])

    def latest_version(self) -> int | None:
        """The latest catalog version, or None while another process publishes."""
        conn = self._connection()
        if conn is None:
            return 0
        try:
            sql = conn[0]
            if not self._leader:
                self._leader = self._leads(sql)
                if self._leader:
                    log.info("catalog heads: this process publishes them")
                else:
                    return None
            version = versions.latest_version(sql)
            sql.rollback()  # a read-only PostgreSQL connection: see the next version next time
            return version
        except Exception:
            self.drop_connection()
            raise

    def changed_heads(self, latest: int, everyone: bool) -> tuple[list[cat.CatalogHead], list[str]]:
        """Heads to publish at `latest` (every registered store's when `everyone`, else those
        whose view moved) and stores to clear (no longer registered)."""
        conn = self._connection()
        if conn is None:
            return [], []
        sql, catalog = conn
        try:
            registry = versions.stores(sql)
            now_ms = clock.now_ms()
            heads: list[cat.CatalogHead] = []
            for store in registry:
                v = versions.view(sql, store, latest)
                before = self._heads.get(store)
                if before is not None and (before.version, before.hash) == (v.version, v.hash):
                    if everyone:
                        heads.append(before)
                    continue
                heads.append(self._head(catalog, store, v, before, now_ms))
            gone = [s for s in self._heads if s not in registry]
            sql.rollback()
        except Exception:
            self.drop_connection()
            raise
        return heads, gone

    def note_published(self, heads: Iterable[cat.CatalogHead]) -> None:
        """Remember `heads` as the last published per store: changed_heads() compares with
        them and builds inline deltas from them."""
        for head in heads:
            self._heads[head.store] = head

    def close(self) -> None:
        """Drop the connection and stop the database thread, as run() does when it ends; for
        a caller that used the database steps (latest_version, changed_heads) directly."""
        self.drop_connection()
        self._db.shutdown(wait=True)

    @staticmethod
    def _head(
        catalog: versions.Catalog,
        store: str,
        v: versions.View,
        before: cat.CatalogHead | None,
        now_ms: int,
    ) -> cat.CatalogHead:
        if before is not None and 0 < before.version < v.version:
            try:
                _at, net = catalog.delta(store, before.version, v.version)
            except versions.CatalogRefused:
                net = None  # a zone change: lanes ask for a snapshot
            if net is not None and len(net) <= cat.INLINE_CHANGES:
                changes = versions.decode(net)
                return cat.CatalogHead(
                    store, v.version, v.hash, v.rows, now_ms, before.version, changes
                )
        return cat.CatalogHead(store, v.version, v.hash, v.rows, now_ms)

    # --- MQTT ---------------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            while True:
                retrying = tenacity.AsyncRetrying(
                    wait=tenacity.wait_random_exponential(multiplier=0.5, max=15),
                    retry=tenacity.retry_if_exception_type(
                        (aiomqtt.MqttError, OSError, DatabaseError, sqlite3.Error, psycopg.Error)
                    ),
                    before_sleep=lambda s: log.warning(
                        "catalog heads: %s; retrying", s.outcome.exception() if s.outcome else None
                    ),
                )
                async for attempt in retrying:
                    with attempt:
                        await self._session()
        except Exception:
            log.exception("catalog heads: the publisher stopped; lanes get no new heads")
            raise
        finally:
            await self._run_db(self.drop_connection)
            self._db.shutdown(wait=True)

    async def _session(self) -> None:
        b = self.config.broker
        connected_at: float | None = None
        try:
            async with brokerconn.connect(  # a CONNACK deadline of its own, as ingest's
                b,
                f"{b.client_id}-catalog",
                clean_session=True,
                max_inflight_messages=100,
                socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
            ) as client:
                client.pending_calls_threshold = 2 * PUBLISH_WINDOW
                self.stats.connected = True
                self.stats.connects += 1
                connected_at = time.monotonic()
                log.info("catalog heads: connected to %s:%d", b.host, b.port)
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self._watch(client), name="catalog-heads-link")
                    tg.create_task(self._publish_loop(client), name="catalog-heads-publish")
        except* aiomqtt.MqttError as eg:
            if connected_at is None or time.monotonic() - connected_at < HEALTHY_SESSION_S:
                raise eg.exceptions[0] from None
            log.warning(
                "catalog heads: broker connection lost (%s); reconnecting", eg.exceptions[0]
            )
        finally:
            self.stats.connected = False

    @staticmethod
    async def _watch(client: aiomqtt.Client) -> None:
        """Raise MqttError when the link breaks. The publisher subscribes to nothing and sits
        idle between versions, and aiomqtt reports a lost connection only to what awaits it:
        without this, a broker restarted without its retained heads would never get them
        back until the next version."""
        async for _ in client.messages:
            pass
        raise aiomqtt.MqttError("the broker connection ended")

    async def _publish_loop(self, client: aiomqtt.Client) -> None:
        everyone = True  # a new connection: every head again (the broker may have lost them)
        seen = -1
        while True:
            latest: int | None = await self._run_db(self.latest_version)
            if latest is None:  # another worker publishes; if it stops, all heads again
                self.stats.standby = True
                everyone = True
            elif everyone or latest != seen:
                self.stats.standby = False
                found: tuple[list[cat.CatalogHead], list[str]] = await self._run_db(
                    self.changed_heads, latest, everyone
                )
                heads, gone = found
                # Concurrently, a window at a time: one by one, each would wait for its
                # PUBACK (aiomqtt's publish returns on paho's on_publish), and 200 stores
                # behind a 20 ms link would take 4 s to get a price change.
                for i in range(0, len(heads), PUBLISH_WINDOW):
                    window = heads[i : i + PUBLISH_WINDOW]
                    try:
                        async with asyncio.TaskGroup() as tg:
                            for head in window:
                                topic = self.topics.catalog(head.store)
                                payload = cat.encode_head(head)
                                tg.create_task(client.publish(topic, payload, qos=1, retain=True))
                    except* aiomqtt.MqttError as eg:  # the link broke: reconnect, republish all
                        raise eg.exceptions[0] from None
                    self.note_published(window)
                    for head in window:
                        self.stats.heads[head.store] = head.version
                    self.stats.heads_published += len(window)
                for store in gone:
                    # an empty retained message deletes the retained head (MQTT 3.1.1 3.3.1.3)
                    await client.publish(self.topics.catalog(store), b"", qos=1, retain=True)
                    self._heads.pop(store, None)
                    self.stats.heads.pop(store, None)
                    self.stats.heads_cleared += 1
                if heads or gone:
                    self.stats.last_publish_ms = clock.now_ms()
                    log.info(
                        "catalog heads: version %d: %d published, %d cleared",
                        latest,
                        len(heads),
                        len(gone),
                    )
                seen, everyone = latest, False
                self.stats.version_seen = latest
            await asyncio.sleep(self.poll_s)
