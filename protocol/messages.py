"""Message types on the wire and the schema each one must satisfy.

Every message is a msgpack map carrying `v` (protocol version) and `t` (type). `from_map` checks
each field's type and range and refuses unknown fields, naming the field at fault; the codec
(protocol.codec) turns bytes into these objects and back.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, NamedTuple

from protocol.chain import HASH_LEN
from protocol.errors import ProtocolError
from protocol.identity import LaneId, check_segment

PROTOCOL_VERSION = 1
U63 = (1 << 63) - 1
MAX_ENTRY_BODY = 64 * 1024
MAX_BATCH_ENTRIES = 10_000
KIND_RE = re.compile(r"[a-z][a-z0-9_]{0,31}")
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
CORR_RE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


class Entry(NamedTuple):
    """One journal entry as it travels: a tuple so 100k of them stay cheap."""

    seq: int
    kind: str
    txn_id: str
    ts: int  # milliseconds since the Unix epoch, UTC
    body: bytes  # the document, msgpack-encoded by the lane and hashed as these exact bytes
    hash: bytes  # sha256 chained to the previous entry (protocol.chain)


# --- field checkers: each names the field it refuses -------------------------------------------


def _int(m: Mapping[str, Any], key: str, lo: int = 0, hi: int = U63) -> int:
    v = m.get(key)
    if type(v) is not int:
        raise ProtocolError(f"must be an integer, got {type(v).__name__}", key)
    if not lo <= v <= hi:
        raise ProtocolError(f"{v} is outside {lo}..{hi}", key)
    return v


def _str(m: Mapping[str, Any], key: str, pattern: re.Pattern[str] | None = None) -> str:
    v = m.get(key)
    if type(v) is not str:
        raise ProtocolError(f"must be a string, got {type(v).__name__}", key)
    if pattern is not None and not pattern.fullmatch(v):
        raise ProtocolError(f"{v[:80]!r} does not match {pattern.pattern}", key)
    if len(v) > 1024:
        raise ProtocolError("longer than 1024 characters", key)
    return v


def _opt_str(m: Mapping[str, Any], key: str) -> str | None:
    return None if m.get(key) is None else _str(m, key)


def _bytes(m: Mapping[str, Any], key: str, length: int) -> bytes:
    v = m.get(key)
    if type(v) is not bytes:
        raise ProtocolError(f"must be binary, got {type(v).__name__}", key)
    if len(v) != length:
        raise ProtocolError(f"must be {length} bytes, got {len(v)}", key)
    return v


def check_plain(value: Any, path: str, depth: int = 0) -> None:
    """Refuse anything but str-keyed maps, lists, str, int, bool, None and bytes.

    Floats are refused on purpose: money and quantities never travel as floats (invariant 5).
    """
    if depth > 32:
        raise ProtocolError("nested deeper than 32 levels", path)
    t = type(value)
    if t is dict:
        for k, v in value.items():
            if type(k) is not str:
                raise ProtocolError(f"map key {k!r} is not a string", path)
            check_plain(v, f"{path}.{k}", depth + 1)
    elif t is list:
        for i, v in enumerate(value):
            check_plain(v, f"{path}[{i}]", depth + 1)
    elif t is float or t.__name__ == "Decimal":
        raise ProtocolError(
            "fractional numbers are not allowed; use integer minor units or a decimal string",
            path,
        )
    elif t is int:
        if not -(1 << 63) <= value <= U63:
            raise ProtocolError("integer outside the signed 64-bit range", path)
    elif value is not None and t not in (str, bool, bytes):
        raise ProtocolError(f"{t.__name__} values are not allowed", path)


def _map(m: Mapping[str, Any], key: str) -> dict[str, Any]:
    v = m.get(key)
    if type(v) is not dict:
        raise ProtocolError(f"must be a map, got {type(v).__name__}", key)
    check_plain(v, key)
    return v


def _lane(m: Mapping[str, Any]) -> LaneId:
    return LaneId(check_segment(m.get("store"), "store"), check_segment(m.get("lane"), "lane"))


# --- message types ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JournalBatch:
    """Consecutive journal entries of one lane and epoch, starting at `first_seq`.

    `prev_hash` is the chain hash of entry `first_seq - 1` (or the epoch's genesis), so head office
    can check a batch against what it already holds.
    """

    TYPE: ClassVar[str] = "batch"
    lane: LaneId
    epoch: int
    prev_hash: bytes
    entries: list[Entry]

    @property
    def first_seq(self) -> int:
        return self.entries[0].seq

    @property
    def last_seq(self) -> int:
        return self.entries[-1].seq

    def to_map(self) -> dict[str, Any]:
        return {
            "store": self.lane.store,
            "lane": self.lane.lane,
            "epoch": self.epoch,
            "first_seq": self.entries[0].seq,
            "prev_hash": self.prev_hash,
            # entries travel as arrays without their seq: it follows from first_seq
            "entries": [[e.kind, e.txn_id, e.ts, e.body, e.hash] for e in self.entries],
        }

    @classmethod
    def from_map(cls, m: Mapping[str, Any]) -> JournalBatch:
        lane = _lane(m)
        epoch = _int(m, "epoch", 1)
        first = _int(m, "first_seq", 1)
        prev = _bytes(m, "prev_hash", HASH_LEN)
        raw = m.get("entries")
        if type(raw) is not list or not raw:
            raise ProtocolError("must be a non-empty array", "entries")
        if len(raw) > MAX_BATCH_ENTRIES:
            raise ProtocolError(f"{len(raw)} entries exceed {MAX_BATCH_ENTRIES}", "entries")
        if first + len(raw) - 1 > U63:
            raise ProtocolError("seq overflows 63 bits", "first_seq")
        entries: list[Entry] = []
        kind_ok = KIND_RE.fullmatch
        uuid_ok = UUID_RE.fullmatch
        for i, e in enumerate(raw):
            if type(e) is not list or len(e) != 5:
                raise ProtocolError("must be [kind, txn_id, ts, body, hash]", f"entries[{i}]")
            kind, txn_id, ts, body, h = e
            if type(kind) is not str or not kind_ok(kind):
                raise ProtocolError(f"bad kind {kind!r}", f"entries[{i}].kind")
            if type(txn_id) is not str or not uuid_ok(txn_id):
                raise ProtocolError(f"bad txn_id {txn_id!r}", f"entries[{i}].txn_id")
            if type(ts) is not int or not 0 <= ts <= U63:
                raise ProtocolError(f"bad time {ts!r}", f"entries[{i}].ts")
            if type(body) is not bytes or len(body) > MAX_ENTRY_BODY:
                raise ProtocolError("must be binary of at most 64 KiB", f"entries[{i}].body")
            if type(h) is not bytes or len(h) != HASH_LEN:
                raise ProtocolError("must be a 32-byte hash", f"entries[{i}].hash")
            entries.append(Entry(first + i, kind, txn_id, ts, body, h))
        return cls(lane, epoch, prev, entries)


@dataclass(frozen=True, slots=True)
class Hello:
    """Sent by a lane on every connect: where its journal stands."""

    TYPE: ClassVar[str] = "hello"
    lane: LaneId
    epoch: int
    last_seq: int
    first_unacked: int
    version: str
    sent_at: int

    def to_map(self) -> dict[str, Any]:
        return {
            "store": self.lane.store,
            "lane": self.lane.lane,
            "epoch": self.epoch,
            "last_seq": self.last_seq,
            "first_unacked": self.first_unacked,
            "version": self.version,
            "sent_at": self.sent_at,
        }

    @classmethod
    def from_map(cls, m: Mapping[str, Any]) -> Hello:
        return cls(
            _lane(m),
            _int(m, "epoch", 1),
            _int(m, "last_seq"),
            _int(m, "first_unacked", 1),
            _str(m, "version"),
            _int(m, "sent_at"),
        )


@dataclass(frozen=True, slots=True)
class Ack:
    """Head office's answer: `hwm` is the highest contiguous seq committed for the epoch.

    With `resend_from` set, head office found a gap (or lost state) and asks the lane to send
    again from that seq; `reason` says why, for the lane's log and diagnostics.
    """

    TYPE: ClassVar[str] = "ack"
    lane: LaneId
    epoch: int
    hwm: int
    resend_from: int | None = None
    reason: str | None = None

    def to_map(self) -> dict[str, Any]:
        return {
            "store": self.lane.store,
            "lane": self.lane.lane,
            "epoch": self.epoch,
            "hwm": self.hwm,
            "resend_from": self.resend_from,
            "reason": self.reason,
        }

    @classmethod
    def from_map(cls, m: Mapping[str, Any]) -> Ack:
        resend = None if m.get("resend_from") is None else _int(m, "resend_from", 1)
        return cls(_lane(m), _int(m, "epoch", 1), _int(m, "hwm"), resend, _opt_str(m, "reason"))


@dataclass(frozen=True, slots=True)
class Status:
    """Retained lane status; the `offline` one is the lane's MQTT last will."""

    TYPE: ClassVar[str] = "status"
    lane: LaneId
    state: Literal["online", "offline"]
    version: str
    backlog: int = 0
    at: int = 0

    def to_map(self) -> dict[str, Any]:
        return {
            "store": self.lane.store,
            "lane": self.lane.lane,
            "state": self.state,
            "version": self.version,
            "backlog": self.backlog,
            "at": self.at,
        }

    @classmethod
    def from_map(cls, m: Mapping[str, Any]) -> Status:
        state = _str(m, "state")
        if state not in ("online", "offline"):
            raise ProtocolError(f"{state!r} is not online or offline", "state")
        return cls(
            _lane(m),
            "online" if state == "online" else "offline",
            _str(m, "version"),
            _int(m, "backlog"),
            _int(m, "at"),
        )


@dataclass(frozen=True, slots=True)
class Request:
    """A lane's request to head office; the reply carries the same `corr`."""

    TYPE: ClassVar[str] = "req"
    lane: LaneId
    corr: str
    op: str
    args: dict[str, Any] = field(default_factory=dict)

    def to_map(self) -> dict[str, Any]:
        return {
            "store": self.lane.store,
            "lane": self.lane.lane,
            "corr": self.corr,
            "op": self.op,
            "args": self.args,
        }

    @classmethod
    def from_map(cls, m: Mapping[str, Any]) -> Request:
        return cls(_lane(m), _str(m, "corr", CORR_RE), _str(m, "op", KIND_RE), _map(m, "args"))


@dataclass(frozen=True, slots=True)
class Reply:
    """Head office's answer to a Request: a result, or a refusal with a reason."""

    TYPE: ClassVar[str] = "rep"
    lane: LaneId
    corr: str
    ok: bool
    result: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def to_map(self) -> dict[str, Any]:
        return {
            "store": self.lane.store,
            "lane": self.lane.lane,
            "corr": self.corr,
            "ok": self.ok,
            "result": self.result,
            "error": self.error,
        }

    @classmethod
    def from_map(cls, m: Mapping[str, Any]) -> Reply:
        ok = m.get("ok")
        if type(ok) is not bool:
            raise ProtocolError("must be true or false", "ok")
        return cls(_lane(m), _str(m, "corr", CORR_RE), ok, _map(m, "result"), _opt_str(m, "error"))


Message = JournalBatch | Hello | Ack | Status | Request | Reply

MESSAGE_TYPES: dict[str, Callable[[Mapping[str, Any]], Message]] = {
    cls.TYPE: cls.from_map for cls in (JournalBatch, Hello, Ack, Status, Request, Reply)
}

_FIELDS: dict[str, frozenset[str]] = {
    "batch": frozenset({"store", "lane", "epoch", "first_seq", "prev_hash", "entries"}),
    "hello": frozenset(
        {"store", "lane", "epoch", "last_seq", "first_unacked", "version", "sent_at"}
    ),
    "ack": frozenset({"store", "lane", "epoch", "hwm", "resend_from", "reason"}),
    "status": frozenset({"store", "lane", "state", "version", "backlog", "at"}),
    "req": frozenset({"store", "lane", "corr", "op", "args"}),
    "rep": frozenset({"store", "lane", "corr", "ok", "result", "error"}),
}


def from_map(m: Mapping[str, Any]) -> Message:
    """Validate a decoded map against the schema of its `t` and build the message."""
    v = m.get("v")
    # type check first: 1.0 == 1 and True == 1 in Python, but neither is an integer on the wire
    if type(v) is not int or v != PROTOCOL_VERSION:
        raise ProtocolError(f"unsupported protocol version {v!r}; this side speaks 1", "v")
    t = m.get("t")
    if type(t) is not str or t not in MESSAGE_TYPES:
        raise ProtocolError(f"unknown message type {t!r}", "t")
    build = MESSAGE_TYPES[t]
    unknown = m.keys() - _FIELDS[t] - {"v", "t"}
    if unknown:
        raise ProtocolError(f"unknown field(s) {sorted(unknown)!r} for {t}", sorted(unknown)[0])
    return build(m)
