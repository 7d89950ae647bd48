"""Runs one lane: journal, replicator and local API, until SIGTERM or SIGINT; SIGHUP reloads
what of the config can change without a restart (protocol.runtime.reload)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

from agent import config as agent_config
from agent import journaldir
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
from protocol.errors import ConfigError
from protocol.runtime.notify import notify_soon
from protocol.runtime.reload import Reloader, set_log_level
from protocol.runtime.tasks import Tasks

if TYPE_CHECKING:
    from hardware.manager import ScannerManager

log = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def _announce_versions(store: CatalogStore, replicator: Replicator) -> AsyncIterator[None]:
    """Each new catalog version goes out in the lane's status at once."""
    unsubscribe = store.on_version(lambda _held: replicator.status_soon())
    try:
        yield
    finally:
        unsubscribe()


def _scanners(config: AgentConfig) -> ScannerManager | None:
    """The scanner manager, or None for a lane without `[[scanners]]`: hardware's readers and
    evdev are imported only for a lane that has any (issue 17.2)."""
    if not config.scanners:
        return None
    from hardware.config import ScannerConfigError, parse_scanners  # noqa: PLC0415
    from hardware.manager import ScannerManager  # noqa: PLC0415

    try:
        scanner_configs = parse_scanners(config.scanners)
    except ScannerConfigError as exc:
        raise ConfigError(str(exc)) from None
    return ScannerManager(scanner_configs) if scanner_configs else None


def _sscc_leases(
    config: AgentConfig, epoch: int, replicator: Replicator
) -> contextlib.AbstractAsyncContextManager[object]:
    t = config.transit
    if t.gs1_company_prefix is None:
        return contextlib.nullcontext()
    scheme = SsccScheme(t.gs1_company_prefix, t.sscc_lane_prefix, t.sscc_extension_digit)
    return SsccLeases(config.journal_path, epoch, replicator.request, scheme)


# Keys of agent.toml a reload applies at once, each read afresh where it is used: the
# replicator reads these three for every batch (agent.replicator._next_batch) and retention
# these for every pass. Any other key needs a restart: the replicator's window, ack and publish
# timeouts are fixed per session and its backoff for its life, and connections, paths and
# listeners are opened once.
LIVE_REPLICATION = ("batch_max_entries", "batch_max_bytes", "linger_ms")
LIVE_RETENTION = ("keep_acked_days", "prune_batch", "prune_interval_s", "prune_early_when_high")


def _live(
    replicator: Replicator, ops: Operations, start_level: int
) -> dict[str, Callable[[AgentConfig], None]]:
    def replication(new: AgentConfig) -> None:
        running = replicator.config
        rc = dataclasses.replace(
            running.replication, **{k: getattr(new.replication, k) for k in LIVE_REPLICATION}
        )
        replicator.config = dataclasses.replace(running, replication=rc)

    def retention(new: AgentConfig) -> None:
        cfg = ops.retention.cfg
        fresh = new.ops.retention
        ops.retention.cfg = dataclasses.replace(
            cfg, **{k: getattr(fresh, k) for k in LIVE_RETENTION}
        )

    live: dict[str, Callable[[AgentConfig], None]] = {
        "log.level": lambda new: set_log_level(new.log_level, start_level)
    }
    live |= {f"replication.{k}": replication for k in LIVE_REPLICATION}
    live |= {f"retention.{k}": retention for k in LIVE_RETENTION}
    return live


async def run(
    config: AgentConfig,
    stop: asyncio.Event | None = None,
    *,
    reload: Callable[[], AgentConfig] | None = None,
) -> None:
    """`reload` reads the config again on SIGHUP (default: the file `config` came from)."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    start_level = logging.getLogger().level  # --log-level; [log] level replaces it
    set_log_level(config.log_level, start_level)
    source = config.source
    if reload is None and source is not None:
        reload = lambda: agent_config.load(source)  # noqa: E731 - the same file, same way
    # A missing journal directory is created or refused here, as doctor reports it.
    journaldir.ensure(config.journal_path)
    # Scanners feed the local API's event stream (GET /v1/scans) when any are configured.
    scanners = _scanners(config)
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
                # SIGHUP's reloads run here (stopped first, before what they reconfigure)
                Tasks(f"lane {config.lane}") as reloads,
            ):
                # SIGHUP is handled before READY (and before the start line tests and people
                # wait for): one sent at once must reload, never end the process.
                if reload is not None:
                    live = _live(replicator, ops, start_level)
                    reloader = Reloader(config, reload, live, "agent")
                    loop.add_signal_handler(
                        signal.SIGHUP,
                        lambda: reloads.start(reloader.reload(), "reload config (SIGHUP)"),
                    )
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
                    loop.remove_signal_handler(signal.SIGHUP)
                    await notify_soon("STOPPING=1")
                    await replicator.close_gracefully()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
