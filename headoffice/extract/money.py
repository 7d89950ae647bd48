"""Integer money and fixed-scale quantity arithmetic for the extract (never floats).

Rounding is half away from zero ("half up" on magnitudes) everywhere: it is the rule the
document schema uses for `qty * unit_price`, and what tax authorities prescribe for per-line tax
(EU VAT, US state sales tax). Half-even would make a line's tax depend on its neighbours' parity
and disagree with the till's receipt.
"""

from __future__ import annotations

from decimal import Decimal

QTY_SCALE = 1000  # quantities are carried as integer thousandths ("1.250" -> 1250)


def div_round(n: int, d: int) -> int:
    """n / d rounded half away from zero, d > 0."""
    q, r = divmod(abs(n), d)
    if 2 * r >= d:
        q += 1
    return q if n >= 0 else -q


def parse_qty(text: object) -> int | None:
    """A 3-place decimal string as integer thousandths, or None if it is not one."""
    if type(text) is not str or len(text) < 5 or text[-4] != ".":
        return None
    digits = text[:-4] + text[-3:]
    body = digits[1:] if digits[0] == "-" else digits
    if not body.isdigit() or not body.isascii():
        return None
    return int(digits)


def _fmt_qty(milli: int) -> str:
    sign = "-" if milli < 0 else ""
    whole, frac = divmod(abs(milli), QTY_SCALE)
    return f"{sign}{whole}.{frac:03d}"


# Whole quantities up to +-1000 as text, looked up instead of formatted (the common case).
_QTY_TEXT = {m: _fmt_qty(m) for m in range(-1_000_000, 1_000_001, QTY_SCALE)}


def fmt_qty(milli: int) -> str:
    text = _QTY_TEXT.get(milli)
    return _fmt_qty(milli) if text is None else text


def pro_rata(amount: int, part_milli: int, whole_milli: int) -> int:
    """The share of `amount` that `part` of `whole` quantity carries, rounded half up."""
    if whole_milli == 0:
        return 0
    if whole_milli < 0:
        part_milli, whole_milli = -part_milli, -whole_milli
    return div_round(amount * part_milli, whole_milli)


def tax_contained(amount: int, rate_percent: Decimal) -> int:
    """Tax contained in a tax-inclusive amount at `rate_percent` (e.g. Decimal("7.25")).

    Exact: the rate is turned into an integer fraction before dividing, then rounded half up.
    """
    num, den = rate_percent.as_integer_ratio()  # rate% = num/den
    # amount * r / (1 + r) with r = num / (100 * den)
    return div_round(amount * num, 100 * den + num)
