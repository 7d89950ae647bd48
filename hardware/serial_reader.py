"""Serial scanners through pyserial: exclusive open by stable name, own framing, reopen.

The port is opened by its /dev/serial/by-id name every time, so after an unplug the reader
finds the scanner again wherever the kernel renumbers it. pyserial is only used to open and
configure the port; reads are driven by the event loop (add_reader), so nothing blocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
from datetime import UTC, datetime

import serial

from hardware.backoff import Backoff
from hardware.config import ScannerConfig
from hardware.framing import Frame, Framer
from hardware.queue import ScanQueue
from hardware.reader import ReaderBase

__all__ = ["SerialReader"]

READ_CHUNK = 4096


class SerialReader(ReaderBase):
    """Reads frames from one serial scanner until cancelled, surviving unplug and replug."""

    kind = "serial"

    def __init__(
        self,
        config: ScannerConfig,
        queue: ScanQueue,
        *,
        backoff: Backoff | None = None,
        idle_flush: float = 1.0,
    ) -> None:
        super().__init__(config, queue, backoff=backoff)
        if config.path is None:
            raise ValueError(f"scanner {config.name!r}: serial scanners need a path")
        self.path = config.path
        self.idle_flush = idle_flush
        self.framer = Framer(config.framing_spec())

    def _open(self) -> serial.Serial:
        # exclusive=True takes a flock: a second agent or a technician's minicom fails loudly.
        return serial.Serial(self.path, baudrate=self.config.baudrate, timeout=0, exclusive=True)

    async def run(self) -> None:
        attempt = 0
        while True:
            try:
                port = self._open()
            except (OSError, ValueError) as exc:  # SerialException is an OSError
                attempt += 1
                self.status.open_failures += 1
                # pyserial wraps the OSError but keeps its errno: ENOENT means "unplugged".
                if getattr(exc, "errno", None) == errno.ENOENT:
                    self.emit_state("missing", f"{self.path} not present: {exc}")
                else:
                    self.emit_state("error", f"cannot open {self.path}: {exc}")
                await asyncio.sleep(self.backoff.delay(attempt))
                continue
            attempt = 0
            self.emit_state("connected", f"opened {self.path}", path=self.path)
            try:
                reason = await self._pump(port)
            finally:
                with contextlib.suppress(OSError):
                    port.close()
            self._report(self.framer.flush(f"{self.path} disconnected"))
            self.status.reconnects += 1
            self.emit_state("disconnected", f"{self.path}: {reason}; reopening")
            # Hold off before the first reopen too, so a flapping port cannot spin the loop.
            attempt = 1
            await asyncio.sleep(self.backoff.delay(attempt))

    async def _pump(self, port: serial.Serial) -> str:
        """Read until the port fails; return why it failed."""
        loop = asyncio.get_running_loop()
        readable = asyncio.Event()
        fd = port.fileno()
        loop.add_reader(fd, readable.set)
        try:
            while True:
                try:
                    async with asyncio.timeout(self.idle_flush):
                        await readable.wait()
                except TimeoutError:
                    self._report(self.framer.flush(f"line idle for {self.idle_flush:g} s"))
                    continue
                readable.clear()
                try:
                    data = port.read(READ_CHUNK)
                except (OSError, serial.SerialException) as exc:
                    return f"read failed: {exc}"
                if data:
                    self._report(self.framer.feed(data))
        finally:
            loop.remove_reader(fd)

    def _report(self, frames: list[Frame]) -> None:
        now = datetime.now(UTC)
        for frame in frames:
            if frame.error is not None:
                self.emit_bad_read(frame.error, frame.payload.decode("latin-1"), now)
                continue
            try:
                text = frame.payload.decode("utf-8")
            except UnicodeDecodeError as exc:
                bad = frame.payload[exc.start]
                reason = f"byte {exc.start} (0x{bad:02x}) of the frame is not valid UTF-8"
                self.emit_bad_read(reason, frame.payload.decode("latin-1"), now)
                continue
            self.emit_scan(text, now)
