"""Sale-family documents as head office stored them, read back from `journal.body`.

Head office applied each document once (`journal.applied = 1`); the extract re-reads those bodies
and parses them into small typed records. A body that breaks the document schema raises
`DocumentError` naming the JSON path, so the run can report it instead of guessing.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import msgpack

from headoffice.extract.dialect import JOBS_OF, JOURNAL_ID
from protocol.documents import SALE_KINDS
from protocol.errors import LanesyncError
from protocol.money import parse_qty

if TYPE_CHECKING:  # the store imports this module (projection.py): no import back
    from headoffice.db.sql import Sql

# The roll-up seed's kinds that are rolled up; every other sale kind goes one to one.
ROLLUP_KINDS = frozenset({"sale", "sale_refund", "sale_exchange"})
RETURN_KINDS = frozenset({"sale_refund", "layaway_cancellation"})
PAYMENT_ONLY_KINDS = frozenset({"on_account_payment", "layaway_payment"})
TENDERS = frozenset({"cash", "card", "cheque", "account", "voucher", "gift_card"})


class DocumentError(LanesyncError):
    """A stored document the extract cannot use; `field` is the JSON path at fault."""

    code = "invalid_document"

    def __init__(self, txn_id: str, field: str, reason: str) -> None:
        self.txn_id, self.field, self.reason = txn_id, field, reason
        super().__init__(f"document {txn_id}: {field}: {reason}")


class Line(NamedTuple):
    line_no: int
    item: str
    description: str | None
    qty: int  # thousandths
    unit_price: int
    tax_code: str
    amount: int
    tax: int
    open_qty: int  # thousandths, 0 when absent


class Payment(NamedTuple):
    tender: str
    amount: int
    scheme: str | None
    token: str | None
    last4: str | None
    banked: bool


class SaleDoc(NamedTuple):
    """One applied sale-family document and where it sits in its lane's journal."""

    rowid: int
    store: str
    lane: str
    epoch: int
    seq: int
    ts: int  # journal time, ms since the epoch
    txn_id: str
    kind: str
    register_no: str
    business_day: str
    currency: str
    customer: str | None
    lines: tuple[Line, ...]
    payments: tuple[Payment, ...]
    total: int
    change: int
    return_type: str | None
    original_txn_id: str | None

    @property
    def order_key(self) -> tuple[str, str, int, int]:
        """Content-derived order (not insertion order), so outputs are byte-identical."""
        return (self.store, self.lane, self.epoch, self.seq)


def _int(doc: Mapping[str, Any], key: str, txn: str, path: str, default: int | None = None) -> int:
    v = doc.get(key, default)
    if type(v) is not int:
        raise DocumentError(txn, f"{path}.{key}", f"must be an integer (minor units), got {v!r}")
    return v


def _str(doc: Mapping[str, Any], key: str, txn: str, path: str, *, optional: bool = False) -> Any:
    v = doc.get(key)
    if v is None and optional:
        return None
    if type(v) is not str or not v:
        raise DocumentError(txn, f"{path}.{key}", f"must be a non-empty string, got {v!r}")
    return v


def _line(ln: Any, i: int, txn_id: str) -> Line:
    p = f"$.lines[{i}]"
    if type(ln) is not dict:
        raise DocumentError(txn_id, p, "must be a map")
    qty = parse_qty(ln.get("qty"))
    if qty is None:
        raise DocumentError(
            txn_id, f"{p}.qty", f"must be a 3-place decimal string, got {ln.get('qty')!r}"
        )
    oq = ln.get("open_qty")
    open_qty = 0 if oq is None else parse_qty(oq)
    if open_qty is None or open_qty < 0 or open_qty > abs(qty):
        raise DocumentError(
            txn_id, f"{p}.open_qty", f"must be a 3-place decimal string 0..|qty|, got {oq!r}"
        )
    desc = ln.get("description")
    return Line(
        _int(ln, "line_no", txn_id, p, i + 1),
        _str(ln, "item", txn_id, p),
        desc if type(desc) is str else None,
        qty,
        _int(ln, "unit_price", txn_id, p),
        _str(ln, "tax_code", txn_id, p),
        _int(ln, "amount", txn_id, p),
        _int(ln, "tax", txn_id, p, 0),
        open_qty,
    )


