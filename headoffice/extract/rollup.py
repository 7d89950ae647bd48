"""Transaction roll-up before ERP integration (seed 003).

Only sale, sale refund and sale exchange roll up, grouped by business day, store, customer,
transaction type (and currency, which cannot be summed across). In a group, lines merge only
when item code, item price and tax code match (and the direction, so an exchange's returned
items never net against sold ones); card, cheque and cash payments merge per tender and card
scheme. Account, voucher and gift-card tenders stay one per source: each references a balance.
A group of one is copied as is. Numbers (TC0001 ...) are given by the job, in result order.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from headoffice.extract.config import ExtractConfig
from headoffice.extract.documents import ROLLUP_KINDS, DocumentError, Row, SaleDoc
from headoffice.extract.plugin import Context, Done, Plan, RowDoc, Tally
from protocol.documents import SALE_KINDS
from protocol.money import fmt_qty

MERGED_TENDERS = frozenset({"card", "cheque", "cash"})

GroupKey = tuple[str, str, str, str, str]  # business_day, store, customer ("" = cash), kind, ccy


def group(docs: Iterable[SaleDoc]) -> list[tuple[GroupKey, list[SaleDoc]]]:
    """Groups in result order: business day, store, then the first source's journal position."""
    groups: dict[GroupKey, list[SaleDoc]] = {}
    for d in docs:
        key = (d.business_day, d.store, d.customer or "", d.kind, d.currency)
        g = groups.get(key)
        if g is None:
            groups[key] = [d]
        else:
            g.append(d)
    for g in groups.values():
        g.sort(key=_order)
    return sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], _order(kv[1][0])))


def _order(d: SaleDoc) -> tuple[str, str, int, int]:
    return (d.store, d.lane, d.epoch, d.seq)


def _source(d: SaleDoc) -> dict[str, Any]:
    return {"txn_id": d.txn_id, "register_no": d.register_no, "lane": d.lane}


def copy_one(d: SaleDoc, number: str | None) -> dict[str, Any]:
    """A document copied as is (a group of one, or a kind that is never rolled up)."""
    return {
        "consolidated_no": number,
        "document_no": number or d.register_no,
        "rolled_up": False,
        "type": d.kind,
        "business_day": d.business_day,
        "store": d.store,
        "customer": d.customer,
        "currency": d.currency,
        "lines": [
            {
                "line_no": ln.line_no,
                "item": ln.item,
                "unit_price": ln.unit_price,
                "tax_code": ln.tax_code,
                "qty": fmt_qty(ln.qty),
                "amount": ln.amount,
                "tax": ln.tax,
            }
            for ln in d.lines
        ],
        "payments": [
            {
                "tender": p.tender,
                "scheme": p.scheme,
                "last4": p.last4,
                "amount": p.amount,
                "source": d.register_no,
            }
            for p in d.payments
        ],
        "total": d.total,
        "sources": [_source(d)],
    }


def merge(docs: list[SaleDoc], number: str) -> dict[str, Any]:
    """Roll up a group of two or more documents into one."""
    if len(docs) == 1:
        return copy_one(docs[0], number)
    lines: dict[tuple[str, int, str, bool], list[int]] = {}
    pays: dict[tuple[str, str | None, str], int] = {}
    first = docs[0]
    total = 0
    for d in docs:
        total += d.total
        for ln in d.lines:
            k = (ln.item, ln.unit_price, ln.tax_code, ln.qty < 0)
            acc = lines.get(k)
            if acc is None:
                lines[k] = [ln.qty, ln.amount, ln.tax]
            else:
                acc[0] += ln.qty
                acc[1] += ln.amount
                acc[2] += ln.tax
        for p in d.payments:
            src = "" if p.tender in MERGED_TENDERS else d.register_no
            pk = (p.tender, p.scheme if p.tender == "card" else None, src)
            pays[pk] = pays.get(pk, 0) + p.amount
    return _rolled(number, first, lines, pays, total, [_source(d) for d in docs])


# Roll-up by segments, so the work can be split over row ranges (and processes). A segment is
# the part of a group from one lane journal (store, lane, epoch) seen by one worker, in seq
# order. A group's documents in result order are its segments ordered by (lane, epoch, seq), and
# `merge` only sums and keeps first-seen order, so merging segment by segment gives the same
# result as merging the documents one by one.
SegKey = tuple[GroupKey, str, int]  # group, lane, epoch


