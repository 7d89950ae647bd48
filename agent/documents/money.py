"""Money and quantity arithmetic: integer minor units, three-place decimal quantities.

Rounding is ROUND_HALF_UP in Decimal's sense, i.e. half away from zero: 2.5 -> 3 and
-2.5 -> -3. A returned line therefore rounds to exactly the negative of the sold line, so a
refund or exchange reverses a sale to the minor unit. Floats never appear.
"""

from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from protocol.errors import ProtocolError
from protocol.pan import mask_text

QTY_RE = re.compile(r"-?[0-9]{1,9}\.[0-9]{3}")
MAX_MONEY = 10**13  # 100 billion in a 2-decimal currency: far beyond any till, far below 2**63
ONE = Decimal(1)
BP = Decimal(10_000)  # tax rates are integer basis points (2000 = 20 %)


def qty(value: Any, field: str) -> Decimal:
    """A quantity from its three-place decimal string, never from a number."""
    if type(value) is not str or not QTY_RE.fullmatch(value):
        raise ProtocolError(
            "must be a decimal string with exactly three places like '1.000', got "
            + mask_text(repr(value)[:64]),
            field,
        )
    return Decimal(value)


def fmt_qty(value: Decimal) -> str:
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
    return round_money(q * unit_price)


def tax_included(amount: int, rate_bp: int) -> int:
    """Tax contained in a tax-inclusive amount (sales: shelf prices include tax)."""
    return round_money(Decimal(amount) * rate_bp / (BP + rate_bp))


def tax_on(amount: int, rate_bp: int) -> int:
    """Tax added on top of a tax-exclusive amount (purchases: supplier costs exclude tax)."""
    return round_money(Decimal(amount) * rate_bp / BP)
