"""The sale family (the roll-up seed's transaction types): lines, tenders, totals that reconcile.

Prices are tax inclusive. A line's `amount` is qty x unit_price rounded half away from zero,
its `tax` the tax contained in that amount at the catalog's rate of the item's tax code valid
on the business day. A sold line's unit_price is the catalog's price at the document's moment,
or an override the PriceOverride setting allows (agent.documents.rules); a returned line keeps
the price it was sold at. Payments must settle the total the way the kind says.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Any

from agent.documents import fields as f
from agent.documents.envelope import ENVELOPE_KEYS, DocContext, business_day, moment, register
from agent.documents.rules import PRICE_REASON, Rules
from protocol import money
from protocol.documents import SALE_KINDS
from protocol.errors import ProtocolError
from protocol.messages import UUID_RE

TENDERS = frozenset({"cash", "card", "cheque", "account", "voucher", "gift_card"})
CARD_ONLY = ("token", "scheme", "last4", "banked")
SCHEME_RE = re.compile(r"[a-z][a-z0-9_]{1,23}")
TOKEN_RE = re.compile(r"[A-Za-z0-9_.:-]{6,128}")
LAST4_RE = re.compile(r"[0-9]{4}")

NO_LINES = frozenset({"on_account_payment", "layaway_payment"})
OPEN_QTY = frozenset({"layaway", "special_order", "sale_with_fulfilment", "delivery"})
NEEDS_CUSTOMER = frozenset(
    {
        "special_order",
        "on_account_payment",
        "layaway",
        "layaway_cancellation",
        "layaway_payment",
        "delivery",
    }
)
DEPOSIT = frozenset({"layaway", "special_order"})  # paid now may be less than the total
PAYBACK = frozenset({"sale_refund", "layaway_cancellation"})  # payments are money paid back
REFERS = frozenset(
    {"sale_refund", "sale_exchange", "layaway_cancellation", "layaway_payment", "delivery"}
)

SALE_KEYS = ENVELOPE_KEYS | {"lines", "payments", "total", "change"}
LINE_KEYS = frozenset(
    {
        "line_no",
        "item",
        "description",
        "qty",
        "unit_price",
        "tax_code",
        "amount",
        "tax",
        "open_qty",
        "return_type",
        PRICE_REASON,
        "ext",
    }
)
PAYMENT_KEYS = frozenset({"tender", "amount", "reference", "ext", *CARD_ONLY})


def keys_for(kind: str) -> frozenset[str]:
    extra = set()
    if kind in ("sale_refund", "sale_exchange"):
        extra.add("return_type")
    if kind in REFERS:
        extra.add("original_txn_id")
    return SALE_KEYS | extra


def validate(doc: dict[str, Any], ctx: DocContext, rules: Rules) -> None:
    kind = doc["kind"]
    f.only_keys(doc, keys_for(kind), "$")
    if kind in NEEDS_CUSTOMER and doc.get("customer") is None:
        raise ProtocolError(f"a {kind} needs a customer code", "$.customer")
    f.text(doc, "return_type", "$", required=False, pattern=f.CODE_RE, max_len=32)
    check_return_type(doc, "$", rules)
    if doc.get("original_txn_id") is not None and (
        type(doc["original_txn_id"]) is not str or not UUID_RE.fullmatch(doc["original_txn_id"])
    ):
        raise ProtocolError("must be a lowercase canonical UUID", "$.original_txn_id")
    lines = f.items(doc, "lines", "$", f.MAX_LINES)
    if kind in NO_LINES and lines:
        raise ProtocolError(f"a {kind} carries no item lines, only payments", "$.lines")
    if kind not in NO_LINES and not lines:
        raise ProtocolError(f"a {kind} needs at least one line", "$.lines")
    day = business_day(doc)
    at = moment(doc)
    line_total = sum(check_line(kind, line, i, day, rules, at) for i, line in enumerate(lines))
    f.line_numbers(lines, "$.lines")
    payments = f.items(doc, "payments", "$", f.MAX_PAYMENTS)
    paid = 0
    cash = 0
    for i, pay in enumerate(payments):
        amount = check_payment(pay, f"$.payments[{i}]", doc.get("customer"), rules)
        paid += amount
        if pay["tender"] == "cash":
            cash += amount
    total = f.amount(doc, "total", "$", lo=-1)
    change = f.opt_amount(doc, "change", "$") or 0
    reconcile(kind, doc.get("customer"), lines, line_total, total, paid, cash, change)


def check_return_type(m: dict[str, Any], p: str, rules: Rules) -> None:
    code = m.get("return_type")
    if rules.catalog is not None and code is not None and rules.catalog.txn_type(code) is None:
        raise ProtocolError(
            f"no transaction type {f.shown(code)} in catalog version {rules.version}",
            f"{p}.return_type",
        )


def returned(kind: str, line: dict[str, Any]) -> bool:
    """Goods coming back: a refund's or cancellation's lines, an exchange's negative ones."""
    return kind in PAYBACK or str(line.get("qty", "")).startswith("-")


