"""The extract's projection: sale-family documents parsed once, at ingest, into rows.

When it is on (ENABLED, below), head office calls `project` from the ingest transaction that
applies the documents (the hook in headoffice/db/base.py BatchWriter.flush; the rows are made
by check_batch on the decoder thread), so a document and its projection commit or vanish
together. An extract run then reads headers, lines and payments as rows (documents.read_rows)
instead of decoding and checking every body again (issue 17.3).

The projection holds exactly what `documents.parse` gives, computed by `parse` itself, so a
document read from it is the same SaleDoc as one decoded from its body. A document `parse`
refuses (the extract reports it as a reject) or one with a value a column cannot hold (an
integer beyond 64 bits, a text with NUL, a card scheme that is not text) is simply not
projected: the extract reads its body as before, with the same result. Nothing here may fail
the ingest transaction, which is why values are checked before they reach the database.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, NamedTuple

import msgpack

from headoffice.db.sql import PgSql, Sql
from headoffice.extract.documents import DocumentError, parse, unpack
from protocol.documents import SALE_KINDS
from protocol.identity import LaneId
from protocol.messages import Entry


class DocRow(NamedTuple):
    """A row of extract_docs: a document's header fields (its position first)."""

    store: str
    lane: str
    epoch: int
    seq: int
    register_no: str
    business_day: str
    currency: str
    customer: str | None
    total: int
    change: int
    return_type: str | None
    original_txn_id: str | None


class LineRow(NamedTuple):
    """A row of extract_lines: one line of a document, `idx` its place in the document."""

    store: str
    lane: str
    epoch: int
    seq: int
    idx: int
    line_no: int
    item: str
    description: str | None
    qty: int
    unit_price: int
    tax_code: str
    amount: int
    tax: int
    open_qty: int


class PaymentRow(NamedTuple):
    """A row of extract_payments: one payment of a document (`banked` as 0 or 1)."""

    store: str
    lane: str
    epoch: int
    seq: int
    idx: int
    tender: str
    amount: int
    scheme: str | None
    token: str | None
    last4: str | None
    banked: int


class Rows(NamedTuple):
    """The projection rows of one document."""

    doc: DocRow
    lines: list[LineRow]
    payments: list[PaymentRow]


DOC_COLUMNS: tuple[str, ...] = DocRow._fields
LINE_COLUMNS: tuple[str, ...] = LineRow._fields
PAYMENT_COLUMNS: tuple[str, ...] = PaymentRow._fields
_new = tuple.__new__  # `_new(LineRow, (...))` is `LineRow(...)` without a Python-level frame

# Off unless head office runs with LANESYNC_EXTRACT_PROJECTION=on. Measured with `lanesync bench
# drain --entries 60000 --no-paho --projection both` (two runs, load 3.8-4.6; the same backlog
# drained without and with it): head office's CPU per entry went from 28.5/32.0 to 66.3/67.0 us
# and the drain from 27,655/24,817 to 12,932/12,568 entries/s (rows_of reusing ingest's decoded
# body; 30.0/28.5 -> 73.3/71.8 us before), while the extract's engine runs about as fast on it as
# on the bodies (`lanesync bench extract --entries 200000`, entries_per_s / bodies_per_s in the
# same run: 0.69-1.23 on SQLite, 0.86-1.39 on PostgreSQL, 2026-12-03): a price the drain
# cannot pay by default (issue 17.3 allows it 10 %). The extract reads whatever is
# projected and decodes the rest, with the same result either way.
ENABLED = os.environ.get("LANESYNC_EXTRACT_PROJECTION", "off").lower() == "on"

_MIN, _MAX = -(2**63), 2**63 - 1  # SQLite INTEGER and PostgreSQL BIGINT


def _fits(values: Sequence[Any]) -> bool:
    """Every value is one a column stores and gives back unchanged on both backends (int64,
    text without NUL, NULL). `parse` checks the type of every field but a payment's scheme,
    token and last4, which rows_of checks (a TEXT column would turn a number into text)."""
    for v in values:
        t = type(v)
        if t is int:
            if not _MIN <= v <= _MAX:
                return False
        elif t is str:
            if "\x00" in v:  # PostgreSQL text cannot hold NUL
                return False
        elif v is not None:  # a card scheme that is a map, a token that is a number ...
            return False
    return True


