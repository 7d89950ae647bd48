"""The wall clock as both sides read it, and how far head office's clock is from ours.

Entries, acks and receive records carry milliseconds since the Unix epoch (UTC); head office
answers the `time` request with its own (protocol.requests.OP_TIME).
"""

from __future__ import annotations

import time


def now_ms() -> int:
    """Milliseconds since the Unix epoch, from the wall clock (integer: no float rounding)."""
    return time.time_ns() // 1_000_000


def clock_skew_s(head_office_ms: float, sent: float, received: float) -> float:
    """Head office's clock minus ours in seconds, from a `time` reply read at `received` for a
    request sent at `sent` (both our time.time()), assuming the reply took half the round trip."""
    return float(head_office_ms) / 1000 - (sent + received) / 2