class Source(NamedTuple):
    """A document rolled into a segment."""

    txn_id: str
    register_no: str
    lane: str


class Segment:
    """Running roll-up of one group's documents from one lane journal, in seq order."""

    __slots__ = (
        "count",
        "first",
        "first_seq",
        "last_seq",
        "lines",
        "ordered",
        "pays",
        "sources",
        "total",
    )

    def __init__(self, d: SaleDoc) -> None:
        self.first = d
        self.first_seq = self.last_seq = d.seq
        self.ordered = True
        self.count = 0
        self.total = 0
        self.lines: dict[tuple[str, int, str, bool], list[int]] = {}
        self.pays: dict[tuple[str, str | None, str], int] = {}
        self.sources: list[Source] = []

    def __getstate__(self) -> tuple[Any, ...]:
        return tuple(getattr(self, k) for k in _SEG_FIELDS)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        for k, v in zip(_SEG_FIELDS, state, strict=True):
            setattr(self, k, v)

    def add(self, d: SaleDoc) -> None:
        if self.count:
            if d.seq <= self.last_seq:
                self.ordered = False
            self.last_seq = d.seq
        self.count += 1
        self.total += d.total
        self.sources.append(_new(Source, (d.txn_id, d.register_no, d.lane)))
        lines = self.lines
        for ln in d.lines:
            k = (ln.item, ln.unit_price, ln.tax_code, ln.qty < 0)
            acc = lines.get(k)
            if acc is None:
                lines[k] = [ln.qty, ln.amount, ln.tax]
            else:
                acc[0] += ln.qty
                acc[1] += ln.amount
                acc[2] += ln.tax
        if d.payments:
            pays = self.pays
            for p in d.payments:
                t = p.tender
                src = "" if t in MERGED_TENDERS else d.register_no
                pk = (t, p.scheme if t == "card" else None, src)
                pays[pk] = pays.get(pk, 0) + p.amount


_SEG_FIELDS = Segment.__slots__
_new = tuple.__new__  # `_new(Source, (...))` is `Source(...)` without a Python-level frame


def segment_key(d: SaleDoc) -> SegKey:
    return ((d.business_day, d.store, d.customer or "", d.kind, d.currency), d.lane, d.epoch)


def group_segments(
    parts: Iterable[dict[SegKey, Segment]],
) -> list[tuple[GroupKey, list[Segment]]] | None:
    """Groups in `group` order from segments of consecutive row ranges, or None when some
    journal's rows were not in seq order (then only a document-by-document roll-up is exact)."""
    groups: dict[GroupKey, list[Segment]] = {}
    for part in parts:
        for (key, _lane, _epoch), seg in part.items():
            if not seg.ordered:
                return None
            g = groups.get(key)
            if g is None:
                groups[key] = [seg]
            else:
                g.append(seg)
    for g in groups.values():
        g.sort(key=_seg_order)
        for a, b in itertools.pairwise(g):
            if (a.first.lane, a.first.epoch) == (b.first.lane, b.first.epoch) and (
                a.last_seq >= b.first_seq
            ):
                return None
    return sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], _order(kv[1][0].first)))


def _seg_order(s: Segment) -> tuple[str, int, int]:
    return (s.first.lane, s.first.epoch, s.first_seq)


def merge_segments(segs: list[Segment], number: str) -> dict[str, Any]:
    """`merge` of the group whose documents the segments hold, in result order."""
    if len(segs) == 1 and segs[0].count == 1:
        return copy_one(segs[0].first, number)
    lines: dict[tuple[str, int, str, bool], list[int]] = {}
    pays: dict[tuple[str, str | None, str], int] = {}
    total = 0
    for seg in segs:
        total += seg.total
        if not lines:
            lines = {k: v.copy() for k, v in seg.lines.items()}
        else:
            for k, v in seg.lines.items():
                acc = lines.get(k)
                if acc is None:
                    lines[k] = v.copy()
                else:
                    acc[0] += v[0]
                    acc[1] += v[1]
                    acc[2] += v[2]
        for pk, amount in seg.pays.items():
            pays[pk] = pays.get(pk, 0) + amount
    sources = [
        {"txn_id": s.txn_id, "register_no": s.register_no, "lane": s.lane}
        for seg in segs
        for s in seg.sources
    ]
    return _rolled(number, segs[0].first, lines, pays, total, sources)


