"""Runs head office: ingest (and what is built on it) and the catalog's head publisher until
SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from headoffice.catalog.publisher import HeadPublisher
from headoffice.config import HeadOfficeConfig
from headoffice.db import describe, target
from headoffice.ingest import Ingest
from headoffice.ingest.gcpolicy import pace_for_ingest
from headoffice.operations import Operations, request_handlers
from headoffice.projections import PROJECTIONS
from protocol.runtime.notify import notify_soon
from protocol.runtime.tasks import Tasks

log = logging.getLogger(__name__)


async def run(config: HeadOfficeConfig, stop: asyncio.Event | None = None) -> None:
    stop = stop or asyncio.Event()
    pace_for_ingest()  # the collector's passes cost a third of ingest's CPU at the default pace
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
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
            # READY once the database is open: a broker outage is reported, not a failed start.
            await notify_soon("READY=1", "STATUS=waiting for the broker")
            async with Tasks("head office") as waits:
                subscribed = waits.start(ingest.ready.wait(), "await subscribed")
                stopped = waits.start(stop.wait(), "await stop")
                await asyncio.wait({subscribed, stopped}, return_when=asyncio.FIRST_COMPLETED)
                if subscribed.done():
                    await notify_soon("STATUS=subscribed, ingesting")
                    await stopped
            await notify_soon("STOPPING=1")
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
