"""EvdevReader lifecycle without /dev/input: a pipe-backed source replays recorded events.

The source behaves like `evdev.InputDevice` where it matters: a readable fd, `read()` raising
BlockingIOError when empty and OSError(ENODEV) after the device is unplugged.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import time
from collections.abc import Iterable

from evdev import InputEvent

from hardware.backoff import Backoff
from hardware.config import ScannerConfig
from hardware.evdev_reader import EvdevReader, EventSource
from hardware.events import DeviceEvent, HardwareEvent, ScanEvent
from hardware.manager import ScannerManager
from hardware.queue import ScanQueue
from tests.hardware.hwfixtures import load_events

FAST = Backoff(initial=0.01, maximum=0.05, jitter=0.005)


def recent(name: str) -> list[InputEvent]:
    """A recorded stream moved to "now", as a live device would stamp it (CLOCK_REALTIME)."""
    events = load_events(name)
    shift = time.time() - (events[0].sec + events[0].usec / 1e6)
    out = []
    for ev in events:
        t = ev.sec + ev.usec / 1e6 + shift
        out.append(InputEvent(int(t), int((t % 1) * 1e6), ev.type, ev.code, ev.value))
    return out


class PipeDevice:
    def __init__(self) -> None:
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        self._pending: list[InputEvent] = []
        self.unplugged = False
        self.closed = False

    def push(self, events: Iterable[InputEvent]) -> None:
        self._pending.extend(events)
        os.write(self._w, b"x")

    def unplug(self) -> None:
        self.unplugged = True
        os.write(self._w, b"x")

    def fileno(self) -> int:
        return self._r

    def read(self) -> list[InputEvent]:
        if self.unplugged:
            raise OSError(errno.ENODEV, "No such device")
        with contextlib.suppress(BlockingIOError):
            os.read(self._r, 4096)
        if not self._pending:
            raise BlockingIOError(errno.EAGAIN, "no events")
        out, self._pending = self._pending, []
        return out

    def close(self) -> None:
        self.closed = True
        os.close(self._r)
        os.close(self._w)


class Bench:
    """Plays the role of udev: which path exists now and which device it opens."""

    def __init__(self) -> None:
        self.present: PipeDevice | None = None
        self.busy = False
        self.opened: list[PipeDevice] = []

    def resolve(self, config: ScannerConfig) -> str | None:
        return "/dev/input/by-id/usb-test-event-kbd" if self.present else None

    def open(self, path: str) -> EventSource:
        if self.busy:
            raise OSError(errno.EBUSY, "Device or resource busy")
        assert self.present is not None
        self.opened.append(self.present)
        return self.present


async def until(queue: ScanQueue, pred: type[ScanEvent] | str) -> HardwareEvent:
    async with asyncio.timeout(3):
        while True:
            event = await queue.get()
            if isinstance(pred, str) and isinstance(event, DeviceEvent) and event.state == pred:
                return event
            if not isinstance(pred, str) and isinstance(event, pred):
                return event


async def test_late_device_unplug_and_replug() -> None:
    bench = Bench()
    queue = ScanQueue(64)
    cfg = ScannerConfig(name="wedge", type="evdev", vendor=0x05E0, product=0x1200)
    reader = EvdevReader(cfg, queue, backoff=FAST, opener=bench.open, resolver=bench.resolve)
    async with reader:
        missing = await until(queue, "missing")
        assert isinstance(missing, DeviceEvent)
        assert "05e0:1200" in missing.detail
        bench.busy = True
        bench.present = PipeDevice()
        busy = await until(queue, "error")
        assert isinstance(busy, DeviceEvent)
        assert "grabbed by another process" in busy.detail
        bench.busy = False
        await until(queue, "connected")

        first = bench.present
        first.push(recent("gs_variants.json"))
        scan = await until(queue, ScanEvent)
        assert isinstance(scan, ScanEvent)
        assert scan.kind == "gs1"
        assert scan.elements == (("01", "04006381333931"), ("10", "AB"), ("21", "X"))

        # Half a scan, then ENODEV: the partial is reported, the device closed and reopened.
        first.push(recent("timeout.json")[:12])
        await asyncio.sleep(0.02)
        first.unplug()
        bad = await until(queue, ScanEvent)
        assert isinstance(bad, ScanEvent)
        assert bad.kind == "invalid"
        assert "disconnected" in (bad.error or "")
        assert bad.raw == "40"
        gone = await until(queue, "disconnected")
        assert isinstance(gone, DeviceEvent)
        assert "No such device" in gone.detail
        assert first.closed
        bench.present = None
        await until(queue, "missing")

        bench.present = PipeDevice()
        await until(queue, "connected")
        bench.present.push(recent("us_shifted.json"))
        scan = await until(queue, ScanEvent)
        assert isinstance(scan, ScanEvent)
        assert scan.label == "ABCD-111270.Xy3z!"
        assert reader.status.reconnects == 1
        assert reader.status.errors >= 1
        assert reader.status.invalid == 1
    assert bench.present.closed


async def test_inter_key_timeout_fires_without_further_events() -> None:
    bench = Bench()
    bench.present = PipeDevice()
    queue = ScanQueue(16)
    cfg = ScannerConfig(name="w", type="evdev", path="/x", inter_key_timeout_ms=30)
    # Recorded timestamps are in 2023; the reader's clock says "just after the last key".
    events = load_events("timeout.json")[:12]
    now = [events[-1].sec + events[-1].usec / 1e6]
    reader = EvdevReader(
        cfg, queue, backoff=FAST, opener=bench.open, resolver=bench.resolve, clock=lambda: now[0]
    )
    async with reader:
        await until(queue, "connected")
        bench.present.push(events)
        await asyncio.sleep(0.05)
        now[0] += 0.05
        bench.present.push([])  # wake the loop so it recomputes the deadline with the new clock
        bad = await until(queue, ScanEvent)
        assert isinstance(bad, ScanEvent)
        assert bad.kind == "invalid"
        assert "inter-key timeout" in (bad.error or "")
        assert bad.raw == "40"  # 12 recorded events = two key taps


async def test_manager_runs_named_tasks_and_cancels_them() -> None:
    bench = Bench()
    queue = ScanQueue(16)
    cfgs = [ScannerConfig(name=n, type="evdev", path="/x") for n in ("a", "b")]
    readers = [
        EvdevReader(c, queue, backoff=FAST, opener=bench.open, resolver=bench.resolve) for c in cfgs
    ]
    before = asyncio.all_tasks()
    async with ScannerManager(cfgs, queue, readers=readers) as manager:
        names = {t.get_name() for t in asyncio.all_tasks() - before}
        assert names == {"scanner:evdev:a", "scanner:evdev:b"}
        await until(queue, "missing")
        assert {s.name for s in manager.statuses()} == {"a", "b"}
    assert asyncio.all_tasks() - before == set()
