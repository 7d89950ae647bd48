"""What makes the agent a good citizen of a Linux box, wired in one context manager.

Retention and the disk budget, Prometheus metrics, the live status file `lanesync status`
reads, systemd WATCHDOG=1/STATUS= pings (only while the journal writer answers), and a clock
check against head office. The daemon enters `Operations` after the journal and replicator.
"""

from __future__ import annotations

import asyncio
import logging
import time
from types import TracebackType
from typing import Any, Self

from agent.config import AgentConfig
from agent.journal import Journal
from agent.metrics import AgentCounters, AgentMetrics, BatchSizes, MetricsServer
from agent.replicator import Replicator, ReplicatorStats, RequestTimeout
from agent.retention import Retention
from agent.status import LiveStatus, live_path
from protocol import requests
from protocol.runtime.clock import clock_skew_s
from protocol.runtime.logsetup import add_secret
from protocol.runtime.services import Services
from protocol.runtime.watchdog import run_watchdog

log = logging.getLogger(__name__)

CLOCK_CHECK_INTERVAL_S = 600.0
CLOCK_SKEW_WARN_S = 5.0
LINK_WATCH_INTERVAL_S = 0.5


class LinkWatch:
    """Whether head office answers this broker session, read from the replicator's public
    stats (it keeps no "hello acked at" of its own): a session began when `connects` moved,
    and head office answered it once `last_ack_at` moved after that (its hello's ack first).
    Looked at every LINK_WATCH_INTERVAL_S, so a session is dated to within that."""

    def __init__(self) -> None:
        self.connects = 0
        self.connected_at: float | None = None  # wall clock, when this watch saw the session
        self.answered = False
        self._session_mark: float | None = None  # last_ack_at before this session
        self._last_seen_ack: float | None = None

    def observe(self, st: ReplicatorStats, now: float) -> bool:
        """Take a look; True when what `lanesync status` would say changed."""
        before = (self.connected_at, self.answered)
        if st.connects != self.connects:  # a new session since the last look
            self.connects = st.connects
            self._session_mark = self._last_seen_ack
            self.connected_at, self.answered = now, False
        if not st.connected:
            self.connected_at, self.answered = None, False
        elif not self.answered:
            if self.connected_at is None:
                self.connected_at = now
            self.answered = st.last_ack_at is not None and st.last_ack_at != self._session_mark
        self._last_seen_ack = st.last_ack_at
        return before != (self.connected_at, self.answered)


