"""protocol.pan: the one card-number rule; card numbers found and masked in text and msgpack
bytes, lengths kept."""

from __future__ import annotations

import time

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.pan import (
    contains_pan,
    is_pan_digits,
    is_pan_int,
    luhn_ok,
    mask_bytes,
    mask_text,
    pan_spans,
    redact_text,
)

VISA16 = "4111111111111111"
AMEX15 = "378282246310005"
VISA13 = "4222222222222"
LONG19 = "6011000990139424000"  # not Luhn-valid: must stay


def test_luhn_and_lengths() -> None:
    assert luhn_ok(VISA16)
    assert luhn_ok(AMEX15)
    assert luhn_ok(VISA13)
    assert is_pan_digits(VISA16)
    assert not is_pan_digits("4111111111111112")  # Luhn fails
    assert not is_pan_digits("411111111111")  # 12 digits: too short
    assert not is_pan_digits("4111 1111 1111 1111")  # separators are not digits


@pytest.mark.parametrize(
    "text",
    [
        VISA16,
        f"card {VISA16} thanks",
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        f"x{AMEX15}y",
        VISA13,
    ],
)
def test_found_and_masked_to_last_four(text: str) -> None:
    assert contains_pan(text)
    masked = mask_text(text)
    assert len(masked) == len(text)
    assert not contains_pan(masked)
    digits = "".join(c for c in masked if c.isdigit())
    assert digits.endswith(("1111", "0005", "2222"))


def test_other_digit_runs_untouched() -> None:
    for text in ("order 12345", "4111111111111112", "seq 123456789012", "T10001", LONG19):
        assert mask_text(text) == text
        assert not contains_pan(text)


def test_mask_bytes_keeps_msgpack_shape() -> None:
    doc = {"a": f"card {VISA16}", "n": int(VISA16), "neg": -int(AMEX15), "ok": 42, "s": "x"}
    raw = msgpack.packb(doc)
    masked = mask_bytes(raw)
    assert len(masked) == len(raw)
    back = msgpack.unpackb(masked)
    assert back["a"] == "card ************1111"
    assert back["n"] == 0
    assert back["ok"] == 42
    assert back["s"] == "x"
    assert VISA16.encode() not in masked
    assert not contains_pan(masked.decode("latin-1"))


def test_mask_bytes_of_garbage_does_not_raise() -> None:
    for raw in (b"", b"\xcf", b"\xcf\x00", b"\xd3" * 20, bytes(range(256))):
        assert len(mask_bytes(raw)) == len(raw)


# --- the rule's edges (protocol.pan's docstring) --------------------------------------------


def _brute_spans(text: str) -> set[tuple[int, int]]:
    """Every window of whole digit groups (single space/dash between) of 13-19 digits that
    passes Luhn, found the slow way: what pan_spans must find."""
    import re  # noqa: PLC0415

    out = set()
    for m in re.finditer(r"[0-9]+(?:[ -][0-9]+)*", text):
        groups = [(g.start(), g.end()) for g in re.finditer(r"[0-9]+", m.group())]
        for i in range(len(groups)):
            for j in range(i, len(groups)):
                digits = "".join(m.group()[a:b] for a, b in groups[i : j + 1])
                if 13 <= len(digits) <= 19 and luhn_ok(digits):
                    out.add((m.start() + groups[i][0], m.start() + groups[j][1]))
    return out


@given(st.text(alphabet="0123456789 -x", max_size=60))
@settings(max_examples=400, deadline=None, database=None)
def test_spans_are_every_luhn_window_of_whole_groups(text: str) -> None:
    assert set(pan_spans(text)) == _brute_spans(text)
    masked = mask_text(text)
    assert len(masked) == len(text)
    assert not contains_pan(masked)
    assert not contains_pan(redact_text(text))


