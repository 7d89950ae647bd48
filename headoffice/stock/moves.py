"""What a journaled document does to stock, read on ingest's decoder thread.

Seed 001 (the POS save rules) and the purchasing seed: a sale reduces each item's stock by its
line quantity; a return moves it by the inventory effect of its return transaction type
(resolved against the catalog at apply time, headoffice.stock.projection); a purchase receive
adds what was counted; a supplier return takes it away. Transits and stock adjustments keep
their own parser (headoffice.transit.bodies). Quantities follow the extract's postings
(headoffice.extract.postings) line for line, so the two agree: `moved = |qty| - open_qty`
(open quantities move on delivery), a negative line of a sale is a line returned.

A body this module cannot read is not held: the document still applies (its kind's rules are
the lane's and the extract's), only its stock is not moved, and that is logged and counted
(`stock_projection_errors`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from headoffice.db.base import catalog_version
from headoffice.transit.bodies import MAX_ITEM, MAX_LINES, QTY_RE, BodyError, milli

SALE_STOCK_KINDS = frozenset(
    {
        "sale",
        "sale_refund",
        "sale_exchange",
        "special_order",
        "layaway",
        "layaway_cancellation",
        "delivery",
        "sale_with_fulfilment",
    }
)
RETURN_KINDS = frozenset({"sale_refund", "layaway_cancellation"})  # as the extract's
PURCHASE_KINDS = frozenset({"receive_purchase_order", "supplier_return"})
STOCK_KINDS = SALE_STOCK_KINDS | PURCHASE_KINDS


class Move(NamedTuple):
    """A returned line: it moves by the inventory effect of its return type, resolved at
    apply (headoffice.stock.projection). Every other line is a plain `(item, milli)` tuple
    (`Plain`): ingest makes one per sale line, and a NamedTuple's Python-level __new__ stood
    out in ingest's profile."""

    item: str
    milli: int  # unsigned (>= 0): the effect gives the sign
    return_type: str | None  # the line's or the document's; None: the ReturnTxnType setting


# A line sold, received or sent back: (item, signed thousandths), moved as it is. Told from a
# Move by its type (`type(m) is tuple`).
Plain = tuple[str, int]
StockMove = Plain | Move


class StockDoc(NamedTuple):
    """One per stock-moving document applied (a tuple, not a dataclass: one per sale)."""

    kind: str
    moves: tuple[StockMove, ...]
    catalog_version: int | None = None


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A stock-moving document whose lines cannot be read: applied, not projected."""

    kind: str
    problem: str
    catalog_version: int | None = None


def _code(m: dict[str, Any], key: str, path: str) -> str | None:
    v = m.get(key)
    if v is None:
        return None
    if type(v) is not str or not 1 <= len(v) <= 32:
        raise BodyError(f"{path}.{key}", "must be a code of 1..32 characters")
    return v


def _lines(doc: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    """(index, line) of each line; a line's path ("$.lines[i]") is spelt only for an error
    (`_path`): ingest reads every sale's lines, and the f-strings were a tenth of that."""
    raw = doc.get("lines")
    if raw is None:
        return []
    if type(raw) is not list or len(raw) > MAX_LINES:
        raise BodyError("$.lines", f"must be a list of at most {MAX_LINES} lines")
    out = []
    for i, line in enumerate(raw):
        if type(line) is not dict:
            raise BodyError(_path(i), "must be a map")
        item = line.get("item")
        if type(item) is not str or not 1 <= len(item) <= MAX_ITEM:
            raise BodyError(f"{_path(i)}.item", f"must be a string of 1..{MAX_ITEM} characters")
        out.append((i, line))
    return out


def _path(i: int) -> str:
    return f"$.lines[{i}]"


def _qty(value: object, i: int, key: str) -> int:
    """milli() of a line's quantity, its path spelt only when it is refused."""
    if type(value) is str and QTY_RE.fullmatch(value):
        return int(value.replace(".", ""))
    return milli(value, f"{_path(i)}.{key}")  # raises, naming the field


# Quantities as they come (nearly always a few: "1.000", "2.000"), read once: the regex, the
# replace and the int of _qty were a third of reading a sale. Bounded: a flood of distinct
# quantities only stops adding to it.
_QTY_SEEN: dict[str, int] = {}
_QTY_SEEN_MAX = 4096


def _plain_sale(doc: dict[str, Any]) -> tuple[Plain, ...] | None:
    """The moves of a sale whose every line is a plain one (a map with an item, a quantity of
    at least zero and no open quantity) and whose line count is within bounds; None for
    anything else, which `_sale` then reads (and refuses) line by line, as before."""
    raw = doc.get("lines")
    if type(raw) is not list or len(raw) > MAX_LINES:
        return None
    seen = _QTY_SEEN
    moves = []
    for line in raw:
        if type(line) is not dict or "open_qty" in line:
            return None
        item = line.get("item")
        if type(item) is not str or not 1 <= len(item) <= MAX_ITEM:
            return None
        qty = line.get("qty")
        if type(qty) is not str:
            return None
        milli = seen.get(qty)
        if milli is None:
            if not QTY_RE.fullmatch(qty):
                return None
            milli = int(qty.replace(".", ""))
            if len(seen) < _QTY_SEEN_MAX:
                seen[qty] = milli
        if milli < 0:
            return None
        if milli:
            moves.append((item, -milli))
    return tuple(moves)


def _sale(kind: str, doc: dict[str, Any]) -> tuple[StockMove, ...]:
    if kind not in RETURN_KINDS and "return_type" not in doc:
        plain = _plain_sale(doc)
        if plain is not None:
            return plain
    is_return = kind in RETURN_KINDS
    doc_type = _code(doc, "return_type", "$")
    moves: list[StockMove] = []
    for i, line in _lines(doc):
        qty = _qty(line.get("qty"), i, "qty")
        oq = line.get("open_qty")
        open_qty = 0 if oq is None else _qty(oq, i, "open_qty")
        if not 0 <= open_qty <= abs(qty):
            raise BodyError(f"{_path(i)}.open_qty", "must be 0..|qty|")
        moved = abs(qty) - open_qty
        returned = is_return or qty < 0
        if moved == 0:
            continue
        if returned:
            rt = _code(line, "return_type", _path(i)) or doc_type
            moves.append(Move(line["item"], moved, rt))
        else:
            moves.append((line["item"], -moved))
    return tuple(moves)


def _purchase(kind: str, doc: dict[str, Any]) -> tuple[StockMove, ...]:
    sign = 1 if kind == "receive_purchase_order" else -1
    moves: list[StockMove] = []
    for i, line in _lines(doc):
        if line.get("qty") is None:
            continue  # counted_zero, or a line not counted: nothing received
        qty = _qty(line["qty"], i, "qty")
        if qty < 0:
            raise BodyError(f"{_path(i)}.qty", "must not be negative")
        if qty:
            moves.append((line["item"], sign * qty))
    return tuple(moves)


def read(kind: str, doc: dict[str, Any]) -> StockDoc | Unreadable:
    """The stock moves of a document of one of STOCK_KINDS (its body already decoded)."""
    version = catalog_version(doc)
    try:
        moves = _sale(kind, doc) if kind in SALE_STOCK_KINDS else _purchase(kind, doc)
    except BodyError as exc:
        return Unreadable(kind, str(exc), version)
    # tuple.__new__: StockDoc(...) without the NamedTuple's Python-level __new__
    return tuple.__new__(StockDoc, (kind, moves, version))
