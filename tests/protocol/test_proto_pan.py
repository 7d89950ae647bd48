"""protocol.pan: card numbers found and masked in text and msgpack bytes, lengths kept."""

from __future__ import annotations

import msgpack
import pytest

from protocol.pan import contains_pan, is_pan_digits, luhn_ok, mask_bytes, mask_text

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
