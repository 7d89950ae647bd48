"""Prometheus metrics of head office: ingest counters and per-lane lag.

Counters come from the live IngestStats (entries held, epochs refused, messages shed by store,
the inbox's depth); per-lane values (lag, backlog, online, gaps, quarantine, held entries,
epochs on record) from the status page's read-only `collect`, and held entries by code with the
releases and voids of every process (headoffice.held.ops.summary), refreshed in a worker thread
at most once a second at scrape time. A registry per instance keeps tests independent. Store
labels of shed messages are bounded (headoffice.inbox.MAX_SHED_LABELS).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from headoffice.db import DatabaseError, Target, open_readonly
from headoffice.held import ops as held_ops
from headoffice.ingest import IngestStats
from headoffice.statuspage import collect

HELD_CODES = ("card_number", "invalid_body", "txn_conflict", "apply_failed", "unregistered")


def held_figures(database: Target) -> dict[str, Any] | None:
    """Held entries by code, and how many were released or voided (by any process: the
    operator's commands write the database's counters), for the scrape."""
    try:
        db = open_readonly(database)
    except DatabaseError:
        return None  # the status page's collect says why
    if db is None:
        return None
    try:
        return held_ops.summary(db)
    finally:
        db.close()


class HoCollector(Collector):
    def __init__(self, stats: IngestStats, database: Target, offline_after_s: float) -> None:
        self.stats = stats
        self.database = database
        self.offline_after_s = offline_after_s
        self.snapshot: dict[str, Any] | None = None
        self.held: dict[str, Any] | None = None
        self._at = 0.0

    def expire(self) -> None:
        """Forget when the database figures were read: the next refresh() reads them again
        instead of reusing them for up to a second."""
        self._at = 0.0

    async def refresh(self) -> None:
        if time.monotonic() - self._at >= 1.0:
            self.snapshot = await asyncio.to_thread(
                collect, self.database, offline_after_s=self.offline_after_s
            )
            self.held = await asyncio.to_thread(held_figures, self.database)
            self._at = time.monotonic()

    def collect(self) -> Iterator[Metric]:
        st = self.stats

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            return CounterMetricFamily(f"lanesync_ho_{name}", doc, value=value)

        yield GaugeMetricFamily(
            "lanesync_ho_broker_connected", "1 while subscribed", value=int(st.connected)
        )
        yield counter("connects", "Broker sessions opened", st.connects)
        yield counter("messages", "MQTT messages processed", st.messages)
        yield counter("groups", "Ingest transactions committed", st.groups)
        yield counter(
            "journal_groups", "Ingest transactions that carried journal entries", st.journal_groups
        )
        yield counter(
            "entries_applied", "Entries applied (rate() = ingest rate)", st.entries_applied
        )
        yield counter(
            "entries_redelivered", "Entries received again and dropped", st.entries_redelivered
        )
        yield counter(
            "duplicate_txn_ids", "Entries whose document was already applied", st.duplicate_txn_ids
        )
        yield counter("gaps", "Resend requests for gaps", st.gaps)
        yield counter("quarantined", "Messages quarantined by this process", st.quarantined)
        yield counter(
            "entries_held", "Entries held at their seq instead of applied", st.entries_held
        )
        yield counter(
            "entries_unregistered",
            "Entries held because the store registry does not list their store or lane",
            st.entries_unregistered,
        )
        yield counter(
            "entries_released_registered",
            "Held entries this process released once their store or lane was registered",
            st.entries_released,
        )
        yield GaugeMetricFamily(
            "lanesync_ho_registry_stores",
            "Stores the catalog's registry lists (0: not enforced, every store is accepted)",
            value=st.registry_stores,
        )
        yield counter(
            "epochs_refused",
            "Hellos and batches for a new epoch beyond ingest.max_epochs_per_lane",
            st.epochs_refused,
        )
        yield counter("commit_failures", "Groups not committed (lanes resend)", st.commit_failures)
        yield counter(
            "groups_split", "Failed groups applied again message by message", st.groups_split
        )
        inbox = st.inbox
        yield GaugeMetricFamily(
            "lanesync_ho_inbox_messages", "Messages waiting for the decoder", value=inbox.queued
        )
        yield GaugeMetricFamily(
            "lanesync_ho_inbox_bytes", "What the waiting messages cost", value=inbox.queued_bytes
        )
        shed = CounterMetricFamily(
            "lanesync_ho_messages_shed",
            "Messages dropped because their store's inbox queue was full (lanes resend)",
            labels=["store"],
        )
        for store, n in inbox.shed_by_store.items():
            shed.add_metric([store], n)
        yield shed
        yield GaugeMetricFamily(
            "lanesync_ho_lane_epochs_tracked",
            "Lane epochs whose mark this process keeps in memory (bounded)",
            value=len(st.lane_hwm),
        )
        if st.last_commit_at is not None:
            yield GaugeMetricFamily(
                "lanesync_ho_last_commit_age_seconds",
                "Seconds since the last ingest commit",
                value=max(0.0, time.time() - st.last_commit_at),
            )
        snap = self.snapshot
        if snap is None:
            return
        labels = ["store", "lane"]
        fams = {
            "lag_entries": GaugeMetricFamily(
                "lanesync_ho_lane_lag_entries",
                "Entries the lane holds beyond what is applied",
                labels=labels,
            ),
            "backlog": GaugeMetricFamily(
                "lanesync_ho_lane_backlog_entries",
                "Unacked entries the lane last reported",
                labels=labels,
            ),
            "last_seen_age_s": GaugeMetricFamily(
                "lanesync_ho_lane_last_seen_age_seconds",
                "Seconds since the lane was heard",
                labels=labels,
            ),
            "online": GaugeMetricFamily(
                "lanesync_ho_lane_online",
                "1 while the lane's status is online and fresh",
                labels=labels,
            ),
            "gaps": GaugeMetricFamily(
                "lanesync_ho_lane_gaps", "Gaps detected in this epoch", labels=labels
            ),
            "hwm": GaugeMetricFamily(
                "lanesync_ho_lane_applied_seq", "Highest applied seq", labels=labels
            ),
            "quarantined": GaugeMetricFamily(
                "lanesync_ho_lane_quarantined", "Quarantined messages from the lane", labels=labels
            ),
            "held": GaugeMetricFamily(
                "lanesync_ho_lane_held_entries", "Entries of the lane held", labels=labels
            ),
            "epochs": GaugeMetricFamily(
                "lanesync_ho_lane_epochs", "Epochs of the lane on record", labels=labels
            ),
        }
        for ln in snap["lanes"]:
            key = [ln["store"], ln["lane"]]
            for field, fam in fams.items():
                value = ln[field]
                if field == "online":
                    value = int(value == "online")
                fam.add_metric(key, float(value or 0))
        yield from fams.values()
        yield GaugeMetricFamily(
            "lanesync_ho_quarantine_rows",
            "Quarantined messages held",
            value=snap.get("quarantine_total", 0),
        )
        yield GaugeMetricFamily(
            "lanesync_ho_held_entries",
            "Entries held at their seq, waiting for an operator",
            value=snap.get("held_total", 0),
        )
        held = self.held
        if held is None:
            return
        by_code = GaugeMetricFamily(
            "lanesync_ho_held_open_entries",
            "Entries held at their seq, waiting for an operator, by the rule that holds them",
            labels=["code"],
        )
        for code in HELD_CODES:
            by_code.add_metric([code], held["open_by_code"].get(code, 0))
        yield by_code
        yield counter(
            "entries_released",
            "Held entries released (applied once), by operators and the store registry",
            held["released"],
        )
        yield counter("entries_voided", "Held entries voided by operators", held["voided"])


class HoMetrics:
    def __init__(self, stats: IngestStats, database: Target, offline_after_s: float = 60.0) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.collector = HoCollector(stats, database, offline_after_s)
        self.registry.register(self.collector)

    async def render(self) -> bytes:
        await self.collector.refresh()
        return generate_latest(self.registry)

    async def handle(self, _: web.Request) -> web.Response:
        return web.Response(body=await self.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})
