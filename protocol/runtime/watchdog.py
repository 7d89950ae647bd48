"""systemd watchdog pings that mean "this daemon is doing its work", not "the event loop runs".

`run_watchdog` sends WATCHDOG=1 at half of $WATCHDOG_USEC, but only after `probe` answered in
time: the agent's probe goes through the journal writer, head office's through the ingest writer
thread. A stuck writer therefore stops the pings and systemd restarts the service, which is the
point of a watchdog. Each ping also carries a fresh STATUS= line for `systemctl status`.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable

from protocol.runtime.notify import notify

log = logging.getLogger(__name__)


def watchdog_interval() -> float | None:
    """Seconds between pings (half of $WATCHDOG_USEC), or None when no watchdog is asked for."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) <= 0:
        return None
    if pid.isdigit() and int(pid) != os.getpid():
        return None  # meant for another process (e.g. a wrapper that exec'd us is gone)
    return int(usec) / 2_000_000


async def run_watchdog(
    probe: Callable[[], Awaitable[None]],
    status: Callable[[], str],
    interval: float | None = None,
) -> None:
    """Ping systemd while `probe` keeps answering; returns at once without a watchdog."""
    interval = interval if interval is not None else watchdog_interval()
    if interval is None:
        return
    while True:
        try:
            async with asyncio.timeout(interval):
                await probe()
        except TimeoutError:
            log.error("watchdog: the daemon did not answer within %.1fs; not pinging", interval)
        except Exception as exc:  # noqa: BLE001 - any failure means "not healthy": skip the ping
            log.error("watchdog: health probe failed (%s); not pinging", exc)
        else:
            notify("WATCHDOG=1", f"STATUS={status()}")
        await asyncio.sleep(interval)
