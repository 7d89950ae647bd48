"""Purchase receive (`receive_purchase_order`): the purchasing seed's receive rules.

- A line is counted (`qty` > 0), counted as an explicit zero (`counted_zero: true`: the user
  deliberately counted none) or not counted (neither). The three stay apart in `count_state`.
- line_cost = qty x unit_cost (tax exclusive), rounded half away from zero.
- Freight and packaging are spread over the counted lines by line_cost; a line's
  `freight_override`/`packaging_override` is that line's value and leaves the pool.
- Tax per line on its landed cost at the catalog's rate of the item's tax code valid on
  `document_date` (not today's rate).
- With an `expected_total` loaded, the computed total must lie within the setting
  PurchRecvAmountVariation (minor units, default 11) of it, or the receive cannot complete.
- Without a `po_id` it is an unexpected delivery, refused when PurchReceiveNoUnexp is 1.
- The supplier and every item exist in the catalog, the supplier active.
Settings come from the lane's catalog (agent.documents.rules), read at each document.
"""

from __future__ import annotations

from typing import Any

from agent.documents import fields as f
from agent.documents.allocation import AllocationError, allocate
from agent.documents.envelope import ENVELOPE_KEYS, DocContext, business_day, register
from agent.documents.rules import Rules
from protocol import money
from protocol.errors import ProtocolError

RECEIVE_KEYS = ENVELOPE_KEYS | {
    "po_id",
    "supplier",
    "document",
    "location",
    "document_date",
    "expected_total",
    "freight",
    "packaging",
    "lines",
    "line_total",
    "tax_total",
    "total",
}
LINE_KEYS = frozenset(
    {
        "line_no",
        "item",
        "description",
        "qty",
        "counted_zero",
        "count_state",
        "unit_cost",
        "tax_code",
        "line_cost",
        "freight_override",
        "packaging_override",
        "freight",
        "packaging",
        "tax",
        "expected_qty",
        "ext",
    }
)
# Computed by the agent; a POS may send them, and then they must agree.
COMPUTED_LINE = ("count_state", "line_cost", "freight", "packaging", "tax")
COMPUTED_DOC = ("line_total", "tax_total", "total")


def _agree(m: dict[str, Any], key: str, value: Any, path: str) -> None:
    if key in m and m[key] != value:
        raise ProtocolError(
            f"{f.shown(m[key])} disagrees with the computed {value!r}", f"{path}.{key}"
        )
    m[key] = value


