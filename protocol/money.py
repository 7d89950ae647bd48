"""Money and quantity arithmetic both sides use: integer minor units, never floats.

Amounts are integers in the currency's minor unit. Quantities are three-place decimal strings
on the wire ("1.250"); the agent validates and computes them as `Decimal` (`qty`, `line_amount`,
`tax_included`, `tax_on`), head office's extract carries them as integer thousandths
(`parse_qty`, `fmt_qty`, `pro_rata`, `tax_contained`) because it sums millions of them.

Rounding is half away from zero everywhere (Decimal's ROUND_HALF_UP, `div_round` on integers):
2.5 -> 3 and -2.5 -> -3. It is what tax authorities prescribe for per-line tax (EU VAT, US state
sales tax), a returned line rounds to exactly the negative of the sold line (a refund reverses
a sale to the minor unit), and head office's figures agree with the till's receipt. Half-even
would make a line's tax depend on its neighbours' parity.
"""

from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from protocol.errors import ProtocolError
from protocol.pan import mask_text

QTY_RE = re.compile(r"-?[0-9]{1,9}\.[0-9]{3}")
QTY_SCALE = 1000  # integer thousandths: "1.250" -> 1250
MAX_MONEY = 10**13  # 100 billion in a 2-decimal currency: far beyond any till, far below 2**63
ONE = Decimal(1)
BP = Decimal(10_000)  # tax rates in documents are integer basis points (2000 = 20 %)


# --- validating and computing as Decimal (the agent's document schema) ---------------------


def qty(value: Any, field: str) -> Decimal:
    """A quantity from its three-place decimal string, never from a number."""
    if type(value) is not str or not QTY_RE.fullmatch(value):
        raise ProtocolError(
            "must be a decimal string with exactly three places like '1.000', got "
            + mask_text(repr(value)[:64]),
            field,
        )
    return Decimal(value)


def fmt_decimal_qty(value: Decimal) -> str:
    """A Decimal quantity as its three-place wire string."""
    return f"{value.quantize(Decimal('0.001')):f}"


def money(value: Any, field: str, *, lo: int = -MAX_MONEY, hi: int = MAX_MONEY) -> int:
    """An amount in integer minor units (bool is not an int here)."""
    if type(value) is not int:
        raise ProtocolError(
            f"must be an integer amount in minor units, got {type(value).__name__}", field
        )
    if not lo <= value <= hi:
        raise ProtocolError(f"{value} is outside {lo}..{hi}", field)
    return value


def round_money(value: Decimal) -> int:
    """Minor units, half away from zero (see the module docstring)."""
    return int(value.quantize(ONE, rounding=ROUND_HALF_UP))


def line_amount(q: Decimal, unit_price: int) -> int:
    """`qty * unit_price`, rounded to minor units."""
    return round_money(q * unit_price)


def tax_included(amount: int, rate_bp: int) -> int:
    """Tax contained in a tax-inclusive amount (sales: shelf prices include tax)."""
    return round_money(Decimal(amount) * rate_bp / (BP + rate_bp))


def tax_on(amount: int, rate_bp: int) -> int:
    """Tax added on top of a tax-exclusive amount (purchases: supplier costs exclude tax)."""
    return round_money(Decimal(amount) * rate_bp / BP)


# --- integer thousandths (head office's extract: exact and fast) ----------------------------


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


def _fmt_milli(milli: int) -> str:
    sign = "-" if milli < 0 else ""
    whole, frac = divmod(abs(milli), QTY_SCALE)
    return f"{sign}{whole}.{frac:03d}"


# Whole quantities up to +-1000 as text, looked up instead of formatted (the common case).
_QTY_TEXT = {m: _fmt_milli(m) for m in range(-1_000_000, 1_000_001, QTY_SCALE)}


def fmt_qty(milli: int) -> str:
    """Integer thousandths as the three-place wire string (1250 -> "1.250")."""
    text = _QTY_TEXT.get(milli)
    return _fmt_milli(milli) if text is None else text


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


# --- showing amounts to people --------------------------------------------------------------

# ISO 4217 currencies whose minor unit is not the hundredth (every other code has 2 places):
# what a person reads as "9.98 EUR" is 998 on the wire, "998 JPY" is 998, "9.980 KWD" is 9980.
MINOR_DIGITS: dict[str, int] = {
    **dict.fromkeys(
        (
            "BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI",
            "VND", "VUV", "XAF", "XOF", "XPF",
        ),
        0,
    ),
    **dict.fromkeys(("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"), 3),
    **dict.fromkeys(("CLF", "UYW"), 4),
}  # fmt: skip
CURRENCY_RE = re.compile(r"[A-Z]{3}")


def minor_digits(currency: str) -> int:
    """Decimal places of `currency`'s minor unit (ISO 4217; 2 unless listed otherwise)."""
    return MINOR_DIGITS.get(currency, 2)


def fmt_money(amount: int | None, currency: str | None) -> str:
    """Integer minor units as money for people: 998, "EUR" -> "9.98 EUR", -5, "EUR" ->
    "-0.05 EUR", 998, "JPY" -> "998 JPY". Without a currency code the places are unknown, so the
    minor units are shown as such ("998 minor units"), never guessed. JSON output keeps the
    integer and the currency: this is only for tables and status lines."""
    if amount is None:
        return ""
    if type(currency) is not str or not CURRENCY_RE.fullmatch(currency):
        return f"{amount} minor units"
    places = minor_digits(currency)
    if places == 0:
        return f"{amount} {currency}"
    whole, frac = divmod(abs(amount), 10**places)
    sign = "-" if amount < 0 else ""
    return f"{sign}{whole}.{frac:0{places}d} {currency}"
