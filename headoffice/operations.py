"""Head office's operations side, in one context manager the daemon enters after Ingest.

Status page (and /metrics on it), an optional separate metrics listener, and systemd
WATCHDOG=1/STATUS= pings sent only while the ingest writer thread answers, all held by one
protocol.runtime.services.Services (its loops run through protocol.runtime.tasks.Tasks).
Also the request handlers head office answers for lanes (`time`, for clock checks by the
agent and doctor).
"""

from __future__ import annotations

import os
import time
from types import TracebackType
from typing import Any, Self

from aiohttp import web

from headoffice.catalog import server as catalog_server
from headoffice.catalog.publisher import PublisherStats
from headoffice.config import HeadOfficeConfig
from headoffice.db import Database, target
from headoffice.health import HEALTH_PATH, lanes_seen
from headoffice.ingest import Ingest, RequestHandler
from headoffice.metrics import HoMetrics
from headoffice.sscc import server as sscc_server
from headoffice.statuspage import status_app
from headoffice.transit import server as transit_server
from protocol.messages import Reply, Request
from protocol.requests import OP_TIME
from protocol.runtime import clock
from protocol.runtime.httpserver import HttpServer
from protocol.runtime.logsetup import add_secret
from protocol.runtime.services import Services
from protocol.runtime.version import VERSION
from protocol.runtime.watchdog import run_watchdog


def time_handler(store: Database, req: Request, now_ms: int) -> Reply:
    """Head office's clock, read when answering (the lane halves the round trip)."""
    return Reply(req.lane, req.corr, True, {"now_ms": clock.now_ms()})


def request_handlers() -> dict[str, RequestHandler]:
    return {
        OP_TIME: time_handler,
        **transit_server.request_handlers(),
        **catalog_server.request_handlers(),  # catalog_delta, catalog_snapshot
        **sscc_server.request_handlers(),  # sscc_lease
    }


class Operations:
    def __init__(
        self,
        config: HeadOfficeConfig,
        ingest: Ingest,
        *,
        watchdog_interval: float | None = None,
        publisher: PublisherStats | None = None,
    ) -> None:
        self.config = config
        self.ingest = ingest
        self.publisher = publisher  # the catalog head publisher's figures, for the page
        self.watchdog_interval = watchdog_interval
        ops = config.ops
        self.metrics = HoMetrics(ingest.stats, target(config), ops.status_page.offline_after_s)
        self.page: HttpServer | None = None
        self.metrics_http: HttpServer | None = None
        self.services = Services("operations")
        self._started_at = time.time()
        add_secret(config.broker.password)

    async def __aenter__(self) -> Self:
        ops = self.config.ops
        await self.services.__aenter__()
        try:
            if ops.status_page.listen:
                app = status_app(
                    target(self.config),
                    refresh_s=ops.status_page.refresh_s,
                    offline_after_s=ops.status_page.offline_after_s,
                    metrics=self.metrics.handle,
                    stats=self.ingest.stats,
                    catalog=self.config.catalog,
                    publisher=self.publisher,
                )
                app.router.add_get(HEALTH_PATH, self._health)  # `lanesync headoffice status`
                self.page = await self.services.serve(app, ops.status_page.listen)
            if ops.metrics.listen:
                app = web.Application()
                app.router.add_get("/metrics", self.metrics.handle)
                self.metrics_http = await self.services.serve(app, ops.metrics.listen)
        except BaseException:
            await self.services.stop()
            raise
        self.services.start(
            run_watchdog(self.ingest.ping, self.status_line, self.watchdog_interval), "watchdog"
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.services.stop()

    def health(self) -> dict[str, Any]:
        """This process's own view, for `lanesync headoffice status` (headoffice.health): is
        it subscribed, is its writer moving, what does it hold in memory."""
        st = self.ingest.stats
        return {
            "pid": os.getpid(),
            "at": time.time(),
            "started_at": self._started_at,
            "client_id": self.config.broker.client_id,
            "broker": {
                "host": self.config.broker.host,
                "port": self.config.broker.port,
                "connected": st.connected,
                "connects": st.connects,
            },
            "messages": st.messages,
            "entries_applied": st.entries_applied,
            "entries_held": st.entries_held,
            "quarantined": st.quarantined,
            "commit_failures": st.commit_failures,
            "last_commit_at": st.last_commit_at,
            "inbox_queued": st.inbox.queued,
            "messages_shed": st.inbox.shed,
            "version": VERSION,
            "lanes": lanes_seen(st.hellos),
        }

    async def _health(self, _: web.Request) -> web.Response:
        return web.json_response(self.health())

    def status_line(self) -> str:
        st = self.ingest.stats
        link = "subscribed" if st.connected else "broker DISCONNECTED"
        return (
            f"{link}, {st.entries_applied} entries applied, {st.entries_held} held, "
            f"{len(st.lane_hwm)} lane epochs, {st.quarantined} quarantined, "
            f"{st.inbox.shed} shed"
        )
