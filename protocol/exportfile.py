"""The signed export file (`lanesync-export/1`) a technician carries from a lane to head office.

Written by `lanesync journal export` (agent/export.py), read by `lanesync import`
(headoffice/importer.py); this module is the format both follow, with no file or clock access.

Two lines of UTF-8 JSON:
  line 1: {"format", "store", "lane", "epoch", "first_seq", "last_seq", "acked_seq", "prev_hash",
           "created_at", "entries": [[seq, kind, txn_id, ts, body_b64, hash_b64], ...]}
  line 2: {"alg": "HMAC-SHA256", "key_id", "mac"}: the MAC of line 1's exact bytes.
Signing the exact bytes avoids any JSON canonicalisation question.

Why HMAC-SHA256 and not Ed25519: no well-kept Ed25519 library (cryptography, PyNaCl) is a
dependency, and the stdlib has HMAC. Head office is the only verifier and already trusted with
the store's data, so a per-store shared key loses nothing that matters here; the hash chain
inside the file still ties every entry to the lane's epoch genesis.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from protocol.errors import LanesyncError, ProtocolError
from protocol.identity import LaneId
from protocol.messages import Entry

FORMAT = "lanesync-export/1"
ALG = "HMAC-SHA256"
MIN_KEY_BYTES = 32  # a store's export key: at least this many random bytes, kept as hex


class ExportFileError(LanesyncError):
    """Bytes that are not a valid export file; the message says what is at fault."""

    code = "export_file"


class SignatureMismatch(ExportFileError):
    """The MAC does not verify with the store's key: altered, or signed with another key."""

    code = "export_signature"


def key_id(key: bytes) -> str:
    """A short fingerprint that says which key signed, without revealing it."""
    return hashlib.sha256(b"lanesync-export-key\0" + key).hexdigest()[:16]


def mac(key: bytes, payload: bytes) -> str:
    """HMAC-SHA256 of `payload` as hex."""
    return hmac.new(key, payload, hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class ExportFile:
    """What a verified file holds: a lane's entries after `prev_hash` in one epoch."""

    lane: LaneId
    epoch: int
    prev_hash: bytes
    entries: list[Entry]


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def encode(
    lane: LaneId,
    epoch: int,
    acked_seq: int,
    prev_hash: bytes,
    entries: Sequence[Entry],
    created_at_ms: int,
    key: bytes,
) -> bytes:
    """The file's bytes: the payload line and its signature line."""
    payload: dict[str, Any] = {
        "format": FORMAT,
        "store": lane.store,
        "lane": lane.lane,
        "epoch": epoch,
        "first_seq": entries[0].seq if entries else None,
        "last_seq": entries[-1].seq if entries else None,
        "acked_seq": acked_seq,
        "prev_hash": _b64(prev_hash),
        "created_at": created_at_ms,
        "entries": [[e.seq, e.kind, e.txn_id, e.ts, _b64(e.body), _b64(e.hash)] for e in entries],
    }
    line1 = json.dumps(payload, separators=(",", ":")).encode()
    sig = {"alg": ALG, "key_id": key_id(key), "mac": mac(key, line1)}
    return line1 + b"\n" + json.dumps(sig).encode() + b"\n"


def _unb64(v: Any, what: str) -> bytes:
    if not isinstance(v, str):
        raise ExportFileError(f"{what}: must be base64 text")
    try:
        return base64.b64decode(v, validate=True)
    except (binascii.Error, ValueError):
        raise ExportFileError(f"{what}: not valid base64") from None


def decode(raw: bytes, key_for: Callable[[LaneId], bytes]) -> ExportFile:
    """Parse and verify a file's bytes: its format, then its MAC with `key_for(lane)`, then
    the shape of its entries. The hash chain is the reader's to check (protocol.chain)."""
    lines = raw.split(b"\n")
    if len(lines) < 2 or (len(lines) > 2 and any(lines[2:])):
        raise ExportFileError("not a lanesync export (expected 2 lines)")
    try:
        payload = json.loads(lines[0])
        sig = json.loads(lines[1])
    except ValueError as exc:
        raise ExportFileError(f"not a lanesync export: {exc}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ExportFileError(f"format is not {FORMAT}")
    try:
        lane = LaneId(str(payload.get("store")), str(payload.get("lane")))
    except ProtocolError as exc:
        raise ExportFileError(str(exc)) from None
    key = key_for(lane)
    if not isinstance(sig, dict) or sig.get("alg") != ALG:
        raise ExportFileError(f"signature line missing or not {ALG}")
    if not hmac.compare_digest(mac(key, lines[0]), str(sig.get("mac", ""))):
        which = (
            "the file was altered after it was written"
            if sig.get("key_id") == key_id(key)
            else f"it was signed with key {sig.get('key_id')}, not store {lane.store}'s key "
            f"{key_id(key)}"
        )
        raise SignatureMismatch(f"signature does not verify: {which}")
    epoch = payload.get("epoch")
    if type(epoch) is not int or epoch <= 0:
        raise ExportFileError("epoch must be a positive integer")
    prev = _unb64(payload.get("prev_hash"), "prev_hash")
    entries: list[Entry] = []
    for i, e in enumerate(payload.get("entries") or []):
        if not (isinstance(e, list) and len(e) == 6):
            raise ExportFileError(f"entries[{i}] must be [seq, kind, txn_id, ts, body, hash]")
        seq, kind, txn_id, ts = e[0], e[1], e[2], e[3]
        if type(seq) is not int or type(ts) is not int or not isinstance(kind, str):
            raise ExportFileError(f"entries[{i}] has a wrong field type")
        if not isinstance(txn_id, str):
            raise ExportFileError(f"entries[{i}].txn_id must be text")
        body = _unb64(e[4], f"entries[{i}].body")
        entries.append(Entry(seq, kind, txn_id, ts, body, _unb64(e[5], f"entries[{i}].hash")))
        if i and seq != entries[i - 1].seq + 1:
            raise ExportFileError(f"entries are not consecutive at seq {seq}")
    return ExportFile(lane, epoch, prev, entries)
