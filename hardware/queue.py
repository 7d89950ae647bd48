"""Bounded hand-off of scan and device events from the readers to the agent.

Readers must never block on a slow consumer (the kernel would drop key events instead), so
`put` never waits: when the queue is full the event is refused, counted in `overflow`, and a
single "overflow" DeviceEvent is delivered as soon as there is room, so the loss is visible.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from hardware.events import DeviceEvent, HardwareEvent

__all__ = ["ScanQueue"]

log = logging.getLogger(__name__)


class ScanQueue:
    """A bounded FIFO of `HardwareEvent`s with an overflow counter."""

    def __init__(self, maxsize: int = 256) -> None:
        if maxsize < 2:
            raise ValueError("maxsize: must be >= 2 (one slot is kept for the overflow notice)")
        self.maxsize = maxsize
        self._queue: asyncio.Queue[HardwareEvent] = asyncio.Queue(maxsize)
        self.overflow = 0
        self._unreported = 0

    def qsize(self) -> int:
        return self._queue.qsize()

    def put(self, event: HardwareEvent) -> bool:
        """Enqueue without waiting; False (and counted) if the queue is full."""
        if self._unreported and self._queue.qsize() <= self.maxsize - 2:
            notice = DeviceEvent(
                source=event.source,
                state="overflow",
                detail=f"scan queue full: {self._unreported} event(s) dropped "
                f"({self.overflow} since start)",
                time=datetime.now(UTC),
            )
            self._queue.put_nowait(notice)
            self._unreported = 0
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self.overflow += 1
            self._unreported += 1
            log.warning("scan queue full (%d): dropped %r", self.maxsize, event)
            return False
        return True

    async def get(self) -> HardwareEvent:
        return await self._queue.get()

    def get_nowait(self) -> HardwareEvent:
        return self._queue.get_nowait()

    async def __aiter__(self) -> AsyncIterator[HardwareEvent]:
        while True:
            yield await self._queue.get()
