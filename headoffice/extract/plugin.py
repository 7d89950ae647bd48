"""The interface every extract job implements, and what a job is handed to do its work.

A run reads each due journal row once and offers it to every configured job (purchases,
roll-up, postings; job.py lists them in `JOBS` and knows them only through `ExtractJob`). A job
keeps what it makes from one consecutive range of rows in its own accumulator (ranges may be
computed in forked children, so accumulators pickle), reports holds, rejects and consumed
documents into the range's `Tally`, and at the end turns the ranges' accumulators, in row
order, into its output records in the `Plan`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, TypeVar

from headoffice.extract.config import ExtractConfig
from headoffice.extract.documents import DocumentError, Row, SaleDoc, to_doc

if TYPE_CHECKING:
    from headoffice.extract.postings import Posting


class Done(NamedTuple):
    """A document a job consumed in this run (a row of extract_done without the run)."""

    txn_id: str
    job: str
    ref: str | None  # the job's own reference: record id, consolidated or docket number


class ErpPosting(NamedTuple):
    """What the ERP recorded for a sale (`lanesync extract record-posting`)."""

    ref: str
    corrections: dict[str, Any] | None


@dataclass
class Plan:
    """Everything one run would emit, before anything is written."""

    purchases: list[dict[str, Any]] = field(default_factory=list)
    rollups: list[dict[str, Any]] = field(default_factory=list)
    postings: list[Posting] = field(default_factory=list)
    rejects: list[dict[str, Any]] = field(default_factory=list)
    done: list[Done] = field(default_factory=list)
    pending: dict[str, int] = field(default_factory=dict)  # reason -> count
    cursors: dict[str, int] = field(default_factory=dict)
    next_tc: int = 1
    scanned: int = 0

    @property
    def empty(self) -> bool:
        return not (self.purchases or self.rollups or self.postings or self.done)


@dataclass(frozen=True)
class Context:
    """What every job may read while taking rows; inherited by forked children."""

    cfg: ExtractConfig
    now_ms: int
    erp: dict[str, ErpPosting]
    day_cutoff: str | None  # business days from this one on are still open (None: any day)
    keep_docs: bool = False  # roll up document by document (a journal's rows out of seq order)


@dataclass
class Tally:
    """What the jobs report about one range of rows besides their records."""

    first_pending: dict[str, int] = field(default_factory=dict)  # job -> first held rowid
    pending: dict[str, int] = field(default_factory=dict)  # reason -> count
    rejects: list[dict[str, Any]] = field(default_factory=list)
    done: list[Done] = field(default_factory=list)

    def hold(self, job: str, rowid: int, reason: str) -> None:
        """The job leaves this row for a later run (its cursor stops before it)."""
        if job not in self.first_pending:
            self.first_pending[job] = rowid
        self.pending[reason] = self.pending.get(reason, 0) + 1

    def reject(self, job: str, row: Row, exc: DocumentError) -> None:
        """The job cannot use this row's document: held, and listed in rejects.jsonl."""
        self.hold(job, row.rowid, "rejected")
        self.rejects.append(
            {
                "job": job,
                "txn_id": row.txn_id,
                "store": row.store,
                "lane": row.lane,
                "seq": row.seq,
                "field": exc.field,
                "reason": exc.reason,
            }
        )


class RowDoc:
    """The current row's document, decoded on first use and shared by every job that reads it
    (a row whose document does not decode is rejected by each job that wanted it)."""

    __slots__ = ("_bad", "_doc", "row")

    def __init__(self) -> None:
        self.row: Row | None = None
        self._doc: SaleDoc | None = None
        self._bad: DocumentError | None = None

    def reset(self, row: Row) -> None:
        self.row = row
        self._doc = None
        self._bad = None

    def get(self) -> SaleDoc:
        """The document without ERP corrections; raises DocumentError when it does not decode."""
        doc = self._doc
        if doc is not None:
            return doc
        if self._bad is None:
            assert self.row is not None
            try:
                doc = self._doc = to_doc(self.row)
            except DocumentError as exc:
                self._bad = exc
            else:
                return doc
        raise self._bad


Acc = TypeVar("Acc")


class ExtractJob(Protocol[Acc]):
    """One extract job: which rows it reads, what it makes of each, and its output records."""

    @property
    def name(self) -> str:
        """Its name in extract_cursor, extract_done and rejects.jsonl."""
        ...

    @property
    def reads(self) -> frozenset[str]:
        """The journal kinds whose documents it consumes."""
        ...

    def enabled(self, cfg: ExtractConfig) -> bool:
        """Whether this configuration runs it (a disabled job's cursor still advances)."""
        ...

    def start(self) -> Acc:
        """An empty accumulator for one range of rows."""
        ...

    def take(self, row: Row, doc: RowDoc, acc: Acc, tally: Tally, ctx: Context) -> None:
        """Use one due row of a kind it reads (not consumed by this job before)."""
        ...

    def finish(self, accs: Sequence[Acc], plan: Plan) -> bool:
        """Add the records of the ranges' accumulators (in row order) to the plan; False when
        they cannot be combined exactly and the run must be computed with `keep_docs`."""
        ...