def parse(
    doc: Any,
    *,
    rowid: int,
    store: str,
    lane: str,
    epoch: int,
    seq: int,
    ts: int,
    txn_id: str,
    kind: str,
) -> SaleDoc:
    """Typed view of a stored sale-family document; raises DocumentError naming the field."""
    if type(doc) is not dict:
        raise DocumentError(txn_id, "$", "body is not a map")
    raw_lines = doc.get("lines", [])
    if type(raw_lines) is not list:
        raise DocumentError(txn_id, "$.lines", "must be a list")
    lines = []
    for i, ln in enumerate(raw_lines):
        if type(ln) is dict:
            # Fast path: a well-formed line; anything odd falls to the checks that name the field.
            q = ln.get("qty")
            item, price, code, amount = (
                ln.get("item"),
                ln.get("unit_price"),
                ln.get("tax_code"),
                ln.get("amount"),
            )
            no, tax, oq = ln.get("line_no", i + 1), ln.get("tax", 0), ln.get("open_qty")
            if (
                type(q) is str
                and len(q) >= 5
                and q[-4] == "."
                and q[:-4].isdigit()
                and q[-3:].isdigit()
                and oq is None
                and type(item) is str
                and item
                and type(code) is str
                and code
                and type(price) is int
                and type(amount) is int
                and type(tax) is int
                and type(no) is int
            ):
                desc = ln.get("description")
                lines.append(
                    _new(
                        Line,
                        (
                            no,
                            item,
                            desc if type(desc) is str else None,
                            int(q[:-4]) * 1000 + int(q[-3:]),
                            price,
                            code,
                            amount,
                            tax,
                            0,
                        ),
                    )
                )
                continue
        lines.append(_line(ln, i, txn_id))
    raw_pay = doc.get("payments", [])
    if type(raw_pay) is not list:
        raise DocumentError(txn_id, "$.payments", "must be a list")
    payments = []
    for i, pm in enumerate(raw_pay):
        if type(pm) is dict:
            # Fast path: a well-formed payment; anything odd falls to the checks below.
            tender, amt, banked = pm.get("tender"), pm.get("amount"), pm.get("banked", True)
            if tender in TENDERS and type(amt) is int and type(banked) is bool:
                payments.append(
                    _new(
                        Payment,
                        (tender, amt, pm.get("scheme"), pm.get("token"), pm.get("last4"), banked),
                    )
                )
                continue
        p = f"$.payments[{i}]"
        if type(pm) is not dict:
            raise DocumentError(txn_id, p, "must be a map")
        tender = pm.get("tender")
        if tender not in TENDERS:
            raise DocumentError(
                txn_id, f"{p}.tender", f"must be one of {sorted(TENDERS)}, got {tender!r}"
            )
        banked = pm.get("banked", True)
        if type(banked) is not bool:
            raise DocumentError(txn_id, f"{p}.banked", f"must be true or false, got {banked!r}")
        payments.append(
            Payment(
                tender,
                _int(pm, "amount", txn_id, p),
                pm.get("scheme"),
                pm.get("token"),
                pm.get("last4"),
                banked,
            )
        )
    customer = doc.get("customer")
    if customer is not None and (type(customer) is not str or not customer):
        raise DocumentError(
            txn_id, "$.customer", f"must be a customer code or null, got {customer!r}"
        )
    day = doc.get("business_day")
    if day is None:
        day = _day_from_time(doc.get("time"), ts)
    elif type(day) is not str or len(day) != 10:
        raise DocumentError(txn_id, "$.business_day", f"must be YYYY-MM-DD, got {day!r}")
    total = doc.get("total")
    if total is None:
        total = sum(ln.amount for ln in lines)
    elif type(total) is not int:
        raise DocumentError(txn_id, "$.total", f"must be an integer (minor units), got {total!r}")
    reg, change = doc.get("register_no"), doc.get("change", 0)
    rtype, orig = doc.get("return_type"), doc.get("original_txn_id")
    if not (type(reg) is str and reg):
        reg = _str(doc, "register_no", txn_id, "$")
    if type(change) is not int:
        change = _int(doc, "change", txn_id, "$", 0)
    if rtype is not None and not (type(rtype) is str and rtype):
        rtype = _str(doc, "return_type", txn_id, "$", optional=True)
    if orig is not None and not (type(orig) is str and orig):
        orig = _str(doc, "original_txn_id", txn_id, "$", optional=True)
    cur = doc.get("currency")
    return _new(
        SaleDoc,
        (
            rowid,
            store,
            lane,
            epoch,
            seq,
            ts,
            txn_id,
            kind,
            reg,
            day,
            cur if type(cur) is str else "XXX",  # ISO 4217 "no currency"
            customer,
            tuple(lines),
            tuple(payments),
            total,
            change,
            rtype,
            orig,
        ),
    )


