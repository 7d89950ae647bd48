"""Run every configured scanner and funnel their events into one ScanQueue.

The agent enters a `ScannerManager` once; it owns a TaskGroup with one named task per scanner,
cancelled and awaited on exit, and exposes each scanner's status for diagnostics.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from types import TracebackType
from typing import Self

from hardware.backoff import Backoff
from hardware.config import ScannerConfig
from hardware.evdev_reader import EvdevReader
from hardware.queue import ScanQueue
from hardware.reader import ReaderBase, ScannerStatus
from hardware.serial_reader import SerialReader

__all__ = ["ScannerManager", "make_reader"]


def make_reader(
    config: ScannerConfig, queue: ScanQueue, backoff: Backoff | None = None
) -> ReaderBase:
    if config.type == "evdev":
        return EvdevReader(config, queue, backoff=backoff)
    return SerialReader(config, queue, backoff=backoff)


class ScannerManager:
    """Owns the readers of all configured scanners; events arrive on `queue`."""

    def __init__(
        self,
        configs: Sequence[ScannerConfig],
        queue: ScanQueue | None = None,
        *,
        backoff: Backoff | None = None,
        readers: Sequence[ReaderBase] | None = None,
    ) -> None:
        self.queue = queue or ScanQueue()
        self.readers: list[ReaderBase] = (
            list(readers)
            if readers is not None
            else [make_reader(c, self.queue, backoff) for c in configs]
        )
        self._tg: asyncio.TaskGroup | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def statuses(self) -> list[ScannerStatus]:
        return [reader.status for reader in self.readers]

    async def __aenter__(self) -> Self:
        self._tg = asyncio.TaskGroup()
        await self._tg.__aenter__()
        for reader in self.readers:
            name = f"scanner:{reader.kind}:{reader.config.name}"
            self._tasks.append(self._tg.create_task(reader.run(), name=name))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._tg is not None
        for task in self._tasks:
            task.cancel()
        await self._tg.__aexit__(exc_type, exc, tb)
        self._tasks.clear()