class Operations:
    def __init__(
        self,
        config: AgentConfig,
        journal: Journal,
        replicator: Replicator,
        counters: AgentCounters | None = None,
        *,
        batch_sizes: BatchSizes | None = None,
        watchdog_interval: float | None = None,
    ) -> None:
        self.config = config
        self.journal = journal
        self.replicator = replicator
        self.counters = counters or AgentCounters()
        self.watchdog_interval = watchdog_interval
        for secret in (config.broker.password, config.api.token):
            add_secret(secret)
        self.retention = Retention(journal, config.ops.retention)
        self.metrics = AgentMetrics(journal, replicator, self.retention, self.counters, batch_sizes)
        self.http: MetricsServer | None = None
        self._services = Services(f"operations {config.lane}")
        self._live: LiveStatus | None = None
        self.link = LinkWatch()

    async def __aenter__(self) -> Self:
        services = self._services
        await services.__aenter__()
        try:
            await services.enter(self.retention)
            if self.config.ops.metrics.listen:
                listen = self.config.ops.metrics.listen
                self.http = await services.enter(MetricsServer(self.metrics, listen))
            live = LiveStatus(live_path(self.config.journal_path), self.snapshot)
            self._live = await services.enter(live)
        except BaseException:
            await services.stop()
            raise
        services.start(
            run_watchdog(self.probe, self.status_line, self.watchdog_interval), "watchdog"
        )
        services.start(self._clock_loop(), "clock-check")
        services.start(self._link_loop(), "link-watch")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._services.stop()

    async def probe(self) -> None:
        """Alive means: the journal's writer task takes a request and SQLite answers it."""
        await self.journal.ping()

    def status_line(self) -> str:
        st, j = self.replicator.stats, self.journal
        link = "broker DISCONNECTED"
        if st.connected:
            link = "broker connected" + ("" if self.link.answered else ", head office silent")
        budget = self.retention.state.level
        return f"lane {self.config.lane} seq {j.last_seq}, backlog {j.backlog}, {link}" + (
            "" if budget == "ok" else f", disk budget {budget}"
        )

    def snapshot(self) -> dict[str, Any]:
        st, b, r = self.replicator.stats, self.config.broker, self.retention.state
        return {
            "broker": {
                "host": b.host,
                "port": b.port,
                "connected": st.connected,
                "connects": st.connects,
                "reconnects": st.reconnects,
                # sessions ended because head office said it was online but no ack came
                "session_renewals": st.session_renewals,
                "last_error": st.last_error,
                "last_ack_at": st.last_ack_at,
                "ho_hwm": st.ho_hwm,
                # When this session began, and whether head office acked anything (its hello
                # first) since: connected but unanswered is a problem in `lanesync status`.
                "connected_at": self.link.connected_at,
                "head_office_answered": self.link.answered,
            },
            # What head office announced on {prefix}/headoffice: `lanesync doctor` and
            # `lanesync status` show its release beside this box's (issue 18.3).
            "head_office": {
                "version": st.ho_version,
                "protocols": list(st.ho_protocols),
                "online": st.ho_online,
                "protocol": st.protocol,
            },
            "journal": {
                "epoch": self.journal.epoch,
                "last_seq": self.journal.last_seq,
                "acked_seq": self.journal.acked_seq,
                "saved_acked_seq": self.journal.saved_acked_seq,  # behind: an ack held in memory
            },
            "disk": {
                "level": r.level,
                "used_bytes": r.used_bytes,
                "free_disk_bytes": r.free_disk_bytes,
                "usage": round(self.retention.budget.usage(), 4),
                "refused": r.refused,
                "last_refusal": r.last_refusal,
                "pruned": r.pruned,
                "reason": self.retention.budget.disk_full() if r.level == "full" else None,
                "reserve_in_place": self.retention.budget.reserve.in_place,
            },
            "counters": {
                "quarantined": self.counters.quarantined,
                "scan_errors": self.counters.scan_errors,
                "clock_skew_s": self.counters.clock_skew_s,
                "last_refusal": self.counters.last_refusal,
            },
        }

    async def _link_loop(self) -> None:
        while True:
            if self.link.observe(self.replicator.stats, time.time()) and self._live is not None:
                self._live.write_logged()  # the change shows at once, not at the next tick
            await asyncio.sleep(LINK_WATCH_INTERVAL_S)

    async def check_clock(self, timeout: float = 5.0) -> float | None:
        """Ask head office for its time; returns and records the skew, None if no answer."""
        sent = time.time()
        try:
            reply = await self.replicator.request(requests.OP_TIME, {}, timeout)
        except RequestTimeout:
            return None
        if not reply.ok or "now_ms" not in reply.result:
            return None
        skew = clock_skew_s(reply.result["now_ms"], sent, time.time())
        self.counters.clock_skew_s = round(skew, 3)
        if abs(skew) > CLOCK_SKEW_WARN_S:
            log.warning(
                "lane %s: clock is %.1fs %s head office; fix NTP on this box (timedatectl)",
                self.config.lane,
                abs(skew),
                "behind" if skew > 0 else "ahead of",
            )
        return skew

    async def _clock_loop(self) -> None:
        while True:
            await asyncio.sleep(30 if self.counters.clock_skew_s is None else 0)
            if self.replicator.stats.connected:
                await self.check_clock()
                if self.counters.clock_skew_s is not None:
                    await asyncio.sleep(CLOCK_CHECK_INTERVAL_S)
