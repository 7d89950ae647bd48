"""Message types on the wire and the schema each one must satisfy.

Every message is a msgpack map carrying `v` (protocol version) and `t` (type). `from_map` checks
each field's type and range and refuses unknown fields, naming the field at fault; the codec
(protocol.codec) turns bytes into these objects and back.

No message carries a card number (invariant 6): every string field is screened by
protocol.pan's rule, a Request's `args` and a Reply's `result` by protocol.screen (with the
fields below declared to hold SSCCs, GTINs and millisecond timestamps). A Request cannot even
be made with one, so a lane never sends it and head office refuses it on decoding; free-text
reasons (Ack.reason, Reply.error) are masked instead of refused, so an answer a lane needs is
never lost over a quoted number.

Versions (issue 18): a message is encoded at the lowest protocol version that can express it
(`wire_version`), so whatever a v1 peer could read stays byte-for-byte v1. Version 2 adds, all
optional: to Hello the versions the lane speaks and its chain proof (hashes at its acked seq and
a few seqs below it); to Ack the version to use, the proof's verdict, a `rewind` (head office
lost entries the lane had acked: resend them) and a `refused` reason (the lane's journal is
behind head office's copy of its own epoch); and the HeadOffice message, retained on
`{prefix}/headoffice`, that announces each head-office process (its incarnation) and, as its
last will, its end. Head office of version N decodes N and N-1, and answers a lane that has not
said what it speaks in v1 only.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, NamedTuple

from protocol import screen
from protocol.chain import HASH_LEN
from protocol.errors import ProtocolError
from protocol.identity import LaneId, check_segment
from protocol.pan import mask_text

PROTOCOL_VERSION = 2  # the highest this side speaks
SUPPORTED_VERSIONS = (1, 2)  # what it decodes: this version and the one before (issue 18)
MAX_CHECKPOINTS = 64
U63 = (1 << 63) - 1
MAX_ENTRY_BODY = 64 * 1024
MAX_BATCH_ENTRIES = 10_000
KIND_RE = re.compile(r"[a-z][a-z0-9_]{0,31}")
UUID_RE = screen.UUID_RE  # the txn_id form; defined with the screen, which exempts it
CORR_RE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
MAX_TEXT = 1024

# What a Request's args and a Reply's result may hold that passes as a card number by chance:
# the transit requests' SSCC and the lane's deadline; the transit details head office answers
# with (headoffice.transit.projection.details) and the time it tells.
REQUEST_FIELDS = screen.declare(
    {"sscc": screen.sscc, "deadline_ms": screen.ms_time, "epoch": screen.epoch}  # proof_narrow
)
_TRANSIT_DETAILS = {
    "sscc": screen.sscc,
    "lines[].item": screen.gtin,
    "created.at": screen.ms_time,
    "received.at": screen.ms_time,
    "cancelled.at": screen.ms_time,
}
REPLY_FIELDS = screen.declare(
    {
        "now_ms": screen.ms_time,
        **{f"transit.{k}": v for k, v in _TRANSIT_DETAILS.items()},
        "received.at": screen.ms_time,
        "cancelled.at": screen.ms_time,
        # catalog_delta / catalog_snapshot pages (protocol.catalog): items' GTINs
        "changes[][].gtins[]": screen.gtin,
    }
)


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
        raise ProtocolError(f"is outside {lo}..{hi}", key)  # never the value: it may be a PAN
    return v


def _opt_int(m: Mapping[str, Any], key: str) -> int:
    """A counter added after v1 first shipped: absent (an older lane) reads as 0."""
    return 0 if m.get(key) is None else _int(m, key)


def _str(m: Mapping[str, Any], key: str, pattern: re.Pattern[str] | None = None) -> str:
    v = m.get(key)
    if type(v) is not str:
        raise ProtocolError(f"must be a string, got {type(v).__name__}", key)
    if len(v) > MAX_TEXT:
        raise ProtocolError(f"longer than {MAX_TEXT} characters", key)
    if pattern is not None and not pattern.fullmatch(v):
        raise ProtocolError(f"does not match {pattern.pattern}", key)
    if len(v) >= 13 and screen.holds_pan(v):
        raise ProtocolError(screen.PAN_REASON, key)
    return v


def _opt_text(m: Mapping[str, Any], key: str) -> str | None:
    """A free-text reason: card numbers in it are masked and a long one is cut, never refused
    (see the docstring): an ack must not be lost over the words that come with it."""
    v = m.get(key)
    if v is None:
        return None
    if type(v) is not str:
        raise ProtocolError(f"must be a string, got {type(v).__name__}", key)
    return reason_text(v)


def reason_text(text: str) -> str:
    """A free-text reason as it may travel: masked (protocol.pan), at most MAX_TEXT long."""
    if len(text) > MAX_TEXT:
        text = text[: MAX_TEXT - 3] + "..."
    return mask_text(text)


def _bytes(m: Mapping[str, Any], key: str, length: int) -> bytes:
    v = m.get(key)
    if type(v) is not bytes:
        raise ProtocolError(f"must be binary, got {type(v).__name__}", key)
    if len(v) != length:
        raise ProtocolError(f"must be {length} bytes, got {len(v)}", key)
    return v


def check_plain(value: Any, path: str) -> None:
    """Refuse what may not travel in a map of a message (protocol.screen, nothing declared)."""
    screen.check(value, path)


def _map(m: Mapping[str, Any], key: str, declared: screen.Declared) -> dict[str, Any]:
    v = m.get(key)
    if type(v) is not dict:
        raise ProtocolError(f"must be a map, got {type(v).__name__}", key)
    screen.check(v, key, declared)
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
        uuid_ok = UUID_RE.fullmatch
        kinds = _KINDS_SEEN
        new = tuple.__new__
        for i, e in enumerate(raw):
            if type(e) is not list or len(e) != 5:
                raise ProtocolError("must be [kind, txn_id, ts, body, hash]", f"entries[{i}]")
            kind, txn_id, ts, body, h = e
            # Refusals name the field and never quote the value: it may be a card number.
            if type(kind) is not str or (kind not in kinds and not _kind_ok(kind, i)):
                raise ProtocolError(f"must match {KIND_RE.pattern}", f"entries[{i}].kind")
            if type(txn_id) is not str or not uuid_ok(txn_id):
                raise ProtocolError("must be a lowercase canonical UUID", f"entries[{i}].txn_id")
            if type(ts) is not int or not 0 <= ts <= U63:
                raise ProtocolError(
                    "must be milliseconds since 1970 (an integer 0..2**63-1)", f"entries[{i}].ts"
                )
            if type(body) is not bytes or len(body) > MAX_ENTRY_BODY:
                raise ProtocolError("must be binary of at most 64 KiB", f"entries[{i}].body")
            if type(h) is not bytes or len(h) != HASH_LEN:
                raise ProtocolError("must be a 32-byte hash", f"entries[{i}].hash")
            # tuple.__new__: what Entry(...) does, without the NamedTuple's Python __new__
            entries.append(new(Entry, (first + i, kind, txn_id, ts, body, h)))
        return cls(lane, epoch, prev, entries)


# Kinds found valid, each checked once (a batch repeats a few kinds a thousand times). Bounded:
# a flood of distinct kinds only stops adding to it.
_KINDS_SEEN: set[str] = set()
_KINDS_SEEN_MAX = 1024


def _kind_ok(kind: str, i: int) -> bool:
    """Whether `kind` (a str not seen before) is a valid entry kind; refuses, naming the field,
    one that carries a card number. A valid one is remembered."""
    if not KIND_RE.fullmatch(kind):
        return False
    if len(kind) >= 13 and screen.holds_pan(kind):
        raise ProtocolError(screen.PAN_REASON, f"entries[{i}].kind")
    if len(_KINDS_SEEN) < _KINDS_SEEN_MAX:
        _KINDS_SEEN.add(kind)
    return True


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
    catalog: int = 0  # the catalog version the lane holds complete (0: none yet)
    # v2: the protocol versions the lane speaks (empty: a v1 lane, which speaks 1 only)
    protocols: tuple[int, ...] = ()
    # v2: (seq, chain hash) at the acked seq first, then at a few seqs below it (seq 0: the
    # epoch's genesis), so head office can say up to where both hold the same chain
    proof: tuple[tuple[int, bytes], ...] = ()

    @property
    def acked_seq(self) -> int:
        return self.first_unacked - 1

    def to_map(self) -> dict[str, Any]:
        m: dict[str, Any] = {
            "store": self.lane.store,
            "lane": self.lane.lane,
            "epoch": self.epoch,
            "last_seq": self.last_seq,
            "first_unacked": self.first_unacked,
            "version": self.version,
            "sent_at": self.sent_at,
            "catalog": self.catalog,
        }
        if self.protocols:
            m["protocols"] = list(self.protocols)
        if self.proof:
            m["proof"] = [[seq, h] for seq, h in self.proof]
        return m

    @classmethod
    def from_map(cls, m: Mapping[str, Any]) -> Hello:
        return cls(
            _lane(m),
            _int(m, "epoch", 1),
            _int(m, "last_seq"),
            _int(m, "first_unacked", 1),
            _str(m, "version"),
            _int(m, "sent_at"),
            _opt_int(m, "catalog"),
            _versions(m, "protocols"),
            _proof(m, "proof"),
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
    protocol: int | None = None  # v2, answering a hello: the protocol version to use
    proof: str | None = None  # v2, answering a hello: "identical up to seq N" or where not
    rewind: bool = False  # v2: head office lost entries the lane had acked; resend_from them
    refused: str | None = None  # v2: the lane must not send this epoch on (why, for people)

    def to_map(self) -> dict[str, Any]:
        m: dict[str, Any] = {
            "store": self.lane.store,
            "lane": self.lane.lane,
            "epoch": self.epoch,
            "hwm": self.hwm,
            "resend_from": self.resend_from,
            "reason": self.reason,
        }
        if self.protocol is not None:
            m["protocol"] = self.protocol
        if self.proof is not None:
            m["proof"] = self.proof
        if self.rewind:
            m["rewind"] = True
        if self.refused is not None:
            m["refused"] = self.refused
        return m

    @classmethod
    def from_map(cls, m: Mapping[str, Any]) -> Ack:
        resend = None if m.get("resend_from") is None else _int(m, "resend_from", 1)
        protocol = None if m.get("protocol") is None else _int(m, "protocol", 1, 255)
        rewind = m.get("rewind", False)
        if type(rewind) is not bool:
            raise ProtocolError("must be true or false", "rewind")
        return cls(
            _lane(m),
            _int(m, "epoch", 1),
            _int(m, "hwm"),
            resend,
            _opt_text(m, "reason"),
            protocol,
            _opt_text(m, "proof"),
            rewind,
            _opt_text(m, "refused"),
        )


@dataclass(frozen=True, slots=True)
class Status:
    """Retained lane status; the `offline` one is the lane's MQTT last will."""

    TYPE: ClassVar[str] = "status"
    lane: LaneId
    state: Literal["online", "offline"]
    version: str
    backlog: int = 0
    at: int = 0
    catalog: int = 0  # the catalog version the lane holds complete (0: none yet)

    def to_map(self) -> dict[str, Any]:
        return {
            "store": self.lane.store,
            "lane": self.lane.lane,
            "state": self.state,
            "version": self.version,
            "backlog": self.backlog,
            "at": self.at,
            "catalog": self.catalog,
        }

    @classmethod
    def from_map(cls, m: Mapping[str, Any]) -> Status:
        state = _str(m, "state")
        if state not in ("online", "offline"):
            raise ProtocolError("must be online or offline", "state")
        return cls(
            _lane(m),
            "online" if state == "online" else "offline",
            _str(m, "version"),
            _int(m, "backlog"),
            _int(m, "at"),
            _opt_int(m, "catalog"),
        )


