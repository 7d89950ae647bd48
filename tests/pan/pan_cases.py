"""Card numbers in every form, and every place a POS can put one through the local API.

The generator knows nothing of protocol.pan: card numbers are made here from the Luhn rule
(ISO/IEC 7812-1) and the issuer prefixes of the schemes, so the test cannot share a blind spot
with the code it tests. The only exemptions assumed away are the documented ones
(protocol/DOCUMENTS.md, "Declared fields"), computed here with biip's GS1 check digit.
"""

from __future__ import annotations

import copy
import json
import re
import struct
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from biip.checksums import gs1_standard_check_digit
from hypothesis import strategies as st

from tests.api.api_helpers import sale

CARD_LENGTHS = (13, 15, 16, 19)
# Issuer prefixes (Visa, Mastercard 51-55 and 2221-2720, Amex, Discover, JCB, Diners, UnionPay,
# UATP, Maestro) and none at all: the rule counts any prefix, so must the test.
PREFIXES = ["4", "51", "55", "2221", "2720", "34", "37", "6011", "65", "35", "36", "62", "1", "6"]


def luhn_check_digit(body: str) -> str:
    """The digit that makes `body` + digit pass Luhn (the rightmost body digit is doubled)."""
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return str((10 - total % 10) % 10)


@st.composite
def card_digits(draw: st.DrawFn) -> str:
    n = draw(st.sampled_from(CARD_LENGTHS))
    prefix = draw(st.sampled_from(PREFIXES) | st.text("0123456789", min_size=1, max_size=1))
    rest = draw(st.text("0123456789", min_size=n - 1 - len(prefix), max_size=n - 1 - len(prefix)))
    body = prefix + rest
    return body + luhn_check_digit(body)


@dataclass(frozen=True)
class Card:
    """One card number and the form it is sent in (a JSON string or integer)."""

    digits: str
    form: str | int
    how: str


def _grouped(digits: str, sizes: list[int], sep: str) -> str:
    out, at = [], 0
    for size in sizes:
        if at >= len(digits):
            break
        out.append(digits[at : at + size])
        at += size
    if at < len(digits):
        out.append(digits[at:])
    return sep.join(out)


@st.composite
def cards(draw: st.DrawFn) -> Card:
    # Real card numbers are not "0000000000000": a number of so few distinct digits could turn
    # up by chance in a database file or a log, which would read as a leak.
    digits = draw(card_digits().filter(lambda d: len(set(d)) >= 4))
    how = draw(
        st.sampled_from(
            [
                "plain",
                "spaced",
                "dashed",
                "grouped",
                "in text",
                "glued",
                "fullwidth",
                "integer",
                "negative",
            ]
        )
    )
    if how in ("integer", "negative") and digits[0] == "0":
        how = "plain"  # an integer has no leading zero: it would be a shorter number
    form: str | int
    if how == "plain":
        form = digits
    elif how in ("spaced", "dashed"):
        sizes = [4, 6, 5] if len(digits) == 15 else [4] * 5
        form = _grouped(digits, sizes, " " if how == "spaced" else "-")
    elif how == "grouped":
        sizes = draw(st.lists(st.integers(1, 6), min_size=1, max_size=19))
        form = _grouped(digits, sizes, draw(st.sampled_from([" ", "-"])))
    elif how == "in text":
        form = f"paid with {digits} exp 12/29"
    elif how == "glued":
        form = f"ref{digits}x"
    elif how == "fullwidth":
        form = "".join(chr(0xFF10 + int(d)) for d in digits)
    elif how == "integer":
        form = int(digits)
    else:
        form = -int(digits)
    return Card(digits, form, how)


# --- where: every field of every document kind ----------------------------------------------

GTIN13_LUHN = "5901234123457"  # a real GTIN-13 whose digits pass Luhn: declared fields only
CARD = {"tender": "card", "amount": 500, "token": "tok_AbCdEfGhIj", "scheme": "visa"}


