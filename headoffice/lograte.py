"""Log lines about what a store sends, at most a few per store and interval.

Head office logs each refusal (a quarantined message, a held entry, shed messages) with its
reason, which is what an operator needs, until a store sends thousands a second: then the log
itself becomes the flood (a line costs more than refusing the message, and fills the disk).
`StoreLog` writes the first `burst` lines per store in each `every_s` window and counts the
rest, saying how many it held back in the next line it writes for that store.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

MAX_KEYS = 1000  # stores tracked at once; beyond it the windows start afresh (bounded memory)


@dataclass(slots=True)
class _Window:
    start: float
    written: int = 0
    held_back: int = 0


class StoreLog:
    def __init__(self, logger: logging.Logger, *, every_s: float = 10.0, burst: int = 5) -> None:
        self.logger = logger
        self.every_s = every_s
        self.burst = burst
        self._windows: dict[str, _Window] = {}

    def log(self, level: int, store: str, msg: str, *args: Any) -> None:
        now = time.monotonic()
        w = self._windows.get(store)
        if w is None or now - w.start >= self.every_s:
            if w is not None and w.held_back:
                self.logger.log(
                    level,
                    "head office: %d more such lines about store %r in the last %.0f s",
                    w.held_back,
                    store,
                    now - w.start,
                )
            if len(self._windows) >= MAX_KEYS:
                self._windows.clear()
            w = self._windows[store] = _Window(now)
        if w.written < self.burst:
            w.written += 1
            self.logger.log(level, msg, *args)
        else:
            w.held_back += 1

    def warning(self, store: str, msg: str, *args: Any) -> None:
        self.log(logging.WARNING, store, msg, *args)
