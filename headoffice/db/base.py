"""What every head-office storage backend provides, and the ingest rules they share.

`plan_batch` is the heart of exactly-once: given what head office holds for a lane, it decides
which entries of a batch are new, whether there is a gap, and whether the hash chain holds.
`check_batch` (no database, on the decoder thread) finds the entries head office cannot apply:
a card number in the body (invariant 6), or a body of a kind head office projects that breaks
what its projection needs (a projection's check, headoffice.db.projection). Those are held at
their seq (invariant 9): the lane's high-water mark and chain move past them, later entries
apply in order, and the held row keeps what an operator needs to release or void it. A held
entry has no journal or documents row, so it is never applied twice; releasing it (issue 16)
applies it once.

Document ownership (stores are isolated): a txn_id belongs to the lane whose entry first applied
it. The same txn_id again with the same kind and body bytes from the same store is a duplicate,
journaled with `applied = 0` as before (a POS resubmitting into a recreated journal). The same
txn_id with other content, or from another store, is held (`txn_conflict`) with a reason naming
the owning lane and the sender: never dropped without a trace, and never displacing the
document that was applied first.

Document schemas beyond that are checked where documents are interpreted (the extract); ingest
stores each body as the exact bytes the lane chained. Backends only persist these decisions, in
one transaction, before anything is acknowledged.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol

from headoffice.catalog.registry import Registry
from headoffice.db.projection import ProjectionRun, Projections, Unprojectable
from headoffice.db.sql import Sql
from headoffice.lograte import StoreLog
from protocol import pan
from protocol.chain import first_break
from protocol.codec import unpack
from protocol.documents import DOCUMENT_KINDS, first_pan_body
from protocol.errors import LanesyncError, ProtocolError
from protocol.identity import LaneId
from protocol.messages import MAX_ENTRY_BODY, Entry, JournalBatch, Status

log = logging.getLogger(__name__)
held_log = StoreLog(log)  # held entries: a few lines per store and 10 s

DEFAULT_MAX_EPOCHS_PER_LANE = 64
QUARANTINE_KEEP_BYTES = 4096  # of a refused payload, masked; its length and sha256 are kept too
MAX_REASON_CHARS = 1000
# A card number with separators spans at most 37 characters: masking this much past the cut
# masks every card number that reaches into the kept bytes, without scanning a whole payload.
_MASK_WINDOW = QUARANTINE_KEEP_BYTES + 64


class DatabaseError(LanesyncError):
    """The database refused a write; nothing of the group was committed or acknowledged."""

    code = "database"


class EpochRefused(LanesyncError):
    """A lane already has the most epochs head office keeps on record for one lane."""

    code = "epoch_refused"


class EpochRetired(EpochRefused):
    """A lane epoch an operator retired (`lanesync headoffice lane retire`, headoffice/retire.py):
    the till box it belongs to was replaced, so whatever it still sends is refused; only
    `lanesync import` of its USB export may still apply its documents."""

    code = "epoch_retired"


def retired_reason(lane: LaneId, epoch: int, retired_at_ms: int) -> str:
    """Why a retired epoch's message is refused, naming the retire (the same text for every
    message of that epoch, so its quarantine row folds)."""
    when = datetime.fromtimestamp(retired_at_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"lane {lane} epoch {epoch} was retired at head office on {when} (lanesync headoffice "
        "lane retire): its till box was replaced, so what it sends is refused; switch the old "
        "box off, and bring its backlog with lanesync import of its USB export"
    )


@dataclass(slots=True)
class LaneState:
    lane: LaneId
    epoch: int
    hwm: int
    last_hash: bytes
    lane_last_seq: int = 0
    gaps: int = 0
    redelivered: int = 0


@dataclass(frozen=True, slots=True)
class HeldEntry:
    """An entry held at its seq instead of applied; `code` says which rule, `reason` how."""

    entry: Entry
    code: str  # card_number, invalid_body, txn_conflict, apply_failed (the held table's CHECK)
    reason: str


def held_reason(text: str) -> str:
    """What a held row, an ack or a log may say: card numbers masked, length bounded."""
    return pan.mask_text(text)[:MAX_REASON_CHARS]


@dataclass(slots=True)
class BatchPlan:
    """What to do with one batch: entries to apply and hold, and why the rest was refused."""

    new: list[Entry] = field(default_factory=list)
    held: list[HeldEntry] = field(default_factory=list)
    advance: Entry | None = None  # the last entry applied or held: the lane's new hwm
    redelivered: int = 0
    gap_from: int | None = None  # ask the lane to resend from here
    refusal: str | None = None  # quarantine the batch with this reason


@dataclass(frozen=True, slots=True)
class CheckedBatch:
    """A batch checked on its own, before head office's state is consulted.

    `entries[:valid]` chain from the batch's prev_hash; the rest is refused for `refusal`.
    Of the valid ones, `held` (by seq) cannot be applied; `docs` (by seq) are the checked
    documents of the projections (headoffice.db.projection) that project them, each with the
    projection's index; `versions` (by seq) the catalog version each document says it was
    checked against. This part needs no database, so ingest runs it on another thread while
    the writer applies the previous group.
    """

    batch: JournalBatch
    valid: int
    refusal: str | None = None
    held: dict[int, HeldEntry] = field(default_factory=dict)
    docs: dict[int, Projected] = field(default_factory=dict)
    versions: dict[int, int] = field(default_factory=dict)


def _card_numbers(
    entries: Sequence[Entry], decoded: dict[int, Any] | None = None
) -> dict[int, HeldEntry]:
    """The entries whose body carries a card number, by seq. `decoded` (by the body's id):
    bodies check_entries decoded already, so the screen does not decode them again."""
    held: dict[int, HeldEntry] = {}
    read = unpack if not decoded else functools.partial(_decoded_or_unpack, decoded)
    try:
        start = 0
        while (hit := first_pan_body([e.body for e in entries[start:]], read)) is not None:
            i, path = hit
            e = entries[start + i]
            held[e.seq] = HeldEntry(
                e,
                "card_number",
                held_reason(
                    f"entry seq {e.seq}: {path} looks like a full card number; the entry is not "
                    "applied and only a masked copy of it is kept"
                ),
            )
            start += i + 1
    except Exception as exc:  # noqa: BLE001 - the screen itself failed: judge entry by entry
        if len(entries) > 1:
            log.warning("head office: card-number screen failed on a batch (%r)", type(exc))
            for one in entries:
                held |= _card_numbers([one], decoded)
            return held
        e = entries[0]
        held[e.seq] = HeldEntry(
            e,
            "card_number",
            f"entry seq {e.seq}: its body could not be screened for card numbers "
            f"({type(exc).__name__}); only a masked copy of it is kept",
        )
    return held


def _decoded_or_unpack(decoded: dict[int, Any], body: bytes) -> Any:
    """The body as codec.unpack reads it: the value check_entries decoded, else decoded now
    (a body that did not decode there is decoded again, so the screen sees its error)."""
    doc = decoded.get(id(body), _MISSING)
    return unpack(body) if doc is _MISSING else doc


_MISSING = object()


def check_batch(batch: JournalBatch, projections: Projections) -> CheckedBatch:
    entries = batch.entries
    broken = first_break(batch.prev_hash, entries)
    valid = len(entries) if broken is None else broken[0] - batch.first_seq
    refusal = (
        None
        if broken is None
        else f"hash chain broken at seq {broken[0]}: the entry does not match its hash or the "
        "entry before it"
    )
    held, docs, versions = check_entries(batch.lane, batch.epoch, entries[:valid], projections)
    return CheckedBatch(batch, valid, refusal, held, docs, versions)


# The checked documents of one entry: (index of the projection, its document), in order.
Projected = tuple[tuple[int, Any], ...]
MAX_VERSION = (1 << 63) - 1


def catalog_version(doc: dict[str, Any]) -> int | None:
    """The body's `catalog_version` (issue 15.1), or None when absent or not a version."""
    v = doc.get("catalog_version")
    if type(v) is int and 0 <= v <= MAX_VERSION:
        return v
    return None


def check_entries(
    lane: LaneId, epoch: int, entries: Sequence[Entry], projections: Projections
) -> tuple[dict[int, HeldEntry], dict[int, Projected], dict[int, int]]:
    """The rules of `check_batch` past the chain: which entries are held (by seq), the
    checked documents of the projections and the documents' catalog versions (by seq). A
    release runs them again on the held entry."""
    # Each document body is decoded once, here: the card-number screen walks the same value
    # for the bodies its byte checks flag (about one sale in five: a UUIDv7's time digits;
    # it only reads it), and the projections read it. The screen finds them by the body's
    # id (`entries` keeps every body alive), the projections by position.
    decoded_bodies: list[Any] = []
    by_id: dict[int, Any] = {}
    for e in entries:
        value = None
        if e.kind in DOCUMENT_KINDS:
            try:
                value = unpack(e.body, MAX_ENTRY_BODY)
            except ProtocolError:
                value = None
            else:
                by_id[id(e.body)] = value
        decoded_bodies.append(value)
    held = _card_numbers(entries, by_id)
    docs: dict[int, Projected] = {}
    versions: dict[int, int] = {}
    indexed = tuple(enumerate(projections))
    for e, decoded in zip(entries, decoded_bodies, strict=True):
        seq = e.seq
        if e.kind not in DOCUMENT_KINDS or seq in held:
            continue
        if type(decoded) is dict:
            version = decoded.get("catalog_version")  # as catalog_version(), inlined
            if type(version) is int and 0 <= version <= MAX_VERSION:
                versions[seq] = version
        checked: list[tuple[int, Any]] = []
        try:
            for i, projection in indexed:
                doc = projection.check(lane, epoch, e, decoded)
                if doc is not None:
                    checked.append((i, doc))
        except Unprojectable as exc:
            held[seq] = HeldEntry(
                e,
                "invalid_body",
                held_reason(f"entry seq {seq}: head office cannot apply a {e.kind}: {exc.problem}"),
            )
            continue
        if checked:
            docs[seq] = tuple(checked)
    return held, docs, versions


def hold_all(checked: CheckedBatch, code: str, reason: str) -> CheckedBatch:
    """The batch with every valid entry held for `reason` (an unregistered store or lane),
    except those a rule holds already for a card number: their body must stay masked."""
    held = {
        e.seq: HeldEntry(e, code, held_reason(reason))
        for e in checked.batch.entries[: checked.valid]
        if e.seq not in checked.held or checked.held[e.seq].code != "card_number"
    }
    return dataclasses.replace(checked, held=checked.held | held, docs={}, versions={})


def plan_batch(state: LaneState, checked: CheckedBatch | JournalBatch) -> BatchPlan:
    """Decide what of a batch to apply and hold, given what head office holds for its lane.
    A bare JournalBatch is checked without projections (only the card-number screen holds)."""
    if isinstance(checked, JournalBatch):
        checked = check_batch(checked, ())
    batch = checked.batch
    entries = batch.entries
    plan = BatchPlan()
    expected = state.hwm + 1
    if batch.first_seq > expected:
        plan.gap_from = expected
        return plan
    skip = expected - batch.first_seq
    plan.redelivered = min(skip, len(entries))
    if skip < len(entries):
        # The entry before the first new one must be the one head office already holds.
        link = batch.prev_hash if skip == 0 else entries[skip - 1].hash
        if link != state.last_hash:
            plan.refusal = (
                f"hash chain broken before seq {expected}: the batch does not continue the "
                f"chain head office holds up to seq {state.hwm}"
            )
            return plan
        held = checked.held
        if not held:  # the usual case: every valid entry is new
            plan.new = entries[skip : checked.valid]
        else:
            for e in entries[skip : checked.valid]:
                h = held.get(e.seq)
                if h is None:
                    plan.new.append(e)
                else:
                    plan.held.append(h)
        if checked.valid > skip:
            plan.advance = entries[checked.valid - 1]
    if checked.refusal is not None and checked.valid < len(entries):
        plan.refusal = checked.refusal
    return plan


@dataclass(slots=True)
class ApplyResult:
    """Outcome of one message, for the ack and the counters."""

    lane: LaneId
    epoch: int
    hwm: int
    applied: int = 0
    redelivered: int = 0
    duplicate_txn: int = 0
    held: int = 0  # entries held at their seq (the hwm moved past them)
    resend_from: int | None = None
    reason: str | None = None
    quarantined: bool = False  # the batch's tail was refused (a chain break): quarantine it


@dataclass(frozen=True, slots=True)
class QuarantineRow:
    """What a quarantine row keeps of a refused message: never a card number, never more than
    QUARANTINE_KEEP_BYTES of it, and enough to recognise the original (length, sha256)."""

    reason: str
    kept: bytes
    raw_len: int
    raw_sha256: bytes
    fingerprint: bytes

    @classmethod
    def of(cls, topic: str, reason: str, raw: bytes, *, fold: str | None = None) -> QuarantineRow:
        """`fold`: every refusal on this topic with this key counts on one row, whatever the
        bytes and the reason (a lane sending new epochs beyond its cap, a store flooding);
        the row keeps the first one's reason and bytes."""
        reason = held_reason(reason)
        kept = pan.mask_bytes(raw[:_MASK_WINDOW])[:QUARANTINE_KEEP_BYTES]
        return cls(
            reason,
            kept,
            len(raw),
            hashlib.sha256(raw).digest(),
            quarantine_fingerprint(topic, reason, raw)
            if fold is None
            else quarantine_fingerprint(topic, f"fold:{fold}", b""),
        )


def quarantine_fingerprint(topic: str, reason: str, raw: bytes) -> bytes:
    """The same refusal of the same bytes on the same topic folds into one quarantine row."""
    return hashlib.sha256(b"\0".join((topic.encode(), reason.encode(), raw))).digest()


def scrub_legacy_quarantine(sql: Sql) -> int:
    """Mask and cut quarantine rows written before schema 4 (raw kept whole, card numbers
    included): keep what a row of today keeps. Runs when a store opens the database; each
    row is rewritten once (`raw_sha256 IS NULL` only until then). Returns the rows rewritten."""
    done = 0
    while True:
        rows = sql.fetchall(
            "SELECT id, reason, raw FROM quarantine WHERE raw_sha256 IS NULL ORDER BY id LIMIT 200"
        )
        if not rows:
            return done
        sql.begin()
        try:
            for qid, reason, stored in rows:
                row = QuarantineRow.of("", str(reason), bytes(stored))
                sql.execute(
                    "UPDATE quarantine SET reason = ?, raw = ?, raw_len = ?, raw_sha256 = ? "
                    "WHERE id = ? AND raw_sha256 IS NULL",
                    (row.reason, row.kept, row.raw_len, row.raw_sha256, qid),
                )
            sql.commit()
        except BaseException:
            sql.rollback()
            raise
        done += len(rows)


# --- held entries: what an operator sees, and the outcome of releasing or voiding one ----------

HELD_RECORD_COLUMNS = (
    "id, store, lane, epoch, seq, kind, txn_id, ts, hash, code, reason, body, body_masked, "
    "body_len, body_sha256, held_at, state, closed_at, closed_by, close_reason"
)
CARD_NUMBER_VOID_ONLY = (
    "its body carries a card number, so head office keeps only a masked copy of it and can "
    "never apply it; void it (lanesync held void {id} --reason TEXT) and have the store "
    "enter the sale again without the card number"
)


@dataclass(frozen=True, slots=True)
class HeldRecord:
    """One row of `held` (SELECT HELD_RECORD_COLUMNS): `body` is None for a card number."""

    id: int
    store: str
    lane: str
    epoch: int
    seq: int
    kind: str
    txn_id: str
    ts: int
    hash: bytes
    code: str
    reason: str
    body: bytes | None
    body_masked: bytes | None
    body_len: int
    body_sha256: bytes
    held_at: int
    state: str
    closed_at: int | None
    closed_by: str | None
    close_reason: str | None

    @classmethod
    def of(cls, row: Sequence[Any]) -> HeldRecord:
        r = list(row)
        for i in (8, 11, 12, 14):  # memoryview on PostgreSQL and for sqlite BLOBs alike
            if r[i] is not None:
                r[i] = bytes(r[i])
        return cls(*r)

    @property
    def lane_id(self) -> LaneId:
        return LaneId(self.store, self.lane)

    def entry(self) -> Entry:
        assert self.body is not None
        return Entry(self.seq, self.kind, self.txn_id, self.ts, self.body, self.hash)


@dataclass(frozen=True, slots=True)
class HeldOutcome:
    """What releasing or voiding one held entry did. `refused` None: done, now or before
    (both are idempotent: `changed` says whether this call did it)."""

    id: int
    action: str  # release, void
    state: str | None  # the entry's state after the call (None: no such entry)
    changed: bool = False
    refused: str | None = None
    code: str | None = None
    applied: int = 0  # release: 1 its document applied, 0 it was a duplicate of one applied

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Database(Protocol):
    """A head-office storage backend. Methods run on the ingest's single writer thread."""

    projections: Projections  # what applied documents are projected through (13.3)

    @property
    def sql(self) -> Sql:
        """The connection for shared SQL (transit projection and requests, reports)."""

    def lock_lanes(self, lanes: Sequence[tuple[LaneId, int]]) -> None:
        """Called by GroupApplier.apply_group at the start of each group with every (lane, epoch)
        the group touches; begins the transaction and locks those lanes' rows for it in a
        fixed order (store, lane, epoch) so concurrent workers never deadlock."""

    def apply_batch(
        self, batch: CheckedBatch | JournalBatch, now_ms: int, *, defer: bool = False
    ) -> ApplyResult:
        """Plan and apply one batch. With `defer` its rows are written by the next `flush`
        (or `commit`), and the result's applied/duplicate/held counts are filled in then.
        Raises EpochRefused for a new epoch of a lane that has the most on record."""

    def hold_entry(
        self, lane: LaneId, epoch: int, prev_hash: bytes, held: HeldEntry, now_ms: int
    ) -> ApplyResult:
        """Hold one entry at its seq (ingest's last resort when applying it failed): the
        lane's mark moves past it if it is the next one and chains from `prev_hash`."""

    def flush(self) -> None:
        """Write the rows of deferred batches (before reading what they wrote)."""

    def lane_state(self, lane: LaneId, epoch: int) -> LaneState | None: ...

    def note_hello(
        self, lane: LaneId, epoch: int, last_seq: int, now_ms: int, *, catalog: int | None = None
    ) -> LaneState:
        """Raises EpochRefused like apply_batch. `catalog`: the catalog version the lane says
        it holds complete (stored in lanes.catalog_version at commit)."""

    def save_status(self, status: Status) -> None:
        """The lane's retained status; an online one also says the catalog version the lane
        holds (an offline one is the lane's last will, written when it connected: its
        version may be older than what the lane held when it went away, so it is not used)."""

    def quarantine(
        self,
        topic: str,
        lane: LaneId | None,
        reason: str,
        raw: bytes,
        now_ms: int,
        *,
        fold: str | None = None,
        times: int = 1,
    ) -> None:
        """Keep a refused message (QuarantineRow: masked, capped, counted `times`)."""

    def release_held(
        self,
        ids: Sequence[int],
        by: str,
        note: str,
        now_ms: int,
        *,
        registry: Registry | None = None,
    ) -> list[HeldOutcome]:
        """Apply held entries once, in (store, lane, epoch, seq) order, as if they had arrived
        in order (journal row, document, projection); the lanes' marks do not move (they moved
        past the entries already). An entry a rule still holds stays held with today's reason;
        the store registry is one of them (`registry`, or the catalog's current one). In the
        caller's transaction (the caller commits)."""

    def void_held(self, ids: Sequence[int], by: str, reason: str, now_ms: int) -> list[HeldOutcome]:
        """Close held entries without applying them, recording who, when and why."""

    def held_ids(
        self, store: str, lane: str | None, code: str, limit: int | None = None
    ) -> list[int]:
        """The open held entries of a store (or one lane) with `code`, in (epoch, seq) order,
        the first `limit` of them."""

    def held_lanes(self, code: str) -> set[tuple[str, str]]:
        """The (store, lane) pairs with open held entries of `code`."""

    def chain_hashes(self, lane: LaneId, epoch: int, seqs: Sequence[int]) -> dict[int, bytes]:
        """Head office's chain hash at each of `seqs` of a lane's epoch (applied or held);
        seqs it holds no row for are left out (issue 16.7: the hello's proof)."""

    def entry_ts(self, lane: LaneId, epoch: int, seq: int) -> int | None:
        """The lane's journaling time (ms) of entry `seq` of an epoch (applied or held), None
        when head office holds no row for it."""

    def commit(self) -> None: ...

    def rollback(self) -> None: ...

    def close(self) -> None: ...


JournalRow = tuple[str, str, int, int, str, str, int, bytes, bytes, int, int]
# txn_id, store, lane, epoch, seq, kind, ts, catalog_version (None: the body says none)
DocumentRow = tuple[str, str, str, int, int, str, int, int | None]
# store, lane, epoch, seq, kind, txn_id, ts, hash, code, reason, body, body_masked, body_len,
# body_sha256, held_at
HeldRow = tuple[
    str, str, int, int, str, str, int, bytes, str, str, bytes | None, bytes | None, int, bytes, int
]
HELD_COLUMNS = (
    "store, lane, epoch, seq, kind, txn_id, ts, hash, code, reason, body, body_masked, "
    "body_len, body_sha256, held_at"
)


@dataclass(frozen=True, slots=True)
class Owner:
    """The lane entry that applied a document (its txn_id's owner), and what it carried."""

    store: str
    lane: str
    epoch: int
    seq: int
    kind: str
    body: bytes | None  # None when head office holds no journal row for it


def held_row(lane: LaneId, epoch: int, h: HeldEntry, now_ms: int) -> HeldRow:
    e = h.entry
    card = h.code == "card_number"
    return (
        lane.store,
        lane.lane,
        epoch,
        e.seq,
        e.kind,
        e.txn_id,
        e.ts,
        e.hash,
        h.code,
        held_reason(h.reason),
        None if card else e.body,
        pan.mask_bytes(e.body) if card else None,
        len(e.body),
        hashlib.sha256(e.body).digest(),
        now_ms,
    )


class _PendingEntry(NamedTuple):
    """A planned entry whose rows are not written yet (BatchWriter.flush writes them). A
    tuple made with tuple.__new__, one per entry (a dataclass's generated __init__ showed in
    ingest's profile); its journal row is `lane + entry + applied`, three tuples joined."""

    lane: tuple[str, str, int]  # store, lane, epoch: the journal row's first three columns
    entry: Entry  # (seq, kind, txn_id, ts, body, hash): its next six, in that order
    candidate: bool  # the group's first entry with this txn_id
    result: ApplyResult
    docs: Projected  # the checked documents of the projections that project it
    applied: tuple[int, int]  # (received_at, 1): its last two when applied (flush decides)

    @property
    def received_at(self) -> int:
        return self.applied[0]

    def journal_row(self, applied: bool) -> JournalRow:
        tail = self.applied if applied else (self.applied[0], 0)
        return self.lane + self.entry + tail


@dataclass(slots=True)
class PendingWrites:
    """The journal, document and held rows planned since the last flush, in apply order."""

    documents: dict[str, DocumentRow] = field(default_factory=dict)  # by txn_id, first wins
    entries: list[_PendingEntry] = field(default_factory=list)
    held: list[tuple[HeldRow, ApplyResult]] = field(default_factory=list)

    def clear(self) -> None:
        self.documents.clear()
        self.entries.clear()
        self.held.clear()


def conflict_reason(e: Entry, lane: LaneId, epoch: int, owner: Owner) -> str:
    """Why an entry whose txn_id another entry owns is held: both lanes named."""
    why = (
        "comes from another store"
        if owner.store != lane.store
        else f"has other content (a {e.kind} of {len(e.body)} bytes)"
    )
    return held_reason(
        f"entry seq {e.seq}: txn_id {e.txn_id} belongs to lane {owner.store}/{owner.lane} "
        f"(epoch {owner.epoch}, seq {owner.seq}); this entry from lane {lane} (epoch {epoch}) "
        f"{why}; held for an operator, the applied document stands"
    )


def is_duplicate(e: Entry, lane: LaneId, owner: Owner) -> bool:
    """The same document again from the same store (a resubmission): applied once."""
    return (
        owner.store == lane.store
        and owner.kind == e.kind
        and (owner.body is None or owner.body == e.body)
    )


class BatchWriter:
    """The part of apply_batch both backends share: what a plan means for the lane's state,
    the rows to write, the counters and the result. Backends supply the SQL.

    `apply_batch(..., defer=True)` plans a batch (lane state, gaps, chain, refusals: all known
    at once) but leaves its rows to `flush`, which writes every deferred batch of the group
    with one documents statement and one journal statement, and which `commit` calls. Ingest
    defers: a drain's group of 64 small batches then costs the database two statements
    instead of 128 round trips. The applied, duplicate and held counts of a deferred result
    are filled in by the flush (only the database knows whether a txn_id is new).
    """

    _counters: dict[str, int]
    _pending: PendingWrites
    projections: Projections  # handed over by whoever opens the database (issue 13.3)
    # Whether a retired epoch's entries are still applied: only `lanesync import` of the old
    # box's USB export opens the database so (headoffice/retire.py); ingest refuses them.
    accepts_retired: bool

    @property
    def sql(self) -> Sql:
        raise NotImplementedError

    def _count(self, name: str, n: int = 1) -> None:
        if n:
            self._counters[name] = self._counters.get(name, 0) + n

    def _lane_for_write(self, lane: LaneId, epoch: int, now_ms: int) -> LaneState:
        raise NotImplementedError

    def _insert_new_documents(self, documents: list[DocumentRow]) -> set[str]:
        """Insert the rows whose txn_id head office does not hold yet (each txn_id appears
        once in `documents`, sorted by it); return the txn_ids inserted."""
        raise NotImplementedError

    def _insert_journal(self, journal: list[JournalRow]) -> None:
        raise NotImplementedError

    def _insert_held(self, held: list[HeldRow]) -> None:
        raise NotImplementedError

    def _owners(self, txn_ids: list[str]) -> dict[str, Owner]:
        """The owners of documents head office holds, by txn_id (only for the few txn_ids a
        flush found already applied)."""
        raise NotImplementedError

    def apply_batch(
        self, checked: CheckedBatch | JournalBatch, now_ms: int, *, defer: bool = False
    ) -> ApplyResult:
        if isinstance(checked, JournalBatch):
            checked = check_batch(checked, self.projections)
        batch = checked.batch
        state = self._lane_for_write(batch.lane, batch.epoch, now_ms)
        state.lane_last_seq = max(state.lane_last_seq, batch.last_seq)
        plan = plan_batch(state, checked)
        res = ApplyResult(batch.lane, batch.epoch, state.hwm, redelivered=plan.redelivered)
        state.redelivered += plan.redelivered
        self._count("entries_redelivered", plan.redelivered)
        if plan.gap_from is not None:
            state.gaps += 1
            self._count("gaps")
            res.resend_from = plan.gap_from
            res.reason = f"gap: expected seq {plan.gap_from}, batch starts at {batch.first_seq}"
            return res
        if plan.advance is not None:
            store, lane, epoch = batch.lane.store, batch.lane.lane, batch.epoch
            pending = self._pending
            documents, append = pending.documents, pending.entries.append
            docs, versions = checked.docs, checked.versions
            key, tail, new = (store, lane, epoch), (now_ms, 1), tuple.__new__
            for e in plan.new:
                # The group's first entry of a txn_id is its candidate; the database says at
                # flush whether it is new (invariant 3: a txn_id applied anywhere before, or by
                # another worker meanwhile, stays applied once).
                seq, kind, txn_id, ts = e[0], e[1], e[2], e[3]
                candidate = txn_id not in documents
                if candidate:
                    documents[txn_id] = (
                        txn_id,
                        store,
                        lane,
                        epoch,
                        seq,
                        kind,
                        ts,
                        versions.get(seq),
                    )
                append(new(_PendingEntry, (key, e, candidate, res, docs.get(seq, ()), tail)))
            for h in plan.held:
                pending.held.append((held_row(batch.lane, epoch, h, now_ms), res))
                held_log.warning(store, "head office: %s/%s held %s", store, lane, h.reason)
            state.hwm, state.last_hash = plan.advance.seq, plan.advance.hash
            if not defer:
                self.flush()
        res.hwm = state.hwm
        if plan.refusal is not None:
            res.reason = plan.refusal
            res.quarantined = True
        return res

    def hold_entry(
        self, lane: LaneId, epoch: int, prev_hash: bytes, held: HeldEntry, now_ms: int
    ) -> ApplyResult:
        state = self._lane_for_write(lane, epoch, now_ms)
        e = held.entry
        res = ApplyResult(lane, epoch, state.hwm)
        if e.seq <= state.hwm:
            res.redelivered = 1
            return res
        if e.seq != state.hwm + 1 or prev_hash != state.last_hash:
            res.reason = f"seq {e.seq} is not the next entry of the chain head office holds"
            return res
        self._pending.held.append((held_row(lane, epoch, held, now_ms), res))
        held_log.warning(lane.store, "head office: %s held %s", lane, held.reason)
        state.hwm, state.last_hash = e.seq, e.hash
        res.hwm = e.seq
        self.flush()
        return res

    def flush(self) -> None:
        """Write the deferred rows: new documents first, then every journal row (marked
        applied or not), the held entries, then the projections of the new ones, in apply
        order. Call it before anything reads what the group wrote (transit requests do);
        commit calls it."""
        pending = self._pending
        if not pending.entries and not pending.held:
            return
        # Sorted by txn_id: two workers inserting the same ids take their index locks in one
        # order, so they wait for each other instead of deadlocking.
        inserted = self._insert_new_documents(sorted(pending.documents.values()))
        # The usual case, every entry a new document: nobody else owns any of them.
        everything_new = len(inserted) == len(pending.documents) == len(pending.entries)
        rows: list[JournalRow] = []
        projected: list[_PendingEntry] = []  # those with documents the projections checked
        held = [h for h, _ in pending.held]
        duplicates = 0
        if everything_new:
            # each entry is its txn_id's candidate (as many entries as documents) and new
            for pe in pending.entries:
                rows.append(pe.lane + pe.entry + pe.applied)
                pe.result.applied += 1
                if pe.docs:
                    projected.append(pe)
            applied = len(rows)
        else:
            applied = 0
            owners = self._owners_of_the_rest(inserted)
            for pe in pending.entries:
                e = pe.entry
                if pe.candidate and e.txn_id in inserted:
                    rows.append(pe.journal_row(True))
                    applied += 1
                    pe.result.applied += 1
                    if pe.docs:
                        projected.append(pe)
                    continue
                owner = owners.get(e.txn_id)
                lane = pe.result.lane
                if owner is None or is_duplicate(e, lane, owner):
                    rows.append(pe.journal_row(False))
                    duplicates += 1
                    pe.result.duplicate_txn += 1
                else:
                    h = HeldEntry(
                        e, "txn_conflict", conflict_reason(e, lane, pe.result.epoch, owner)
                    )
                    held.append(held_row(lane, pe.result.epoch, h, pe.received_at))
                    pe.result.held += 1
                    held_log.warning(lane.store, "head office: %s held %s", lane, h.reason)
        for _, res in pending.held:
            res.held += 1
        if rows:
            self._insert_journal(rows)
        if held:
            self._insert_held(held)
        runs: dict[int, ProjectionRun] = {}
        for pe in projected:
            for i, doc in pe.docs:
                run = runs.get(i) or runs.setdefault(i, self.projections[i].start(self.sql))
                if run.apply(pe.result.lane, pe.result.epoch, pe.entry, doc):
                    self._count(f"{self.projections[i].name}_projection_errors")
        for _, run in sorted(runs.items()):
            run.finish()
        self._count("entries_applied", applied)
        self._count("duplicate_txn_ids", duplicates)
        self._count("entries_held", len(held))
        pending.clear()

    def chain_hashes(self, lane: LaneId, epoch: int, seqs: Sequence[int]) -> dict[int, bytes]:
        # wave/sync's one method here (issue 16.7): journal rows, then held ones (never both
        # differ: a released entry has both rows, with the same hash)
        want = sorted({s for s in seqs if s > 0})[:64]
        out: dict[int, bytes] = {}
        if not want:
            return out
        marks = ",".join("?" * len(want))
        for table in ("journal", "held"):
            for seq, h in self.sql.fetchall(
                f"SELECT seq, hash FROM {table} WHERE store = ? AND lane = ? AND epoch = ? "  # noqa: S608
                f"AND seq IN ({marks})",
                (lane.store, lane.lane, epoch, *want),
            ):
                out.setdefault(int(seq), bytes(h))
        return out

    def entry_ts(self, lane: LaneId, epoch: int, seq: int) -> int | None:
        for table in ("journal", "held"):
            row = self.sql.fetchone(
                f"SELECT ts FROM {table} WHERE store = ? AND lane = ? AND epoch = ? AND seq = ?",  # noqa: S608
                (lane.store, lane.lane, epoch, seq),
            )
            if row is not None:
                return int(row[0])
        return None

    # --- held entries: release and void (issue 16) -----------------------------------------

    def _begin(self) -> None:
        raise NotImplementedError

    def _lock_held(self, ids: Sequence[int]) -> dict[int, HeldRecord]:
        """The rows of `ids`, locked for this transaction (SQLite: BEGIN IMMEDIATE already
        holds the file's write lock; PostgreSQL: FOR UPDATE, in id order). Another releaser
        of the same entry waits here, then sees it closed: each entry is applied once."""
        self._begin()
        found: dict[int, HeldRecord] = {}
        lock = " FOR UPDATE" if self.sql.dialect == "postgres" else ""
        wanted = sorted(set(ids))
        for i in range(0, len(wanted), 500):
            chunk = wanted[i : i + 500]
            marks = ",".join("?" * len(chunk))
            for row in self.sql.fetchall(
                f"SELECT {HELD_RECORD_COLUMNS} FROM held WHERE id IN ({marks}) "  # noqa: S608
                f"ORDER BY id{lock}",
                chunk,
            ):
                rec = HeldRecord.of(row)
                found[rec.id] = rec
        return found

    def held_ids(
        self, store: str, lane: str | None, code: str, limit: int | None = None
    ) -> list[int]:
        self._begin()
        cut = -1 if limit is None else limit  # LIMIT -1: all (SQLite); PostgreSQL: NULL
        if lane is None:
            rows = self.sql.fetchall(
                "SELECT id FROM held WHERE state = 'held' AND store = ? AND code = ? "
                "ORDER BY lane, epoch, seq LIMIT ?",
                (store, code, cut if self.sql.dialect == "sqlite" else limit),
            )
        else:
            rows = self.sql.fetchall(
                "SELECT id FROM held WHERE state = 'held' AND store = ? AND lane = ? "
                "AND code = ? ORDER BY epoch, seq LIMIT ?",
                (store, lane, code, cut if self.sql.dialect == "sqlite" else limit),
            )
        return [int(r[0]) for r in rows]

    def held_lanes(self, code: str) -> set[tuple[str, str]]:
        self._begin()
        rows = self.sql.fetchall(
            "SELECT DISTINCT store, lane FROM held WHERE state = 'held' AND code = ?", (code,)
        )
        return {(str(r[0]), str(r[1])) for r in rows}

    def release_held(
        self,
        ids: Sequence[int],
        by: str,
        note: str,
        now_ms: int,
        *,
        registry: Registry | None = None,
    ) -> list[HeldOutcome]:
        self.flush()  # the group's own rows first: an owner among them is seen
        records = self._lock_held(ids)
        outcomes = {
            i: HeldOutcome(i, "release", None, refused=f"no held entry {i}")
            for i in ids
            if i not in records
        }
        if registry is None and records:
            registry = Registry()
            registry.refresh(self.sql)
        ready: list[tuple[HeldRecord, Entry, Projected | None, int | None]] = []
        for rec in sorted(records.values(), key=lambda r: (r.store, r.lane, r.epoch, r.seq)):
            assert registry is not None
            done = self._release_check(rec, registry)
            if isinstance(done, HeldOutcome):
                outcomes[rec.id] = done
            else:
                ready.append((rec, *done))
        # One owners read, one flush and one update for them all (a registration may release
        # thousands), in the order above: the journal rows are written in (epoch, seq) order.
        owners = self._owners(sorted({e.txn_id for _, e, _, _ in ready})) if ready else {}
        applying: list[tuple[HeldRecord, Entry, ApplyResult]] = []
        pending = self._pending
        for rec, e, doc, version in ready:
            lane = rec.lane_id
            owner = owners.get(e.txn_id)
            if owner is not None and not is_duplicate(e, lane, owner):
                outcomes[rec.id] = self._still_held(
                    rec, "txn_conflict", conflict_reason(e, lane, rec.epoch, owner)
                )
                continue
            res = ApplyResult(lane, rec.epoch, rec.seq)
            candidate = e.txn_id not in pending.documents
            if candidate:
                pending.documents[e.txn_id] = (
                    e.txn_id,
                    rec.store,
                    rec.lane,
                    rec.epoch,
                    e.seq,
                    e.kind,
                    e.ts,
                    version,
                )
            pending.entries.append(
                _PendingEntry(
                    (rec.store, rec.lane, rec.epoch), e, candidate, res, doc or (), (now_ms, 1)
                )
            )
            applying.append((rec, e, res))
        self.flush()
        released: list[int] = []
        for rec, e, res in applying:
            if res.held:
                # its txn_id was applied by another entry meanwhile (another worker, or an
                # earlier entry of this release with other content): held again, owner named
                owner = self._owners([e.txn_id]).get(e.txn_id)
                why = (
                    conflict_reason(e, rec.lane_id, rec.epoch, owner)
                    if owner is not None
                    else f"entry seq {e.seq}: txn_id {e.txn_id} was applied meanwhile"
                )
                outcomes[rec.id] = self._still_held(rec, "txn_conflict", why)
                continue
            released.append(rec.id)
            outcomes[rec.id] = HeldOutcome(
                rec.id, "release", "released", True, code=rec.code, applied=res.applied
            )
        self._close_released(released, by, note, now_ms)
        if released:
            store = records[released[0]].store
            held_log.warning(
                store, "head office: %s released %d held entries: %s", by, len(released), note
            )
        return [outcomes[i] for i in dict.fromkeys(ids)]

    def _release_check(
        self, rec: HeldRecord, registry: Registry
    ) -> HeldOutcome | tuple[Entry, Projected | None, int | None]:
        """A held entry's outcome when it is not to be applied (closed already, a card
        number, a rule refusing it today), else the entry and its checked body."""
        if rec.state == "released":
            return HeldOutcome(rec.id, "release", "released", code=rec.code)
        if rec.state == "voided":
            return HeldOutcome(
                rec.id,
                "release",
                "voided",
                refused=f"held entry {rec.id} was voided by {rec.closed_by} "
                f"({rec.close_reason}); a voided entry is never applied",
                code=rec.code,
            )
        if rec.code == "card_number" or rec.body is None:
            return HeldOutcome(
                rec.id,
                "release",
                "held",
                refused=f"held entry {rec.id} cannot be released: "
                + CARD_NUMBER_VOID_ONLY.format(id=rec.id),
                code=rec.code,
            )
        e = rec.entry()
        unknown = registry.refusal(rec.lane_id)
        if unknown is not None:
            out = self._still_held(rec, "unregistered", unknown)
            return dataclasses.replace(
                out,
                refused=f"{out.refused}; once the catalog lists it (lanesync catalog load "
                "stores|lanes FILE) its entries are released by themselves",
            )
        held, docs, versions = check_entries(rec.lane_id, rec.epoch, [e], self.projections)
        if e.seq in held:
            return self._still_held(rec, held[e.seq].code, held[e.seq].reason)
        return e, docs.get(e.seq), versions.get(e.seq)

    def _still_held(self, rec: HeldRecord, code: str, reason: str) -> HeldOutcome:
        if (code, held_reason(reason)) != (rec.code, rec.reason):
            self._rehold(rec, code, reason)
        return HeldOutcome(
            rec.id,
            "release",
            "held",
            refused=f"held entry {rec.id} is still refused: {held_reason(reason)}",
            code=code,
        )

    def _close_released(self, ids: list[int], by: str, note: str, now_ms: int) -> None:
        changed = 0
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            changed += self.sql.execute(
                "UPDATE held SET state = 'released', closed_at = ?, closed_by = ?, "  # noqa: S608
                f"close_reason = ? WHERE id IN ({marks}) AND state = 'held'",
                (now_ms, held_reason(by), held_reason(note), *chunk),
            )
        if changed != len(ids):  # cannot happen under the row locks: fail rather than apply twice
            raise DatabaseError(f"{len(ids) - changed} held entries changed while being released")
        self._count("entries_released", len(ids))

    def _rehold(self, rec: HeldRecord, code: str, reason: str) -> None:
        """A release found the entry refused again: keep it held with today's code and reason
        (a card number found now: only a masked copy of the body stays)."""
        reason = held_reason(reason)
        if code == "card_number" and rec.body is not None:
            self.sql.execute(
                "UPDATE held SET code = ?, reason = ?, body = NULL, body_masked = ? "
                "WHERE id = ? AND state = 'held'",
                (code, reason, pan.mask_bytes(rec.body), rec.id),
            )
        else:
            self.sql.execute(
                "UPDATE held SET code = ?, reason = ? WHERE id = ? AND state = 'held'",
                (code, reason, rec.id),
            )

    def void_held(self, ids: Sequence[int], by: str, reason: str, now_ms: int) -> list[HeldOutcome]:
        if not reason.strip():
            raise ValueError("a reason is required to void a held entry")
        records = self._lock_held(ids)
        out: list[HeldOutcome] = []
        for i in dict.fromkeys(ids):
            rec = records.get(i)
            if rec is None:
                out.append(HeldOutcome(i, "void", None, refused=f"no held entry {i}"))
            elif rec.state == "voided":
                out.append(HeldOutcome(i, "void", "voided", code=rec.code))
            elif rec.state == "released":
                out.append(
                    HeldOutcome(
                        i,
                        "void",
                        "released",
                        refused=f"held entry {i} was released by {rec.closed_by}: its document "
                        "is applied, so it cannot be voided",
                        code=rec.code,
                    )
                )
            else:
                changed = self.sql.execute(
                    "UPDATE held SET state = 'voided', closed_at = ?, closed_by = ?, "
                    "close_reason = ? WHERE id = ? AND state = 'held'",
                    (now_ms, held_reason(by), held_reason(reason), i),
                )
                if changed != 1:
                    raise DatabaseError(f"held entry {i} changed while it was being voided")
                self._count("entries_voided")
                held_log.warning(
                    rec.store, "head office: %s voided held entry %d (seq %d)", by, i, rec.seq
                )
                out.append(HeldOutcome(i, "void", "voided", True, code=rec.code))
        return out

    def _owners_of_the_rest(self, inserted: set[str]) -> dict[str, Owner]:
        """For each pending entry that did not insert its document: who owns that txn_id.
        An earlier entry of this very flush, or a document head office already holds."""
        owners: dict[str, Owner] = {}
        ask: set[str] = set()
        for pe in self._pending.entries:
            e = pe.entry
            if pe.candidate and e.txn_id in inserted:
                store, lane, epoch = pe.lane
                owners[e.txn_id] = Owner(store, lane, epoch, e.seq, e.kind, e.body)
            elif e.txn_id not in owners:
                ask.add(e.txn_id)
        ask -= owners.keys()
        if ask:
            owners |= self._owners(sorted(ask))
        return owners


def catalog_updates(
    told: dict[tuple[str, str], int], dialect: str
) -> tuple[str, list[tuple[Any, ...]]]:
    """The statement and rows that store what lanes said of their catalog version: on every
    epoch row of the lane (the version belongs to the till, not to one journal epoch), in
    (store, lane) order, only where it changed."""
    distinct = "IS DISTINCT FROM" if dialect == "postgres" else "IS NOT"
    return (
        "UPDATE lanes SET catalog_version = ? WHERE store = ? AND lane = ? "  # noqa: S608
        f"AND catalog_version {distinct} ?",
        [(v, s, ln, v) for (s, ln), v in sorted(told.items())],
    )


def status_row(status: Status) -> tuple[Any, ...]:
    return (
        status.lane.store,
        status.lane.lane,
        status.state,
        status.version,
        status.backlog,
        status.at,
    )
