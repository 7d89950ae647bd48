"""Rules every POS document obeys before it may be journaled, on both sides of the wire.

Here live the rules that hold for all document kinds: a known kind, a JSON-like tree without
floats (invariant 5), bounded in depth and size, and no full card number anywhere (invariant 6:
protocol.pan's rule, applied by protocol.screen with the fields each kind declares to hold GS1
keys or times). Per-kind schemas build on this; head office scans every entry it applies with
`first_pan_body`, which finds what `check_document` would refuse as a card number.
"""

from __future__ import annotations

import functools
import re
from bisect import bisect_right
from collections.abc import Callable, Sequence
from itertools import accumulate
from typing import Any

import msgpack

from protocol import screen
from protocol.errors import ProtocolError
from protocol.messages import MAX_ENTRY_BODY
from protocol.pan import contains_pan, non_ascii_digit_leads
from protocol.screen import UUID_RE

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
MAX_CATALOG_VERSION = 2**53  # as protocol.catalog's int columns: exact in every JSON reader

# Fields declared to hold a GS1 key or a timestamp, whose digits may pass Luhn by chance; a
# value there is exempt from the card-number rule only if it is what the field is declared
# to hold (protocol.screen). Nothing else is exempt: not `item` in `ext`, not a transit
# number (a register number such as T10001), not a 16-digit "item code".
_LINES = {"lines[].item": screen.gtin}
_TRANSIT = {**_LINES, "sscc": screen.sscc}
DOCUMENT_FIELDS: dict[str, screen.Declared] = {
    **{kind: screen.declare(_LINES) for kind in DOCUMENT_KINDS},
    "transit_inventory": screen.declare({**_TRANSIT, "label": screen.transit_label}),
    "transit_inventory_accept": screen.declare({**_TRANSIT, "ext.received_at": screen.ms_time}),
}
_NO_FIELDS: screen.Declared = {}


def declared_fields(doc: Any) -> screen.Declared:
    """What `doc`'s kind declares (nothing for a value that is not a known document)."""
    kind = doc.get("kind") if type(doc) is dict else None
    return DOCUMENT_FIELDS.get(kind, _NO_FIELDS) if type(kind) is str else _NO_FIELDS


def find_pan(value: Any, path: str = "$") -> str | None:
    """Path of the first string, key, integer or bytes in `value` that is a card number,
    wherever it hides (no depth limit: the walk is iterative), or None."""
    return screen.find_pan(value, path, declared_fields(value))


def check_document(doc: Any) -> None:
    """Refuse a document that no lane may journal, naming the field at fault."""
    if type(doc) is not dict:
        raise ProtocolError(f"a document must be a JSON object, got {type(doc).__name__}", "$")
    kind = doc.get("kind")
    if type(kind) is not str or kind not in DOCUMENT_KINDS:
        raise ProtocolError(
            f"unknown document kind; expected one of {', '.join(sorted(DOCUMENT_KINDS))}",
            "kind",
        )
    txn_id = doc.get("txn_id")
    if txn_id is not None and (type(txn_id) is not str or not UUID_RE.fullmatch(txn_id)):
        raise ProtocolError("must be a lowercase canonical UUID (UUIDv7 recommended)", "txn_id")
    version = doc.get("catalog_version")
    if version is not None and (type(version) is not int or not 0 <= version < MAX_CATALOG_VERSION):
        # The catalog version the lane checked the document against (DOCUMENTS.md); absent
        # in documents journaled before lanes had a catalog.
        raise ProtocolError(
            "must be a catalog version: an integer 0 <= v < 2^53", "catalog_version"
        )
    screen.check(doc, "$", DOCUMENT_FIELDS[kind])


def decode_document(body: bytes, unpack: Callable[[bytes], Any]) -> dict[str, Any]:
    """A journaled body decoded and checked as check_document does (for head office)."""
    doc = unpack(body)
    check_document(doc)
    assert type(doc) is dict
    return doc


# A card number written in a msgpack string is a run of 13 or more digits, spaces or dashes
# (strings are stored verbatim; a digit of another script, Unicode Nd, is a lead byte and one
# to three continuation bytes in UTF-8). A card number sent as an integer needs more than 32
# bits, so msgpack writes it after a uint64 (0xcf) or int64 (0xd3) marker byte. A body with
# neither holds no card number. Both are checked with C-speed bytes operations: translate maps
# digits, space, dash, the lead bytes of non-ASCII digits and continuation bytes to "1" and
# all else to "0", and a run is a substring search; a regex scan over every body cost 8 us a
# sale, a fifth of ingest's CPU. A body with such a run is read as text and searched for 13
# digits, spaces or dashes in a row (a long run of Thai or Hindi letters ends there) before it
# is decoded and walked.
_RUN = b"1" * 13
_RUN_TEXT = re.compile(r"\d[\d -]{12}")


@functools.cache
def _run_table() -> bytes:
    leads = non_ascii_digit_leads()
    return bytes(
        0x31 if c in b"0123456789 -" or c in leads or 0x80 <= c <= 0xBF else 0x30
        for c in range(256)
    )


def first_pan_body(
    bodies: Sequence[bytes], unpack: Callable[[bytes], Any]
) -> tuple[int, str] | None:
    """(index, field path) of the first msgpack body carrying a card number, or None.

    Head office scans every entry it applies. Byte checks (a long enough run of digits, a
    64-bit integer marker) find the few bodies that could hold one; only those are decoded
    and walked, iteratively and however deep they nest.
    """
    joined = b"\0".join(bodies)  # NUL maps to "0": no run crosses from one body to the next
    ends = list(accumulate(len(b) + 1 for b in bodies))  # offset just past each body's NUL
    ints = _hits(joined, b"\xcf", ends) | _hits(joined, b"\xd3", ends)
    runs = {
        i
        for i in _hits(joined.translate(_run_table()), _RUN, ends) - ints
        if _RUN_TEXT.search(bodies[i].decode("utf-8", "surrogateescape"))
    }
    for i in sorted(runs | ints):
        body = bodies[i]
        try:
            doc = unpack(body)
        except ProtocolError:
            # Not a document at all: judge the raw bytes, never store a card number.
            if contains_pan(body.decode("utf-8", "surrogateescape")):
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
    try:
        body = msgpack.packb(doc, use_bin_type=True)
    except (UnicodeEncodeError, ValueError, TypeError, OverflowError) as exc:
        # check_document refuses all of these first (lone surrogates, depth, types, range);
        # a caller that skipped it still gets the field, never a bare exception.
        problem = screen.first_problem(doc, "$", declared_fields(doc))
        if problem is not None:
            raise problem.error() from None
        raise ProtocolError(f"cannot be encoded: {type(exc).__name__}", "$") from None
    if len(body) > MAX_ENTRY_BODY:
        raise ProtocolError(f"document of {len(body)} bytes exceeds {MAX_ENTRY_BODY}", "$")
    return body
