"""Postings (seed 001) and POS batches (seed 002), computed from stored documents."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from headoffice.extract import batches, job
from headoffice.extract.config import ExtractConfig, PosBatch, TaxDefinition
from headoffice.extract.documents import Line
from protocol.money import div_round, tax_contained
from tests.extract.extract_helpers import LATER, HeadOffice, card, config, line, sale


def postings(cfg: ExtractConfig) -> list[dict[str, Any]]:
    report = job.run(cfg, now_ms=LATER)
    assert report.dir is not None, report
    return [json.loads(x) for x in (Path(report.dir) / "postings.jsonl").read_text().splitlines()]


def of(rows: list[dict[str, Any]], *types: str) -> list[dict[str, Any]]:
    return [r for r in rows if r["type"] in types]


def test_account_sale_without_receipt(ho: HeadOffice, tmp_path: Path) -> None:
    ho.add(
        sale("T10001", "C1000", [line("P1", "2.000", 500)], [{"tender": "account", "amount": 1000}])
    )
    rows = postings(config(ho))
    (inv,) = of(rows, "invoice")
    assert (inv["reference"], inv["customer"], inv["amount"], inv["outstanding"]) == (
        "T10001",
        "C1000",
        1000,
        1000,
    )
    assert of(rows, "receipt") == []
    assert [r["stock_qty"] for r in of(rows, "line")] == ["-2.000"]


def test_receipts_take_suffix_2_then_3(ho: HeadOffice, tmp_path: Path) -> None:
    ho.add(
        sale(
            "T10001",
            None,
            [line("P1", "1.000", 1000)],
            [card(600), {"tender": "cash", "amount": 500}],
            change=100,
        )
    )
    rows = postings(config(ho))
    (inv,) = of(rows, "invoice")
    assert inv["customer"] == "CASH"
    assert inv["outstanding"] == 0
    got = [(r["reference"], r["account"], r["amount"]) for r in of(rows, "receipt")]
    assert got == [("T10001-2", "bank", 600), ("T10001-3", "bank", 400)]
    assert [r["posting_id"] for r in rows] == [f"{rows[0]['txn_id']}/{i}" for i in range(1, 5)]


def test_partial_receipt_leaves_the_rest_outstanding(ho: HeadOffice, tmp_path: Path) -> None:
    ho.add(
        sale(
            "T10001",
            "C1000",
            [line("P1", "1.000", 1000)],
            [{"tender": "cash", "amount": 300}, {"tender": "account", "amount": 700}],
        )
    )
    rows = postings(config(ho))
    (inv,) = of(rows, "invoice")
    (rc,) = of(rows, "receipt")
    assert (rc["reference"], rc["account"], rc["amount"]) == ("T10001-2", "bank", 300)
    assert inv["amount"] == 1000
    assert inv["outstanding"] == 700


def test_non_banked_card_goes_to_card_clearing(ho: HeadOffice, tmp_path: Path) -> None:
    ho.add(sale("T10001", "C1", [line("P1", "1.000", 1000)], [card(1000, banked=False)]))
    (rc,) = of(postings(config(ho)), "receipt")
    assert rc["account"] == "card_clearing"


def test_return_with_refund_and_inventory_effect(ho: HeadOffice, tmp_path: Path) -> None:
    ho.add(
        sale(
            "T10001",
            "C1000",
            [line("P1", "2.000", 500)],
            [{"tender": "cash", "amount": 600}, card(400)],
            kind="sale_refund",
            return_type="RETURN",
        )
    )
    rows = postings(config(ho))
    (cr,) = of(rows, "credit")
    assert (cr["reference"], cr["amount"], cr["outstanding"]) == ("T10001", 1000, 0)
    assert [(r["reference"], r["amount"]) for r in of(rows, "reverse_receipt")] == [
        ("T10001-2", 600),
        ("T10001-3", 400),
    ]
    assert [r["stock_qty"] for r in of(rows, "line")] == ["2.000"]


def test_return_type_without_inventory_effect_moves_no_stock(
    ho: HeadOffice, tmp_path: Path
) -> None:
    ho.add(
        sale(
            "T10001",
            "C1000",
            [line("P1", "2.000", 500)],
            [{"tender": "account", "amount": 1000}],
            kind="sale_refund",
            return_type="DAMAGED",
        )
    )
    cfg = config(ho, return_types={"RETURN": 1, "DAMAGED": 0})
    rows = postings(cfg)
    assert [r["type"] for r in rows] == ["line", "credit"]
    assert of(rows, "line")[0]["stock_qty"] == "0.000"


def test_unknown_return_type_is_rejected_with_the_field(ho: HeadOffice, tmp_path: Path) -> None:
    ho.add(sale("T10001", "C1", [line("P1", "1.000", 500)], kind="sale_refund", return_type="NOPE"))
    report = job.run(config(ho), now_ms=LATER)
    assert report.rejects == 1
    assert report.pending["rejected"] == 1
    assert report.dir is not None
    (rej,) = [json.loads(x) for x in (Path(report.dir) / "rejects.jsonl").read_text().splitlines()]
    assert rej["job"] == "postings"
    assert rej["field"] == "$.return_type"
    # still pending: every later run reports it again until the configuration knows the type
    again = job.run(config(ho), now_ms=LATER)
    assert again.rejects == 1


def test_exchange_posts_net_and_moves_both_ways(ho: HeadOffice, tmp_path: Path) -> None:
    ho.add(
        sale(
            "T10001",
            "C1",
            [line("P1", "1.000", 800), line("P2", "-1.000", 500)],
            [{"tender": "cash", "amount": 300}],
            kind="sale_exchange",
            return_type="RETURN",
        )
    )
    rows = postings(config(ho))
    assert of(rows, "invoice")[0]["amount"] == 300
    assert [r["stock_qty"] for r in of(rows, "line")] == ["-1.000", "1.000"]


US = TaxDefinition("US", "CA", None, Decimal("7.25"), frozenset({"EXEMPT"}))
BATCH = PosBatch("B1", "S1", "US", "CA", "WH-CONF", "active")


def test_pos_batch_location_tax_and_warehouse(ho: HeadOffice, tmp_path: Path) -> None:
    ho.add(
        sale(
            "T10001",
            "C1",
            [line("BOOK", "1.000", 1073, "TAXABLE"), line("DONATION", "1.000", 500, "EXEMPT")],
        )
    )
    rows = postings(config(ho, pos_batches=(BATCH,), tax=(US,)))
    book, donation = of(rows, "line")
    assert book["tax"] == 73
    assert donation["tax"] == 0
    assert book["warehouse"] == "WH-CONF"
    assert book["batch"] == "B1"
    assert (
        book["line_status"],
        book["fulfil_status"],
        book["invoice_no"],
        book["invoice_date"],
    ) == ("active", "pre_shipped", "T10001", "2026-01-01")
    assert book["stock_qty"] == "-1.000"
    assert of(rows, "invoice")[0]["tax"] == 73


def test_proforma_batch_lines_are_not_fulfilled(ho: HeadOffice, tmp_path: Path) -> None:
    ho.add(sale("T10001", "C1", [line("BOOK", "1.000", 1073, "TAXABLE")]))
    proforma = PosBatch("B1", "S1", "US", "CA", "WH-CONF", "proforma")
    (ln,) = of(postings(config(ho, pos_batches=(proforma,), tax=(US,))), "line")
    assert (ln["line_status"], ln["fulfil_status"], ln["invoice_no"], ln["invoice_date"]) == (
        "proforma",
        "not_fulfilled",
        None,
        None,
    )
    assert ln["stock_qty"] == "0.000"


def test_status_changes_move_each_other() -> None:
    src = Line(1, "BOOK", None, 1000, 1073, "TAXABLE", 1073, 0, 0)
    ol = batches.order_line(
        src, 1073, PosBatch("B", "S", "US", "CA", "W", "proforma"), US, "T1", "2026-01-01"
    )
    assert (ol.fulfil_status, ol.invoice_no) == ("not_fulfilled", None)
    active = batches.set_line_status(ol, "active", "T1", "2026-01-01")
    assert (active.fulfil_status, active.invoice_no, active.invoice_date) == (
        "pre_shipped",
        "T1",
        "2026-01-01",
    )
    back = batches.set_fulfil_status(active, "not_fulfilled", "T1", "2026-01-01")
    assert (back.line_status, back.invoice_no, back.invoice_date) == ("proforma", None, None)
    with pytest.raises(batches.BatchError, match="line_status"):
        batches.set_line_status(ol, "shipped", "T1", "2026-01-01")


def test_rounding_is_half_away_from_zero() -> None:
    assert [div_round(n, 2) for n in (1, 3, -1, -3)] == [1, 2, -1, -2]
    assert tax_contained(107, Decimal("7")) == 7  # 7.0 exactly
    assert tax_contained(1075, Decimal("7.5")) == 75
