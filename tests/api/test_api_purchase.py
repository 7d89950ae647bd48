"""Purchase receive rules of the purchasing seed, with its own examples where it gives them."""

from __future__ import annotations

from typing import Any

import pytest

from agent.documents.envelope import validate
from protocol.errors import ProtocolError
from tests.api.api_helpers import context


def receive(**kw: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "kind": "receive_purchase_order",
        "currency": "EUR",
        "business_day": "2024-08-01",
        "po_id": "PO1001",
        "supplier": "SUP1",
        "document": "INV-77",
        "freight": 1000,
        "packaging": 0,
        "lines": [
            {"item": "P1000", "qty": "10.000", "unit_cost": 1000, "tax_code": "VAT_STD"},
            {"item": "P5000", "qty": "20.000", "unit_cost": 150, "tax_code": "VAT_STD"},
            {"item": "P4000", "qty": "1.000", "unit_cost": 1000, "tax_code": "VAT_STD"},
        ],
    }
    doc.update(kw)
    return doc


def refused(doc: dict[str, Any], field: str, **ctx: Any) -> str:
    with pytest.raises(ProtocolError) as exc:
        validate(doc, context(**ctx))
    assert exc.value.field == field, exc.value
    return exc.value.reason


def test_freight_is_spread_by_value_and_adds_up() -> None:
    doc = validate(receive(), context())
    # line costs 10000, 3000, 1000 of 14000: 1000 freight -> 714.29, 214.29, 71.43; the
    # leftover unit goes to the largest remainder (.43)
    assert [line["freight"] for line in doc["lines"]] == [714, 214, 72]
    assert sum(line["freight"] for line in doc["lines"]) == 1000
    assert doc["line_total"] == 14000


def test_a_line_override_leaves_the_pool() -> None:
    doc = receive()
    doc["lines"][0]["freight_override"] = 100
    out = validate(doc, context())
    assert [line["freight"] for line in out["lines"]] == [100, 675, 225]
    too_much = receive()
    too_much["lines"][0]["freight_override"] = 2000
    refused(too_much, "$.freight")


def test_explicit_zero_is_not_the_same_as_not_counted() -> None:
    doc = receive()
    doc["lines"][1] = {
        "item": "P5000",
        "counted_zero": True,
        "unit_cost": 150,
        "tax_code": "VAT_STD",
    }
    doc["lines"][2] = {"item": "P4000", "unit_cost": 1000, "tax_code": "VAT_STD"}
    out = validate(doc, context())
    assert [line["count_state"] for line in out["lines"]] == [
        "counted",
        "counted_zero",
        "not_counted",
    ]
    assert [line["freight"] for line in out["lines"]] == [1000, 0, 0]
    zero_qty = receive()
    zero_qty["lines"][0]["qty"] = "0.000"
    assert "counted_zero" in refused(zero_qty, "$.lines[0].qty")


def test_keyed_total_within_variation_default_11() -> None:
    # lines 14000 + freight 1000 = 15000, tax 20 % = 3000 -> 18000
    assert validate(receive(expected_total=18011), context())["total"] == 18000
    validate(receive(expected_total=17989), context())
    assert "PurchRecvAmountVariation" in refused(receive(expected_total=18012), "$.expected_total")
    refused(receive(expected_total=17988), "$.expected_total")
    loose = {"PurchRecvAmountVariation": "50"}
    validate(receive(expected_total=18050), context(settings=loose))


def test_tax_at_the_document_date_not_today() -> None:
    old = validate(receive(document_date="2024-06-30"), context())
    new = validate(receive(document_date="2024-07-01"), context())
    # 19 % then 20 %, per line on its landed cost, each rounded half up: 2036 + 611 + 204
    assert (old["tax_total"], new["tax_total"]) == (2851, 3000)
    refused(receive(document_date="1999-01-01"), "$.lines[0].tax_code")


def test_unexpected_delivery_refused_by_setting() -> None:
    validate(receive(po_id=None), context())
    strict = {"PurchReceiveNoUnexp": "1"}
    assert "PurchReceiveNoUnexp" in refused(receive(po_id=None), "$.po_id", settings=strict)
    doc = receive()
    del doc["po_id"]
    refused(doc, "$.po_id", settings=strict)
