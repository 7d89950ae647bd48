"""End to end through the kernel: a virtual keyboard (UInput) typed into EvdevReader."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import pytest
from evdev import UInput
from evdev import ecodes as e

from hardware.backoff import Backoff
from hardware.config import ScannerConfig
from hardware.evdev_reader import EvdevReader
from hardware.events import ScanEvent
from hardware.queue import ScanQueue

UINPUT = "/dev/uinput"


@pytest.fixture
def uinput() -> Iterator[UInput]:
    if not os.access(UINPUT, os.W_OK):
        reason = "missing" if not os.path.exists(UINPUT) else "not writable by this user"
        pytest.skip(f"{UINPUT} is {reason}: cannot create a virtual scanner")
    with UInput({e.EV_KEY: list(range(1, 120))}, name="lanesync-test-scanner") as device:
        yield device


async def test_uinput_scan_end_to_end(uinput: UInput) -> None:
    await asyncio.sleep(0.2)  # udev creates the event node
    assert uinput.device is not None
    cfg = ScannerConfig(name="virtual", type="evdev", path=str(uinput.device.path))
    queue = ScanQueue(16)
    async with EvdevReader(cfg, queue, backoff=Backoff(0.01, 0.05, 0.005)):
        for code in [
            e.KEY_4,
            e.KEY_0,
            e.KEY_0,
            e.KEY_6,
            e.KEY_3,
            e.KEY_8,
            e.KEY_1,
            e.KEY_3,
            e.KEY_3,
            e.KEY_3,
            e.KEY_9,
            e.KEY_3,
            e.KEY_1,
            e.KEY_ENTER,
        ]:
            uinput.write(e.EV_KEY, code, 1)
            uinput.syn()
            uinput.write(e.EV_KEY, code, 0)
            uinput.syn()
        async with asyncio.timeout(3):
            while not isinstance(event := await queue.get(), ScanEvent):
                pass
    assert event.kind == "gtin"
    assert event.gtin == "4006381333931"
