"""Prometheus metrics of one lane, served as text on `[metrics] listen` /metrics.

Values are read at scrape time from the live objects (journal, replicator stats, disk budget) by
a custom collector, so nothing is double-booked; only batch sizes are observed as they happen.
Each daemon has its own CollectorRegistry (not the process-global one), so tests can run
several in one process. Backlog bytes and the oldest unacked entry come from a read-only query
run in a worker thread at most once a second.

prometheus_client (about 1 MB with its exposition half) is imported at the first scrape, not
at start: a lane without `[metrics] listen` never loads it (issue 17.2). So the batch-size
histograms count here, in plain Python, and become prometheus families only when collected.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from agent.httpserver import HttpError, Limits, Request, Response, Router, Server
from agent.status import JournalFacts, journal_facts
from protocol.pan import redact_text
from protocol.runtime.version import VERSION

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import CollectorRegistry

    from agent.journal import Journal
    from agent.replicator import Replicator
    from agent.retention import Retention


@dataclass(slots=True)
class AgentCounters:
    """Counts other parts of the agent bump (scanner wiring, document refusals)."""

    quarantined: int = 0  # documents refused at journaling (never journaled), since start
    scan_errors: int = 0
    clock_skew_s: float | None = None  # head office minus lane, when last measured
    last_refusal: dict[str, Any] | None = None  # {"at", "path", "reason"}: what was refused

    def refused_at_journaling(self, path: str, reason: str) -> None:
        """A document the till sent to be journaled was refused with this reason (the till
        got it too); `lanesync status` shows the count and the last one."""
        self.quarantined += 1
        self.last_refusal = {"at": time.time(), "path": path, "reason": redact_text(reason)}


class AgentCollector:
    """The lane's gauges and counters, read from the live objects at each scrape (a
    prometheus_client collector: it has `collect`)."""

    def __init__(
        self,
        journal: Journal,
        replicator: Replicator,
        retention: Retention | None,
        counters: AgentCounters,
    ) -> None:
        self.journal = journal
        self.replicator = replicator
        self.retention = retention
        self.counters = counters
        self.facts: JournalFacts | None = None
        self._facts_at = 0.0

    async def refresh(self) -> None:
        if time.monotonic() - self._facts_at >= 1.0:
            self.facts = await asyncio.to_thread(journal_facts, self.journal.path)
            self._facts_at = time.monotonic()

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import (  # noqa: PLC0415 - scraped only (module docstring)
            CounterMetricFamily,
            GaugeMetricFamily,
        )

        j, st, now = self.journal, self.replicator.stats, time.time()
        lane = [j.lane.store, j.lane.lane]
        labels = ["store", "lane"]

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            g = GaugeMetricFamily(f"lanesync_agent_{name}", doc, labels=labels)
            g.add_metric(lane, value)
            return g

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            c = CounterMetricFamily(f"lanesync_agent_{name}", doc, labels=labels)
            c.add_metric(lane, value)
            return c

        info = GaugeMetricFamily(
            "lanesync_agent_info", "Lane identity", labels=[*labels, "epoch", "version"]
        )
        info.add_metric([*lane, str(j.epoch), VERSION], 1)
        yield info
        yield gauge("last_seq", "Highest journaled seq", j.last_seq)
        yield gauge("acked_seq", "Head office's acknowledged high-water mark", j.acked_seq)
        yield gauge("backlog_entries", "Journal entries not yet acked by head office", j.backlog)
        f = self.facts
        if f is not None:
            yield gauge("backlog_bytes", "Document bytes not yet acked", f.backlog_bytes)
            yield gauge("journal_size_bytes", "Journal files on disk", f.size_bytes)
            if f.free_disk_bytes is not None:
                yield gauge(
                    "disk_free_bytes", "Free bytes on the journal's disk", f.free_disk_bytes
                )
        oldest = 0.0
        if f is not None and f.oldest_unacked_ts is not None and j.backlog:
            oldest = max(0.0, now - f.oldest_unacked_ts / 1000)
        yield gauge("ack_lag_seconds", "Age of the oldest entry head office has not acked", oldest)
        yield gauge("broker_connected", "1 while connected to the broker", int(st.connected))
        yield counter("connects", "Broker sessions opened", st.connects)
        yield counter("reconnects", "Broker sessions reopened after a loss", st.reconnects)
        yield counter("batches_sent", "Journal batches published", st.batches_sent)
        yield counter("entries_sent", "Entries published (resends included)", st.entries_sent)
        yield counter("rewinds", "Resends from head office's mark", st.rewinds)
        yield counter(
            "session_renewals",
            "Broker sessions ended because no ack came while head office said it was online",
            st.session_renewals,
        )
        yield counter("journal_commits", "Journal append transactions", j.commits)
        yield counter(
            "quarantined",
            "Documents refused at journaling with a reason (never journaled)",
            self.counters.quarantined,
        )
        yield counter(
            "scan_errors", "Scanner reads that could not be used", self.counters.scan_errors
        )
        if self.counters.clock_skew_s is not None:
            yield gauge(
                "clock_skew_seconds",
                "Head office clock minus lane clock",
                self.counters.clock_skew_s,
            )
        r = self.retention
        if r is not None:
            s = r.state
            yield gauge("journal_used_bytes", "Live journal pages", s.used_bytes)
            yield gauge(
                "disk_budget_usage_ratio", "Share of the disk budget in use", r.budget.usage()
            )
            yield gauge("journal_full", "1 while new documents are refused", int(s.level == "full"))
            yield gauge("disk_budget_high", "1 above the high watermark", int(s.level != "ok"))
            yield counter("documents_refused_full", "Documents refused: journal full", s.refused)
            yield counter("entries_pruned", "Acked entries pruned by retention", s.pruned)


class _Histogram:
    """What prometheus_client's Histogram keeps (cumulative buckets, count, sum, created) and
    exposes the same way, without importing it until a scrape."""

    def __init__(self, name: str, doc: str, buckets: tuple[float, ...]) -> None:
        self.name, self.doc = name, doc
        self.bounds = (*(float(b) for b in buckets), float("inf"))
        self.counts = [0] * len(self.bounds)  # per bucket, not cumulative
        self.sum = 0.0
        self.created = time.time()

    def observe(self, value: float) -> None:
        self.sum += value
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[i] += 1
                break

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import (  # noqa: PLC0415 - scraped only
            GaugeMetricFamily,
            HistogramMetricFamily,
        )
        from prometheus_client.utils import floatToGoString  # noqa: PLC0415

        cumulative, buckets = 0, []
        for bound, n in zip(self.bounds, self.counts, strict=True):
            cumulative += n
            buckets.append((floatToGoString(bound), float(cumulative)))  # type: ignore[no-untyped-call]
        yield HistogramMetricFamily(self.name, self.doc, buckets=buckets, sum_value=self.sum)
        # prometheus_client's Histogram adds its creation time as a gauge of its own
        yield GaugeMetricFamily(f"{self.name}_created", self.doc, value=self.created)


class BatchSizes:
    """Histograms of the journal batches the replicator publishes (entries and bytes).

    Built by the daemon before the replicator, which is handed `observe` at construction;
    AgentMetrics registers the histograms, so neither sets anything on the other."""

    def __init__(self) -> None:
        self.entries = _Histogram(
            "lanesync_agent_batch_entries",
            "Entries per published journal batch",
            (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000),
        )
        self.bytes = _Histogram(
            "lanesync_agent_batch_bytes",
            "Encoded bytes per published journal batch",
            (512, 2048, 8192, 32768, 131072, 524288, 1048576),
        )

    def observe(self, entries: int, size: int) -> None:
        self.entries.observe(entries)
        self.bytes.observe(size)


class AgentMetrics:
    """Registry plus batch-size histograms; `render()` is what /metrics returns."""

    def __init__(
        self,
        journal: Journal,
        replicator: Replicator,
        retention: Retention | None = None,
        counters: AgentCounters | None = None,
        batch_sizes: BatchSizes | None = None,
    ) -> None:
        self.counters = counters or AgentCounters()
        self.collector = AgentCollector(journal, replicator, retention, self.counters)
        self.batch_sizes = batch_sizes or BatchSizes()
        self._registry: CollectorRegistry | None = None

    @property
    def registry(self) -> CollectorRegistry:
        """The lane's own registry (not the process-global one), made at the first scrape."""
        if self._registry is None:
            from prometheus_client import CollectorRegistry  # noqa: PLC0415 - module docstring

            registry = CollectorRegistry(auto_describe=False)
            registry.register(self.collector)  # it has collect()
            registry.register(self.batch_sizes.entries)
            registry.register(self.batch_sizes.bytes)
            self._registry = registry
        return self._registry

    async def render(self) -> bytes:
        from prometheus_client import generate_latest  # noqa: PLC0415 - module docstring

        await self.collector.refresh()
        return generate_latest(self.registry)