def _day_from_time(time: Any, ts: int) -> str:
    if type(time) is str and len(time) >= 10 and time[4] == "-":
        return time[:10]
    import datetime as dt  # noqa: PLC0415 - rare path: documents carry business_day

    return dt.datetime.fromtimestamp(ts / 1000, dt.UTC).date().isoformat()


def unpack(body: bytes) -> Any:
    return _unpackb(body, raw=False, strict_map_key=True)


_unpackb = msgpack.unpackb
_new = tuple.__new__  # builds a NamedTuple without the Python-level __new__ frame


class Row(NamedTuple):
    """One applied journal row and which extract jobs have already consumed it."""

    rowid: int
    store: str
    lane: str
    epoch: int
    seq: int
    kind: str
    txn_id: str
    ts: int
    body: bytes | None  # None when `doc` is there and no ERP correction needs the body
    done: str | None  # the jobs that already emitted it, comma-separated; None: none did
    doc: SaleDoc | None = None  # read from the projection (headoffice/extract/projection.py)


def done_jobs(row: Row) -> frozenset[str]:
    return frozenset() if row.done is None else frozenset(row.done.split(","))


_SAME_ENTRY = (
    "{t}.store = j.store AND {t}.lane = j.lane AND {t}.epoch = j.epoch AND {t}.seq = j.seq"
)


def read_rows(
    db: Sql, after_rowid: int, up_to: int | None = None, *, projected: bool = True
) -> Iterator[Row]:
    """Applied sale-family rows after `after_rowid` (and up to `up_to`, the run's horizon),
    in journal order, with the jobs that already emitted them.

    A document ingest projected (schema 6) comes with its SaleDoc built from the projection's
    rows: three ordered reads (headers, lines, payments) merged by journal position, no body
    decoded. Its body is read only when the ERP recorded corrections for it (they are merged
    over the body). Any other document comes with its body, for `to_doc` to decode as before.
    `body` is bytes on both backends (psycopg loads bytea as bytes).

    `projected=False` ignores the projection and reads every body: the extract's path before
    schema 6, kept for `lanesync bench extract` to compare with in the same run.
    """
    rid, jobs = JOURNAL_ID[db.dialect], JOBS_OF[db.dialect]
    marks = ",".join("?" * len(SALE_KINDS))
    bound = "" if up_to is None else f" AND j.{rid} <= ?"
    where = f"j.{rid} > ?{bound} AND j.applied = 1 AND j.kind IN ({marks})"
    params = (after_rowid, *(() if up_to is None else (up_to,)), *sorted(SALE_KINDS))
    if not projected:
        return map(
            Row._make,
            db.iterate(
                f"SELECT j.{rid}, j.store, j.lane, j.epoch, j.seq, j.kind, j.txn_id, j.ts, "  # noqa: S608
                f"j.body, (SELECT {jobs} FROM extract_done d WHERE d.txn_id = j.txn_id), NULL "
                f"FROM journal j WHERE {where} ORDER BY j.{rid}",
                params,
            ),
        )
    heads = (
        f"SELECT j.{rid}, j.store, j.lane, j.epoch, j.seq, j.kind, j.txn_id, j.ts, "  # noqa: S608
        "CASE WHEN x.seq IS NULL OR EXISTS (SELECT 1 FROM extract_erp_postings e "
        "WHERE e.txn_id = j.txn_id AND e.corrections IS NOT NULL) THEN j.body END, "
        f"(SELECT {jobs} FROM extract_done d WHERE d.txn_id = j.txn_id), "
        "x.seq, x.register_no, x.business_day, x.currency, x.customer, x.total, x.change, "
        "x.return_type, x.original_txn_id "
        f"FROM journal j LEFT JOIN extract_docs x ON {_SAME_ENTRY.format(t='x')} "
        f"WHERE {where} ORDER BY j.{rid}"
    )
    lines = (
        f"SELECT j.{rid}, l.line_no, l.item, l.description, l.qty, l.unit_price, l.tax_code, "  # noqa: S608
        f"l.amount, l.tax, l.open_qty FROM journal j JOIN extract_lines l "
        f"ON {_SAME_ENTRY.format(t='l')} WHERE {where} ORDER BY j.{rid}, l.idx"
    )
    pays = (
        f"SELECT j.{rid}, p.tender, p.amount, p.scheme, p.token, p.last4, p.banked "  # noqa: S608
        f"FROM journal j JOIN extract_payments p ON {_SAME_ENTRY.format(t='p')} "
        f"WHERE {where} ORDER BY j.{rid}, p.idx"
    )
    return _merge(*_read_all(db, (heads, lines, pays), params))


