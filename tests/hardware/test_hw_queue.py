"""ScanQueue: bounded, never blocks a reader, counts and announces overflow."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from hardware.events import DeviceEvent, ScanEvent
from hardware.queue import ScanQueue

T = datetime(2024, 1, 1, tzinfo=UTC)


def ev(label: str) -> ScanEvent:
    return ScanEvent(raw=label, label=label, kind="unknown", source="s", time=T)


async def test_overflow_is_counted_and_announced() -> None:
    queue = ScanQueue(3)
    assert all(queue.put(ev(str(i))) for i in range(3))
    assert not queue.put(ev("lost1"))
    assert not queue.put(ev("lost2"))
    assert queue.overflow == 2
    assert [(await queue.get()).label for _ in range(2)] == ["0", "1"]  # type: ignore[union-attr]
    assert queue.put(ev("after"))
    got = [await queue.get() for _ in range(3)]
    assert isinstance(got[0], ScanEvent)
    assert got[0].label == "2"
    assert isinstance(got[1], DeviceEvent)
    assert got[1].state == "overflow"
    assert "2 event(s) dropped" in got[1].detail
    assert isinstance(got[2], ScanEvent)
    assert got[2].label == "after"
    assert queue.qsize() == 0


def test_tiny_queue_rejected() -> None:
    with pytest.raises(ValueError, match="maxsize"):
        ScanQueue(1)