def documents() -> dict[str, dict[str, Any]]:
    """A valid document of every kind for the test agents (tax rates as api_helpers.TAX)."""
    lines = sale()["lines"]
    ret = dict(lines[1], qty="-1.000", amount=-179, tax=-12, return_type="FAULTY")
    gtin_sale = sale()
    gtin_sale["lines"][0]["item"] = GTIN13_LUHN
    docs = {
        "sale": gtin_sale,
        "sale_refund": sale(
            kind="sale_refund",
            payments=[{"tender": "cash", "amount": 3977}],
            change=0,
            return_type="DAMAGED",
        ),
        "special_order": sale(
            kind="special_order",
            customer="C2000",
            payments=[{"tender": "cash", "amount": 1000}],
            change=0,
        ),
        "layaway": sale(
            kind="layaway", customer="C2000", payments=[{**CARD, "last4": "0005"}], change=0
        ),
        "layaway_cancellation": sale(
            kind="layaway_cancellation",
            customer="C2000",
            payments=[{"tender": "cash", "amount": 500}],
            change=0,
        ),
        "delivery": sale(kind="delivery", customer="C2000"),
        "sale_with_fulfilment": sale(kind="sale_with_fulfilment", customer=None),
        "on_account_payment": sale(
            kind="on_account_payment",
            customer="C3000",
            lines=[],
            total=2500,
            payments=[{"tender": "cheque", "amount": 2500, "reference": "CHQ100"}],
            change=0,
        ),
        "layaway_payment": sale(
            kind="layaway_payment",
            customer="C2000",
            lines=[],
            total=700,
            payments=[{"tender": "cash", "amount": 700}],
            change=0,
        ),
        "sale_exchange": sale(
            kind="sale_exchange",
            lines=[lines[0], ret],
            total=3619,
            payments=[{"tender": "cash", "amount": 3619}],
            change=0,
        ),
        "receive_purchase_order": {
            "kind": "receive_purchase_order",
            "currency": "EUR",
            "business_day": "2024-08-01",
            "po_id": "PO1001",
            "supplier": "SUP1",
            "document": "INV-77",
            "freight": 1000,
            "packaging": 0,
            "lines": [
                {"item": GTIN13_LUHN, "qty": "10.000", "unit_cost": 1000, "tax_code": "VAT_STD"},
                {"item": "P5000", "qty": "20.000", "unit_cost": 150, "tax_code": "VAT_STD"},
            ],
        },
        "transit_inventory": {
            "kind": "transit_inventory",
            "currency": "EUR",
            "dest_store": "S2",
            "by": {"type": "staff", "id": "E042", "name": "Ann"},
            "label": "FRAGILE",
            "lines": [{"item": "P1000", "qty": "5.000", "description": "Beans"}],
        },
        "transit_inventory_accept": {
            "kind": "transit_inventory_accept",
            "currency": "EUR",
            "sscc": "157035381410375177",
            "source_store": "S2",
            "ext": {"received_at": 1_722_500_000_000},
        },
        "supplier_return": {
            "kind": "supplier_return",
            "currency": "EUR",
            "supplier": "SUP1",
            "reason": "FAULTY",
            "lines": [{"item": "P4000", "qty": "2.000", "unit_cost": 600}],
        },
        "stock_adjustment": {
            "kind": "stock_adjustment",
            "currency": "EUR",
            "reason": "SHRINK",
            "lines": [{"item": "P3000", "qty": "-3.000", "reason": "BROKEN"}],
        },
    }
    for doc in docs.values():
        doc.setdefault("ext", {})["till"] = "T1"
        doc["staff"] = "E1"
    return docs


Path = tuple[str | int, ...]


@dataclass(frozen=True)
class Place:
    """Where a card number goes: the value at `path`, a new key `memo` in the map at `path`
    ("add"), or a map key in the map at `path` ("key")."""

    path: Path
    mode: str = "value"

    def field(self, document: bool = False) -> str:
        """The field a refusal must name."""
        if document and self.mode == "value" and self.path in (("kind",), ("txn_id",)):
            return str(self.path[0])  # a document's are checked first, named without the $
        text = "$" + "".join(f"[{k}]" if type(k) is int else f".{k}" for k in self.path)
        if self.mode == "key":
            return f"{text} (a map key)"
        if self.mode == "add":
            return f"{text}.memo"
        return text


def places(value: Any, path: Path = ()) -> Iterator[Place]:
    """Every value of a tree, plus a new key and a new map key in every map."""
    if path:
        yield Place(path)
    if type(value) is dict:
        yield Place(path, "add")
        yield Place(path, "key")
        for k, v in value.items():
            yield from places(v, (*path, k))
    elif type(value) is list:
        for i, v in enumerate(value):
            yield from places(v, (*path, i))


def put(tree: Any, place: Place, form: str | int) -> Any:
    """A copy of `tree` with the card number put in place."""
    out = copy.deepcopy(tree)
    if not place.path and place.mode == "value":
        return form
    parent = out
    for k in place.path[:-1] if place.mode == "value" else place.path:
        parent = parent[k]
    if place.mode == "value":
        parent[place.path[-1]] = form
    elif place.mode == "add":
        parent["memo"] = form
    else:
        parent[str(form)] = "x"
    return out


def gs1_ok(value: str, lengths: tuple[int, ...]) -> bool:
    return (
        len(value) in lengths
        and value.isascii()
        and value.isdigit()
        and gs1_standard_check_digit(value[:-1]) == int(value[-1])
    )


def declared_exempt(kind: str | None, place: Place, card: Card) -> bool:
    """True where protocol/DOCUMENTS.md declares the field to hold what this card number also
    is (a GTIN, a millisecond time): accepted by design, so not a case for this test."""
    p = place.path
    if place.mode != "value":
        return False
    if isinstance(card.form, str) and len(p) >= 1 and p[-1] == "item":
        return gs1_ok(card.form, (8, 12, 13, 14))
    if kind == "transit_inventory_accept" and p == ("ext", "received_at"):
        return isinstance(card.form, int) and 10**12 <= card.form < 4 * 10**12
    return False


# --- looking for a number in what was kept ---------------------------------------------------


def _digit(m: re.Match[str]) -> str:
    return str(unicodedata.decimal(m.group()))


def digits_view(data: bytes) -> str:
    """`data` as text with every decimal digit in ASCII and spaces and dashes dropped: a card
    number that is in there in any form shows up as its digits."""
    text = data.decode("utf-8", "surrogateescape")
    if not text.isascii():
        text = _OTHER_DIGIT.sub(_digit, text)
    return text.replace(" ", "").replace("-", "")


_OTHER_DIGIT = re.compile(r"(?![0-9])\d")  # a decimal digit of another script


def integer_encodings(digits: str) -> list[bytes]:
    """How a number would sit in msgpack (int64/uint64) or SQLite (6- or 8-byte integer)."""
    n = int(digits)
    out = [struct.pack(">Q", n)]  # below 10**19: always fits 64 bits unsigned
    if n <= 1 << 63:
        out.append(struct.pack(">q", -n))
    if n < 1 << 47:
        out += [n.to_bytes(6, "big"), (-n).to_bytes(6, "big", signed=True)]
    return out


def problem_text(body: Any) -> str:
    return json.dumps(body, ensure_ascii=False)
