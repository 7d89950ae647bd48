"""The envelope every document kind shares, and dispatch to the per-kind rules.

`validate` is pure: it refuses a document naming the JSON path at fault, or returns the document
to journal with what the agent owns filled in (store, lane, business_day, time, currency, line
numbers, computed amounts). txn_id, register_no and SSCC are allocated by the caller afterwards,
so a refused document never burns a number.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from agent.config import DocumentsConfig, PurchasingConfig, TransitConfig
from agent.documents import fields as f
from agent.documents.tax import TaxTable
from protocol.documents import DOCUMENT_KINDS as KINDS
from protocol.documents import SALE_KINDS, check_document
from protocol.errors import ProtocolError
from protocol.identity import LaneId

REGISTER_RE = re.compile(r"[A-Z][0-9]?[0-9]{4,12}")
CURRENCY_RE = re.compile(r"[A-Z]{3}")
ENVELOPE_KEYS = frozenset(
    {
        "kind",
        "txn_id",
        "register_no",
        "store",
        "lane",
        "business_day",
        "time",
        "currency",
        "customer",
        "staff",
        "ext",
    }
)
DocumentError = ProtocolError


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class DocContext:
    """Everything validation needs besides the document: lane identity and the settings."""

    lane: LaneId
    documents: DocumentsConfig = field(default_factory=DocumentsConfig)
    purchasing: PurchasingConfig = field(default_factory=PurchasingConfig)
    transit: TransitConfig = field(default_factory=TransitConfig)
    tax: TaxTable = field(default_factory=TaxTable)
    clock: Callable[[], datetime] = _now

    def local_now(self) -> datetime:
        now = self.clock()
        if self.documents.timezone:
            return now.astimezone(ZoneInfo(self.documents.timezone))
        return now.astimezone()


def screen(doc: Any) -> None:
    """The rules of every kind (protocol.documents.check_document: a known kind, bounded
    depth and size, no floats, no lone surrogates, no card number anywhere), checked before
    anything walks the document; pure, so a caller may copy the document after it."""
    if type(doc) is dict and type(doc.get("kind")) is not str:
        raise ProtocolError(f"must be a string, one of {', '.join(sorted(KINDS))}", "kind")
    check_document(doc)


def validate(doc: Any, ctx: DocContext, *, screened: bool = False) -> dict[str, Any]:
    """Check `doc` and return it completed (the same dict, filled in).

    `screened`: the caller ran `screen(doc)` already (DocumentService does, before it
    copies the document), so it is not walked twice.
    """
    if not screened:
        screen(doc)
    assert type(doc) is dict
    kind: str = doc["kind"]
    _envelope(doc, ctx)
    if kind in SALE_KINDS:
        from agent.documents import sales  # noqa: PLC0415 - kept apart to avoid a cycle

        sales.validate(doc, ctx)
    else:
        from agent.documents import stock  # noqa: PLC0415

        stock.validate(doc, ctx)
    return doc


def business_day(doc: dict[str, Any]) -> date:
    return date.fromisoformat(doc["business_day"])


def _envelope(doc: dict[str, Any], ctx: DocContext) -> None:
    f.text(doc, "register_no", "$", required=False, pattern=REGISTER_RE, max_len=16)
    for key, own in (("store", ctx.lane.store), ("lane", ctx.lane.lane)):
        if key in doc:
            f.text(doc, key, "$", max_len=32)
            if doc[key] != own:
                raise ProtocolError(
                    f"this agent is {key} {own!r}, not {f.shown(doc[key])}", f"$.{key}"
                )
        else:
            doc[key] = own
    if "time" in doc:
        t = f.req_text(doc, "time", "$", max_len=40)
        try:
            when = datetime.fromisoformat(t)
        except ValueError:
            raise ProtocolError(f"not an ISO 8601 date-time: {f.shown(t)}", "$.time") from None
        if when.tzinfo is None:
            raise ProtocolError("needs a UTC offset (e.g. +02:00 or Z)", "$.time")
    else:
        when = ctx.local_now()
        doc["time"] = when.isoformat(timespec="milliseconds")
    if f.day(doc, "business_day", "$") is None:
        if "business_day" in doc:
            raise ProtocolError("must be a date YYYY-MM-DD, not null", "$.business_day")
        doc["business_day"] = when.date().isoformat()
    if "currency" not in doc and ctx.documents.currency:
        doc["currency"] = ctx.documents.currency
    if "currency" not in doc:
        raise ProtocolError("required: ISO 4217 code (or set documents.currency)", "$.currency")
    f.text(doc, "currency", "$", pattern=CURRENCY_RE, max_len=3)
    f.text(doc, "customer", "$", nullable=True, pattern=f.CODE_RE, max_len=64)
    f.text(doc, "staff", "$", nullable=True, pattern=f.CODE_RE, max_len=64)
    if "ext" in doc:
        f.mapping(doc["ext"], "$.ext")
