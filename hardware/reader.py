"""What every scanner reader shares: status counters, event emission and the task lifecycle.

A reader is a UnifiedPOS-style "claimed, enabled" device: while it runs it holds the device
exclusively and keeps reopening it after unplugs. It is an async context manager owning a
TaskGroup with one named task, cancelled and awaited on exit.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

from hardware.backoff import Backoff
from hardware.config import ScannerConfig
from hardware.events import DeviceEvent, DeviceState, ScanEvent
from hardware.queue import ScanQueue

__all__ = ["ReaderBase", "ScannerStatus"]

log = logging.getLogger(__name__)


@dataclass
class ScannerStatus:
    """Live state of one configured scanner, for `lanesync scanners` and diagnostics."""

    name: str
    type: str
    match: str
    state: str = "starting"
    path: str | None = None
    detail: str = ""
    scans: int = 0
    invalid: int = 0
    errors: int = 0
    reconnects: int = 0
    open_failures: int = 0

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


class ReaderBase:
    """Lifecycle and reporting; subclasses implement `run()` (forever, until cancelled)."""

    kind = "?"

    def __init__(
        self,
        config: ScannerConfig,
        queue: ScanQueue,
        *,
        backoff: Backoff | None = None,
    ) -> None:
        self.config = config
        self.queue = queue
        self.backoff = backoff or Backoff()
        self.status = ScannerStatus(name=config.name, type=config.type, match=config.describe())
        self._tg: asyncio.TaskGroup | None = None
        self._task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        # biip, which interprets scans, costs a lane 16 MB: loaded when a reader starts,
        # so a lane without scanners never loads it and the first scan does not wait for it.
        import hardware.interpret  # noqa: PLC0415, F401

        self._tg = asyncio.TaskGroup()
        await self._tg.__aenter__()
        self._task = self._tg.create_task(self.run(), name=f"{self.kind}:{self.config.name}")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._tg is not None
        assert self._task is not None
        self._task.cancel()
        await self._tg.__aexit__(exc_type, exc, tb)

    # -- reporting ----------------------------------------------------------------------

    def emit_scan(self, raw: str, when: datetime) -> ScanEvent:
        from hardware.interpret import interpret  # noqa: PLC0415 - loaded by __aenter__

        event = interpret(
            raw, source=self.config.name, time=when, rcn_region=self.config.rcn_region
        )
        self._count(event)
        self.queue.put(event)
        return event

    def emit_bad_read(self, reason: str, partial: str, when: datetime) -> ScanEvent:
        """A read the decoder/framer refused: an invalid ScanEvent, never silence."""
        event = ScanEvent(
            raw=partial, label=partial, kind="invalid", source=self.config.name, time=when,
            error=reason,
        )  # fmt: skip
        self._count(event)
        self.queue.put(event)
        return event

    def emit_state(self, state: DeviceState, detail: str, *, path: str | None = None) -> None:
        changed = (state, detail) != (self.status.state, self.status.detail)
        self.status.state = state
        self.status.detail = detail
        if path is not None:
            self.status.path = path
        if state == "error":
            self.status.errors += 1
        if not changed:
            return  # a device absent for hours is counted, not re-announced every retry
        log.info("scanner %s: %s (%s)", self.config.name, state, detail)
        self.queue.put(
            DeviceEvent(
                source=self.config.name,
                state=state,
                detail=detail,
                time=datetime.now(UTC),
                path=path or self.status.path,
            )
        )

    def _count(self, event: ScanEvent) -> None:
        if event.kind == "invalid":
            self.status.invalid += 1
        else:
            self.status.scans += 1
