"""Shared helpers for the hardware suite: recorded evdev streams and a decoder runner."""

from __future__ import annotations

import json
from pathlib import Path

from evdev import InputEvent

from hardware.wedge import WedgeConfig, WedgeDecoder, WedgeOutput

FIXTURES = Path(__file__).parent / "fixtures"


def load_events(name: str) -> list[InputEvent]:
    """A recorded stream: a JSON list of [sec, usec, type, code, value]."""
    rows = json.loads((FIXTURES / name).read_text())
    return [InputEvent(*row) for row in rows]


def decode(events: list[InputEvent], config: WedgeConfig | None = None) -> list[WedgeOutput]:
    decoder = WedgeDecoder(config)
    out: list[WedgeOutput] = []
    for event in events:
        out.extend(decoder.feed(event))
    return out
