"""What every head-office storage backend provides, and the ingest rules they share.

`plan_batch` is the heart of exactly-once: given what head office holds for a lane, it decides
which entries of a batch are new, whether there is a gap, whether the hash chain holds, and that
no entry carries a card number (invariant 6). Document schemas are checked where documents are
interpreted; ingest stores each body as the exact bytes the lane chained.
Backends only persist its decisions, in one transaction, before anything is acknowledged.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from headoffice.store.sql import Sql
from headoffice.transit import projection as transit_projection
from protocol.chain import first_break
from protocol.codec import unpack
from protocol.documents import first_pan_body
from protocol.errors import LanesyncError
from protocol.identity import LaneId
from protocol.messages import Entry, JournalBatch, Status


class StoreError(LanesyncError):
    """The database refused a write; nothing of the group was committed or acknowledged."""


@dataclass(slots=True)
class LaneState:
    lane: LaneId
    epoch: int
    hwm: int
    last_hash: bytes
    lane_last_seq: int = 0
    gaps: int = 0
    redelivered: int = 0


@dataclass(slots=True)
class BatchPlan:
    """What to do with one batch: entries to apply and, if any, why the rest was refused."""

    new: list[Entry] = field(default_factory=list)
    redelivered: int = 0
    gap_from: int | None = None  # ask the lane to resend from here
    refusal: str | None = None  # quarantine the batch with this reason
    card_number: bool = False  # the refusal is a card number: keep the raw bytes out of storage


@dataclass(frozen=True, slots=True)
class CheckedBatch:
    """A batch checked on its own, before head office's state is consulted.

    `entries[:valid]` chain from the batch's prev_hash and carry no card number; the rest is
    refused for `refusal`. This part needs no database, so ingest runs it on another thread
    while the writer applies the previous group.
    """

    batch: JournalBatch
    valid: int
    refusal: str | None = None
    card_number: bool = False


def check_batch(batch: JournalBatch) -> CheckedBatch:
    entries = batch.entries
    broken = first_break(batch.prev_hash, entries)
    valid = len(entries) if broken is None else broken[0] - batch.first_seq
    refusal = (
        None
        if broken is None
        else f"hash chain broken at seq {broken[0]}: the entry does not match its hash or the "
        "entry before it"
    )
    pan = first_pan_body([e.body for e in entries[:valid]], unpack)
    if pan is not None:
        i, path = pan
        return CheckedBatch(
            batch,
            i,
            f"entry seq {entries[i].seq}: {path} looks like a full card number; the entry is "
            "not applied and its bytes are not kept",
            card_number=True,
        )
    return CheckedBatch(batch, valid, refusal)


def plan_batch(state: LaneState, checked: CheckedBatch | JournalBatch) -> BatchPlan:
    """Decide what of a batch to apply, given what head office holds for its lane."""
    if isinstance(checked, JournalBatch):
        checked = check_batch(checked)
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
        plan.new = entries[skip : checked.valid]
    if checked.refusal is not None and checked.valid < len(entries):
        plan.refusal = checked.refusal
        plan.card_number = checked.card_number
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
    resend_from: int | None = None
    reason: str | None = None
    quarantined: bool = False
    card_number: bool = False  # the refusal is a card number: do not store the raw bytes


class Store(Protocol):
    """A head-office storage backend. Methods run on the ingest's single writer thread."""

    @property
    def sql(self) -> Sql:
        """The connection for shared SQL (transit projection and requests, reports)."""

    def lock_lanes(self, lanes: Sequence[tuple[LaneId, int]]) -> None:
        """Called by Ingest.apply_group at the start of each group with every (lane, epoch)
        the group touches; begins the transaction and locks those lanes' rows for it in a
        fixed order (store, lane, epoch) so concurrent workers never deadlock."""

    def apply_batch(
        self, batch: CheckedBatch | JournalBatch, now_ms: int, *, defer: bool = False
    ) -> ApplyResult:
        """Plan and apply one batch. With `defer` its rows are written by the next `flush`
        (or `commit`), and the result's applied/duplicate counts are filled in then."""

    def flush(self) -> None:
        """Write the rows of deferred batches (before reading what they wrote)."""

    def lane_state(self, lane: LaneId, epoch: int) -> LaneState | None: ...

    def note_hello(self, lane: LaneId, epoch: int, last_seq: int, now_ms: int) -> LaneState: ...

    def save_status(self, status: Status) -> None: ...

    def quarantine(
        self, topic: str, lane: LaneId | None, reason: str, raw: bytes, now_ms: int
    ) -> None: ...

    def commit(self) -> None: ...

    def rollback(self) -> None: ...

    def close(self) -> None: ...


