"""Open sales and transits: journaled as they change, resumed after a restart.

A POS opens a sale, adds and voids lines, parks and resumes it, adds payments. Every change is
committed to `open_docs` before the API answers, so after kill -9 the sale is where it was.
Transit mode (the purchasing seed's sale(setmode,8)): lines are items with quantities, a normal
sale may run in parallel, a transit cannot be parked, and adding any payment completes it into
a `transit_inventory` document (destination store, by staff/customer/supplier/courier as the
settings allow) with a freshly allocated SSCC and its label text.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from agent.documents import fields as f
from agent.documents import sales as rules
from agent.documents.envelope import CURRENCY_RE, DocContext
from agent.documents.stock import check_by, check_dest, scheme
from agent.journal.journal import Appended, new_txn_id
from agent.open_docs.service import DocumentService
from agent.open_docs.store import LaneStore, OpenRow
from protocol import money, screen
from protocol.documents import SALE_KINDS
from protocol.errors import LanesyncError, ProtocolError

TRANSIT_MODE = 8
MAX_OPEN = 64
OPEN_KEYS = frozenset({"kind", "customer", "staff", "currency", "mode", "ext"})
LINE_IN = frozenset({"item", "description", "qty", "unit_price", "tax_code", "tax", "open_qty"})
TRANSIT_IN = frozenset({"dest_store", "by"})
# A line request's `item` may be a GTIN (as lines[].item of a document, protocol.documents).
LINE_FIELDS = screen.declare({"item": screen.gtin})


class OpenDocError(LanesyncError):
    """A request that does not fit the open document's state: `code` "not_found" (no such
    document or line) or "conflict" (not in this state); agent.apiedge decides the status."""

    code = "conflict"

    def __init__(self, code: str, reason: str, field: str | None = None) -> None:
        self.reason, self.field = reason, field
        super().__init__(reason, code=code)


@dataclass(slots=True)
class Completed:
    appended: Appended
    document: dict[str, Any]


def plain(req: Any, path: str = "$", declared: screen.Declared | None = None) -> None:
    """Every request obeys the document rules before anything else reads it or anything is
    stored (open documents live in the journal file): bounded depth and size, no floats
    (invariant 5), no lone surrogates, no card number anywhere (6), refused by field."""
    screen.check(req, path, declared)


def view(row: OpenRow) -> dict[str, Any]:
    """What the POS sees of an open document."""
    body = row.body
    lines = body.get("lines", [])
    out: dict[str, Any] = {
        "id": row.id,
        "txn_id": row.id,
        "kind": row.kind,
        "mode": row.mode,
        "state": row.state,
        "version": row.version,
        "register_no": body["register_no"],
        "customer": body.get("customer"),
        "staff": body.get("staff"),
        "currency": body.get("currency"),
        "lines": lines,
        "payments": body.get("payments", []),
    }
    if row.mode == TRANSIT_MODE:
        out["transit"] = body.get("transit")
        units = sum((money.qty(li["qty"], "qty") for li in lines), Decimal(0))
        out["units"] = money.fmt_decimal_qty(units)
    else:
        total = sum(li["amount"] for li in lines)
        paid = sum(p["amount"] for p in body.get("payments", []))
        out["total"] = total
        out["paid"] = paid
        out["due"] = total - paid
    return out


class OpenSales:
    """Every open document of this lane, in memory and in `open_docs`."""

    def __init__(self, ctx: DocContext, store: LaneStore, service: DocumentService) -> None:
        self.ctx, self.store, self.service = ctx, store, service
        self.rows: dict[str, OpenRow] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def recover(self) -> list[str]:
        """Load open documents; drop those whose document reached the journal before a crash.
        Returns their register numbers (the register counter must stay past them)."""
        for row in await self.store.load_open():
            if await self.store.journaled(row.id) is not None:
                await self.store.delete_open(row.id)
                continue
            self.rows[row.id] = row
        return [r.body["register_no"] for r in self.rows.values()]

    def get(self, doc_id: str) -> OpenRow:
        row = self.rows.get(doc_id)
        if row is None:
            # never the id sent: it came in a URL and may be anything, a card number too
            raise OpenDocError("not_found", "no open document with this id on this lane", "id")
        return row

    def lock(self, doc_id: str) -> asyncio.Lock:
        self.get(doc_id)
        return self._locks.setdefault(doc_id, asyncio.Lock())

    async def open(self, req: Any) -> OpenRow:
        req = f.mapping(req, "$")
        plain(req, "$")
        f.only_keys(req, OPEN_KEYS, "$")
        kind = req.get("kind", "sale")
        if type(kind) is not str or kind not in SALE_KINDS:
            raise ProtocolError(
                f"must be a sale-family kind: {', '.join(sorted(SALE_KINDS))}", "$.kind"
            )
        mode = req.get("mode", 0)
        if type(mode) is not int or mode not in (0, TRANSIT_MODE):
            raise ProtocolError("must be 0 (normal) or 8 (transit)", "$.mode")
        if mode == TRANSIT_MODE and kind != "sale":
            raise ProtocolError("only a sale can be put in transit mode", "$.mode")
        if mode == TRANSIT_MODE:
            scheme(self.ctx)  # refuse early when this lane cannot make SSCC labels
        if len(self.rows) >= MAX_OPEN:
            raise OpenDocError(
                "conflict", f"{MAX_OPEN} documents are open already; complete some", "$"
            )
        f.text(req, "customer", "$", nullable=True, pattern=f.CODE_RE, max_len=64)
        f.text(req, "staff", "$", nullable=True, pattern=f.CODE_RE, max_len=64)
        with self.ctx.rules() as r:
            r.customer(req.get("customer"), "$.customer")
            r.staff(req.get("staff"), "$.staff")
            currency = req.get("currency", r.settings["Currency"])
            today = self.ctx.local_now(r).date().isoformat()
        if currency is None:
            raise ProtocolError(
                "required: ISO 4217 code (this lane has no catalog to take its store's from)",
                "$.currency",
            )
        f.text({"currency": currency}, "currency", "$", pattern=CURRENCY_RE, max_len=3)
        body: dict[str, Any] = {
            "register_no": self.service.registers.allocate(),
            "business_day": today,
            "customer": req.get("customer"),
            "staff": req.get("staff"),
            "currency": currency,
            "lines": [],
            "payments": [],
        }
        if "ext" in req:
            body["ext"] = f.mapping(req["ext"], "$.ext")
        row = OpenRow(new_txn_id(), kind, mode, "open", body, 1)
        await self.store.insert_open(row)
        self.rows[row.id] = row
        return row

    async def _save(self, row: OpenRow, body: dict[str, Any], **changes: Any) -> OpenRow:
        new = OpenRow(
            row.id,
            changes.get("kind", row.kind),
            changes.get("mode", row.mode),
            changes.get("state", row.state),
            body,
            row.version + 1,
        )
        await self.store.save_open(new)
        self.rows[row.id] = new
        return new

    def _active(self, row: OpenRow) -> None:
        if row.state == "parked":
            raise OpenDocError("conflict", "this sale is parked; resume it first", "state")

    async def add_line(self, doc_id: str, req: Any) -> OpenRow:
        async with self.lock(doc_id):
            row = self.get(doc_id)
            self._active(row)
            req = f.mapping(req, "$")
            plain(req, "$", LINE_FIELDS)
            f.only_keys(req, LINE_IN, "$")
            body = _copy(row.body)
            n = len(body["lines"])
            if n >= f.MAX_LINES:
                raise OpenDocError("conflict", f"a document holds at most {f.MAX_LINES} lines", "$")
            if row.mode == TRANSIT_MODE:
                line = self._transit_line(req)
            else:
                line = self._sale_line(row.kind, req, n, body["business_day"])
            line["line_no"] = n + 1
            body["lines"].append(line)
            return await self._save(row, body)

    def _transit_line(self, req: dict[str, Any]) -> dict[str, Any]:
        for key in ("unit_price", "tax_code", "tax", "open_qty"):
            if key in req:
                raise ProtocolError("a transit line is an item and a quantity", f"$.{key}")
        item = f.req_text(req, "item", "$", f.CODE_RE, 64)
        with self.ctx.rules() as r:
            r.item(item, "$.item")
            prompt = r.settings["SaleTransitPromptQty"]
        if "qty" not in req:
            if prompt:
                raise ProtocolError(
                    "transit mode asks for the quantity of every item (SaleTransitPromptQty=1 "
                    f"in catalog version {r.version})",
                    "$.qty",
                )
            req = {**req, "qty": "1.000"}
        q = f.quantity(req, "qty", "$")
        if q <= 0:
            raise ProtocolError("must be positive", "$.qty")
        line = {"item": item, "qty": req["qty"]}
        if "description" in req:
            line["description"] = f.req_text(req, "description", "$", max_len=200)
        return line

    def _sale_line(self, kind: str, req: dict[str, Any], n: int, body_day: str) -> dict[str, Any]:
        """A line priced and taxed from the catalog: unit_price and tax_code default to the
        item's (the catalog's price now), the tax is computed at the business day's rate."""
        line = dict(req)
        line.setdefault("qty", "1.000")
        q = f.quantity(line, "qty", "$")
        day = date.fromisoformat(body_day)
        now = self.ctx.clock()
        try:
            with self.ctx.rules() as r:
                code_sent = f.req_text(line, "item", "$", f.CODE_RE, 64)
                item = r.item(code_sent, "$.item", sold=not rules.returned(kind, line))
                if item is not None:
                    price_now = r.price(item, now)
                    if "unit_price" not in line and price_now is not None:
                        line["unit_price"] = price_now.price
                    line.setdefault("tax_code", item["tax_code"])
                price = f.amount(line, "unit_price", "$")
                code = f.req_text(line, "tax_code", "$", f.TAX_CODE_RE, 16)
                line["amount"] = money.line_amount(q, price)
                rate = r.tax_rate(code, day, "$.tax_code")
                if rate is not None:
                    line["tax"] = money.tax_included(line["amount"], rate)
                else:
                    f.amount(line, "tax", "$", lo=-1)  # no catalog: the POS's own figure
                rules.check_line(kind, line, n, day, r, now)
        except ProtocolError as exc:  # report against the request, not the future document
            field = (exc.field or "$").replace(f"$.lines[{n}]", "$")
            raise ProtocolError(exc.reason, field) from None
        return line

    async def void_line(self, doc_id: str, line_no: int) -> OpenRow:
        async with self.lock(doc_id):
            row = self.get(doc_id)
            self._active(row)
            body = _copy(row.body)
            if not 1 <= line_no <= len(body["lines"]):
                raise OpenDocError("not_found", f"no line {line_no}", "line_no")
            if body["payments"]:
                raise OpenDocError(
                    "conflict", "payments were added; void them with the sale", "line_no"
                )
            del body["lines"][line_no - 1]
            for i, line in enumerate(body["lines"]):
                line["line_no"] = i + 1
            return await self._save(row, body)

    async def set_mode(self, doc_id: str, req: Any) -> OpenRow:
        """sale(setmode,8): flag an open sale as a transit."""
        async with self.lock(doc_id):
            row = self.get(doc_id)
            self._active(row)
            req = f.mapping(req, "$")
            plain(req)
            f.only_keys(req, {"mode"}, "$")
            if req.get("mode") != TRANSIT_MODE or type(req.get("mode")) is not int:
                raise ProtocolError("only mode 8 (transit) can be set", "$.mode")
            if row.mode == TRANSIT_MODE:
                return row
            if row.kind != "sale":
                raise OpenDocError("conflict", "only a sale can be put in transit mode", "mode")
            if row.body["payments"]:
                raise OpenDocError("conflict", "payments were added; this is a sale now", "mode")
            scheme(self.ctx)
            body = _copy(row.body)
            body["lines"] = [
                {k: v for k, v in li.items() if k in ("line_no", "item", "description", "qty")}
                for li in body["lines"]
            ]
            return await self._save(row, body, mode=TRANSIT_MODE)

    async def park(self, doc_id: str, parked: bool) -> OpenRow:
        async with self.lock(doc_id):
            row = self.get(doc_id)
            if parked and row.mode == TRANSIT_MODE:
                raise OpenDocError("conflict", "a transit sale cannot be parked", "mode")
            return await self._save(row, row.body, state="parked" if parked else "open")

    async def set_transit(self, doc_id: str, req: Any) -> OpenRow:
        async with self.lock(doc_id):
            row = self.get(doc_id)
            if row.mode != TRANSIT_MODE:
                raise OpenDocError("conflict", "not a transit sale (set mode 8 first)", "mode")
            plain(req)
            body = _copy(row.body)
            body["transit"] = self._transit_details(req, "$")
            return await self._save(row, body)

    def _transit_details(self, req: Any, path: str) -> dict[str, Any]:
        req = f.mapping(req, path)
        f.only_keys(req, TRANSIT_IN, path)
        probe = {"dest_store": req.get("dest_store")}
        with self.ctx.rules() as r:
            try:
                check_dest(probe, self.ctx, r)
            except ProtocolError as exc:
                raise ProtocolError(exc.reason, f"{path}.dest_store") from None
            if "by" not in req:
                raise ProtocolError("required: {type, id}", f"{path}.by")
            check_by(req["by"], r, f"{path}.by")
        return {"dest_store": req["dest_store"], "by": dict(req["by"])}

    async def add_payment(self, doc_id: str, req: Any) -> OpenRow | Completed:
        async with self.lock(doc_id):
            row = self.get(doc_id)
            self._active(row)
            req = f.mapping(req, "$")
            plain(req, "$")
            if row.mode == TRANSIT_MODE:
                return await self._complete_transit(row, req)
            if "transit" in req:
                raise ProtocolError("only a transit sale takes transit details", "$.transit")
            if not row.body["lines"] and row.kind not in rules.NO_LINES:
                raise OpenDocError("conflict", "add lines before payments", "lines")
            try:
                with self.ctx.rules() as r:
                    rules.check_payment(req, "$", row.body.get("customer"), r)
            except ProtocolError as exc:
                raise ProtocolError(exc.reason, exc.field) from None
            body = _copy(row.body)
            body["payments"].append(dict(req))
            new = await self._save(row, body)
            total = sum(li["amount"] for li in body["lines"])
            paid = sum(p["amount"] for p in body["payments"])
            if row.kind in ("sale", "delivery", "sale_with_fulfilment") and paid >= total:
                return await self._complete(new)
            return new

    async def complete(self, doc_id: str, req: Any) -> Completed:
        """Complete explicitly: deposits (layaway, special order), account remainders."""
        async with self.lock(doc_id):
            row = self.get(doc_id)
            self._active(row)
            req = f.mapping(req if req is not None else {}, "$")
            plain(req)
            if row.mode == TRANSIT_MODE:
                raise OpenDocError(
                    "conflict", "a transit completes when a payment is added", "mode"
                )
            f.only_keys(req, {"original_txn_id", "return_type"}, "$")
            return await self._complete(row, extra=req)

    async def _complete(self, row: OpenRow, extra: dict[str, Any] | None = None) -> Completed:
        body = _copy(row.body)
        lines = body["lines"]
        payments = body["payments"]
        total = sum(li["amount"] for li in lines)
        if row.kind in rules.NO_LINES:
            total = sum(p["amount"] for p in payments)
        paid = sum(p["amount"] for p in payments)
        cash = sum(p["amount"] for p in payments if p["tender"] == "cash")
        change = 0
        if paid > total and row.kind not in rules.PAYBACK:
            change = paid - total
            if change > cash:
                raise ProtocolError(
                    f"payments exceed the amount due by {change}; only cash gives change",
                    "$.amount",
                )
        doc: dict[str, Any] = {
            "kind": row.kind,
            "txn_id": row.id,
            "register_no": body["register_no"],
            "business_day": body["business_day"],
            "customer": body.get("customer"),
            "staff": body.get("staff"),
            "currency": body["currency"],
            "lines": lines,
            "payments": payments,
            "total": total,
            **(extra or {}),
        }
        if change:
            doc["change"] = change
        if "ext" in body:
            doc["ext"] = body["ext"]
        return await self._journal(row, doc)

    async def _complete_transit(self, row: OpenRow, req: dict[str, Any]) -> Completed:
        """Any payment completes a transit (it need not be for any amount)."""
        body = _copy(row.body)
        if "transit" in req:
            body["transit"] = self._transit_details(req["transit"], "$.transit")
        details = body.get("transit")
        if details is None:
            raise ProtocolError(
                "choose the destination store and how the parcel travels: send transit "
                "{dest_store, by: {type, id}} with the payment or PUT it first",
                "$.transit.dest_store",
            )
        if not body["lines"]:
            raise OpenDocError("conflict", "a transit needs at least one item", "lines")
        if "sscc" not in body:
            # The serial is taken and stored with the open transit in one transaction: a crash
            # after this point completes with the same SSCC, never a second one.
            new = OpenRow(row.id, row.kind, row.mode, row.state, body, row.version + 1)
            serial = await self.store.save_open(new, sscc_serial=True)
            assert serial is not None
            body["sscc"] = scheme(self.ctx).make(serial)
            row = await self._save(new, body)
        doc: dict[str, Any] = {
            "kind": "transit_inventory",
            "txn_id": row.id,
            "register_no": body["register_no"],
            "business_day": body["business_day"],
            "customer": body.get("customer"),
            "staff": body.get("staff"),
            "currency": body["currency"],
            "dest_store": details["dest_store"],
            "by": details["by"],
            "lines": body["lines"],
            "sscc": body["sscc"],
        }
        return await self._journal(row, doc)

    async def _journal(self, row: OpenRow, doc: dict[str, Any]) -> Completed:
        appended, final = await self.service.submit(doc)
        await self.store.delete_open(row.id)
        self.rows.pop(row.id, None)
        self._locks.pop(row.id, None)
        return Completed(appended, final)

    async def cancel(self, doc_id: str) -> None:
        async with self.lock(doc_id):
            self.get(doc_id)
            await self.store.delete_open(doc_id)
            self.rows.pop(doc_id, None)
        self._locks.pop(doc_id, None)


def _copy(body: dict[str, Any]) -> dict[str, Any]:
    return {k: ([dict(x) for x in v] if isinstance(v, list) else v) for k, v in body.items()}
