"""protocol.money: the one rounding rule, as Decimal (agent) and as integer thousandths (HO)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import money
from protocol.errors import ProtocolError


def test_rounding_is_half_away_from_zero_both_ways() -> None:
    assert money.round_money(Decimal("2.5")) == 3
    assert money.round_money(Decimal("-2.5")) == -3
    assert money.div_round(5, 2) == 3
    assert money.div_round(-5, 2) == -3
    assert money.div_round(4, 3) == 1


@given(st.integers(-(10**9), 10**9), st.integers(1, 10**6))
def test_integer_and_decimal_rounding_agree(n: int, d: int) -> None:
    assert money.div_round(n, d) == money.round_money(Decimal(n) / Decimal(d))


def test_qty_is_a_three_place_string() -> None:
    assert money.qty("1.250", "q") == Decimal("1.250")
    with pytest.raises(ProtocolError, match="exactly three places"):
        money.qty(1.25, "q")
    assert money.fmt_decimal_qty(Decimal("2")) == "2.000"


def test_money_is_an_int_in_range() -> None:
    assert money.money(5, "m") == 5
    with pytest.raises(ProtocolError, match="integer amount"):
        money.money(True, "m")
    with pytest.raises(ProtocolError, match="outside"):
        money.money(money.MAX_MONEY + 1, "m")


def test_line_and_tax() -> None:
    assert money.line_amount(Decimal("1.500"), 199) == 299  # 298.5 -> 299
    assert money.tax_included(1200, 2000) == 200
    assert money.tax_on(1000, 2000) == 200
    assert money.tax_contained(1200, Decimal("20")) == 200


@given(st.integers(-(10**7), 10**7))
def test_milli_quantities_round_trip(milli: int) -> None:
    text = money.fmt_qty(milli)
    assert money.parse_qty(text) == milli
    assert Decimal(text) == Decimal(milli) / money.QTY_SCALE


def test_parse_qty_refuses_what_is_not_a_quantity() -> None:
    for bad in ("1.25", "1,250", "x.000", 1.25, "\u0661.000"):
        assert money.parse_qty(bad) is None


def test_pro_rata() -> None:
    assert money.pro_rata(1000, 1000, 3000) == 333
    assert money.pro_rata(1000, -1000, -2000) == 500
    assert money.pro_rata(1000, 1, 0) == 0
