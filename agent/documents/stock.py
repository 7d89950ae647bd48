"""Stock movements: transits between stores, their acceptance, supplier returns, adjustments.

Purchase receive has its own module (purchase.py). Quantities are three-place decimal strings.
A transit's `sscc`, `transit_no` and `label` are filled by the agent after validation
(`complete_transit`), from the lane's SSCC range and register number.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from agent.documents import fields as f
from agent.documents.envelope import ENVELOPE_KEYS, DocContext, register
from agent.documents.rules import BY_SETTINGS, Rules
from agent.documents.sscc import SsccScheme, check_sscc, label_text
from protocol import money
from protocol.errors import ProtocolError

BY_TYPES = ("staff", "customer", "supplier", "courier")
LINE_KEYS = frozenset({"line_no", "item", "description", "qty", "ext"})
KEYS = {
    "transit_inventory": ENVELOPE_KEYS
    | {"transit_no", "sscc", "source_store", "dest_store", "by", "label", "lines"},
    "transit_inventory_accept": ENVELOPE_KEYS
    | {"transit_no", "sscc", "source_store", "dest_store", "lines"},
    "supplier_return": ENVELOPE_KEYS | {"supplier", "po_id", "reason", "status", "lines", "total"},
    "stock_adjustment": ENVELOPE_KEYS | {"reason", "lines"},
}
RETURN_LINE_KEYS = LINE_KEYS | {"unit_cost", "line_cost", "reason"}
ADJUST_LINE_KEYS = LINE_KEYS | {"reason"}


def validate(doc: dict[str, Any], ctx: DocContext, rules: Rules) -> None:
    kind = doc["kind"]
    f.only_keys(doc, KEYS[kind], "$")
    if kind == "transit_inventory":
        _transit(doc, ctx, rules)
    elif kind == "transit_inventory_accept":
        _accept(doc, ctx, rules)
    elif kind == "supplier_return":
        _supplier_return(doc, ctx, rules)
    else:
        f.req_text(doc, "reason", "$", f.CODE_RE, 64)
        _lines(doc, ADJUST_LINE_KEYS, rules, sign="nonzero", sold=False)
        for i, line in enumerate(doc["lines"]):
            f.text(line, "reason", f"$.lines[{i}]", required=False, pattern=f.CODE_RE, max_len=64)


def _lines(
    doc: dict[str, Any],
    keys: frozenset[str],
    rules: Rules,
    sign: str = "positive",
    *,
    sold: bool,
) -> Decimal:
    """Lines of items the catalog holds (`sold`: active ones only: stock sent on)."""
    lines = f.items(doc, "lines", "$", f.MAX_LINES)
    if not lines:
        raise ProtocolError(f"a {doc['kind']} needs at least one line", "$.lines")
    units = Decimal(0)
    for i, line in enumerate(lines):
        p = f"$.lines[{i}]"
        f.mapping(line, p)
        f.only_keys(line, keys, p)
        rules.item(f.req_text(line, "item", p, f.CODE_RE, 64), f"{p}.item", sold=sold)
        f.text(line, "description", p, required=False, max_len=200)
        q = f.quantity(line, "qty", p)
        if (sign == "positive" and q <= 0) or q == 0:
            raise ProtocolError(
                "must be positive" if sign == "positive" else "must not be zero", f"{p}.qty"
            )
        units += q
    f.line_numbers(lines, "$.lines")
    return units


def check_by(by: Any, rules: Rules, path: str = "$.by") -> None:
    """How the parcel travels: by staff, customer, supplier or courier, each tab allowed by
    its PurchTransitAllow* setting, the one named an active row of the catalog."""
    f.mapping(by, path)
    f.only_keys(by, {"type", "id", "name"}, path)
    kind = f.req_text(by, "type", path, max_len=16)
    if kind not in BY_TYPES:
        raise ProtocolError(f"must be one of {', '.join(BY_TYPES)}", f"{path}.type")
    if not rules.allows_by(kind):
        raise ProtocolError(
            f"transits by {kind} are disabled here ({BY_SETTINGS[kind]}=0 in catalog "
            f"version {rules.version})",
            f"{path}.type",
        )
    rules.person(kind, f.req_text(by, "id", path, f.CODE_RE, 64), f"{path}.id")
    f.text(by, "name", path, required=False, max_len=100)


def check_dest(doc: dict[str, Any], ctx: DocContext, rules: Rules) -> None:
    dest = f.req_text(doc, "dest_store", "$", f.SEGMENT_RE, 32)
    if dest == ctx.lane.store:
        raise ProtocolError("a transit goes to another store, not this one", "$.dest_store")
    rules.dest_store(dest, "$.dest_store")


def _transit(doc: dict[str, Any], ctx: DocContext, rules: Rules) -> None:
    source = f.text(doc, "source_store", "$", required=False, pattern=f.SEGMENT_RE, max_len=32)
    if source is not None and source != ctx.lane.store:
        raise ProtocolError(
            f"a transit is created at its source, {ctx.lane.store}", "$.source_store"
        )
    doc["source_store"] = ctx.lane.store
    check_dest(doc, ctx, rules)
    if "by" not in doc:
        raise ProtocolError(
            "required: {type, id} of the staff, customer, supplier or courier", "$.by"
        )
    check_by(doc["by"], rules)
    _lines(doc, LINE_KEYS, rules, sold=True)
    if "sscc" in doc:
        check_sscc(doc["sscc"], "$.sscc")
    f.text(doc, "transit_no", "$", required=False, pattern=f.CODE_RE, max_len=32)
    f.text(doc, "label", "$", required=False, max_len=2000)


def scheme(ctx: DocContext) -> SsccScheme:
    t = ctx.transit
    if t.gs1_company_prefix is None:
        raise ProtocolError(
            "this lane cannot make SSCC labels: set transit.gs1_company_prefix and "
            "transit.sscc_lane_prefix in the agent configuration",
            "$.sscc",
        )
    return SsccScheme(t.gs1_company_prefix, t.sscc_lane_prefix, t.sscc_extension_digit)


def complete_transit(doc: dict[str, Any], sscc: str, ctx: DocContext) -> None:
    """Fill sscc, transit_no and the label text once numbers are allocated."""
    doc["sscc"] = sscc
    doc.setdefault("transit_no", doc["register_no"])
    if "label" not in doc:
        try:
            hri = scheme(ctx).hri(sscc)
        except ProtocolError:
            hri = sscc  # a pre-printed SSCC on a lane without a company prefix configured
        by = doc["by"]
        units = sum((money.qty(line["qty"], "qty") for line in doc["lines"]), Decimal(0))
        doc["label"] = label_text(
            sscc,
            hri,
            doc["source_store"],
            doc["dest_store"],
            f"{by['type']} {by['id']}",
            doc["register_no"],
            len(doc["lines"]),
            money.fmt_decimal_qty(units),
        )


def _accept(doc: dict[str, Any], ctx: DocContext, rules: Rules) -> None:
    if "sscc" in doc:
        check_sscc(doc["sscc"], "$.sscc")
    f.text(doc, "transit_no", "$", required=False, pattern=f.CODE_RE, max_len=32)
    if "sscc" not in doc and "transit_no" not in doc:
        raise ProtocolError("name the transit: sscc (scanned) or transit_no (keyed)", "$.sscc")
    source = f.req_text(doc, "source_store", "$", f.SEGMENT_RE, 32)
    if source == ctx.lane.store:
        raise ProtocolError("a store cannot accept its own transit", "$.source_store")
    rules.known_store(source, "$.source_store")
    dest = f.text(doc, "dest_store", "$", required=False, pattern=f.SEGMENT_RE, max_len=32)
    if dest is not None and dest != ctx.lane.store:
        raise ProtocolError(f"this transit goes to {dest}, not to {ctx.lane.store}", "$.dest_store")
    doc["dest_store"] = ctx.lane.store
    if "lines" in doc:
        lines = f.items(doc, "lines", "$", f.MAX_LINES)
        for i, line in enumerate(lines):
            p = f"$.lines[{i}]"
            f.mapping(line, p)
            f.only_keys(line, LINE_KEYS, p)
            rules.item(f.req_text(line, "item", p, f.CODE_RE, 64), f"{p}.item", sold=False)
            if f.quantity(line, "qty", p) < 0:
                raise ProtocolError("an accepted quantity is not negative", f"{p}.qty")
        f.line_numbers(lines, "$.lines")


def _supplier_return(doc: dict[str, Any], ctx: DocContext, rules: Rules) -> None:
    rules.supplier(f.req_text(doc, "supplier", "$", f.CODE_RE, 64), "$.supplier")
    f.text(doc, "po_id", "$", required=False, nullable=True, pattern=f.CODE_RE, max_len=64)
    f.text(doc, "reason", "$", required=False, pattern=f.CODE_RE, max_len=64)
    _lines(doc, RETURN_LINE_KEYS, rules, sold=False)
    total = 0
    for i, line in enumerate(doc["lines"]):
        p = f"$.lines[{i}]"
        f.text(line, "reason", p, required=False, pattern=f.CODE_RE, max_len=64)
        if "unit_cost" in line:
            cost = money.line_amount(money.qty(line["qty"], p), f.amount(line, "unit_cost", p))
            if "line_cost" in line and line["line_cost"] != cost:
                raise ProtocolError(f"disagrees with qty x unit_cost = {cost}", f"{p}.line_cost")
            line["line_cost"] = cost
            total += cost
        elif "line_cost" in line:
            raise ProtocolError("send unit_cost; the agent computes line_cost", f"{p}.line_cost")
    if "total" in doc and doc["total"] != total:
        raise ProtocolError(f"disagrees with the sum of line costs, {total}", "$.total")
    doc["total"] = total
    # PurchAutoCompleteReturn: pending by default so a repaired item can be receipted back.
    want = "completed" if rules.settings["PurchAutoCompleteReturn"] else "pending"
    if "status" in doc and doc["status"] != want:
        raise ProtocolError(
            f"this lane records supplier returns as {want!r} "
            f"(PurchAutoCompleteReturn in catalog version {rules.version})",
            "$.status",
        )
    doc["status"] = want


register(KEYS, validate)
