"""Card numbers (PANs) in text, integers and msgpack bytes: the one rule, and masking.

Invariant 6 says no full card number is journaled, sent or logged. This module says what a card
number is; protocol.screen applies it to every value of a document, request or reply, and
what is kept of a refusal (a quarantine row, a problem detail, a log line) goes through
`mask_text`, `mask_bytes` or `redact_text` first.

The rule (ISO/IEC 7812-1 numbers are 13-19 digits with a Luhn check digit): a card number is
13 to 19 digits that pass the Luhn check, written

- plain (`4111111111111111`), as an integer, or inside other text (`ref4111111111111111x`);
- with single spaces or dashes between groups of digits (`4111 1111 1111 1111`,
  `3782-822463-10005`, even `4 1 1 1 ...`): any consecutive groups of a spaced or dashed run
  that hold 13-19 digits between them are checked, so extra groups before or after
  (`ref 12 4111 1111 1111 1111`) do not hide one;
- in any script's decimal digits (Unicode category Nd): fullwidth or Arabic-Indic digits
  count as the ASCII digits they stand for.

Not a card number: a contiguous run of more than 19 digits (there is no telling where a card
number in it would start), and groups joined by anything else (two spaces, a dot, a slash).
Any issuer prefix counts: a screen that trusts the first digit lets through what it has not
heard of. Where a declared field may hold a GS1 key that passes Luhn by chance is
protocol.screen's business, not this module's.

`mask_bytes` keeps the length of what it masks (digits become `*`, a 64-bit integer becomes 0),
so a masked msgpack payload still decodes to the same shape and a quarantine row can be read.
"""

from __future__ import annotations

import functools
import math
import re
import struct
import unicodedata
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator
from itertools import accumulate

PAN_MIN_DIGITS = 13
PAN_MAX_DIGITS = 19
PAN_INT_MIN = 10 ** (PAN_MIN_DIGITS - 1)  # an integer below this has too few digits
PAN_INT_LIMIT = 10**PAN_MAX_DIGITS  # and one at or above this too many
# A run: groups of digits with single spaces or dashes between them. ASCII text (nearly all)
# takes the [0-9] pattern; other text the \d one, which matches every Unicode Nd digit.
_RUN_ASCII = re.compile(r"[0-9]+(?:[ -][0-9]+)*")
_RUN_ANY = re.compile(r"\d+(?:[ -]\d+)*")
_GROUP = re.compile(r"\d+")
# Luhn in C: the digits at even places from the right count as they are, those at odd places
# doubled (and 9 subtracted past 9); bytes.translate maps each ASCII digit to that value.
_PLAIN = bytes(range(256)).translate(bytes.maketrans(b"0123456789", bytes(range(10))))
_DOUBLED = bytes(range(256)).translate(
    bytes.maketrans(b"0123456789", bytes((0, 2, 4, 6, 8, 1, 3, 5, 7, 9)))
)
_U64 = struct.Struct(">Q")
_I64 = struct.Struct(">q")


def luhn_ok(digits: str) -> bool:
    """The Luhn (mod 10) check of a string of ASCII digits."""
    raw = digits.encode("ascii")
    total = sum(raw[-1::-2].translate(_PLAIN)) + sum(raw[-2::-2].translate(_DOUBLED))
    return total % 10 == 0


def is_pan_digits(digits: str) -> bool:
    """True for 13-19 ASCII digits that pass the Luhn check."""
    return (
        PAN_MIN_DIGITS <= len(digits) <= PAN_MAX_DIGITS
        and digits.isascii()
        and digits.isdigit()
        and luhn_ok(digits)
    )


def is_pan_int(value: int) -> bool:
    """True for an integer whose digits (sign dropped) are a card number."""
    magnitude = -value if value < 0 else value
    return PAN_INT_MIN <= magnitude < PAN_INT_LIMIT and luhn_ok(str(magnitude))


def _ascii(digits: str) -> str:
    if digits.isascii():
        return digits
    return "".join(str(unicodedata.decimal(ch)) for ch in digits)


def pan_spans(text: str) -> Iterator[tuple[int, int]]:
    """(start, end) in `text` of every card number, in order; spans may overlap."""
    for m in (_RUN_ASCII if text.isascii() else _RUN_ANY).finditer(text):
        start, end = m.span()
        if end - start < PAN_MIN_DIGITS:
            continue
        run = m.group()
        if " " not in run and "-" not in run:  # one group: the whole run or nothing
            if end - start <= PAN_MAX_DIGITS and luhn_ok(_ascii(run)):
                yield start, end
            continue
        groups = [g.span() for g in _GROUP.finditer(run)]
        for a, b in _windows(groups, _ascii("".join(run[a:b] for a, b in groups))):
            yield start + a, start + b


