"""What a saved sale or return posts (seed 001): AR documents, receipts, stock.

- A sale posts an invoice to the customer's account (cash customers to the configured cash
  customer) for its total; each receipt line (any tender but `account`) posts a receipt whose
  reference is the docket number with suffix -2, -3, ...; the received value goes to the bank
  (cash, cheque, banked card) or card clearing (non-banked card) and the rest stays outstanding.
- A return posts a credit, and a reverse receipt per refund line; stock moves by the inventory
  effect of its return transaction type (`none` moves nothing).
- An exchange posts an invoice for a positive net total, else a credit.
- Payments on account and on layaways post receipts only.
The POS docket number (register number) is the AR document number. Each posting row gets a
stable id `<txn_id>/<n>`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from headoffice.extract import batches
from headoffice.extract.config import ExtractConfig
from headoffice.extract.documents import (
    PAYMENT_ONLY_KINDS,
    RETURN_KINDS,
    DocumentError,
    Row,
    SaleDoc,
)
from headoffice.extract.plugin import Context, Done, Plan, RowDoc, Tally
from protocol.documents import SALE_KINDS
from protocol.money import fmt_qty

ACCOUNT_FOR = {"cash": "bank", "cheque": "bank", "voucher": "vouchers", "gift_card": "gift_cards"}


class Posting(NamedTuple):
    """One posting row, its fields in the CSV's column order.

    A NamedTuple, not a dataclass: a run builds one per sale line and per receipt, and the CSV
    writer takes it as the row it is. Which fields a row has in JSON depends on its type: see
    `KEYS`; a line has the batch fields only when it went through one.
    """

    posting_id: str
    txn_id: str
    docket: str
    store: str
    kind: str
    type: str  # line, invoice, credit, receipt, reverse_receipt
    reference: str | None
    customer: str | None
    account: str | None
    tender: str | None
    amount: int
    outstanding: int | None
    tax: int | None
    line_no: int | None
    item: str | None
    qty: str | None
    stock_qty: str | None
    tax_code: str | None
    warehouse: str | None
    batch: str | None
    line_status: str | None
    fulfil_status: str | None
    invoice_no: str | None
    invoice_date: str | None


COLUMNS: tuple[str, ...] = Posting._fields
# `_new(Posting, (...))` is `Posting(...)` without its Python-level __new__ frame: a run builds
# one per line and per receipt.
_new = tuple.__new__
_BASE = ("posting_id", "txn_id", "docket", "store", "kind", "type")
KEYS = {
    "line": (
        *_BASE,
        *("line_no", "item", "qty", "amount", "tax_code", "warehouse", "tax", "stock_qty"),
    ),
    "batch_line": (
        *_BASE,
        *("line_no", "item", "qty", "amount", "tax_code", "warehouse", "tax", "stock_qty"),
        *("batch", "line_status", "fulfil_status", "invoice_no", "invoice_date"),
    ),
    "ar": (*_BASE, "reference", "customer", "account", "amount", "tax", "outstanding"),
    "receipt": (*_BASE, "reference", "customer", "account", "tender", "amount"),
}


def keys_of(row: Posting) -> tuple[str, ...]:
    """The keys this posting row carries in JSON."""
    t = row.type
    if t == "line":
        return KEYS["line" if row.batch is None else "batch_line"]
    return KEYS["ar" if t in ("invoice", "credit") else "receipt"]


def as_dict(row: Posting) -> dict[str, Any]:
    """The posting row as a JSON record (its keys only)."""
    return {k: getattr(row, k) for k in keys_of(row)}


def post(doc: SaleDoc, cfg: ExtractConfig) -> list[Posting]:
    """The posting rows of one document, in the order the files list them."""
    new = _new
    docket = doc.register_no
    customer = doc.customer or cfg.cash_customer
    kind = doc.kind
    is_return = kind in RETURN_KINDS
    batch = cfg.batch_for(doc.store) if cfg.pos_batches else None
    taxdef = cfg.tax_for(batch) if batch is not None else None
    warehouse = batch.warehouse if batch is not None else doc.store
    effect = 0
    lines = doc.lines
    if is_return or any(ln.qty < 0 for ln in lines):
        rt = doc.return_type or cfg.default_return_type
        got = cfg.return_types.get(rt)
        if got is None:
            raise DocumentError(
                doc.txn_id, "$.return_type", f"{rt!r} is not in extract.return_types"
            )
        effect = got
    tid, store = doc.txn_id, doc.store
    rows: list[Posting] = []
    tax_total = 0
    n = 0
    for ln in lines:
        n += 1
        qty = ln.qty
        returned = is_return or qty < 0
        moved = abs(qty) - ln.open_qty  # delivered now; open quantities move on delivery
        tax = ln.tax
        if batch is not None and taxdef is not None:
            ol = batches.order_line(ln, ln.amount, batch, taxdef, docket, doc.business_day)
            tax = ol.sales_tax
            if ol.fulfil_status == "not_fulfilled" and not returned:
                moved = 0  # proforma: nothing shipped yet
            tax_total += tax
            rows.append(
                new(
                    Posting,
                    (
                        f"{tid}/{n}",
                        tid,
                        docket,
                        store,
                        kind,
                        "line",
                        None,
                        None,
                        None,
                        None,
                        ln.amount,
                        None,
                        tax,
                        ln.line_no,
                        ln.item,
                        fmt_qty(qty),
                        fmt_qty(moved * effect if returned else -moved),
                        ln.tax_code,
                        warehouse,
                        batch.id,
                        ol.line_status,
                        ol.fulfil_status,
                        ol.invoice_no,
                        ol.invoice_date,
                    ),
                )
            )
            continue
        tax_total += tax
        # Written out in full (no *-unpacking): this tuple is built once per line.
        rows.append(
            new(
                Posting,
                (
                    f"{tid}/{n}",
                    tid,
                    docket,
                    store,
                    kind,
                    "line",
                    None,
                    None,
                    None,
                    None,
                    ln.amount,
                    None,
                    tax,
                    ln.line_no,
                    ln.item,
                    fmt_qty(qty),
                    fmt_qty(moved * effect if returned else -moved),
                    ln.tax_code,
                    warehouse,
                    None,
                    None,
                    None,
                    None,
                    None,
                ),
            )
        )
    ar_kind: str | None = None
    ar_amount = 0
    refunding = is_return
    if kind not in PAYMENT_ONLY_KINDS:
        ar_amount = doc.total
        ar_kind = "credit" if is_return else "invoice"
        if kind == "sale_exchange" and ar_amount < 0:
            ar_kind, ar_amount, refunding = "credit", -ar_amount, True
        n += 1
    ar_no = n
    receipt_type = "reverse_receipt" if refunding else "receipt"
    suffix = 2
    change = doc.change
    received = 0
    receipts: list[Posting] = []
    for p in doc.payments:
        tender = p.tender
        if tender == "account":
            continue  # charged to the account: stays outstanding
        amount = p.amount
        if tender == "cash" and change:
            used = min(change, amount)
            amount -= used
            change -= used
        if tender == "card":
            account = "bank" if p.banked else "card_clearing"
        else:
            account = ACCOUNT_FOR[tender]
        n += 1
        receipts.append(
            new(
                Posting,
                (
                    f"{tid}/{n}",
                    tid,
                    docket,
                    store,
                    kind,
                    receipt_type,
                    f"{docket}-{suffix}",
                    customer,
                    account,
                    tender,
                    amount,
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                ),
            )
        )
        received += amount
        suffix += 1
    if ar_kind is not None:
        rows.append(
            new(
                Posting,
                (
                    f"{tid}/{ar_no}",
                    tid,
                    docket,
                    store,
                    kind,
                    ar_kind,
                    docket,
                    customer,
                    "debtors",
                    None,
                    ar_amount,
                    ar_amount - received,
                    tax_total,
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                ),
            )
        )
    rows += receipts
    return rows


class PostingsJob:
    """The postings extract as an `ExtractJob`: the AR, receipt and stock rows of a document."""

    name = "postings"
    reads = SALE_KINDS

    def enabled(self, cfg: ExtractConfig) -> bool:
        return cfg.postings_enabled

    def start(self) -> list[Posting]:
        return []

    def take(self, row: Row, doc: RowDoc, acc: list[Posting], tally: Tally, ctx: Context) -> None:
        try:
            sale = doc.get()
            rows = post(sale, ctx.cfg)
        except DocumentError as exc:
            tally.reject(self.name, row, exc)
            return
        acc += rows
        tally.done.append(_new(Done, (row.txn_id, self.name, sale.register_no)))

    def finish(self, accs: Sequence[list[Posting]], plan: Plan) -> bool:
        for acc in accs:
            plan.postings += acc
        return True


JOB = PostingsJob()