JournalRow = tuple[str, str, int, int, str, str, int, bytes, bytes, int, int]
DocumentRow = tuple[str, str, str, int, int, str, int]


@dataclass(slots=True)
class _PendingEntry:
    """A planned entry whose rows are not written yet (BatchWriter.flush writes them)."""

    row: JournalRow  # `applied` (the last field) is decided at flush
    entry: Entry
    candidate: bool  # the group's first entry with this txn_id
    result: ApplyResult


@dataclass(slots=True)
class PendingWrites:
    """The journal and document rows planned since the last flush, in apply order."""

    documents: dict[str, DocumentRow] = field(default_factory=dict)  # by txn_id, first wins
    entries: list[_PendingEntry] = field(default_factory=list)

    def clear(self) -> None:
        self.documents.clear()
        self.entries.clear()


class BatchWriter:
    """The part of apply_batch both backends share: what a plan means for the lane's state,
    the rows to write, the counters and the result. Backends supply the SQL.

    `apply_batch(..., defer=True)` plans a batch (lane state, gaps, chain, refusals: all known
    at once) but leaves its rows to `flush`, which writes every deferred batch of the group
    with one documents statement and one journal statement, and which `commit` calls. Ingest
    defers: a drain's group of 64 small batches then costs the database two statements
    instead of 128 round trips. The applied and duplicate counts of a deferred result are
    filled in by the flush (only the database knows whether a txn_id is new).
    """

    _counters: dict[str, int]
    _pending: PendingWrites

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

    def apply_batch(
        self, checked: CheckedBatch | JournalBatch, now_ms: int, *, defer: bool = False
    ) -> ApplyResult:
        batch = checked.batch if isinstance(checked, CheckedBatch) else checked
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
        if plan.new:
            store, lane, epoch = batch.lane.store, batch.lane.lane, batch.epoch
            pending = self._pending
            for e in plan.new:
                # The group's first entry of a txn_id is its candidate; the database says at
                # flush whether it is new (invariant 3: a txn_id applied anywhere before, or by
                # another worker meanwhile, stays applied once).
                candidate = e.txn_id not in pending.documents
                if candidate:
                    pending.documents[e.txn_id] = (
                        e.txn_id,
                        store,
                        lane,
                        epoch,
                        e.seq,
                        e.kind,
                        e.ts,
                    )
                row = (store, lane, epoch, e.seq, e.kind, e.txn_id, e.ts, e.body, e.hash, now_ms, 0)
                pending.entries.append(_PendingEntry(row, e, candidate, res))
            last = plan.new[-1]
            state.hwm, state.last_hash = last.seq, last.hash
            if not defer:
                self.flush()
        res.hwm = state.hwm
        if plan.refusal is not None:
            res.reason = plan.refusal
            res.quarantined = True
            res.card_number = plan.card_number
        return res

    def flush(self) -> None:
        """Write the deferred rows: new documents first, then every journal row (marked
        applied or not), then the transit projection of the new ones, in apply order. Call it
        before anything reads what the group wrote (transit requests do); commit calls it."""
        pending = self._pending
        if not pending.entries:
            return
        # Sorted by txn_id: two workers inserting the same ids take their index locks in one
        # order, so they wait for each other instead of deadlocking.
        inserted = self._insert_new_documents(sorted(pending.documents.values()))
        rows: list[JournalRow] = []
        projected: list[_PendingEntry] = []  # transit and stock documents: only these decode
        applied = 0
        for pe in pending.entries:
            new = pe.candidate and pe.entry.txn_id in inserted
            rows.append((*pe.row[:-1], 1) if new else pe.row)
            if new:
                applied += 1
                pe.result.applied += 1
                if pe.entry.kind in transit_projection.PROJECTED_KINDS:
                    projected.append(pe)
            else:
                pe.result.duplicate_txn += 1
        self._insert_journal(rows)
        for pe in projected:
            if transit_projection.apply_entry(self.sql, pe.result.lane, pe.entry) is not None:
                self._count("transit_projection_errors")
        self._count("entries_applied", applied)
        self._count("duplicate_txn_ids", len(rows) - applied)
        pending.clear()


def quarantine_fingerprint(topic: str, reason: str, raw: bytes) -> bytes:
    """The same refusal of the same bytes on the same topic folds into one quarantine row."""
    return hashlib.sha256(b"\0".join((topic.encode(), reason.encode(), raw))).digest()


def status_row(status: Status) -> tuple[Any, ...]:
    return (
        status.lane.store,
        status.lane.lane,
        status.state,
        status.version,
        status.backlog,
        status.at,
    )
