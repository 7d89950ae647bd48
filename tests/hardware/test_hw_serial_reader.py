"""Serial capture over a pty pair: frames, unplug (master closed) and replug by stable name."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
import serial

from hardware.backoff import Backoff
from hardware.config import ScannerConfig
from hardware.events import DeviceEvent, HardwareEvent, ScanEvent
from hardware.queue import ScanQueue
from hardware.serial_reader import SerialReader

FAST = Backoff(initial=0.01, maximum=0.05, jitter=0.005)


class Pty:
    """A pty pair standing in for a USB-serial scanner; closing the master is the unplug."""

    def __init__(self) -> None:
        self.master, slave = os.openpty()
        self.slave_path = os.ttyname(slave)
        os.close(slave)

    def write(self, data: bytes) -> None:
        os.write(self.master, data)

    def unplug(self) -> None:
        os.close(self.master)


def plug(link: Path, pty: Pty) -> None:
    """Point the stable by-id name at a (new) pty slave atomically, like udev does."""
    tmp = link.with_suffix(".tmp")
    tmp.symlink_to(pty.slave_path)
    tmp.replace(link)


async def next_event(queue: ScanQueue, timeout: float = 3.0) -> HardwareEvent:
    async with asyncio.timeout(timeout):
        return await queue.get()


async def wait_state(queue: ScanQueue, state: str) -> DeviceEvent:
    while True:
        event = await next_event(queue)
        if isinstance(event, DeviceEvent) and event.state == state:
            return event


async def next_scan(queue: ScanQueue) -> ScanEvent:
    while True:
        event = await next_event(queue)
        if isinstance(event, ScanEvent):
            return event


@pytest.fixture
def by_id(tmp_path: Path) -> Path:
    d = tmp_path / "serial" / "by-id"
    d.mkdir(parents=True)
    return d / "usb-Datalogic_Gryphon_GD4500-if00"


async def test_frames_unplug_replug(by_id: Path) -> None:
    first = Pty()
    plug(by_id, first)
    cfg = ScannerConfig(name="handheld", type="serial", path=str(by_id), framing="crlf")
    queue = ScanQueue(64)
    async with SerialReader(cfg, queue, backoff=FAST, idle_flush=5) as reader:
        await wait_state(queue, "connected")
        first.write(b"4006381333931\r")
        first.write(b"\n003401234500000000")
        first.write(b"17\r\n")
        scan = await next_scan(queue)
        assert (scan.kind, scan.gtin, scan.source) == ("gtin", "4006381333931", "handheld")
        scan = await next_scan(queue)
        assert scan.is_sscc
        assert scan.sscc == "340123450000000017"

        # Unplug in the middle of a frame: the partial frame is reported, never emitted.
        first.write(b"40063813")
        await asyncio.sleep(0.05)
        first.unplug()
        bad = await next_scan(queue)
        assert bad.kind == "invalid"
        assert bad.raw == "40063813"
        assert "disconnected" in (bad.error or "")
        gone = await wait_state(queue, "disconnected")
        assert "read failed" in gone.detail
        assert reader.status.reconnects == 1

        # Replug: a new pty behind the same stable name.
        second = Pty()
        plug(by_id, second)
        await wait_state(queue, "connected")
        second.write(b"96385074\r\n")
        scan = await next_scan(queue)
        assert scan.gtin == "96385074"
        assert reader.status.state == "connected"
        assert reader.status.scans == 3
        second.unplug()


async def test_exclusive_open_reports_busy(by_id: Path) -> None:
    pty = Pty()
    plug(by_id, pty)
    holder = serial.Serial(str(by_id), exclusive=True)
    try:
        cfg = ScannerConfig(name="s", type="serial", path=str(by_id))
        queue = ScanQueue(16)
        async with SerialReader(cfg, queue, backoff=FAST) as reader:
            event = await next_event(queue)
            assert isinstance(event, DeviceEvent)
            assert event.state == "error"
            assert str(by_id) in event.detail
            await asyncio.sleep(0.1)
            assert reader.status.open_failures >= 2
            assert reader.status.state == "error"
    finally:
        holder.close()
        pty.unplug()


async def test_missing_port_then_appears(by_id: Path) -> None:
    cfg = ScannerConfig(name="late", type="serial", path=str(by_id), framing="stx_etx")
    queue = ScanQueue(16)
    async with SerialReader(cfg, queue, backoff=FAST) as reader:
        missing = await wait_state(queue, "missing")
        assert str(by_id) in missing.detail
        pty = Pty()
        plug(by_id, pty)
        await wait_state(queue, "connected")
        pty.write(b"junk\x02]C10104006381333931\x1d10AB\x03")
        bad = await next_scan(queue)
        assert bad.kind == "invalid"
        assert "before STX" in (bad.error or "")
        good = await next_scan(queue)
        assert good.kind == "gs1"
        assert good.elements == (("01", "04006381333931"), ("10", "AB"))
        assert reader.status.open_failures >= 1
        pty.unplug()


async def test_idle_line_flushes_partial_frame(by_id: Path) -> None:
    pty = Pty()
    plug(by_id, pty)
    cfg = ScannerConfig(name="s", type="serial", path=str(by_id), framing="cr")
    queue = ScanQueue(16)
    async with SerialReader(cfg, queue, backoff=FAST, idle_flush=0.1):
        await wait_state(queue, "connected")
        pty.write(b"12345")
        bad = await next_scan(queue)
        assert bad.kind == "invalid"
        assert bad.raw == "12345"
        assert "idle" in (bad.error or "")
        pty.write(b"\xff\xfeX\r")
        bad = await next_scan(queue)
        assert "byte 0 (0xff)" in (bad.error or "")
    pty.unplug()
