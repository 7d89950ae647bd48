"""Rules every POS document obeys before it may be journaled, on both sides of the wire.

Here live the rules that hold for all document kinds: a known kind, a JSON-like tree without
floats (invariant 5), no full card number anywhere (invariant 6). Per-kind schemas build on this.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Callable, Sequence
from itertools import accumulate
from typing import Any

import msgpack

from protocol.errors import ProtocolError
from protocol.messages import MAX_ENTRY_BODY, UUID_RE, check_plain

# Document kinds a chain posts: the roll-up seed's sale types and the purchasing seed's stock
# movements. Only these may be journaled.
SALE_KINDS = frozenset(
    {
        "sale",
        "sale_refund",
        "sale_exchange",
        "special_order",
        "on_account_payment",
        "layaway",
        "layaway_cancellation",
        "layaway_payment",
        "delivery",
        "sale_with_fulfilment",
    }
)
STOCK_KINDS = frozenset(
    {
        "receive_purchase_order",
        "transit_inventory",
        "transit_inventory_accept",
        "supplier_return",
        "stock_adjustment",
    }
)
DOCUMENT_KINDS = SALE_KINDS | STOCK_KINDS

# Identifier fields that legitimately hold long digit strings (GTIN-14, SSCC-18) whose GS1 check
# digit may pass Luhn by chance; they are validated as GS1 keys elsewhere, not as card numbers.
_GS1_KEY_FIELDS = frozenset({"item", "item_code", "gtin", "sscc", "barcode", "transit_no"})
_DIGIT_RUN = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def looks_like_pan(text: str) -> bool:
    """True if `text` holds 13-19 digits (spaces or dashes allowed) that pass the Luhn check
    and start like a payment card (IIN 2-6)."""
    for m in _DIGIT_RUN.finditer(text):
        digits = re.sub(r"[ -]", "", m.group())
        if 13 <= len(digits) <= 19 and digits[0] in "23456" and luhn_ok(digits):
            return True
    return False


def _is_uuid(text: str) -> bool:
    """A canonical UUID (a txn_id) is hex and dashes: its digit runs are never card numbers."""
    return len(text) == 36 and UUID_RE.fullmatch(text) is not None


def find_pan(value: Any, path: str) -> str | None:
    """Path of the first string or integer in `value` that looks like a full card number."""
    t = type(value)
    if t is dict:
        for k, v in value.items():
            if type(k) is str and looks_like_pan(k):
                return f"{path} (a map key)"
            if k in _GS1_KEY_FIELDS and type(v) is str and v.isdigit():
                continue
            hit = find_pan(v, f"{path}.{k}")
            if hit:
                return hit
    elif t is list:
        for i, v in enumerate(value):
            hit = find_pan(v, f"{path}[{i}]")
            if hit:
                return hit
    elif (t is str and not _is_uuid(value) and looks_like_pan(value)) or (
        t is int and value > 10**12 and looks_like_pan(str(value))
    ):
        return path
    return None


_HINT = re.compile(r"[0-9][0-9 -]{12,}")
_PAN_FREE_INT = 10**12  # integers of 13+ digits might be card numbers


def _suspicious(value: Any, depth: int = 0) -> bool:
    """False proves `value` clean for check_plain and find_pan; True means "walk it properly".

    The precise walks build a JSON path for every value, which costs more than the rest of
    a submit; this walk builds none, so clean documents (nearly all) pay little.
    """
    t = type(value)
    if t is str:
        return len(value) >= 13 and _HINT.search(value) is not None and not _is_uuid(value)
    if t is int:
        return not -_PAN_FREE_INT <= value <= _PAN_FREE_INT
    if t is bool or value is None:
        return False
    if depth > 32:
        return True
    if t is dict:
        for k, v in value.items():
            if type(k) is not str or _suspicious(k):
                return True
            if k in _GS1_KEY_FIELDS and type(v) is str and v.isdigit():
                continue
            if _suspicious(v, depth + 1):
                return True
        return False
    if t is list:
        return any(_suspicious(v, depth + 1) for v in value)
    return True  # floats, Decimal, bytes, anything else: the precise walk decides


def check_document(doc: Any) -> None:
    """Refuse a document that no lane may journal, naming the field at fault."""
    if type(doc) is not dict:
        raise ProtocolError(f"a document must be a JSON object, got {type(doc).__name__}", "$")
    kind = doc.get("kind")
    if type(kind) is not str or kind not in DOCUMENT_KINDS:
        raise ProtocolError(
            f"unknown document kind {kind!r}; expected one of {', '.join(sorted(DOCUMENT_KINDS))}",
            "kind",
        )
    txn_id = doc.get("txn_id")
    if txn_id is not None and (type(txn_id) is not str or not UUID_RE.fullmatch(txn_id)):
        raise ProtocolError("must be a lowercase canonical UUID (UUIDv7 recommended)", "txn_id")
    if not _suspicious(doc):
        return
    check_plain(doc, "$")
    pan = find_pan(doc, "$")
    if pan:
        raise ProtocolError(
            "looks like a full card number; send the card token, scheme and last four digits",
            pan,
        )


# Every card number written in a msgpack string is a run of 13 or more digits, spaces or dashes
# (strings are stored verbatim). A card number sent as an integer (find_pan checks those above
# 10**12) needs more than 32 bits, so msgpack writes it after a uint64 (0xcf) or int64 (0xd3)
# marker byte. A body with neither holds no card number. Both are checked with C-speed bytes
# operations: translate maps digits, space and dash to "1" and all else to "0", and a run is
# a substring search; a regex scan over every body cost 8 us a sale, a fifth of ingest's CPU.
_RUN_TABLE = bytes(0x31 if c in b"0123456789 -" else 0x30 for c in range(256))
_RUN = b"1" * 13


def first_pan_body(
    bodies: Sequence[bytes], unpack: Callable[[bytes], Any]
) -> tuple[int, str] | None:
    """(index, field path) of the first msgpack body carrying a card number, or None.

    Head office scans every entry it applies. Two byte checks (a long enough run of digits,
    a 64-bit integer marker) find the few bodies that could hold one; only those are decoded
    and walked.
    """
    joined = b"\0".join(bodies)  # NUL maps to "0": no run crosses from one body to the next
    ends = list(accumulate(len(b) + 1 for b in bodies))  # offset just past each body's NUL
    runs = _hits(joined.translate(_RUN_TABLE), _RUN, ends)
    suspects = runs | _hits(joined, b"\xcf", ends) | _hits(joined, b"\xd3", ends)
    for i in sorted(suspects):
        body = bodies[i]
        try:
            doc = unpack(body)
        except ProtocolError:
            # Not a document at all: judge the raw bytes, never store a card number.
            if i in runs and looks_like_pan(body.decode("latin-1")):
                return i, "$ (undecodable body)"
            continue
        path = find_pan(doc, "$")
        if path is not None:
            return i, path
    return None


def _hits(haystack: bytes, needle: bytes, ends: list[int]) -> set[int]:
    """Indexes of the bodies (ending at `ends`) in which `needle` occurs."""
    found: set[int] = set()
    at = haystack.find(needle)
    while at >= 0:
        i = bisect_right(ends, at)
        found.add(i)
        at = haystack.find(needle, ends[i]) if i < len(ends) else -1  # next body
    return found


def encode_body(doc: dict[str, Any]) -> bytes:
    """The exact bytes that are journaled, hashed and sent for a document."""
    body = msgpack.packb(doc, use_bin_type=True)
    if len(body) > MAX_ENTRY_BODY:
        raise ProtocolError(f"document of {len(body)} bytes exceeds {MAX_ENTRY_BODY}", "$")
    return body
