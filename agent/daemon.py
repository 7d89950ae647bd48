"""Runs one lane: journal, replicator and local API, until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal

from agent.api import LocalApi
from agent.config import AgentConfig
from agent.journal import Journal
from agent.replicator import Replicator
from protocol.notify import notify

log = logging.getLogger(__name__)


async def run(config: AgentConfig, stop: asyncio.Event | None = None) -> None:
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with (
            Journal(config.journal_path, config.lane) as journal,
            Replicator(journal, config) as replicator,
            LocalApi(config.api, journal, replicator),
        ):
            log.info(
                "lane %s: journal %s epoch %d at seq %d (%d unacked)",
                config.lane,
                config.journal_path,
                journal.epoch,
                journal.last_seq,
                journal.backlog,
            )
            notify("READY=1", f"STATUS=lane {config.lane} at seq {journal.last_seq}")
            await stop.wait()
            notify("STOPPING=1")
            await replicator.close_gracefully()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