# How PostgreSQL runs the projection's three reads (each one transaction-local). Memoize off:
# every join here is on a journal row's own key, so its cache never hits (EXPLAIN ANALYZE of the
# 200,000-document bench: "Hits: 0 Misses: 200000") and only costs; without it the planner
# takes parallel hash joins for a big range and plain index lookups for a small one. work_mem:
# the big range's sort by journal position fits in memory instead of an external merge on disk
# (63 MB of lines at 200,000 documents). No JIT: it compiled for ~90 ms and saved nothing.
# Server time of the three reads there, same load (load 5-7): 5.1-6.2 s -> 2.7-3.1 s.
_PG_READ_SETTINGS = ("enable_memoize = off", "work_mem = '128MB'", "jit = off")


def _read_all(db: Sql, queries: tuple[str, ...], params: tuple[Any, ...]) -> list[Iterator[Any]]:
    """The rows of each query. On PostgreSQL outside a transaction they come from one
    REPEATABLE READ snapshot (a document's header, lines and payments read alike even with
    ingest committing meanwhile) under _PG_READ_SETTINGS; its client-side cursors hold every
    row once executed, so the transaction ends before the rows are walked."""
    if db.dialect != "postgres" or db.in_transaction:
        return [db.iterate(q, params) for q in queries]
    db.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
    try:
        for setting in _PG_READ_SETTINGS:
            db.execute(f"SET LOCAL {setting}")
        got = [db.iterate(q, params) for q in queries]
        db.commit()
    except BaseException:
        db.rollback()
        raise
    return got


_END: tuple[Any, ...] = (float("inf"),)  # after the last row: equals no position


def _merge(heads: Iterator[Any], lines: Iterator[Any], pays: Iterator[Any]) -> Iterator[Row]:
    """Rows from the three reads, each in journal order: a document's lines and payments are
    the ones at its position. A hot loop (once per document and per line): locals, no calls."""
    new = _new
    ln: tuple[Any, ...] = next(lines, _END)
    pm: tuple[Any, ...] = next(pays, _END)
    for (
        pos,
        store,
        lane,
        epoch,
        seq,
        kind,
        txn_id,
        ts,
        body,
        done,
        projected_seq,
        register_no,
        business_day,
        currency,
        customer,
        total,
        change,
        return_type,
        original_txn_id,
    ) in heads:  # the columns of read_rows' header SELECT, in its order
        if projected_seq is None:  # not projected: the body decodes later
            yield new(Row, (pos, store, lane, epoch, seq, kind, txn_id, ts, body, done, None))
            continue
        got_lines = []
        while ln[0] == pos:
            got_lines.append(new(Line, ln[1:]))
            ln = next(lines, _END)
        got_pays = []
        while pm[0] == pos:
            got_pays.append(new(Payment, (pm[1], pm[2], pm[3], pm[4], pm[5], pm[6] == 1)))
            pm = next(pays, _END)
        doc = new(
            SaleDoc,
            (  # SaleDoc's field order
                pos,
                store,
                lane,
                epoch,
                seq,
                ts,
                txn_id,
                kind,
                register_no,
                business_day,
                currency,
                customer,
                tuple(got_lines),
                tuple(got_pays),
                total,
                change,
                return_type,
                original_txn_id,
            ),
        )
        yield new(Row, (pos, store, lane, epoch, seq, kind, txn_id, ts, body, done, doc))


def to_doc(row: Row, corrections: Mapping[str, Any] | None = None) -> SaleDoc:
    """The row's document (from the projection, or its body decoded and parsed), with ERP
    corrections (if any) merged over the body."""
    if row.doc is not None and not corrections:
        return row.doc
    if row.body is None:
        # read_rows reads the body of every row the ERP had corrected when it read; only a
        # correction recorded between the run's two reads can get here.
        raise DocumentError(
            row.txn_id, "$", "ERP corrections were recorded during the run: run it again"
        )
    try:
        body = unpack(row.body)
    except (ValueError, msgpack.UnpackException) as exc:
        raise DocumentError(row.txn_id, "$", f"undecodable msgpack body: {exc}") from None
    if corrections:
        if type(body) is not dict:
            raise DocumentError(row.txn_id, "$", "body is not a map")
        body = {**body, **corrections}
    return parse(
        body,
        rowid=row.rowid,
        store=row.store,
        lane=row.lane,
        epoch=row.epoch,
        seq=row.seq,
        ts=row.ts,
        txn_id=row.txn_id,
        kind=row.kind,
    )
