"""Card numbers (PANs) in text and in msgpack bytes: find them, and mask them for keeping.

Invariant 6 says no full card number is journaled, sent or logged. Documents that carry one are
refused (protocol.documents); what is kept of a refusal (a quarantine row, a problem detail, a
log line) goes through `mask_text` or `mask_bytes` first, so the refusal can be studied without
the number in it. A card number here is a run of 13-19 digits, with single spaces or dashes
between them allowed, that passes the Luhn check (ISO/IEC 7812-1).

`mask_bytes` keeps the length of what it masks (digits become `*`, a 64-bit integer becomes 0),
so a masked msgpack payload still decodes to the same shape and a quarantine row can be read.
"""

from __future__ import annotations

import re
import struct

PAN_MIN_DIGITS = 13
PAN_MAX_DIGITS = 19
# 13-19 digits with single separators, not inside a longer digit run.
PAN_RUN = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")
_PAN_RUN_BYTES = re.compile(rb"(?<![0-9])(?:[0-9][ -]?){12,18}[0-9](?![0-9])")
_SEPARATORS = str.maketrans("", "", " -")
_U64 = struct.Struct(">Q")
_I64 = struct.Struct(">q")


def luhn_ok(digits: str) -> bool:
    """The Luhn (mod 10) check of a string of ASCII digits."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def is_pan_digits(digits: str) -> bool:
    """True for 13-19 ASCII digits that pass the Luhn check."""
    return PAN_MIN_DIGITS <= len(digits) <= PAN_MAX_DIGITS and digits.isdigit() and luhn_ok(digits)


def _run_is_pan(run: str) -> bool:
    return is_pan_digits(run.translate(_SEPARATORS))


def contains_pan(text: str) -> bool:
    """True if `text` holds a card number anywhere (plain, spaced, dashed, inside words)."""
    return any(_run_is_pan(m.group()) for m in PAN_RUN.finditer(text))


def _mask_run(run: str) -> str:
    # All digits but the last four become '*'; separators stay, so the length is kept.
    digits_left = sum(ch.isdigit() for ch in run) - 4
    out = []
    for ch in run:
        if ch.isdigit() and digits_left > 0:
            out.append("*")
            digits_left -= 1
        else:
            out.append(ch)
    return "".join(out)


def mask_text(text: str) -> str:
    """`text` with every card number masked to its last four digits (same length)."""
    return PAN_RUN.sub(
        lambda m: _mask_run(m.group()) if _run_is_pan(m.group()) else m.group(), text
    )


def _int_is_pan(value: int) -> bool:
    return value > 0 and is_pan_digits(str(value))


def mask_bytes(raw: bytes) -> bytes:
    """`raw` (msgpack or anything) with card numbers masked, its length unchanged.

    Digit runs in the bytes are masked as in `mask_text`. A card number sent as a msgpack
    integer needs more than 32 bits, so it follows a uint64 (0xcf) or int64 (0xd3) marker:
    such an 8-byte value that is a card number is zeroed. A marker byte that happens to sit
    inside other data may zero 8 bytes that were not an integer; the result is for reading a
    refusal, never for applying it.
    """
    out = bytearray(raw)
    for m in _PAN_RUN_BYTES.finditer(raw):
        run = m.group().decode("ascii")
        if _run_is_pan(run):
            out[m.start() : m.end()] = _mask_run(run).encode("ascii")
    for marker, fmt in ((0xCF, _U64), (0xD3, _I64)):
        at = raw.find(bytes((marker,)))
        while 0 <= at <= len(raw) - 9:
            (value,) = fmt.unpack_from(raw, at + 1)
            if _int_is_pan(value):
                out[at + 1 : at + 9] = bytes(8)
            at = raw.find(bytes((marker,)), at + 1)
    return bytes(out)