@pytest.mark.parametrize(
    "text",
    [
        "ref 12 4111 1111 1111 1111",  # groups before the number do not hide it
        "1234-4111-1111-1111-1111",
        "4111-1111-1111-1111-1234",  # nor groups after
        "4 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1",
        "8000000000000003",  # any issuer prefix, 0 and 1 too
        "0000000000000000",
        "\uff14" + "\uff11" * 15,  # fullwidth
        "\u0664" + "\u0661" * 15,  # Arabic-Indic
        "4111\uff11111-1111-1111",  # mixed scripts
        "4111111111111111110",  # 19 digits
    ],
)
def test_card_numbers_the_rule_finds(text: str) -> None:
    assert contains_pan(text)
    assert not contains_pan(mask_text(text))
    assert redact_text(text) != text


@pytest.mark.parametrize(
    "text",
    [
        "41111111111111110",  # one 17-digit run failing Luhn: no window inside a run
        "4111 1111  1111 1111",  # two spaces end a run
        "4111.1111.1111.1111",
        "4111/1111/1111/1111",
        "12345678901234567890123",  # more than 19 digits in a row
        "0190f3a4-7b2c-7def-8a01-23456789abcd",
    ],
)
def test_not_card_numbers(text: str) -> None:
    assert not contains_pan(text)
    assert mask_text(text) == text


def test_integers() -> None:
    assert is_pan_int(int(VISA16))
    assert is_pan_int(-int(VISA16))
    assert is_pan_int(int(VISA13))
    assert not is_pan_int(10**12)
    assert not is_pan_int(int(LONG19))
    assert not is_pan_int(10**19 + 3)


def test_mask_bytes_non_ascii_digits_keep_length_and_utf8() -> None:
    raw = msgpack.packb({"a": "\uff14" + "\uff11" * 15, "b": "caf\u00e9"})
    masked = mask_bytes(raw)
    assert len(masked) == len(raw)
    back = msgpack.unpackb(masked)  # still valid UTF-8: each masked digit became 3 stars
    assert back["a"] == "*" * 36 + "\uff11" * 4
    assert back["b"] == "caf\u00e9"


def test_a_long_run_of_short_groups_stays_linear() -> None:
    """A 64 KiB body of '1 2 3 ...' must not cost a Luhn check per window from scratch."""
    text = " ".join("7" for _ in range(32_000))
    started = time.process_time()
    list(pan_spans(text))
    assert time.process_time() - started < 2.0  # about 0.1 s; quadratic would be minutes


_PAN_VALUES = st.sampled_from(
    [VISA16, "4111 1111 1111 1111", f"x{AMEX15}y", "\uff14" + "\uff11" * 15, VISA13]
)
_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(1 << 63), (1 << 64) - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=30)
    | st.binary(max_size=30)
    | _PAN_VALUES
    | _PAN_VALUES.map(lambda p: int("".join(str(int(c)) for c in p if c.isdigit()))),
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4)
    ),
    max_leaves=20,
)


def _shape(value: object) -> object:
    if isinstance(value, dict):
        return {"map": sorted(len(k) for k in value), "of": [_shape(v) for v in value.values()]}
    if isinstance(value, list):
        return [_shape(v) for v in value]
    return type(value).__name__


@given(_values)
@settings(max_examples=300, deadline=None, database=None)
def test_mask_bytes_keeps_any_msgpack_decodable_and_shaped(value: object) -> None:
    raw = msgpack.packb(value, use_bin_type=True)
    masked = mask_bytes(raw)
    assert len(masked) == len(raw)
    back = msgpack.unpackb(masked, raw=False, strict_map_key=False)
    assert _shape(back) == _shape(msgpack.unpackb(raw, raw=False, strict_map_key=False))
    # no card number left in any value (headers are kept as they are, so a length byte that
    # reads as a digit beside a payload is not masked: the structure is what is kept)
    from protocol.screen import find_pan  # noqa: PLC0415

    assert find_pan(back) is None


@pytest.mark.parametrize(
    "raw",
    [
        b"4111111111111111yyyy",  # starts with a digit: a msgpack fixint, then a tail
        b"pay 4111111111111111 pay",  # ASCII text: every byte is a msgpack fixint
        b"\x93\x01\x024111111111111111",  # a complete array, then trailing text
    ],
)
def test_mask_bytes_of_text_that_reads_as_msgpack_fixints(raw: bytes) -> None:
    masked = mask_bytes(raw)
    assert len(masked) == len(raw)
    assert b"4111111111111111" not in masked
    assert b"1111" in masked
