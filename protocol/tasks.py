"""Task helpers both daemons need around aiomqtt."""

from __future__ import annotations

import asyncio


async def cancel_and_wait(task: asyncio.Task[None]) -> None:
    """Cancel `task` until it ends.

    On Python 3.11 asyncio.wait_for (which aiomqtt uses for every MQTT call) can swallow a
    cancellation that lands as the awaited operation completes (CPython gh-86296, fixed in
    3.12); one cancel() is then lost and a TaskGroup exit would wait forever.
    """
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=1.0)
