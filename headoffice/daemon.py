"""Runs head office: ingest (and what is built on it) and the catalog's head publisher until
SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal

from headoffice.catalog.publisher import HeadPublisher
from headoffice.config import HeadOfficeConfig
from headoffice.db import describe, target
from headoffice.ingest import Ingest
from headoffice.operations import Operations, request_handlers
from protocol.runtime.notify import notify_soon
from protocol.runtime.tasks import cancel_and_wait

log = logging.getLogger(__name__)


async def run(config: HeadOfficeConfig, stop: asyncio.Event | None = None) -> None:
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    heads: asyncio.Task[None] | None = None
    publisher = HeadPublisher(config) if config.catalog.publish else None
    try:
        async with (
            Ingest(config, handlers=request_handlers()) as ingest,
            # status page, metrics, watchdog
            Operations(config, ingest, publisher=publisher.stats if publisher else None),
        ):
            log.info("head office: ingesting into %s", describe(target(config)))
            if publisher is not None:  # after Ingest: the database is migrated by then
                heads = asyncio.create_task(publisher.run(), name="catalog-heads")
            # READY once the database is open: a broker outage is reported, not a failed start.
            await notify_soon("READY=1", "STATUS=waiting for the broker")
            async with asyncio.TaskGroup() as tg:
                subscribed = tg.create_task(ingest.ready.wait(), name="await-subscribed")
                stopped = tg.create_task(stop.wait(), name="await-stop")
                await asyncio.wait({subscribed, stopped}, return_when=asyncio.FIRST_COMPLETED)
                if subscribed.done():
                    await notify_soon("STATUS=subscribed, ingesting")
                else:
                    subscribed.cancel()
            await notify_soon("STOPPING=1")
            if heads is not None:
                await cancel_and_wait(heads)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
