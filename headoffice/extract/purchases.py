"""Purchase records for the loyalty system (seed 000: purchases extract).

A register sale becomes one record per sale with a stable id derived from its txn_id, so the
receiver can deduplicate and a rerun can never mint a second record for the same sale.
Options: require ERP posting (wait for the ERP's posting and extract its corrected values),
include open items (open quantities in or out), and a delay after the sale.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from headoffice.extract.config import ExtractConfig
from headoffice.extract.documents import RETURN_KINDS, DocumentError, Row, SaleDoc, to_doc
from headoffice.extract.plugin import Context, Done, Plan, RowDoc, Tally
from protocol.money import fmt_qty, pro_rata

# Kinds that sell goods to a customer. Payments on account or on a layaway buy nothing; a
# delivery fulfils quantities that were recorded (as open) on the order; a layaway cancellation
# undoes a layaway that, with open items left out, never produced purchased quantities.
PURCHASE_KINDS = frozenset(
    {"sale", "sale_refund", "sale_exchange", "special_order", "layaway", "sale_with_fulfilment"}
)


def record_id(txn_id: str) -> str:
    """Stable record id, also the HTTP Idempotency-Key."""
    return f"pur-{txn_id}"


def not_due(doc: SaleDoc, cfg: ExtractConfig, now_ms: int, erp_posted: bool) -> str | None:
    """Why a sale is not extracted yet (it will be on a later run), or None when it is due."""
    if cfg.require_erp_posting and not erp_posted:
        return "waiting for ERP posting"
    if doc.ts + cfg.delay_period_s * 1000 > now_ms:
        return "in delay period"
    return None


def purchase(doc: SaleDoc, cfg: ExtractConfig, erp_ref: str | None) -> dict[str, Any] | None:
    """The purchase record of a due sale; None when nothing was purchased (all lines open)."""
    sign = -1 if doc.kind in RETURN_KINDS else 1
    lines = []
    for ln in doc.lines:
        qty = ln.qty
        amount, tax = ln.amount, ln.tax
        if ln.open_qty and not cfg.include_open_items:
            qty = ln.qty - ln.open_qty if ln.qty >= 0 else ln.qty + ln.open_qty
            amount = pro_rata(ln.amount, qty, ln.qty)
            tax = pro_rata(ln.tax, qty, ln.qty)
            if qty == 0:
                continue
        lines.append(
            {
                "line_no": ln.line_no,
                "item": ln.item,
                "qty": fmt_qty(sign * qty),
                "unit_price": ln.unit_price,
                "tax_code": ln.tax_code,
                "amount": sign * amount,
                "tax": sign * tax,
            }
        )
    if not lines:
        return None
    return {
        "record_id": record_id(doc.txn_id),
        "txn_id": doc.txn_id,
        "register_no": doc.register_no,
        "kind": doc.kind,
        "store": doc.store,
        "lane": doc.lane,
        "customer": doc.customer,
        "date": doc.business_day,
        "currency": doc.currency,
        "lines": lines,
        "total": sum(x["amount"] for x in lines),
        "tax": sum(x["tax"] for x in lines),
        "erp_ref": erp_ref,
    }


class PurchasesJob:
    """The purchases extract as an `ExtractJob`: one record per due sale."""

    name = "purchases"
    reads = PURCHASE_KINDS

    def enabled(self, cfg: ExtractConfig) -> bool:
        return cfg.purchases_enabled

    def start(self) -> list[dict[str, Any]]:
        return []

    def take(
        self, row: Row, doc: RowDoc, acc: list[dict[str, Any]], tally: Tally, ctx: Context
    ) -> None:
        posted = ctx.erp.get(row.txn_id)
        try:
            # with corrections, its own document; else the one the other jobs read
            sale = to_doc(row, posted.corrections) if posted and posted.corrections else doc.get()
        except DocumentError as exc:
            tally.reject(self.name, row, exc)
            return
        why = not_due(sale, ctx.cfg, ctx.now_ms, posted is not None)
        if why is not None:
            tally.hold(self.name, row.rowid, why)
            return
        rec = purchase(sale, ctx.cfg, posted.ref if posted else None)
        tally.done.append(_new(Done, (row.txn_id, self.name, rec["record_id"] if rec else None)))
        if rec is not None:
            acc.append(rec)

    def finish(self, accs: Sequence[list[dict[str, Any]]], plan: Plan) -> bool:
        for acc in accs:
            plan.purchases += acc
        plan.purchases.sort(
            key=lambda r: (r["store"], r["lane"], r["date"], r["register_no"], r["txn_id"])
        )
        return True


JOB = PurchasesJob()
_new = tuple.__new__  # `_new(Done, (...))` is `Done(...)` without a Python-level frame (per row)
