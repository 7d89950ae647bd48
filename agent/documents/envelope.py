"""The envelope every document kind shares, and dispatch to the per-kind rules.

`validate` refuses a document naming the JSON path at fault, or returns the document to journal
with what the agent owns filled in (store, lane, business_day, time, currency, line numbers,
computed amounts, and `catalog_version`: the version of the lane's catalog it was checked
against, agent.documents.rules). It writes nothing: txn_id, register_no and SSCC are allocated
by the caller afterwards, so a refused document never burns a number.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from agent.catalog.view import CatalogView
from agent.documents import fields as f
from agent.documents.rules import CatalogFile, Rules, checking
from agent.numbering import DocumentsConfig, TransitConfig
from protocol.documents import DOCUMENT_KINDS as KINDS
from protocol.documents import check_document
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
        "catalog_version",
    }
)
DocumentError = ProtocolError


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class DocContext:
    """Everything validation needs besides the document: the lane's identity and numbering
    (its TOML) and its catalog (master data and settings from head office)."""

    lane: LaneId
    documents: DocumentsConfig = field(default_factory=DocumentsConfig)
    transit: TransitConfig = field(default_factory=TransitConfig)
    catalog: CatalogView | CatalogFile | None = None
    trade_without: bool = False  # [catalog] trade_without: see agent.documents.rules
    clock: Callable[[], datetime] = _now

    @contextmanager
    def rules(self) -> Iterator[Rules]:
        """One document's catalog version and settings (raises rules.NoCatalog)."""
        with checking(self.catalog, self.trade_without) as r:
            yield r

    def local_now(self, rules: Rules) -> datetime:
        """Now in the store's time zone (its Timezone setting, else its `stores` row), else
        the host's."""
        now = self.clock()
        zone = rules.settings["Timezone"]
        if zone:
            try:
                return now.astimezone(ZoneInfo(str(zone)))
            except (ZoneInfoNotFoundError, ValueError):
                pass  # agent.catalog.view logs it; the host's zone is the best guess left
        return now.astimezone()


KindValidator = Callable[[dict[str, Any], "DocContext", Rules], None]
VALIDATORS: dict[str, KindValidator] = {}
"""The rules of each kind after the envelope's, filled by `register` as the kind modules
(sales, stock, purchase) load; agent.documents imports them all, so none is missing."""


def register(kinds: Iterable[str], validator: KindValidator) -> None:
    """Make `validator` the rules of `kinds`: a kind module calls this when it loads, so the
    envelope dispatches to it without importing it (the kinds import the envelope)."""
    for kind in kinds:
        if kind not in KINDS:
            raise ValueError(f"{kind!r} is not a document kind (protocol.documents)")
        if kind in VALIDATORS:
            raise ValueError(f"{kind!r} has rules already: {VALIDATORS[kind]!r}")
        VALIDATORS[kind] = validator


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
    with ctx.rules() as rules:
        _envelope(doc, ctx, rules)
        VALIDATORS[kind](doc, ctx, rules)
        doc["catalog_version"] = rules.version
    return doc


def moment(doc: dict[str, Any]) -> datetime:
    """The document's `time` (filled and checked by the envelope) as an aware datetime."""
    return datetime.fromisoformat(doc["time"])


def business_day(doc: dict[str, Any]) -> date:
    return date.fromisoformat(doc["business_day"])


def _envelope(doc: dict[str, Any], ctx: DocContext, rules: Rules) -> None:
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
        when = ctx.local_now(rules)
        doc["time"] = when.isoformat(timespec="milliseconds")
    if f.day(doc, "business_day", "$") is None:
        if "business_day" in doc:
            raise ProtocolError("must be a date YYYY-MM-DD, not null", "$.business_day")
        doc["business_day"] = when.date().isoformat()
    store_currency = rules.settings["Currency"]
    if "currency" not in doc and store_currency:
        doc["currency"] = store_currency
    if "currency" not in doc:
        raise ProtocolError(
            "required: ISO 4217 code (this lane has no catalog to take its store's from)",
            "$.currency",
        )
    f.text(doc, "currency", "$", pattern=CURRENCY_RE, max_len=3)
    if store_currency and doc["currency"] != store_currency:
        raise ProtocolError(
            f"store {ctx.lane.store} trades in {store_currency} in catalog version "
            f"{rules.version} (its Currency), not {f.shown(doc['currency'])}",
            "$.currency",
        )
    f.text(doc, "customer", "$", nullable=True, pattern=f.CODE_RE, max_len=64)
    f.text(doc, "staff", "$", nullable=True, pattern=f.CODE_RE, max_len=64)
    rules.customer(doc.get("customer"), "$.customer")
    rules.staff(doc.get("staff"), "$.staff")
    if "catalog_version" in doc:
        # Filled by the agent; a POS resending a confirmed document sends it back (its
        # txn_id then finds the original), so any sent value is replaced, never trusted.
        v = doc["catalog_version"]
        if type(v) is not int or v < 0:
            raise ProtocolError(
                "filled by the agent: a catalog version number", "$.catalog_version"
            )
    if "ext" in doc:
        f.mapping(doc["ext"], "$.ext")