def rows_of(lane: LaneId, epoch: int, e: Entry, decoded: object = None) -> Rows | None:
    """The projection rows of one applied entry, or None when it is not projected.

    `decoded`: its body as ingest decoded it already (check_entries in headoffice/db/base.py,
    protocol.codec.unpack), or None to decode it here. codec.unpack gives the same value as
    documents.unpack for every body it accepts (it only refuses more: extension types, size),
    and a body it refused comes as None and is decoded here as before, so the rows are the
    same either way. Nothing here changes the value (parse only reads it): the card-number
    screen and the other projections read the same one."""
    if e.kind not in SALE_KINDS:
        return None
    try:
        doc = parse(
            unpack(e.body) if decoded is None else decoded,
            rowid=0,
            store=lane.store,
            lane=lane.lane,
            epoch=epoch,
            seq=e.seq,
            ts=e.ts,
            txn_id=e.txn_id,
            kind=e.kind,
        )
    except (DocumentError, ValueError, msgpack.UnpackException):
        return None  # the extract decodes it again and reports the same fault
    except Exception:  # noqa: BLE001 - whatever a hostile body provokes: it is not projected
        return None
    key = (lane.store, lane.lane, epoch, e.seq)
    head = DocRow(
        *key,
        doc.register_no,
        doc.business_day,
        doc.currency,
        doc.customer,
        doc.total,
        doc.change,
        doc.return_type,
        doc.original_txn_id,
    )
    lines: list[LineRow] = [_new(LineRow, (*key, i, *ln)) for i, ln in enumerate(doc.lines)]
    pays: list[PaymentRow] = [
        _new(PaymentRow, (*key, i, p.tender, p.amount, p.scheme, p.token, p.last4, int(p.banked)))
        for i, p in enumerate(doc.payments)
    ]
    if not (_fits(head) and all(map(_fits, lines)) and all(map(_fits, pays))):
        return None
    for p in doc.payments:  # the fields parse passes through as they came: text or nothing
        if not all(v is None or type(v) is str for v in (p.scheme, p.token, p.last4)):
            return None
    return Rows(head, lines, pays)


def project(sql: Sql, entries: Sequence[tuple[LaneId, int, Entry, Rows | bool | None]]) -> int:
    """Write the projection of these applied entries inside the caller's transaction; returns
    how many documents were projected. Each comes with its rows from rows_of, or False when
    they are still to be made."""
    run = _ExtractRun(sql)
    for lane, epoch, e, made in entries:
        rows = rows_of(lane, epoch, e) if made is False else made
        if isinstance(rows, tuple):
            run.apply(lane, epoch, e, rows)
    run.finish()
    return len(run.heads)


def _insert(sql: Sql, table: str, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> None:
    """executemany on SQLite; one COPY on PostgreSQL (as headoffice/extract/db.insert_rows,
    which this module cannot import from the store's side)."""
    if not rows:
        return
    cols = ", ".join(columns)
    if isinstance(sql, PgSql):
        with sql.conn.cursor() as cur, cur.copy(f"COPY {table} ({cols}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        return
    marks = ", ".join("?" * len(columns))
    sql.executemany(f"INSERT INTO {table} ({cols}) VALUES ({marks})", rows)  # noqa: S608


class _ExtractRun:
    """One flush's extract rows, inserted together (one COPY each on PostgreSQL)."""

    def __init__(self, sql: Sql) -> None:
        self.sql = sql
        self.heads: list[DocRow] = []
        self.lines: list[LineRow] = []
        self.pays: list[PaymentRow] = []

    def apply(self, lane: LaneId, epoch: int, entry: Entry, doc: Rows) -> bool:
        self.heads.append(doc.doc)
        self.lines += doc.lines
        self.pays += doc.payments
        return False

    def finish(self) -> None:
        if self.heads:
            _insert(self.sql, "extract_docs", DOC_COLUMNS, self.heads)
            _insert(self.sql, "extract_lines", LINE_COLUMNS, self.lines)
            _insert(self.sql, "extract_payments", PAYMENT_COLUMNS, self.pays)


class ExtractProjection:
    """The extract's rows of each sale document (issue 17.3; only when ENABLED), made on
    ingest's decoder thread so the writer only inserts them (headoffice.db.projection)."""

    name = "extract"

    def check(self, lane: LaneId, epoch: int, entry: Entry, decoded: object) -> Rows | None:
        if not ENABLED or entry.kind not in SALE_KINDS:
            return None
        return rows_of(lane, epoch, entry, decoded)

    def start(self, sql: Sql) -> _ExtractRun:
        return _ExtractRun(sql)
