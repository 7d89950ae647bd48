"""What may travel: one walk over a document, request or reply, refusing by field.

Every value a lane journals or sends, and every value head office takes in or answers, passes
this screen (invariants 5 and 6 and the bounds of DOCUMENTS.md):

- only str-keyed maps, lists, strings, integers (signed 64-bit), booleans, None and bytes; no
  floats or decimals (money is integer minor units);
- at most MAX_DEPTH levels of nesting and MAX_VALUES values in all;
- strings that are text: no lone surrogates (they cannot be encoded as UTF-8);
- no card number (protocol.pan) in any string, map key, integer or bytes value, except where a
  declared field holds what it is declared to hold: a GTIN (8, 12, 13 or 14 digits with a GS1
  check digit), an SSCC (18 digits, GS1 check digit), a millisecond timestamp (an integer in
  2001..2096), or a transit label whose digit runs are its own SSCC. A declared field holding
  anything else (a 16-digit run in a GTIN field) is screened like any other.

The walk keeps its own stack, so nesting however deep never reaches Python's recursion limit,
and builds a field path only for what it refuses: a clean document costs one pass of a few
type checks per value, and a string is looked at closely only when a cheap regex finds 13
digits, spaces or dashes in a row (or, in non-ASCII text, a lone surrogate or such a run).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator, Mapping
from decimal import Decimal
from typing import Any, NamedTuple

from protocol.errors import ProtocolError
from protocol.pan import (
    PAN_INT_MIN,
    PAN_MAX_DIGITS,
    PAN_MIN_DIGITS,
    contains_pan,
    is_pan_int,
    luhn_ok,
    pan_spans,
)

MAX_DEPTH = 32
MAX_VALUES = 100_000
I64_MIN, I64_MAX = -(1 << 63), (1 << 63) - 1
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
PAN_REASON = "looks like a full card number; send the card token, scheme and last four digits"

# A field's declared content: exempt(value, root document) is True when the value is what the
# field may hold even though it passes as a card number.
Exempt = Callable[[Any, Any], bool]
Declared = Mapping[str, "Declared | Exempt"]
LIST = "[]"  # in a declaration path, "every element of this list"

_HINT = re.compile(r"[0-9][0-9 -]{12}")  # ASCII: where a card number could be
_HINT_ANY = re.compile(r"[\ud800-\udfff]|\d[\d -]{12}")  # other text: that or a lone surrogate
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_FRACTION = "fractional numbers are not allowed; use integer minor units or a decimal string"


def gs1_check_digit(payload: str) -> int:
    """GS1 General Specifications 7.9.1, as biip.checksums.gs1_standard_check_digit: weights
    3, 1, 3 ... from the right. Here because importing biip costs a lane's agent 16 MB and
    0.1 s at start (its package loads every GS1 table), and a check digit needs none of them."""
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(payload)))
    return (10 - total % 10) % 10


def _gs1_key(value: Any, lengths: tuple[int, ...]) -> bool:
    return (
        type(value) is str
        and len(value) in lengths
        and value.isascii()
        and value.isdigit()
        and gs1_check_digit(value[:-1]) == int(value[-1])
    )


def gtin(value: Any, root: Any) -> bool:
    """A GTIN-8, -12, -13 or -14 with a valid GS1 check digit."""
    return _gs1_key(value, (8, 12, 13, 14))


def sscc(value: Any, root: Any) -> bool:
    """An SSCC: 18 digits with a valid GS1 check digit."""
    return _gs1_key(value, (18,))


def epoch(value: Any, root: Any) -> bool:
    """A journal epoch: 63 random bits, so one in ten of those with 13 to 19 digits passes
    Luhn; an epoch is an integer where a card number would be a string of digits."""
    return type(value) is int and 0 < value < 1 << 63


def ms_time(value: Any, root: Any) -> bool:
    """Milliseconds since 1970 from 2001-09-09 (10**12) to 2096-10-02 (4 * 10**12).

    Such integers have 13 digits and pass Luhn one time in ten; card numbers of 13 digits are
    Visa's (they start with 4), so this range lets no card number through.
    """
    return type(value) is int and PAN_INT_MIN <= value < 4 * PAN_INT_MIN


def transit_label(value: Any, root: Any) -> bool:
    """Label text whose every card-number-like run is digits of the document's own SSCC
    (the label prints it as "(00) 3570..." and in its spaced human-readable form)."""
    own = root.get("sscc") if type(root) is dict else None
    if type(value) is not str or type(own) is not str or not sscc(own, root):
        return False
    for a, b in pan_spans(value):
        run = value[a:b]
        if not run.isascii() or run.replace(" ", "").replace("-", "") not in own:
            return False
    return True


def declare(paths: Mapping[str, Exempt]) -> Declared:
    """A declaration tree from paths like "lines[].item" (relative to the walked value)."""
    root: dict[str, Any] = {}
    for path, exempt in paths.items():
        parts = path.replace("[]", "." + LIST).split(".")
        node = root
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = exempt
    return root


class Problem(NamedTuple):
    """The first thing refused: where (a path from the walked value) and why."""

    field: str
    reason: str
    card_number: bool

    def error(self) -> ProtocolError:
        return ProtocolError(self.reason, self.field)


# A container on the walk's stack: (value, its declaration node, depth, parent frame, key or
# index in the parent). The parent links give a refused value's path without building one
# for every value.
_Frame = tuple[Any, Any, int, Any, Any]


def _path(base: str, frame: _Frame | None, key: Any = None) -> str:
    keys = [] if key is None else [key]
    while frame is not None and frame[3] is not None:
        keys.append(frame[4])
        frame = frame[3]
    keys.reverse()
    parts = [f"[{k}]" if type(k) is int else f".{k}" for k in keys]
    if len(parts) > MAX_DEPTH:  # only a card number hidden deeper than anything may nest
        parts[16:-8] = [f"...({len(parts) - 24} levels)..."]
    return base + "".join(parts)


def _text(value: str, exempt: Any, root: Any) -> tuple[str, bool] | None:
    """Why a string that the cheap regex flagged is refused, or None."""
    if exempt is gtin or exempt is sscc:
        return _gs1_field(value, exempt)
    return _screen_text(value, exempt, root)


@functools.lru_cache(maxsize=4096)
def _gs1_field(value: str, exempt: Exempt) -> tuple[str, bool] | None:
    """_text for a field declared to hold a GS1 key: the verdict depends on the value alone,
    and the same item codes come back sale after sale, so it is remembered."""
    return _screen_text(value, exempt, None)


def _screen_text(value: str, exempt: Any, root: Any) -> tuple[str, bool] | None:
    if not value.isascii():
        bad = _SURROGATE.search(value)
        if bad is not None:
            return f"holds a lone surrogate (U+{ord(bad.group()):04X}), which is not text", False
    if value.isdigit() and value.isascii():  # one run of digits (item codes): no regex
        pan = PAN_MIN_DIGITS <= len(value) <= PAN_MAX_DIGITS and luhn_ok(value)
    elif len(value) == 36 and UUID_RE.fullmatch(value):
        # A canonical UUID (a txn_id) is 32 random hex digits: one in a few hundred holds a
        # 13-19 digit run passing Luhn by chance, so UUIDs are identifiers, not text.
        return None
    else:
        pan = contains_pan(value)
    if not pan or (callable(exempt) and exempt(value, root)):
        return None
    return PAN_REASON, True


def holds_pan(text: str) -> bool:
    """The screen's verdict on one string of no declared field: a card number in it (a
    canonical UUID is an identifier, not text; see _screen_text)."""
    found = _screen_text(text, None, None)
    return found is not None and found[1]


def _integer(value: int, exempt: Any, root: Any) -> tuple[str, bool] | None:
    if is_pan_int(value) and not (callable(exempt) and exempt(value, root)):
        return PAN_REASON, True
    if not I64_MIN <= value <= I64_MAX:
        return "integer outside the signed 64-bit range", False
    return None


def _other(value: Any) -> tuple[str, bool] | None:
    """bytes, floats, decimals and anything else a decoder or a caller handed us."""
    t = type(value)
    if t is bytes:
        text = value.decode("utf-8", "surrogateescape")
        return (PAN_REASON, True) if contains_pan(text) else None
    if t is float or t is Decimal:
        try:
            whole = value == int(value)
        except (OverflowError, ValueError):  # inf, nan
            whole = False
        if whole and is_pan_int(int(value)):
            return PAN_REASON, True
        return _FRACTION, False
    return f"{t.__name__} values are not allowed", False


def _walk(root: Any, declared: Declared | None, pans_only: bool) -> Iterator[tuple[Any, ...]]:
    """(frame, key, reason, card_number, is_map_key) for each value refused, in order.

    With `pans_only` only card numbers are reported, and the walk goes on past everything
    else (depth, counts, types): head office must find a card number wherever it hides.
    """
    t = type(root)
    if t is not dict and t is not list:
        found = _leaf(root, declared, root)
        if found is not None and (found[1] or not pans_only):
            yield None, None, found[0], found[1], False
        return
    stack: list[_Frame] = [(root, declared, 0, None, None)]
    values = 0
    hint, hint_any = _HINT.search, _HINT_ANY.search
    while stack:
        frame = stack.pop()
        value, node, depth = frame[0], frame[1], frame[2]
        if depth > MAX_DEPTH and not pans_only:
            yield frame, None, f"nested deeper than {MAX_DEPTH} levels", False, False
            return
        values += len(value)
        if values > MAX_VALUES and not pans_only:
            yield frame, None, f"more than {MAX_VALUES} values in all", False, False
            return
        is_map = type(value) is dict
        if is_map:
            for k in value:
                if type(k) is str:
                    if k.isascii():
                        if len(k) < 13 or hint(k) is None:
                            continue
                    elif hint_any(k) is None:
                        continue
                    found = _text(k, None, root)
                elif type(k) is int:
                    found = _integer(k, None, root) or ("map keys must be strings", False)
                else:
                    found = (_other(k) if type(k) is bytes else None) or (
                        "map keys must be strings",
                        False,
                    )
                if found is not None and (found[1] or not pans_only):
                    yield frame, None, found[0], found[1], True
                    if not pans_only:
                        return
            items: Any = value.items()
        else:
            items = enumerate(value)
        kids: list[_Frame] = []
        for k, v in items:
            t = type(v)
            if t is str:
                if v.isascii():
                    if len(v) < 13 or hint(v) is None:
                        continue
                elif hint_any(v) is None:
                    continue
                found = _text(v, None if node is None else _sub(node, k, is_map), root)
            elif t is int:
                if -PAN_INT_MIN < v < PAN_INT_MIN:
                    continue
                found = _integer(v, None if node is None else _sub(node, k, is_map), root)
            elif t is dict or t is list:
                sub = None if node is None else _sub(node, k, is_map)
                kids.append((v, sub if type(sub) is dict else None, depth + 1, frame, k))
                continue
            elif t is bool or v is None:
                continue
            else:
                found = _other(v)
            if found is not None and (found[1] or not pans_only):
                yield frame, k, found[0], found[1], False
                if not pans_only:
                    return
        stack.extend(reversed(kids))


def _sub(node: Any, key: Any, is_map: bool) -> Any:
    """The declaration for a child of a container declared as `node`."""
    if node is None:
        return None
    return node.get(key if is_map else LIST) if type(key) is str or not is_map else None


def _leaf(value: Any, exempt: Any, root: Any) -> tuple[str, bool] | None:
    t = type(value)
    if t is str:
        return _text(value, exempt, root)
    if t is int:
        return _integer(value, exempt, root)
    if t is bool or value is None:
        return None
    return _other(value)


def _problem(base: str, hit: tuple[Any, ...]) -> Problem:
    frame, key, reason, card, is_key = hit
    if is_key:  # never the key itself in the path: it may be the very card number
        return Problem(f"{_path(base, frame)} (a map key)", reason, card)
    return Problem(_path(base, frame, key), reason, card)


def first_problem(value: Any, path: str = "$", declared: Declared | None = None) -> Problem | None:
    """The first value of `value` that may not travel, or None."""
    hit = next(_walk(value, declared, False), None)
    return None if hit is None else _problem(path, hit)


def check(value: Any, path: str = "$", declared: Declared | None = None) -> None:
    """Refuse `value` with a ProtocolError naming the first field at fault (never its value)."""
    hit = next(_walk(value, declared, False), None)
    if hit is not None:
        raise _problem(path, hit).error()


def find_pan(value: Any, path: str = "$", declared: Declared | None = None) -> str | None:
    """Path of the first card number anywhere in `value` (however deep), or None."""
    hit = next(_walk(value, declared, True), None)
    return None if hit is None else _problem(path, hit).field
