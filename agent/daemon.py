"""Runs one lane: journal, replicator and local API, until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator

from agent.api import LocalApi
from agent.catalog.store import CatalogStore
from agent.catalog.sync import CatalogSync
from agent.config import AgentConfig
from agent.documents.sscc import SsccLeases, SsccScheme
from agent.journal import Journal
from agent.metrics import BatchSizes
from agent.operations import Operations
from agent.replicator import Replicator
from agent.retention import DiskReserve
from hardware.config import ScannerConfigError, parse_scanners
from hardware.manager import ScannerManager
from protocol.errors import ConfigError
from protocol.runtime.notify import notify_soon

log = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def _announce_versions(store: CatalogStore, replicator: Replicator) -> AsyncIterator[None]:
    """Each new catalog version goes out in the lane's status at once."""
    unsubscribe = store.on_version(lambda _held: replicator.status_soon())
    try:
        yield
    finally:
        unsubscribe()


def _sscc_leases(
    config: AgentConfig, epoch: int, replicator: Replicator
) -> contextlib.AbstractAsyncContextManager[object]:
    t = config.transit
    if t.gs1_company_prefix is None:
        return contextlib.nullcontext()
    scheme = SsccScheme(t.gs1_company_prefix, t.sscc_lane_prefix, t.sscc_extension_digit)
    return SsccLeases(config.journal_path, epoch, replicator.request, scheme)


async def run(config: AgentConfig, stop: asyncio.Event | None = None) -> None:
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # Scanners feed the local API's event stream (GET /v1/scans) when any are configured.
    try:
        scanner_configs = parse_scanners(config.scanners)
    except ScannerConfigError as exc:
        raise ConfigError(str(exc)) from None
    scanners = ScannerManager(scanner_configs) if scanner_configs else None
    # On a (nearly) full disk the journal could not even open: give the reserve back first.
    DiskReserve(config.journal_path, config.ops.retention.reserve_mb).release_if_short()
    try:
        async with (
            scanners if scanners is not None else contextlib.nullcontext(),
            Journal(config.journal_path, config.lane) as journal,
            # The catalog keeps its last complete version while head office is unreachable.
            CatalogStore(config.catalog_path, config.lane.store) as catalog_store,
            CatalogSync(catalog_store, config.catalog) as catalog,
        ):
            # Built now (the API and operations read its stats and send requests through it,
            # LinkDown until it connects) but started only after READY: READY means the lane
            # takes sales, not that it has begun to drain (issue 17.1's clock starts at READY
            # or at the link's return, and sending before it hid part of the drain).
            batch_sizes = BatchSizes()
            replicator = Replicator(journal, config, catalog, on_batch=batch_sizes.observe)
            async with (
                _announce_versions(catalog_store, replicator),
                # SSCC serials leased from head office in blocks (issue 15.5), when transits
                # are on; offline the lane uses what remains of its block.
                _sscc_leases(config, journal.epoch, replicator),
                # Disk budget, retention, metrics, live status, watchdog: before the API takes
                # sales.
                Operations(config, journal, replicator, batch_sizes=batch_sizes) as ops,
                # The journal refuses new documents past the disk budget retention keeps.
                journal.guarded_by(ops.retention),
                LocalApi(
                    config.api,
                    journal,
                    replicator,
                    agent=config,
                    scans=scanners.queue if scanners is not None else None,
                    counters=ops.counters,
                ),
            ):
                log.info(
                    "lane %s: journal %s epoch %d at seq %d (%d unacked); catalog version %d",
                    config.lane,
                    config.journal_path,
                    journal.epoch,
                    journal.last_seq,
                    journal.backlog,
                    catalog.version,
                    extra={"epoch": journal.epoch, "seq": journal.last_seq},  # never redacted
                )
                await notify_soon("READY=1", f"STATUS=lane {config.lane} at seq {journal.last_seq}")
                async with replicator:
                    await stop.wait()
                    await notify_soon("STOPPING=1")
                    await replicator.close_gracefully()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