@dataclass(frozen=True, slots=True)
class HeadOffice:
    """Retained on `{prefix}/headoffice` (v2): a head-office process announces itself at every
    connect with a fresh `incarnation`; its `offline` twin is its MQTT last will.

    A lane that sees an incarnation it has not seen before resends from its acked mark at once
    (issue 16.2): the process that ended may have taken received but uncommitted batches with
    it, and waiting for the ack timeout cost every lane 10 s after each head-office restart.
    """

    TYPE: ClassVar[str] = "ho"
    state: Literal["online", "offline"]
    incarnation: int
    worker: str
    version: str
    protocols: tuple[int, ...] = SUPPORTED_VERSIONS
    at: int = 0

    def to_map(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "incarnation": self.incarnation,
            "worker": self.worker,
            "version": self.version,
            "protocols": list(self.protocols),
            "at": self.at,
        }

    @classmethod
    def from_map(cls, m: Mapping[str, Any]) -> HeadOffice:
        state = _str(m, "state")
        if state not in ("online", "offline"):
            raise ProtocolError("must be online or offline", "state")
        return cls(
            "online" if state == "online" else "offline",
            _int(m, "incarnation", 1),
            _str(m, "worker", CORR_RE),
            _str(m, "version"),
            _versions(m, "protocols"),
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

    def __post_init__(self) -> None:
        # Made on the lane, decoded at head office: either way no card number gets past here.
        if type(self.args) is not dict:
            raise ProtocolError(f"must be a map, got {type(self.args).__name__}", "args")
        screen.check(self.args, "args", REQUEST_FIELDS)

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
        args = m.get("args")
        if type(args) is not dict:
            raise ProtocolError(f"must be a map, got {type(args).__name__}", "args")
        return cls(_lane(m), _str(m, "corr", CORR_RE), _str(m, "op", KIND_RE), args)


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
        result = _map(m, "result", REPLY_FIELDS)
        return cls(_lane(m), _str(m, "corr", CORR_RE), ok, result, _opt_text(m, "error"))


Message = JournalBatch | Hello | Ack | Status | Request | Reply | HeadOffice

MESSAGE_TYPES: dict[str, Callable[[Mapping[str, Any]], Message]] = {
    cls.TYPE: cls.from_map for cls in (JournalBatch, Hello, Ack, Status, Request, Reply, HeadOffice)
}

_FIELDS_V1: dict[str, frozenset[str]] = {
    "batch": frozenset({"store", "lane", "epoch", "first_seq", "prev_hash", "entries"}),
    "hello": frozenset(
        {"store", "lane", "epoch", "last_seq", "first_unacked", "version", "sent_at", "catalog"}
    ),
    "ack": frozenset({"store", "lane", "epoch", "hwm", "resend_from", "reason"}),
    "status": frozenset({"store", "lane", "state", "version", "backlog", "at", "catalog"}),
    "req": frozenset({"store", "lane", "corr", "op", "args"}),
    "rep": frozenset({"store", "lane", "corr", "ok", "result", "error"}),
}
_FIELDS: dict[int, dict[str, frozenset[str]]] = {
    1: _FIELDS_V1,
    2: {
        **_FIELDS_V1,
        "hello": _FIELDS_V1["hello"] | {"protocols", "proof"},
        "ack": _FIELDS_V1["ack"] | {"protocol", "proof", "rewind", "refused"},
        "ho": frozenset({"state", "incarnation", "worker", "version", "protocols", "at"}),
    },
}


def wire_version(msg_type: str, m: Mapping[str, Any]) -> int:
    """The lowest protocol version whose schema holds map `m` of type `msg_type`: what a v1
    peer can read is sent as v1 (protocol.codec stamps it)."""
    for v in SUPPORTED_VERSIONS:
        fields = _FIELDS[v].get(msg_type)
        if fields is not None and m.keys() <= fields:
            return v
    return PROTOCOL_VERSION


def choose_version(spoken: tuple[int, ...]) -> int:
    """What head office answers a lane that speaks `spoken` (empty: a v1 lane)."""
    common = set(spoken or (1,)) & set(SUPPORTED_VERSIONS)
    return max(common) if common else 0


def _versions(m: Mapping[str, Any], key: str) -> tuple[int, ...]:
    v = m.get(key)
    if v is None:
        return ()
    if type(v) is not list or not 0 < len(v) <= 16 or any(type(x) is not int for x in v):
        raise ProtocolError("must be an array of 1-16 integers", key)
    if any(not 1 <= x <= 255 for x in v):
        raise ProtocolError("holds a version outside 1..255", key)
    return tuple(v)


def _proof(m: Mapping[str, Any], key: str) -> tuple[tuple[int, bytes], ...]:
    v = m.get(key)
    if v is None:
        return ()
    if type(v) is not list or len(v) > MAX_CHECKPOINTS:
        raise ProtocolError(f"must be an array of at most {MAX_CHECKPOINTS} [seq, hash]", key)
    out: list[tuple[int, bytes]] = []
    for i, pair in enumerate(v):
        if type(pair) is not list or len(pair) != 2:
            raise ProtocolError("must be [seq, hash]", f"{key}[{i}]")
        seq, h = pair
        if type(seq) is not int or not 0 <= seq <= U63:
            raise ProtocolError("seq must be an integer 0..2**63-1", f"{key}[{i}]")
        if type(h) is not bytes or len(h) != HASH_LEN:
            raise ProtocolError("must be a 32-byte hash", f"{key}[{i}]")
        out.append((seq, h))
    return tuple(out)


def from_map(m: Mapping[str, Any]) -> Message:
    """Validate a decoded map against the schema of its `t` and build the message."""
    v = m.get("v")
    # type check first: 1.0 == 1 and True == 1 in Python, but neither is an integer on the wire
    # Values are quoted only through mask_text: whatever was sent may hold a card number.
    if type(v) is not int or v not in SUPPORTED_VERSIONS:
        shown = mask_text(repr(v)[:40]) if type(v) in (int, str) else type(v).__name__
        speaks = " and ".join(str(x) for x in SUPPORTED_VERSIONS)
        raise ProtocolError(f"unsupported protocol version {shown}; this side speaks {speaks}", "v")
    fields = _FIELDS[v]
    t = m.get("t")
    if type(t) is not str or t not in fields:
        shown = mask_text(repr(t)[:40]) if type(t) is str else type(t).__name__
        raise ProtocolError(f"unknown message type {shown}", "t")
    build = MESSAGE_TYPES[t]
    unknown = m.keys() - fields[t] - {"v", "t"}
    if unknown:
        names = sorted(unknown)
        raise ProtocolError(f"unknown field(s) {mask_text(repr(names)[:200])} for {t}", names[0])
    return build(m)
