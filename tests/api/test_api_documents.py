"""Document schemas and rules per kind, with the roll-up seed's transaction types."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from agent.documents.envelope import validate
from protocol.errors import ProtocolError
from tests.api.api_helpers import context, sale

CARD = {
    "tender": "card",
    "amount": 3977,
    "token": "tok_AbCdEfGhIj",
    "scheme": "visa",
    "last4": "4242",
}


def refused(doc: dict[str, Any], field: str, **ctx: Any) -> str:
    with pytest.raises(ProtocolError) as exc:
        validate(doc, context(**ctx))
    assert exc.value.field == field, exc.value
    return exc.value.reason


def test_a_cash_sale_is_completed_by_the_agent() -> None:
    doc = validate(sale(), context())
    assert (doc["store"], doc["lane"]) == ("S1", "L1")
    assert [line["line_no"] for line in doc["lines"]] == [1, 2]


def test_rollup_seed_sale_t10001_for_c1000() -> None:
    doc = sale(register_no="T10001", customer="C1000", payments=[CARD], change=0)
    validate(doc, context())


def test_totals_must_reconcile() -> None:
    assert "sum of the line amounts" in refused(sale(total=3978), "$.total")
    bad = sale()
    bad["lines"][1]["amount"] = 180
    assert "179" in refused(bad, "$.lines[1].amount")
    short = sale(payments=[{"tender": "cash", "amount": 3000}], change=0)
    refused(short, "$.payments")
    refused(sale(change=24), "$.payments")
    card = {**CARD, "amount": 4000}
    assert "only cash gives change" in refused(sale(payments=[card], change=23), "$.change")


def test_tax_from_the_rate_valid_on_the_business_day() -> None:
    before = sale(business_day="2024-06-30")
    before["lines"][0]["tax"] = 606  # 3798 at 19 % inclusive
    validate(before, context())
    assert "expected 606" in refused(sale(business_day="2024-06-30"), "$.lines[0].tax")
    unknown = sale()
    unknown["lines"][0]["tax_code"] = "VAT_LUX"
    refused(unknown, "$.lines[0].tax_code")


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("ext", {"note": "4111 1111 1111 1111"}),
        ("customer", "4111111111111111"),
    ],
)
def test_a_full_card_number_anywhere_is_refused(path: str, value: Any) -> None:
    doc = sale(**{path: value})
    assert "card number" in refused(doc, f"$.{path}" + (".note" if path == "ext" else ""))


def test_card_tenders_carry_token_scheme_last4_only() -> None:
    no_token = dict(CARD)
    del no_token["token"]
    refused(sale(payments=[no_token], change=0), "$.payments[0].token")
    refused(sale(payments=[{**CARD, "last4": "42"}], change=0), "$.payments[0].last4")
    cash = {"tender": "cash", "amount": 4000, "last4": "1234"}
    refused(sale(payments=[cash]), "$.payments[0].last4")
    refused(sale(payments=[{"tender": "bitcoin", "amount": 4000}]), "$.payments[0].tender")


def test_money_is_integer_minor_units_and_qty_three_places() -> None:
    doc = sale(total=Decimal("39.77"))
    assert "fractional" in refused(doc, "$.total")
    bad = sale()
    bad["lines"][0]["qty"] = "2"
    refused(bad, "$.lines[0].qty")
    refused(sale(currency="euro"), "$.currency")
    refused(sale(colour="red"), "$.colour")


def test_every_sale_family_kind_has_a_valid_example() -> None:
    ctx = context()
    lines = sale()["lines"]
    docs: list[dict[str, Any]] = [
        sale(
            kind="sale_refund",
            payments=[{"tender": "cash", "amount": 3977}],
            change=0,
            return_type="DAMAGED",
        ),
        sale(
            kind="special_order",
            customer="C2000",
            payments=[{"tender": "cash", "amount": 1000}],
            change=0,
        ),
        sale(
            kind="layaway",
            customer="C2000",
            payments=[
                {
                    "tender": "card",
                    "amount": 500,
                    "token": "tok_AbCdEfGhIj",
                    "scheme": "visa",
                    "last4": "0005",
                }
            ],
            change=0,
        ),
        sale(
            kind="layaway_cancellation",
            customer="C2000",
            payments=[{"tender": "cash", "amount": 500}],
            change=0,
        ),
        sale(kind="delivery", customer="C2000"),
        sale(kind="sale_with_fulfilment", customer=None),
        sale(
            kind="on_account_payment",
            customer="C3000",
            lines=[],
            total=2500,
            payments=[{"tender": "cheque", "amount": 2500, "reference": "CHQ100"}],
            change=0,
        ),
        sale(
            kind="layaway_payment",
            customer="C2000",
            lines=[],
            total=700,
            payments=[{"tender": "cash", "amount": 700}],
            change=0,
        ),
    ]
    ret = dict(lines[1], qty="-1.000", amount=-179, tax=-12, return_type="FAULTY")
    docs.append(
        sale(
            kind="sale_exchange",
            lines=[lines[0], ret],
            total=3619,
            payments=[{"tender": "cash", "amount": 3619}],
            change=0,
        )
    )
    for doc in docs:
        validate(doc, ctx)
    layaway = sale(kind="layaway", customer="C2000")
    layaway["lines"][0]["open_qty"] = "2.000"
    validate(layaway, ctx)


def test_kind_rules_name_the_field() -> None:
    refused(sale(kind="layaway", customer=None), "$.customer")
    refused(sale(kind="layaway_payment", customer="C1"), "$.lines")
    refund = sale(kind="sale_refund", payments=[{"tender": "cash", "amount": 3000}], change=0)
    refused(refund, "$.payments")
    neg = sale()
    neg["lines"][0]["qty"] = "-2.000"
    refused(neg, "$.lines[0].qty")
    acct = sale(payments=[{"tender": "account", "amount": 3977}], change=0)
    refused(acct, "$.payments[0].tender")
    on_account = sale(customer="C1000", payments=[{"tender": "account", "amount": 3977}], change=0)
    validate(on_account, context())
    refused(sale(store="S9"), "$.store")
    refused(sale(register_no="X"), "$.register_no")
    refused(sale(time="2024-08-01T10:00:00"), "$.time")


TRANSIT = {
    "kind": "transit_inventory",
    "currency": "EUR",
    "dest_store": "S2",
    "by": {"type": "staff", "id": "E042"},
    "lines": [{"item": "P1000", "qty": "5.000"}],
}


def test_stock_movements_validate() -> None:
    validate(dict(TRANSIT), context())
    refused({**TRANSIT, "dest_store": "S1"}, "$.dest_store")
    no_staff = {"PurchTransitAllowStaff": "0"}
    assert "PurchTransitAllowStaff" in refused(dict(TRANSIT), "$.by.type", settings=no_staff)
    accept = {
        "kind": "transit_inventory_accept",
        "currency": "EUR",
        "sscc": "157035381410375177",
        "source_store": "S2",
    }
    assert validate(accept, context())["dest_store"] == "S1"
    refused({**accept, "sscc": "157035381410375178"}, "$.sscc")
    ret: dict[str, Any] = {
        "kind": "supplier_return",
        "currency": "EUR",
        "supplier": "SUP1",
        "lines": [{"item": "P4000", "qty": "2.000", "unit_cost": 600}],
    }
    assert validate(dict(ret), context())["status"] == "pending"
    auto = {"PurchAutoCompleteReturn": "1"}
    assert validate(dict(ret), context(settings=auto))["status"] == "completed"
    refused({**ret, "status": "completed"}, "$.status")
    adj = {
        "kind": "stock_adjustment",
        "currency": "EUR",
        "reason": "SHRINK",
        "lines": [{"item": "P3000", "qty": "-3.000"}],
    }
    validate(adj, context())
    refused({**adj, "lines": [{"item": "P3000", "qty": "0.000"}]}, "$.lines[0].qty")
