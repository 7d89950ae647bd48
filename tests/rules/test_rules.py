"""Documents against the lane's catalog (agent.documents.rules): every refusal names the field
and the rule, every journaled document records the version it was checked against, and a new
version (a setting, a price) counts from the next document, with no restart."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from agent.documents.envelope import DocContext, validate
from agent.documents.rules import NoCatalog
from agent.numbering import TransitConfig
from protocol.documents import check_document
from protocol.errors import ProtocolError
from protocol.identity import LaneId
from tests.rules.lane_catalog import LaneCatalog, standard, store_row

LANE = LaneId("S1", "L1")
TRANSIT = TransitConfig(gs1_company_prefix="5703538", sscc_lane_prefix="01")


@pytest.fixture
def cat(tmp_path: Path) -> Iterator[LaneCatalog]:
    c = standard(tmp_path / "catalog.db", LANE, publish=False)
    c.setting("PriceOverride", "refused")  # the suites' default is 'allowed'; here: the rules
    c.publish()
    return c


@pytest.fixture
def ctx(cat: LaneCatalog) -> Iterator[DocContext]:
    with cat.view() as view:
        yield DocContext(LANE, transit=TRANSIT, catalog=view)


def sale(**kw: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "kind": "sale",
        "business_day": "2024-08-01",
        "time": "2024-08-01T10:00:00+00:00",
        "customer": None,
        "staff": "E1",
        "lines": [
            {
                "item": "P1000",
                "qty": "2.000",
                "unit_price": 1899,
                "tax_code": "VAT_STD",
                "amount": 3798,
                "tax": 633,
            },
            {
                "item": "P3000",
                "qty": "1.000",
                "unit_price": 179,
                "tax_code": "VAT_RED",
                "amount": 179,
                "tax": 12,
            },
        ],
        "payments": [{"tender": "cash", "amount": 3977}],
        "total": 3977,
    }
    doc.update(kw)
    return doc


def refused(doc: dict[str, Any], ctx: DocContext, field: str) -> str:
    with pytest.raises(ProtocolError) as exc:
        validate(copy.deepcopy(doc), ctx)
    assert exc.value.field == field, exc.value
    return exc.value.reason


def test_a_valid_sale_records_its_catalog_version_and_the_stores_currency(
    ctx: DocContext, cat: LaneCatalog
) -> None:
    out = validate(sale(), ctx)
    assert out["catalog_version"] == cat.version == 1
    assert out["currency"] == "EUR"  # the store's, from its stores row
    check_document(out)  # head office's check accepts what the lane journals


def test_items_by_code_or_gtin_and_the_refusal_names_line_and_version(ctx: DocContext) -> None:
    doc = sale()
    doc["lines"][1]["item"] = "P9999"
    reason = refused(doc, ctx, "$.lines[1].item")
    assert reason == "no item 'P9999' in catalog version 1"
    by_gtin = sale()
    by_gtin["lines"][0]["item"] = "5901234123457"  # P1000's GTIN
    assert validate(by_gtin, ctx)["lines"][0]["item"] == "5901234123457"


def test_an_inactive_item_is_not_sold_but_may_be_refunded(
    ctx: DocContext, cat: LaneCatalog
) -> None:
    cat.put("items", code="P3000", description="Croissant", tax_code="VAT_RED", variant=False,
            active=False)  # fmt: skip
    cat.publish()
    assert "inactive in catalog version 2" in refused(sale(), ctx, "$.lines[1].item")
    refund = sale(kind="sale_refund", lines=[sale()["lines"][1]], total=179,
                  payments=[{"tender": "cash", "amount": 179}])  # fmt: skip
    assert validate(refund, ctx)["catalog_version"] == 2


def test_price_override_refused_reason_allowed(ctx: DocContext, cat: LaneCatalog) -> None:
    cheap = sale()
    cheap["lines"][0].update(unit_price=1500, amount=3000, tax=500)
    cheap.update(total=3179, payments=[{"tender": "cash", "amount": 3179}])
    reason = refused(cheap, ctx, "$.lines[0].unit_price")
    assert "the catalog's price is 1899" in reason
    assert "PriceOverride=refused" in reason
    cat.setting("PriceOverride", "reason").publish()
    assert "price_reason" in refused(cheap, ctx, "$.lines[0].price_reason")
    with_reason = copy.deepcopy(cheap)
    with_reason["lines"][0]["price_reason"] = "damaged packaging"
    assert validate(with_reason, ctx)["catalog_version"] == 2
    cat.setting("PriceOverride", "allowed").publish()
    assert validate(copy.deepcopy(cheap), ctx)["catalog_version"] == 3


def test_tax_code_must_be_the_items_and_the_rate_the_one_valid_on_the_documents_date(
    ctx: DocContext, cat: LaneCatalog
) -> None:
    wrong = sale()
    wrong["lines"][1]["tax_code"] = "VAT_STD"
    assert "taxed VAT_RED" in refused(wrong, ctx, "$.lines[1].tax_code")
    # VAT_STD is 19 % until 2024-06-30 and 20 % from 2024-07-01 (the catalog's two rows): a
    # document of June keeps June's rate, whatever today's is.
    june = sale(business_day="2024-06-30", time="2024-06-30T10:00:00+00:00")
    assert "expected 606" in refused(june, ctx, "$.lines[0].tax")
    june["lines"][0]["tax"] = 606
    june.update(total=3977)
    assert validate(june, ctx)["lines"][0]["tax"] == 606
    cat.setting("PriceOverride", "allowed").publish()  # no price in 1999 either
    ancient = sale(business_day="1999-01-01", time="1999-01-01T10:00:00+00:00")
    assert "no 'VAT_STD' tax rate valid on 1999-01-01" in refused(
        ancient, ctx, "$.lines[0].tax_code"
    )


def test_staff_and_customers_exist_and_are_active(ctx: DocContext, cat: LaneCatalog) -> None:
    assert refused(sale(staff="E404"), ctx, "$.staff") == "no staff 'E404' in catalog version 1"
    assert "no customer" in refused(sale(customer="C404"), ctx, "$.customer")
    cat.put("staff", id="E1", name="Left", active=False).publish()
    assert "inactive" in refused(sale(), ctx, "$.staff")
    cat.put("customers", code="C9", name="Cash only", account_allowed=False, active=True)
    cat.publish()
    on_account = sale(customer="C9", payments=[{"tender": "account", "amount": 3977}],
                      staff=None)  # fmt: skip
    assert "account_allowed 0" in refused(on_account, ctx, "$.payments[0].tender")


TRANSIT_DOC: dict[str, Any] = {
    "kind": "transit_inventory",
    "dest_store": "S2",
    "by": {"type": "courier", "id": "DHL"},
    "lines": [{"item": "P1000", "qty": "5.000"}],
}


def test_transit_destination_and_by_tabs(ctx: DocContext, cat: LaneCatalog) -> None:
    assert validate(copy.deepcopy(TRANSIT_DOC), ctx)["catalog_version"] == 1
    assert "no store 'S9'" in refused({**TRANSIT_DOC, "dest_store": "S9"}, ctx, "$.dest_store")
    cat.put("stores", **store_row("S2", can_receive_stock=False))
    cat.put("stores", **store_row("S3", active=False)).publish()
    assert "cannot receive stock" in refused(TRANSIT_DOC, ctx, "$.dest_store")
    assert "inactive" in refused({**TRANSIT_DOC, "dest_store": "S3"}, ctx, "$.dest_store")
    to_b = {**TRANSIT_DOC, "dest_store": "B"}
    unknown = {**to_b, "by": {"type": "courier", "id": "UPS"}}
    assert "no courier 'UPS'" in refused(unknown, ctx, "$.by.id")
    cat.setting("PurchTransitAllowCourier", "0").publish()
    reason = refused(to_b, ctx, "$.by.type")
    assert "PurchTransitAllowCourier=0 in catalog version 3" in reason
    by_staff = {**to_b, "by": {"type": "staff", "id": "E7"}}
    assert validate(copy.deepcopy(by_staff), ctx)["catalog_version"] == 3


def receive(**kw: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "kind": "receive_purchase_order",
        "business_day": "2024-08-01",
        "po_id": "PO1",
        "supplier": "SUP1",
        "document": "INV-1",
        "lines": [{"item": "P4000", "qty": "10.000", "unit_cost": 1000, "tax_code": "VAT_STD"}],
    }
    doc.update(kw)
    return doc


def test_purchase_settings_from_the_catalog(ctx: DocContext, cat: LaneCatalog) -> None:
    # 10 x 1000 = 10000 + 20 % = 12000; PurchRecvAmountVariation defaults to 11
    assert validate(receive(expected_total=12011), ctx)["total"] == 12000
    assert "PurchRecvAmountVariation" in refused(
        receive(expected_total=12012), ctx, "$.expected_total"
    )
    cat.setting("PurchRecvAmountVariation", "50").publish()
    validate(receive(expected_total=12050), ctx)
    validate(receive(po_id=None), ctx)
    cat.setting("PurchReceiveNoUnexp", "1").publish()
    assert "PurchReceiveNoUnexp=1 in catalog version 3" in refused(
        receive(po_id=None), ctx, "$.po_id"
    )
    assert "no supplier 'SUP9'" in refused(receive(supplier="SUP9"), ctx, "$.supplier")
    ret = {"kind": "supplier_return", "supplier": "SUP1",
           "lines": [{"item": "P4000", "qty": "1.000", "unit_cost": 600}]}  # fmt: skip
    assert validate(copy.deepcopy(ret), ctx)["status"] == "pending"
    cat.setting("PurchAutoCompleteReturn", "1").publish()
    assert validate(copy.deepcopy(ret), ctx)["status"] == "completed"


def test_a_scheduled_price_applies_at_its_time_with_no_new_version(
    ctx: DocContext, cat: LaneCatalog
) -> None:
    """The lane holds a price valid from 2024-09-01 (loaded before it went offline): a sale
    on 31 August pays the old price, on 1 September the new one, both on version 2."""
    cat.put("prices", item="P3000", valid_from="2024-09-01", price=199).publish()

    def on(day: str, price: int) -> dict[str, Any]:
        line = {"item": "P3000", "qty": "1.000", "unit_price": price, "tax_code": "VAT_RED",
                "amount": price, "tax": (price * 700 + 5350) // 10700}  # fmt: skip
        return sale(business_day=day, time=f"{day}T12:00:00+00:00", lines=[line], total=price,
                    payments=[{"tender": "cash", "amount": price}])  # fmt: skip

    assert validate(on("2024-08-31", 179), ctx)["catalog_version"] == 2
    assert "the catalog's price is 199" in refused(
        on("2024-09-01", 179), ctx, "$.lines[0].unit_price"
    )
    assert validate(on("2024-09-01", 199), ctx)["catalog_version"] == 2


def test_a_lane_with_no_catalog_yet_refuses_every_document(tmp_path: Path) -> None:
    empty = LaneCatalog(tmp_path / "empty.db", LANE)
    empty.create_empty()
    with empty.view() as view:
        ctx = DocContext(LANE, transit=TRANSIT, catalog=view)
        with pytest.raises(NoCatalog, match="no catalog yet"):
            validate(sale(), ctx)
        # A lab's lane may trade without one: its own figures, catalog_version 0.
        lab = DocContext(LANE, transit=TRANSIT, catalog=view, trade_without=True)
        out = validate(sale(currency="EUR"), lab)
        assert out["catalog_version"] == 0


def test_head_office_refuses_a_catalog_version_that_is_not_one() -> None:
    doc = {"kind": "sale", "catalog_version": "41"}
    with pytest.raises(ProtocolError) as exc:
        check_document(doc)
    assert exc.value.field == "catalog_version"
    with pytest.raises(ProtocolError):
        check_document({"kind": "sale", "catalog_version": -1})
    check_document({"kind": "sale", "catalog_version": 41})


def test_a_sent_catalog_version_is_replaced_by_the_lanes(ctx: DocContext) -> None:
    assert validate(sale(catalog_version=40), ctx)["catalog_version"] == 1
    refused(sale(catalog_version="x"), ctx, "catalog_version")  # protocol.documents' check


def test_the_moment_decides_the_price_in_the_stores_time_zone(
    tmp_path: Path,
) -> None:
    """A store in Auckland: 2024-08-31T13:00Z is already 1 September there."""
    c = standard(tmp_path / "nz.db", LANE, publish=False)
    c.put("stores", **store_row("S1", timezone="Pacific/Auckland"))
    c.put("prices", item="P3000", valid_from="2024-09-01", price=199)
    c.setting("PriceOverride", "refused").publish()
    with c.view() as view:
        ctx = DocContext(LANE, transit=TRANSIT, catalog=view)
        line = {"item": "P3000", "qty": "1.000", "unit_price": 199, "tax_code": "VAT_RED",
                "amount": 199, "tax": 13}  # fmt: skip
        doc = sale(business_day="2024-09-01", time="2024-08-31T13:00:00+00:00", lines=[line],
                   total=199, payments=[{"tender": "cash", "amount": 199}])  # fmt: skip
        assert validate(doc, ctx)["catalog_version"] == 1
    assert datetime(2024, 8, 31, 13, tzinfo=UTC).date().isoformat() == "2024-08-31"
