"""The journal hash chain (design invariant 8).

Each entry's hash covers the previous entry's hash and the entry's own fields, length-prefixed so
no two different entries encode alike. The first entry of an epoch chains to a genesis hash bound
to store, lane and epoch, so an entry cannot be replayed under another lane or epoch.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable

from protocol.identity import LaneId

HASH_LEN = 32
_HEAD = struct.Struct(">QqH")  # seq, ts (ms, signed), len(kind)


def genesis(lane: LaneId, epoch: int) -> bytes:
    """The hash that entry 1 of an epoch chains to."""
    return hashlib.sha256(
        b"lanesync-chain-v1\0"
        + lane.store.encode()
        + b"\0"
        + lane.lane.encode()
        + b"\0"
        + epoch.to_bytes(8, "big")
    ).digest()


def entry_hash(prev: bytes, seq: int, kind: str, txn_id: str, ts: int, body: bytes) -> bytes:
    k = kind.encode()
    t = txn_id.encode()
    return hashlib.sha256(
        b"".join(
            (
                prev,
                _HEAD.pack(seq, ts, len(k)),
                k,
                len(t).to_bytes(2, "big"),
                t,
                len(body).to_bytes(4, "big"),
                body,
            )
        )
    ).digest()


def first_break(
    prev: bytes, entries: Iterable[tuple[int, str, str, int, bytes, bytes]]
) -> tuple[int, bytes] | None:
    """Check a run of `(seq, kind, txn_id, ts, body, hash)` against `prev`.

    Returns `(seq, expected_hash)` of the first entry whose hash does not chain, or None.
    """
    for seq, kind, txn_id, ts, body, got in entries:
        want = entry_hash(prev, seq, kind, txn_id, ts, body)
        if want != got:
            return seq, want
        prev = got
    return None