class MetricsServer:
    """/metrics on HOST:PORT (`[metrics] listen`; port 0: a free one, read back from `.port`),
    served by agent.httpserver like the local API."""

    def __init__(self, metrics: AgentMetrics, listen: str) -> None:
        self.metrics = metrics
        host, _, port = listen.rpartition(":")
        self.host, self.port = host.strip("[]"), int(port)
        self.router = Router()
        self.router.add("GET", "/metrics", self._handle)
        self._server = Server(self, Limits())

    async def _handle(self, _: Request) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST  # noqa: PLC0415 - module docstring

        return Response(200, await self.metrics.render(), CONTENT_TYPE_LATEST)

    # agent.httpserver.Application
    def check_head(self, request: Request) -> Response | None:
        return None

    def refused(self, status: int, detail: str) -> Response:
        return Response(status, detail.encode(), "text/plain; charset=utf-8")

    async def handle(self, request: Request) -> Response:
        try:
            return await self.router.resolve(request)(request)
        except HttpError as exc:
            text = exc.detail.encode()
            return Response(exc.status, text, "text/plain; charset=utf-8", exc.headers)

    async def __aenter__(self) -> Self:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            raise OSError(f"cannot listen on {self.host}:{self.port}: {exc}") from exc
        self.port = int(sock.getsockname()[1])  # port 0 (tests): the one the kernel picked
        await self._server.listen(sock)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with contextlib.suppress(Exception):
            await self._server.close()
