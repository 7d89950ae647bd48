"""Reconnect delays for scanners that are unplugged, missing or busy.

A small explicit loop in the readers uses tenacity's capped exponential wait with jitter, so
every failed attempt is visible to the reader (reported and counted) instead of hidden inside a
retry decorator.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tenacity import RetryCallState, wait_exponential_jitter

__all__ = ["Backoff"]


@dataclass(frozen=True)
class Backoff:
    """Delay before reopen attempt n (1-based): initial * 2**(n-1), capped, plus jitter."""

    initial: float = 0.5
    maximum: float = 10.0
    jitter: float = 0.5
    _wait: wait_exponential_jitter = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 0 < self.initial <= self.maximum:
            raise ValueError("backoff: need 0 < initial <= maximum")
        wait = wait_exponential_jitter(
            multiplier=self.initial, max=self.maximum, jitter=self.jitter
        )
        object.__setattr__(self, "_wait", wait)

    def delay(self, attempt: int) -> float:
        """Seconds to wait before attempt `attempt` (>= 1)."""
        state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
        state.attempt_number = max(1, attempt)
        return float(self._wait(state))
