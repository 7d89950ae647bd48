"""What every head-office storage backend provides, and the ingest rules they share.

`plan_batch` is the heart of exactly-once: given what head office holds for a lane, it decides
which entries of a batch are new, whether there is a gap, and whether the hash chain holds.
Backends only persist its decisions, in one transaction, before anything is acknowledged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from protocol.chain import first_break
from protocol.codec import unpack
from protocol.documents import check_document
from protocol.errors import LanesyncError, ProtocolError
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


def plan_batch(state: LaneState, batch: JournalBatch) -> BatchPlan:
    plan = BatchPlan()
    expected = state.hwm + 1
    if batch.first_seq > expected:
        plan.gap_from = expected
        return plan
    skip = expected - batch.first_seq
    plan.redelivered = min(skip, len(batch.entries))
    rest = batch.entries[skip:]
    if not rest:
        return plan
    if skip == 0 and batch.prev_hash != state.last_hash:
        plan.refusal = (
            f"hash chain broken before seq {batch.first_seq}: batch prev_hash does not match "
            "the hash head office holds for the previous entry"
        )
        return plan
    broken = first_break(state.last_hash, rest)
    if broken is not None:
        seq = broken[0]
        plan.new = rest[: seq - rest[0].seq]
        plan.refusal = f"hash chain broken at seq {seq}: entry hash does not match its contents"
        return plan
    for i, e in enumerate(rest):
        problem = body_problem(e)
        if problem is not None:
            plan.new = rest[:i]
            plan.refusal = f"entry seq {e.seq}: {problem}"
            plan.card_number = "card number" in problem
            return plan
    plan.new = rest
    return plan


def body_problem(entry: Entry) -> str | None:
    """Why a journaled document cannot be applied, or None. The lane checked it already;
    head office checks again because a journal can be tampered with or come from an old lane."""
    try:
        doc = unpack(entry.body)
        check_document(doc)
    except ProtocolError as exc:
        return str(exc)
    if doc.get("kind") != entry.kind:
        return f"document kind {doc.get('kind')!r} differs from the entry kind {entry.kind!r}"
    return None


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

    def apply_batch(self, batch: JournalBatch, now_ms: int) -> ApplyResult: ...

    def lane_state(self, lane: LaneId, epoch: int) -> LaneState | None: ...

    def note_hello(self, lane: LaneId, epoch: int, last_seq: int, now_ms: int) -> LaneState: ...

    def save_status(self, status: Status) -> None: ...

    def quarantine(
        self, topic: str, lane: LaneId | None, reason: str, raw: bytes, now_ms: int
    ) -> None: ...

    def commit(self) -> None: ...

    def rollback(self) -> None: ...

    def close(self) -> None: ...
