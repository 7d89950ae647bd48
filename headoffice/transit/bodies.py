"""The bodies head office projects, checked before anything is written.

Head office projects three kinds into its transit and stock tables (headoffice.transit
.projection): `transit_inventory`, `transit_inventory_accept` and `stock_adjustment`. Their
bodies come from stores, so every field the projection reads is checked here first, in the
decoder thread: types, lengths, a string where a string belongs (never a list or a map),
quantities as finite three-place decimal strings within nine integer digits (invariant 5), line
numbers unique, and a transit's source store the store that sent it. `parse` returns the values
the projection writes; a body it refuses is held at its seq with the reason (the path at fault,
never the value), so a store cannot provoke a database error inside head office's ingest
transaction.

The lane's own rules (agent/documents) are stricter; these are the ones head office's tables
depend on. Where a schema shared by both sides should live is for issue 13 to decide.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from protocol import codec
from protocol.errors import LanesyncError, ProtocolError
from protocol.messages import MAX_ENTRY_BODY, U63

QTY_RE = re.compile(r"-?[0-9]{1,9}\.[0-9]{3}")  # protocol/DOCUMENTS.md: exactly three places
SEGMENT_RE = re.compile(r"[A-Za-z0-9_-]{1,32}")  # a store id, as in topic segments
SSCC_RE = re.compile(r"[0-9]{18}")
MAX_LINES = 1000
MAX_ITEM = 64
MAX_CODE = 64
MAX_TEXT = 200
MAX_TRANSIT_NO = 32
MAX_CURRENCY = 8


class BodyError(LanesyncError, ValueError):
    """A projected body head office cannot apply; says which field and why, not its value."""

    code = "invalid_body"

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path


@dataclass(frozen=True, slots=True)
class Line:
    line_no: int
    item: str
    description: str | None
    milli: int  # qty in thousandths


@dataclass(frozen=True, slots=True)
class Transit:
    transit_no: str
    sscc: str | None
    source_store: str
    dest_store: str
    by_type: str | None
    by_id: str | None
    currency: str | None
    staff: str | None
    lines: tuple[Line, ...]


@dataclass(frozen=True, slots=True)
class Accept:
    sscc: str | None
    transit_no: str | None  # set when there is no sscc (the number was keyed)
    source_store: str
    staff: str | None
    received_at: int | None


@dataclass(frozen=True, slots=True)
class Adjustment:
    lines: tuple[Line, ...]


Parsed = Transit | Accept | Adjustment


def milli(qty: object, path: str) -> int:
    """'1.250' -> 1250: a decimal string with exactly three places, at most nine before them."""
    if type(qty) is not str:
        raise BodyError(path, f"must be a decimal string like '1.000', got {type(qty).__name__}")
    if not QTY_RE.fullmatch(qty):
        raise BodyError(path, "must be a decimal string with exactly three places like '1.000'")
    return int(qty.replace(".", ""))


def _text(m: dict[str, Any], key: str, path: str, max_len: int, *, required: bool) -> str | None:
    v = m.get(key)
    p = f"{path}.{key}"
    if v is None:
        if required:
            raise BodyError(p, "required")
        return None
    if type(v) is not str:
        raise BodyError(p, f"must be a string, got {type(v).__name__}")
    if not 1 <= len(v) <= max_len:
        raise BodyError(p, f"must be 1..{max_len} characters, got {len(v)}")
    return v


def _req(m: dict[str, Any], key: str, path: str, max_len: int) -> str:
    v = _text(m, key, path, max_len, required=True)
    assert v is not None
    return v


def _store(m: dict[str, Any], key: str, *, required: bool) -> str | None:
    v = _text(m, key, "$", 32, required=required)
    if v is not None and not SEGMENT_RE.fullmatch(v):
        raise BodyError(f"$.{key}", "must be a store id ([A-Za-z0-9_-]{1,32})")
    return v


def _lines(doc: dict[str, Any], *, positive: bool) -> tuple[Line, ...]:
    raw = doc.get("lines")
    if raw is None:
        return ()
    if type(raw) is not list:
        raise BodyError("$.lines", f"must be a list, got {type(raw).__name__}")
    if len(raw) > MAX_LINES:
        raise BodyError("$.lines", f"at most {MAX_LINES} lines, got {len(raw)}")
    out: list[Line] = []
    numbers: set[int] = set()
    for i, line in enumerate(raw):
        p = f"$.lines[{i}]"
        if type(line) is not dict:
            raise BodyError(p, f"must be a map, got {type(line).__name__}")
        no = line.get("line_no", i + 1)
        if type(no) is not int or not 1 <= no <= MAX_LINES:
            raise BodyError(f"{p}.line_no", f"must be an integer 1..{MAX_LINES}")
        if no in numbers:
            raise BodyError(f"{p}.line_no", "used by an earlier line")
        numbers.add(no)
        qty = milli(line.get("qty"), f"{p}.qty")
        if positive and qty <= 0:
            raise BodyError(f"{p}.qty", "must be positive")
        out.append(
            Line(
                no,
                _req(line, "item", p, MAX_ITEM),
                _text(line, "description", p, MAX_TEXT, required=False),
                qty,
            )
        )
    return tuple(out)


def _sscc(doc: dict[str, Any]) -> str | None:
    v = doc.get("sscc")
    if v is None:
        return None
    if type(v) is not str or not SSCC_RE.fullmatch(v):
        raise BodyError("$.sscc", "must be an 18-digit SSCC string")
    return v


def _transit(doc: dict[str, Any], store: str) -> Transit:
    source = _store(doc, "source_store", required=False) or store
    if source != store:
        raise BodyError("$.source_store", "a transit is created at its source, the sending store")
    by = doc.get("by")
    if by is not None and type(by) is not dict:
        raise BodyError("$.by", f"must be a map, got {type(by).__name__}")
    by = by or {}
    number = _text(doc, "transit_no", "$", MAX_TRANSIT_NO, required=False)
    if number is None:
        number = _req(doc, "register_no", "$", MAX_TRANSIT_NO)
    dest = _store(doc, "dest_store", required=True)
    assert dest is not None
    return Transit(
        number,
        _sscc(doc),
        source,
        dest,
        _text(by, "type", "$.by", 16, required=False),
        _text(by, "id", "$.by", MAX_CODE, required=False),
        _text(doc, "currency", "$", MAX_CURRENCY, required=False),
        _text(doc, "staff", "$", MAX_TEXT, required=False),
        _lines(doc, positive=True),
    )


def _accept(doc: dict[str, Any]) -> Accept:
    sscc = _sscc(doc)
    number = None
    if sscc is None:
        number = _req(doc, "transit_no", "$", MAX_TRANSIT_NO)
    source = _store(doc, "source_store", required=True)
    assert source is not None
    ext = doc.get("ext")
    if ext is not None and type(ext) is not dict:
        raise BodyError("$.ext", f"must be a map, got {type(ext).__name__}")
    at = (ext or {}).get("received_at")
    if at is not None and (type(at) is not int or not 0 <= at <= U63):
        raise BodyError("$.ext.received_at", "must be a time in milliseconds (integer)")
    _lines(doc, positive=False)  # not projected, but a list of lines if present
    return Accept(sscc, number, source, _text(doc, "staff", "$", MAX_TEXT, required=False), at)


def parse(kind: str, body: bytes, store: str) -> Parsed:
    """What the projection of `kind` needs from `body`, sent by `store`; BodyError if not."""
    try:
        doc = codec.unpack(body, MAX_ENTRY_BODY)
    except ProtocolError as exc:
        raise BodyError("$", f"not a msgpack document ({exc.reason})") from None
    if type(doc) is not dict:
        raise BodyError("$", f"must be a map, got {type(doc).__name__}")
    if kind == "transit_inventory":
        return _transit(doc, store)
    if kind == "transit_inventory_accept":
        return _accept(doc)
    if kind == "stock_adjustment":
        return Adjustment(_lines(doc, positive=False))
    raise BodyError("$", f"head office does not project {kind!r}")
