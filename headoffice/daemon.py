"""Runs head office: ingest (and what is built on it) and the catalog's head publisher until
SIGTERM or SIGINT; SIGHUP reloads what of the config can change without a restart."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable

from headoffice import config as ho_config
from headoffice.catalog.publisher import HeadPublisher
from headoffice.config import HeadOfficeConfig
from headoffice.db import describe, target
from headoffice.ingest import Ingest
from headoffice.operations import Operations, request_handlers
from headoffice.projections import PROJECTIONS
from protocol.runtime.notify import notify_soon
from protocol.runtime.reload import Reloader, set_log_level
from protocol.runtime.tasks import Tasks

log = logging.getLogger(__name__)


async def run(
    config: HeadOfficeConfig,
    stop: asyncio.Event | None = None,
    *,
    reload: Callable[[], HeadOfficeConfig] | None = None,
) -> None:
    """`reload` reads the config again on SIGHUP (default: the file `config` came from; a
    worker's CLI passes its own, which gives the worker its client id and ports again).

    A reload applies [log] level at once; every other key of head office is read once, when
    what uses it starts (ingest, the status page, listeners, the database), so it is logged as
    needing a restart."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    start_level = logging.getLogger().level  # --log-level; [log] level replaces it
    set_log_level(config.log_level, start_level)
    source = config.source
    if reload is None and source is not None:
        reload = lambda: ho_config.load(source)  # noqa: E731 - the same file, same way
    publisher = HeadPublisher(config) if config.catalog.publish else None
    try:
        async with contextlib.AsyncExitStack() as components:
            ingest = await components.enter_async_context(
                Ingest(config, handlers=request_handlers(), projections=PROJECTIONS)
            )
            # status page, metrics, watchdog
            await components.enter_async_context(
                Operations(config, ingest, publisher=publisher.stats if publisher else None)
            )
            log.info("head office: ingesting into %s", describe(target(config)))
            if publisher is not None:  # after Ingest: the database is migrated by then
                await components.enter_async_context(publisher)
            async with Tasks("head office") as waits:
                # SIGHUP handled before READY: one sent at once reloads, never ends the process.
                if reload is not None:
                    live: dict[str, Callable[[HeadOfficeConfig], None]] = {
                        "log.level": lambda new: set_log_level(new.log_level, start_level)
                    }
                    reloader = Reloader(config, reload, live, "head office")
                    loop.add_signal_handler(
                        signal.SIGHUP,
                        lambda: waits.start(reloader.reload(), "reload config (SIGHUP)"),
                    )
                # READY once the database is open: a broker outage is reported, not a failed
                # start.
                await notify_soon("READY=1", "STATUS=waiting for the broker")
                subscribed = waits.start(ingest.ready.wait(), "await subscribed")
                stopped = waits.start(stop.wait(), "await stop")
                await asyncio.wait({subscribed, stopped}, return_when=asyncio.FIRST_COMPLETED)
                if subscribed.done():
                    await notify_soon("STATUS=subscribed, ingesting")
                    await stopped
                loop.remove_signal_handler(signal.SIGHUP)
            await notify_soon("STOPPING=1")
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