def _windows(groups: list[tuple[int, int]], digits: str) -> Iterator[tuple[int, int]]:
    """Spans of consecutive `groups` (spans in a run whose digits, joined, are `digits`)
    that hold 13-19 digits passing the Luhn check.

    The Luhn sum of every window comes from two prefix sums, so a run of many short groups
    costs a pass in C and a few steps per group, not a check per window from scratch.
    """
    raw = digits.encode("ascii")
    plain, doubled = raw.translate(_PLAIN), raw.translate(_DOUBLED)
    # A window's last digit counts plain, the one before it doubled, and so on. by_even[p] sums
    # the digits before index p counting even indexes plain and odd ones doubled; by_odd the
    # other way round. A window ending at index e - 1 reads from the one matching e - 1.
    mixed = bytearray(plain)
    mixed[1::2] = doubled[1::2]
    by_even = [0, *accumulate(mixed)]
    mixed = bytearray(doubled)
    mixed[1::2] = plain[1::2]
    by_odd = [0, *accumulate(mixed)]
    starts = [0, *accumulate(b - a for a, b in groups)]  # index in `digits` of each group
    for j in range(len(groups)):
        e = starts[j + 1]
        if e < PAN_MIN_DIGITS:
            continue
        sums = by_even if (e - 1) % 2 == 0 else by_odd
        # the windows ending with group j: those starting at most 19 and at least 13 digits back
        lo, hi = bisect_left(starts, e - PAN_MAX_DIGITS), bisect_right(starts, e - PAN_MIN_DIGITS)
        for i in range(lo, hi):
            if (sums[e] - sums[starts[i]]) % 10 == 0:
                yield groups[i][0], groups[j][1]


def contains_pan(text: str) -> bool:
    """True if `text` holds a card number anywhere (plain, spaced, dashed, inside words)."""
    return next(pan_spans(text), None) is not None


def _masked(text: str, star: Callable[[str], str]) -> str:
    """`text` with the digits of every card number but its last four replaced by `star`."""
    hide: set[int] = set()
    for start, end in pan_spans(text):
        places = [i for i in range(start, end) if text[i] not in " -"]
        hide.update(places[:-4])
    if not hide:
        return text
    chars = list(text)
    for i in hide:
        chars[i] = star(chars[i])
    return "".join(chars)


def _star(ch: str) -> str:
    return "*"


def _star_per_byte(ch: str) -> str:
    return "*" * len(ch.encode("utf-8", "surrogateescape"))


def _mask_all(text: str, star: Callable[[str], str]) -> str:
    # Masking one number can leave digits that, with their neighbours, pass as another
    # (overlapping windows); mask again until none is left.
    masked = _masked(text, star)
    while masked != text:
        text, masked = masked, _masked(masked, star)
    return masked


def mask_text(text: str) -> str:
    """`text` with every card number masked to its last four digits (same length)."""
    return _mask_all(text, _star)


def redact_text(text: str, placeholder: str = "[PAN redacted]") -> str:
    """`text` with each card number (its whole run) replaced by `placeholder`: for logs."""
    while True:
        spans = sorted(pan_spans(text))
        if not spans:
            return text
        out, at = [], 0
        for start, end in spans:  # overlapping spans (windows of one run) become one
            if start < at:
                at = max(at, end)
                continue
            out += [text[at:start], placeholder]
            at = end
        out.append(text[at:])
        text = "".join(out)  # as in mask_text: again until none is left


@functools.cache
def non_ascii_digit_leads() -> frozenset[int]:
    """The bytes that start the UTF-8 encoding of a non-ASCII decimal digit (Nd).

    For fast scans of msgpack bodies: such a digit is one of these bytes followed by one to
    three continuation bytes (0x80-0xbf). Computed on first use from unicodedata: 650 digits
    below U+20000 (none above), starting with 8 distinct bytes.
    """
    return frozenset(
        chr(cp).encode("utf-8")[0]
        for cp in range(0x80, 0x20000)
        if unicodedata.category(chr(cp)) == "Nd"
    )


def mask_bytes(raw: bytes) -> bytes:
    """`raw` (msgpack or anything) with card numbers masked, its length unchanged.

    Where `raw` is msgpack, its values are masked in place: every string and binary payload as
    in `mask_text` (a multi-byte digit becomes as many `*` as it has bytes, so the UTF-8 stays
    valid), and a 64-bit integer or float whose value is a card number (it needs more than 32
    bits) becomes 0. Headers are never touched, so the result decodes to the same shape. Bytes
    that are not exactly one msgpack value (truncated, corrupt, trailing bytes, plain text) are
    masked whole by reading them as text, with every 8 bytes after a uint64 (0xcf) or int64
    (0xd3) marker that form a card number zeroed; the result is for reading a refusal, never
    for applying it.
    """
    out = bytearray(raw)
    # A payload is ONE msgpack value (the codec refuses trailing bytes), so the bytes are read as
    # msgpack only when they are exactly one complete value. Anything else is masked as text,
    # from the first byte: every ASCII byte is also a complete msgpack value (a positive
    # fixint), so b"4111..." or b"pay 4111..." would otherwise pass for an integer followed by
    # a tail, and the card number's first digits would escape the mask.
    if raw and _mask_msgpack_value(raw, 0, out) == len(raw):
        return bytes(out)
    out[:] = raw
    _mask_unparsed(raw, 0, out)
    return bytes(out)


