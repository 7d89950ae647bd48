"""Runs head office: ingest (and what is built on it) until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal

from headoffice.config import HeadOfficeConfig
from headoffice.ingest import Ingest
from protocol.notify import notify

log = logging.getLogger(__name__)


async def run(config: HeadOfficeConfig, stop: asyncio.Event | None = None) -> None:
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with Ingest(config):
            log.info("head office: ingesting into %s", config.database)
            notify("READY=1", "STATUS=ingesting")
            await stop.wait()
            notify("STOPPING=1")
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