def validate(doc: dict[str, Any], ctx: DocContext, rules: Rules) -> None:
    f.only_keys(doc, RECEIVE_KEYS, "$")
    po = f.text(doc, "po_id", "$", nullable=True, pattern=f.CODE_RE, max_len=64)
    if po is None and rules.settings["PurchReceiveNoUnexp"]:
        raise ProtocolError(
            "unexpected deliveries without a purchase order are refused here "
            f"(PurchReceiveNoUnexp=1 in catalog version {rules.version})",
            "$.po_id",
        )
    doc.setdefault("po_id", po)
    rules.supplier(f.req_text(doc, "supplier", "$", f.CODE_RE, 64), "$.supplier")
    f.req_text(doc, "document", "$", f.CODE_RE, 64)
    f.text(doc, "location", "$", required=False, pattern=f.SEGMENT_RE, max_len=32)
    doc.setdefault("location", doc["store"])
    day = f.day(doc, "document_date", "$")
    if day is None:
        day = business_day(doc)
        doc["document_date"] = day.isoformat()
    expected = f.opt_amount(doc, "expected_total", "$")
    freight = f.opt_amount(doc, "freight", "$") or 0
    packaging = f.opt_amount(doc, "packaging", "$") or 0
    doc.setdefault("freight", freight)
    doc.setdefault("packaging", packaging)
    lines = f.items(doc, "lines", "$", f.MAX_LINES)
    if not lines:
        raise ProtocolError("a receive needs at least one line", "$.lines")
    costs: list[int] = []
    counted: list[bool] = []
    for i, line in enumerate(lines):
        p = f"$.lines[{i}]"
        f.mapping(line, p)
        f.only_keys(line, LINE_KEYS, p)
        item = rules.item(f.req_text(line, "item", p, f.CODE_RE, 64), f"{p}.item", sold=False)
        f.text(line, "description", p, required=False, max_len=200)
        zero = f.boolean(line, "counted_zero", p, False)
        if "expected_qty" in line:
            f.quantity(line, "expected_qty", p)
        if zero and "qty" in line:
            raise ProtocolError(
                "send either qty or counted_zero: true (an explicit zero), not both", f"{p}.qty"
            )
        if "qty" in line:
            q = f.quantity(line, "qty", p)
            if q <= 0:
                raise ProtocolError(
                    "must be positive; an explicitly counted zero is counted_zero: true, and a "
                    "line not counted has neither qty nor counted_zero",
                    f"{p}.qty",
                )
            state = "counted"
        else:
            q = money.qty("0.000", p)
            state = "counted_zero" if zero else "not_counted"
        line["counted_zero"] = zero
        _agree(line, "count_state", state, p)
        unit_cost = f.amount(line, "unit_cost", p)
        f.req_text(line, "tax_code", p, f.TAX_CODE_RE, 16)
        rules.check_tax_code(line, item, p)
        cost = money.line_amount(q, unit_cost)
        _agree(line, "line_cost", cost, p)
        costs.append(cost)
        counted.append(state == "counted")
        for key in ("freight_override", "packaging_override"):
            if key in line:
                f.amount(line, key, p)
                if state != "counted":
                    raise ProtocolError(
                        "only a counted line carries freight or packaging", f"{p}.{key}"
                    )
    if not any(counted) and not any(line["counted_zero"] for line in lines):
        raise ProtocolError("nothing was counted: no line has a qty or counted_zero", "$.lines")
    f.line_numbers(lines, "$.lines")
    shares = {}
    for charge, pool in (("freight", freight), ("packaging", packaging)):
        idx = [i for i, c in enumerate(counted) if c]
        overrides = [lines[i].get(f"{charge}_override") for i in idx]
        try:
            parts = allocate(pool, [costs[i] for i in idx], overrides) if idx else []
        except AllocationError as exc:
            field = (
                f"$.lines[{idx[exc.index]}].{charge}_override"
                if exc.index is not None
                else (f"$.{charge}")
            )
            raise ProtocolError(exc.reason, field) from None
        if not idx and pool:
            raise ProtocolError(f"no counted line to carry {pool} of {charge}", f"$.{charge}")
        share = [0] * len(lines)
        for i, part in zip(idx, parts, strict=True):
            share[i] = part
        shares[charge] = share
    tax_total = 0
    for i, line in enumerate(lines):
        p = f"$.lines[{i}]"
        _agree(line, "freight", shares["freight"][i], p)
        _agree(line, "packaging", shares["packaging"][i], p)
        rate = rules.tax_rate(line["tax_code"], day, f"{p}.tax_code")
        landed = costs[i] + shares["freight"][i] + shares["packaging"][i]
        if rate is not None:
            t = money.tax_on(landed, rate)
            _agree(line, "tax", t, p)
        elif "tax" in line:  # a lane trading without a catalog keeps the POS's figure
            t = f.amount(line, "tax", p)
        else:
            raise ProtocolError(
                "required: this lane has no catalog to take the tax rate from", f"{p}.tax"
            )
        tax_total += t
    line_total = sum(costs)
    total = line_total + freight + packaging + tax_total
    _agree(doc, "line_total", line_total, "$")
    _agree(doc, "tax_total", tax_total, "$")
    _agree(doc, "total", total, "$")
    if expected is not None:
        variation = int(rules.settings["PurchRecvAmountVariation"])
        if abs(total - expected) > variation:
            raise ProtocolError(
                f"the keyed total {total} is {total - expected:+d} from the expected {expected}, "
                f"more than the {variation} allowed (PurchRecvAmountVariation in catalog "
                f"version {rules.version}); the receive cannot complete",
                "$.expected_total",
            )


register({"receive_purchase_order"}, validate)
