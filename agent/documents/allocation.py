"""Spreading a charge (freight, packaging) over lines by value, in integer minor units.

The purchasing seed: freight and packaging are assigned proportionally by value over the
received lines; a value the user set on a line is "the value" for that line and reduces the
amount spread over the others. Shares are floored and the leftover minor units go to the
largest remainders (ties: the earlier line), so the parts always add up to the pool exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

from protocol.errors import LanesyncError


class AllocationError(LanesyncError):
    """The pool cannot be spread; `index` is the line at fault or None for the pool itself."""

    code = "allocation"

    def __init__(self, reason: str, index: int | None = None) -> None:
        self.reason = reason
        self.index = index
        super().__init__(reason)


def allocate(pool: int, weights: Sequence[int], overrides: Sequence[int | None]) -> list[int]:
    """Per-line shares of `pool`: overrides as given, the rest split by `weights`."""
    if pool < 0:
        raise AllocationError(f"must not be negative, got {pool}")
    if len(weights) != len(overrides):
        raise ValueError("weights and overrides must have one entry per line")
    for i, (weight, o) in enumerate(zip(weights, overrides, strict=True)):
        if weight < 0:
            raise AllocationError(f"line value {weight} is negative; cannot spread by it", i)
        if o is not None and o < 0:
            raise AllocationError(f"override must not be negative, got {o}", i)
    fixed = sum(o for o in overrides if o is not None)
    rest = pool - fixed
    if rest < 0:
        raise AllocationError(f"line overrides add up to {fixed}, more than the {pool} to spread")
    free = [i for i, o in enumerate(overrides) if o is None]
    out = [o if o is not None else 0 for o in overrides]
    if not free:
        if rest:
            raise AllocationError(
                f"every line has an override but they add up to {fixed}, not {pool}"
            )
        return out
    w = [weights[i] for i in free]
    total_w = sum(w)
    if total_w == 0:  # nothing has a value: spread evenly rather than refuse the receive
        w = [1] * len(free)
        total_w = len(free)
    parts = []
    for idx, wi in zip(free, w, strict=True):
        share, rem = divmod(rest * wi, total_w)
        out[idx] = share
        parts.append((rem, idx))
    left = rest - sum(out[i] for i in free)
    # Largest remainder first; the earlier line wins a tie (sort key: -remainder, index).
    for _rem, idx in sorted(parts, key=lambda p: (-p[0], p[1]))[:left]:
        out[idx] += 1
    return out