def check_line(kind: str, line: Any, i: int, day: date, rules: Rules, at: datetime) -> int:
    p = f"$.lines[{i}]"
    f.mapping(line, p)
    f.only_keys(line, LINE_KEYS, p)
    code_sent = f.req_text(line, "item", p, f.CODE_RE, 64)
    back = returned(kind, line)
    item = rules.item(code_sent, f"{p}.item", sold=not back)
    f.text(line, "description", p, required=False, max_len=200)
    q = f.quantity(line, "qty", p)
    if q == 0:
        raise ProtocolError("must not be zero", f"{p}.qty")
    if q < 0 and kind != "sale_exchange":
        raise ProtocolError(
            f"must be positive in a {kind} (only a sale_exchange has returned, negative lines)",
            f"{p}.qty",
        )
    if "return_type" in line and (kind != "sale_exchange" or q > 0):
        raise ProtocolError("only returned (negative) lines of a sale_exchange", f"{p}.return_type")
    f.text(line, "return_type", p, required=False, pattern=f.CODE_RE, max_len=32)
    check_return_type(line, p, rules)
    price = f.amount(line, "unit_price", p)
    code = f.req_text(line, "tax_code", p, f.TAX_CODE_RE, 16)
    rules.check_tax_code(line, item, p)
    if back:
        # Paid back at the price it was sold for, whatever today's price is.
        f.text(line, PRICE_REASON, p, required=False, max_len=200)
    else:
        rules.check_price(line, item, at, p)
    expected = money.line_amount(q, price)
    amount = f.amount(line, "amount", p, lo=-1)
    if amount != expected:
        raise ProtocolError(
            f"{amount} does not reconcile: qty {q} x unit_price {price} = {expected} "
            "(rounded half away from zero)",
            f"{p}.amount",
        )
    t = f.amount(line, "tax", p, lo=-1)
    rate = rules.tax_rate(code, day, f"{p}.tax_code")
    if rate is not None:
        want = money.tax_included(amount, rate)
        if t != want:
            raise ProtocolError(
                f"{t} is not the tax in {amount} at {code} {rate / 100:g} % valid on {day} "
                f"in catalog version {rules.version}: expected {want}",
                f"{p}.tax",
            )
    elif abs(t) > abs(amount) or (t and (t < 0) != (amount < 0)):
        raise ProtocolError(f"{t} cannot be the tax contained in {amount}", f"{p}.tax")
    if "open_qty" in line:
        if kind not in OPEN_QTY:
            raise ProtocolError(
                f"only {', '.join(sorted(OPEN_QTY))} lines have an open quantity", f"{p}.open_qty"
            )
        oq = f.quantity(line, "open_qty", p)
        if not 0 <= oq <= q:
            raise ProtocolError(f"must be between 0.000 and qty {q}", f"{p}.open_qty")
    return amount


def check_payment(pay: Any, p: str, customer: str | None, rules: Rules) -> int:
    f.mapping(pay, p)
    f.only_keys(pay, PAYMENT_KEYS, p)
    tender = f.req_text(pay, "tender", p, max_len=16)
    if tender not in TENDERS:
        raise ProtocolError(
            f"unknown tender {f.shown(tender)}; expected one of {', '.join(sorted(TENDERS))}",
            f"{p}.tender",
        )
    amount = f.amount(pay, "amount", p, lo=1)
    if tender == "card":
        f.req_text(pay, "token", p, TOKEN_RE, 128)
        f.req_text(pay, "scheme", p, SCHEME_RE, 24)
        f.req_text(pay, "last4", p, LAST4_RE, 4)
        f.boolean(pay, "banked", p, True)
    else:
        for key in CARD_ONLY:
            if key in pay:
                raise ProtocolError(f"only card tenders carry {key}", f"{p}.{key}")
    if tender == "account" and customer is None:
        raise ProtocolError("an account tender needs the document's customer", f"{p}.tender")
    if tender == "account" and rules.catalog is not None:
        row = rules.catalog.customer(customer or "")
        if row is not None and not row["account_allowed"]:
            raise ProtocolError(
                f"customer {customer!r} has no account in catalog version {rules.version} "
                "(account_allowed 0)",
                f"{p}.tender",
            )
    f.text(pay, "reference", p, required=False, pattern=f.CODE_RE, max_len=64)
    if "ext" in pay:
        f.mapping(pay["ext"], f"{p}.ext")
    return amount


def reconcile(
    kind: str,
    customer: str | None,
    lines: list[Any],
    line_total: int,
    total: int,
    paid: int,
    cash: int,
    change: int,
) -> None:
    """Totals against lines, payments against totals, by kind (DOCUMENTS.md)."""
    if kind in NO_LINES:
        if total <= 0:
            raise ProtocolError(f"a {kind} must have a positive total", "$.total")
        if paid - change != total:
            raise ProtocolError(
                f"payments {paid} less change {change} must equal the total {total}", "$.total"
            )
    elif total != line_total:
        raise ProtocolError(f"{total} is not the sum of the line amounts, {line_total}", "$.total")
    if change:
        if kind in PAYBACK or (kind == "sale_exchange" and total < 0):
            raise ProtocolError("no change is given when money is paid back", "$.change")
        if change > cash:
            raise ProtocolError(
                f"change {change} exceeds the cash tendered {cash}; only cash gives change",
                "$.change",
            )
    if kind in NO_LINES:
        return
    net = paid - change
    if kind == "sale_refund" or (kind == "sale_exchange" and total < 0):
        due = -total if kind == "sale_exchange" else total
        if paid != due:
            raise ProtocolError(
                f"money paid back ({paid}) must equal the amount returned ({due})", "$.payments"
            )
    elif kind == "layaway_cancellation":
        if paid > total:
            raise ProtocolError(
                f"money paid back ({paid}) exceeds the cancelled goods ({total})", "$.payments"
            )
    elif kind in DEPOSIT:
        if net > total:
            raise ProtocolError(
                f"payments {net} exceed the total {total}; give the surplus as change",
                "$.payments",
            )
    elif net > total:
        raise ProtocolError(
            f"payments {paid} less change {change} exceed the total {total}", "$.change"
        )
    elif net < total and customer is None:
        raise ProtocolError(
            f"payments {paid} less change {change} do not settle the total {total}; only an "
            "account customer may leave a remainder on account",
            "$.payments",
        )


register(SALE_KINDS, validate)