def _rolled(
    number: str,
    first: SaleDoc,
    lines: dict[tuple[str, int, str, bool], list[int]],
    pays: dict[tuple[str, str | None, str], int],
    total: int,
    sources: list[dict[str, Any]],
) -> dict[str, Any]:
    """The consolidated document both merge paths build (the same keys in the same order)."""
    return {
        "consolidated_no": number,
        "document_no": number,
        "rolled_up": True,
        "type": first.kind,
        "business_day": first.business_day,
        "store": first.store,
        "customer": first.customer,
        "currency": first.currency,
        "lines": [
            {
                "line_no": i,
                "item": k[0],
                "unit_price": k[1],
                "tax_code": k[2],
                "qty": fmt_qty(v[0]),
                "amount": v[1],
                "tax": v[2],
            }
            for i, (k, v) in enumerate(lines.items(), 1)
        ],
        "payments": [
            {"tender": k[0], "scheme": k[1], "last4": None, "amount": v, "source": k[2] or None}
            for k, v in pays.items()
        ],
        "total": total,
        "sources": sources,
    }


def is_rolled(kind: str) -> bool:
    return kind in ROLLUP_KINDS


def consolidated_no(n: int) -> str:
    return f"TC{n:04d}"


class Single(NamedTuple):
    """A document copied one to one (a kind never rolled up, or roll-up disabled)."""

    order: tuple[str, str, int, int]  # SaleDoc.order_key: where it goes in rollup.jsonl
    txn_id: str
    register_no: str
    record: dict[str, Any]


@dataclass
class RollupRange:
    """What the roll-up job makes of one range of rows."""

    segments: dict[SegKey, Segment] = field(default_factory=dict)
    to_roll: list[SaleDoc] = field(default_factory=list)  # Context.keep_docs only
    singles: list[Single] = field(default_factory=list)


class RollupJob:
    """The roll-up as an `ExtractJob`: every sale-family document goes to the ERP, rolled up
    (by segments, see `Segment`) or copied one to one."""

    name = "rollup"
    reads = SALE_KINDS

    def enabled(self, cfg: ExtractConfig) -> bool:
        return True  # with roll-up disabled every document still goes to the ERP one to one

    def start(self) -> RollupRange:
        return RollupRange()

    def take(self, row: Row, doc: RowDoc, acc: RollupRange, tally: Tally, ctx: Context) -> None:
        try:
            d = doc.get()
        except DocumentError as exc:
            tally.reject(self.name, row, exc)
            return
        if ctx.cfg.rollup_enabled and d.kind in ROLLUP_KINDS:
            cutoff = ctx.day_cutoff
            if cutoff is not None and d.business_day >= cutoff:
                tally.hold(self.name, row.rowid, "business day not closed")
                return
            if ctx.keep_docs:
                acc.to_roll.append(d)
                return
            sk = segment_key(d)
            seg = acc.segments.get(sk)
            if seg is None:
                seg = acc.segments[sk] = Segment(d)
            seg.add(d)
        else:
            acc.singles.append(
                _new(Single, (d.order_key, d.txn_id, d.register_no, copy_one(d, None)))
            )

    def finish(self, accs: Sequence[RollupRange], plan: Plan) -> bool:
        tc = plan.next_tc
        rolled: list[dict[str, Any]] = []
        done: list[Done] = []
        if any(acc.to_roll for acc in accs):
            for _key, docs in group(d for acc in accs for d in acc.to_roll):
                number = consolidated_no(tc)
                tc += 1
                rolled.append(merge(docs, number))
                done.extend(Done(d.txn_id, self.name, number) for d in docs)
        else:
            groups = group_segments(acc.segments for acc in accs)
            if groups is None:
                return False
            for _key, segs in groups:
                number = consolidated_no(tc)
                tc += 1
                rolled.append(merge_segments(segs, number))
                done.extend(
                    [_new(Done, (s.txn_id, self.name, number)) for seg in segs for s in seg.sources]
                )
        singles = [x for acc in accs for x in acc.singles]
        singles.sort(key=lambda x: x.order)
        for one in singles:
            rolled.append(one.record)
            done.append(Done(one.txn_id, self.name, one.register_no))
        plan.rollups += rolled
        plan.done += done
        plan.next_tc = tc
        return True


JOB = RollupJob()
