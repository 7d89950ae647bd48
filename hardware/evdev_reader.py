"""Keyboard-wedge scanners through evdev: exclusive grab, pure decoding, reopen after unplug.

The device is grabbed (EVIOCGRAB) so scans never leak into a desktop or the POS window as
keystrokes. An unplug shows up as ENODEV on read; the reader reports it, closes, and resolves
and reopens the device with backoff, which is also how it notices scanners plugged in later.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Protocol

import evdev

from hardware.backoff import Backoff
from hardware.config import ScannerConfig
from hardware.discovery import resolve_evdev
from hardware.queue import ScanQueue
from hardware.reader import ReaderBase
from hardware.wedge import KeyInput, WedgeDecoder, WedgeOutput, WedgeScan

__all__ = ["EvdevReader", "EventSource", "open_grabbed"]


class EventSource(Protocol):
    """The part of `evdev.InputDevice` the reader uses (so tests can feed a pipe)."""

    def fileno(self) -> int: ...
    def read(self) -> Iterable[KeyInput]: ...
    def close(self) -> None: ...


def open_grabbed(path: str) -> EventSource:
    """Open and grab exclusively; EBUSY means another process (or agent) already holds it."""
    device = evdev.InputDevice(path)
    try:
        device.grab()
    except OSError:
        device.close()
        raise
    return device


class EvdevReader(ReaderBase):
    """Decodes one wedge scanner until cancelled, surviving unplug and replug."""

    kind = "evdev"

    def __init__(
        self,
        config: ScannerConfig,
        queue: ScanQueue,
        *,
        backoff: Backoff | None = None,
        opener: Callable[[str], EventSource] = open_grabbed,
        resolver: Callable[[ScannerConfig], str | None] = resolve_evdev,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(config, queue, backoff=backoff)
        self.decoder = WedgeDecoder(config.wedge_config())
        self._opener = opener
        self._resolver = resolver
        # evdev timestamps are CLOCK_REALTIME by default, so the timeout clock must match.
        self._clock = clock

    async def run(self) -> None:
        attempt = 0
        while True:
            path = self._resolver(self.config)
            if path is None:
                attempt += 1
                self.status.open_failures += 1
                self.emit_state("missing", f"{self.config.describe()} not present")
                await asyncio.sleep(self.backoff.delay(attempt))
                continue
            try:
                device = self._opener(path)
            except OSError as exc:
                attempt += 1
                self.status.open_failures += 1
                if exc.errno == errno.EBUSY:
                    detail = f"{path} is grabbed by another process: {exc}"
                else:
                    detail = f"cannot open {path}: {exc}"
                self.emit_state("error", detail, path=path)
                await asyncio.sleep(self.backoff.delay(attempt))
                continue
            attempt = 0
            self.emit_state("connected", f"opened and grabbed {path}", path=path)
            try:
                reason = await self._pump(device)
            finally:
                with contextlib.suppress(OSError):
                    device.close()
            self._report(self.decoder.reset(self._clock(), f"{path} disconnected"))
            self.status.reconnects += 1
            self.emit_state("disconnected", f"{path}: {reason}; reopening")
            attempt = 1
            await asyncio.sleep(self.backoff.delay(attempt))

    async def _pump(self, device: EventSource) -> str:
        loop = asyncio.get_running_loop()
        readable = asyncio.Event()
        fd = device.fileno()
        loop.add_reader(fd, readable.set)
        try:
            while True:
                deadline = self.decoder.deadline()
                timeout = None if deadline is None else max(0.0, deadline - self._clock())
                try:
                    async with asyncio.timeout(timeout):
                        await readable.wait()
                except TimeoutError:
                    self._report(self.decoder.expire(self._clock()))
                    continue
                readable.clear()
                try:
                    events = list(device.read())
                except BlockingIOError:
                    continue
                except OSError as exc:  # ENODEV on unplug
                    return f"read failed: {exc}"
                for event in events:
                    self._report(self.decoder.feed(event))
        finally:
            loop.remove_reader(fd)

    def _report(self, outputs: list[WedgeOutput]) -> None:
        for out in outputs:
            when = datetime.fromtimestamp(out.time, UTC)
            if isinstance(out, WedgeScan):
                self.emit_scan(out.text, when)
            else:
                self.emit_bad_read(out.reason, out.partial, when)
