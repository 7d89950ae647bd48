"""The proof that a lane and head office hold the same chain (issue 16.7): the verdict, its
words, and the narrowing of a range to the exact first seq where the chains differ.

A hello carries the lane's chain hashes at its acked seq and a few checkpoints below;
head office compares them with its own (`compare`). Because each chain hash covers
every entry before it, the chains agree up to the highest checkpoint that matches
and differ from the lowest one that does not. When those two checkpoints are not
adjacent, the verdict is a range. The lane then sends its hashes inside that range
with `OP_PROOF_NARROW` (protocol.requests), at most `MAX_NARROW_HASHES` per request,
evenly spaced (`narrow_seqs`). Head office compares them the same way and answers
with a narrower range or the exact seq. Each round divides the range by about 60.

The verdict travels as text (the v2 ack's `proof`, which older v2 lanes read). Its
wording is the contract both sides share, so the wording lives here, and the lane
reads a range back out of it (`range_of`) instead of needing a new ack field that
older peers would refuse.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from protocol.chain import HASH_LEN
from protocol.errors import ProtocolError

MAX_NARROW_HASHES: Final = 64  # hashes one narrowing request carries (chain_hashes reads 64)

IDENTICAL: Final = "identical"
DIFFER: Final = "differ"
UNKNOWN: Final = "unknown"

_RANGE_RE = re.compile(r"identical up to seq (\d+); first difference between seq (\d+) and (\d+)")


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the comparison found: `text` for people, `state` (identical, differ, unknown),
    `upto` the highest seq both chains agree on, `differ` the lowest seq known to differ."""

    text: str
    state: str
    upto: int
    differ: int | None = None

    @property
    def exact(self) -> bool:
        """Whether the first difference is known to the seq (nothing left to narrow)."""
        return self.differ is None or self.differ == self.upto + 1


def differ_at(good: int, bad: int) -> str:
    """The verdict's words for chains that agree up to `good` and differ from `bad`."""
    if bad == good + 1:
        return f"identical up to seq {good}; differ at seq {bad}"
    return f"identical up to seq {good}; first difference between seq {good + 1} and {bad}"


def range_of(text: str | None) -> tuple[int, int] | None:
    """(good, bad) of a range verdict: the chains agree at `good`, differ at `bad`, and the
    first difference lies in good+1..bad. None for any other verdict."""
    m = _RANGE_RE.fullmatch(text or "")
    if m is None:
        return None
    good, low, bad = (int(g) for g in m.groups())
    return (good, bad) if low == good + 1 and bad > low else None


def compare(
    points: Sequence[tuple[int, bytes]], ours: Mapping[int, bytes], top: int | None = None
) -> Verdict:
    """The verdict on the lane's `points` (seq, chain hash) against head office's `ours`
    (seq -> hash, only the seqs it holds). `top` is the lane's acked seq: when it matches,
    the chains are identical up to it."""
    same = [s for s, h in points if ours.get(s) == h]
    differ = [s for s, h in points if s in ours and ours[s] != h]
    if top is not None and ours.get(top) is not None and top in same:
        return Verdict(f"identical up to seq {top}", IDENTICAL, top)
    if not differ:
        upto = max(same, default=0)
        return Verdict(
            f"identical up to seq {upto}; head office holds no entry above to compare",
            IDENTICAL if same else UNKNOWN,
            upto,
        )
    bad = min(differ)
    good = max((s for s in same if s < bad), default=0)
    return Verdict(differ_at(good, bad), DIFFER, good, bad)


def narrow_seqs(good: int, bad: int, limit: int = MAX_NARROW_HASHES) -> list[int]:
    """The seqs whose hashes a lane sends to narrow good..bad: both ends and up to
    `limit - 2` evenly spaced between them, in order."""
    inner = bad - good - 1
    room = max(0, limit - 2)
    if inner <= room:
        return list(range(good, bad + 1))
    step = (inner + 1) / (room + 1)
    mid = sorted({good + round(step * i) for i in range(1, room + 1)} - {good, bad})
    return [good, *mid, bad]


def narrow_args(args: Mapping[str, Any]) -> tuple[int, tuple[tuple[int, bytes], ...]]:
    """(epoch, hashes) of a narrowing request's args, checked (ProtocolError names the
    field): the epoch an integer from 1, then 1 to MAX_NARROW_HASHES [seq, 32-byte hash]."""
    epoch = args.get("epoch")
    if type(epoch) is not int or not 0 < epoch < 1 << 63:
        raise ProtocolError("must be an epoch (an integer from 1)", "epoch")
    value, key = args.get("hashes"), "hashes"
    if type(value) is not list or not 0 < len(value) <= MAX_NARROW_HASHES:
        raise ProtocolError(f"must be an array of 1-{MAX_NARROW_HASHES} [seq, hash]", key)
    out: list[tuple[int, bytes]] = []
    for i, pair in enumerate(value):
        if type(pair) is not list or len(pair) != 2:
            raise ProtocolError("must be [seq, hash]", f"{key}[{i}]")
        seq, h = pair
        if type(seq) is not int or not 0 <= seq < 1 << 63:
            raise ProtocolError("seq must be an integer 0..2**63-1", f"{key}[{i}]")
        if type(h) is not bytes or len(h) != HASH_LEN:
            raise ProtocolError("must be a 32-byte hash", f"{key}[{i}]")
        out.append((seq, h))
    return epoch, tuple(out)