# msgpack headers (msgpack spec, "formats"): for each first byte, how many bytes follow it
# before the payload, and what the payload is.
_FIXED = {0xC0: 0, 0xC2: 0, 0xC3: 0, 0xCC: 1, 0xCD: 2, 0xCE: 4, 0xD0: 1, 0xD1: 2, 0xD2: 4}
_LEN_BYTES = {0xC4: 1, 0xC5: 2, 0xC6: 4, 0xD9: 1, 0xDA: 2, 0xDB: 4}  # bin8-32, str8-32
_EXT = {0xC7: 1, 0xC8: 2, 0xC9: 4}  # ext8-32: length, then a type byte
_FIXEXT = {0xD4: 1, 0xD5: 2, 0xD6: 4, 0xD7: 8, 0xD8: 16}  # type byte, then the data
_CONTAINER = {0xDC: (2, 1), 0xDD: (4, 1), 0xDE: (2, 2), 0xDF: (4, 2)}  # count bytes, per entry
_FLOAT64 = struct.Struct(">d")


def _mask_msgpack_value(raw: bytes, at: int, out: bytearray) -> int | None:
    """Mask the one msgpack value at `at` (iteratively: a count of values still to read, no
    stack); returns the offset after it, or None if it is not complete msgpack."""
    pending, n = 1, len(raw)
    while pending:
        if at >= n:
            return None
        b = raw[at]
        pending -= 1
        at += 1
        if b <= 0x7F or b >= 0xE0:
            continue
        if b <= 0x8F:
            pending += 2 * (b & 0x0F)
        elif b <= 0x9F:
            pending += b & 0x0F
        elif b <= 0xBF:
            end = at + (b & 0x1F)
            if end > n:
                return None
            _mask_payload(raw, at, end, out)
            at = end
        elif b in _FIXED:
            at += _FIXED[b]
        elif b in _LEN_BYTES or b in _EXT:
            width = _LEN_BYTES.get(b) or _EXT[b]
            if at + width > n:
                return None
            size = int.from_bytes(raw[at : at + width], "big")
            at += width + (1 if b in _EXT else 0)
            if at + size > n:
                return None
            if b in _LEN_BYTES:
                _mask_payload(raw, at, at + size, out)
            at += size
        elif b in _FIXEXT:
            at += 1 + _FIXEXT[b]
        elif b in _CONTAINER:
            width, per = _CONTAINER[b]
            if at + width > n:
                return None
            pending += per * int.from_bytes(raw[at : at + width], "big")
            at += width
        elif b in (0xCF, 0xD3, 0xCB, 0xCA):
            size = 4 if b == 0xCA else 8
            if at + size > n:
                return None
            if b != 0xCA:
                fmt = _U64 if b == 0xCF else _I64 if b == 0xD3 else _FLOAT64
                (value,) = fmt.unpack_from(raw, at)
                if b == 0xCB:
                    whole = math.isfinite(value) and value == int(value)
                    value = int(value) if whole else 0
                if is_pan_int(value):
                    out[at : at + 8] = bytes(8)
            at += size
        else:  # 0xc1 is never used
            return None
        if at > n:
            return None
    return at


def _mask_payload(raw: bytes, start: int, end: int, out: bytearray) -> None:
    chunk = raw[start:end]
    if len(chunk) >= PAN_MIN_DIGITS:
        masked = _mask_all(chunk.decode("utf-8", "surrogateescape"), _star_per_byte)
        out[start:end] = masked.encode("utf-8", "surrogateescape")


def _mask_unparsed(raw: bytes, start: int, out: bytearray) -> None:
    tail = raw[start:]
    masked = _mask_all(tail.decode("utf-8", "surrogateescape"), _star_per_byte)
    out[start:] = masked.encode("utf-8", "surrogateescape")
    for marker, fmt in ((0xCF, _U64), (0xD3, _I64)):
        at = raw.find(bytes((marker,)), start)
        while 0 <= at <= len(raw) - 9:
            (value,) = fmt.unpack_from(raw, at + 1)
            if is_pan_int(value):
                out[at + 1 : at + 9] = bytes(8)
            at = raw.find(bytes((marker,)), at + 1)
