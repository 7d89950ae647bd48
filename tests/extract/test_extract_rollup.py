"""Roll-up (seed 003): the worked example, one-to-one kinds, payments, business-day schedule."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from headoffice.extract import job
from tests.extract.extract_helpers import DAY, LATER, T0, HeadOffice, card, config, line, sale


def rollups(report: job.RunReport) -> list[dict[str, Any]]:
    assert report.dir is not None
    text = (Path(report.dir) / "rollup.jsonl").read_text()
    return [json.loads(x) for x in text.splitlines()]


def seed_example(ho: HeadOffice) -> None:
    ho.add(sale("T10001", "C1000", [line("P1000", "1.000", 1899)]))
    ho.add(
        sale(
            "T10002",
            "C2000",
            [line("P3000", "2.000", 179, "VAT_RED"), line("P1000", "1.000", 1899)],
            [card(2257)],
        )
    )
    ho.add(sale("T10003", "C2000", [line("P4000", "1.000", 1250)], [card(1250, "mastercard")]))
    ho.add(sale("T10004", "C2000", [line("P3000", "3.000", 179, "VAT_RED")], [card(537)]))
    s2 = {"store": "S2", "lane": "L2"}
    ho.add(sale("T20001", "C1000", [line("P5000", "1.000", 399, "VAT_STD")], **s2))
    ho.add(sale("T20002", "C3000", [line("P2000", "1.000", 249, "VAT_RED")], **s2))
    ho.add(
        sale(
            "T20003",
            "C1000",
            [line("P5000", "2.000", 399, "VAT_ZERO")],
            [{"tender": "cheque", "amount": 798}],
            **s2,
        )
    )


def test_seed_worked_example_gives_four_results(ho: HeadOffice, tmp_path: Path) -> None:
    seed_example(ho)
    report = job.run(config(ho, purchases_enabled=False), now_ms=LATER)
    res = rollups(report)
    assert [r["consolidated_no"] for r in res] == ["TC0001", "TC0002", "TC0003", "TC0004"]
    summary = [(r["customer"], r["store"], [s["register_no"] for s in r["sources"]]) for r in res]
    assert summary == [
        ("C1000", "S1", ["T10001"]),
        ("C2000", "S1", ["T10002", "T10003", "T10004"]),
        ("C1000", "S2", ["T20001", "T20003"]),
        ("C3000", "S2", ["T20002"]),
    ]
    tc1, tc2, tc3, tc4 = res
    # a group of one is copied as is (payments keep their token-free card details)
    assert not tc1["rolled_up"]
    assert tc1["lines"][0]["item"] == "P1000"
    # P3000 from T10002 and T10004 clubbed into one line: 2 + 3
    p3000 = [ln for ln in tc2["lines"] if ln["item"] == "P3000"]
    assert len(p3000) == 1
    assert p3000[0]["qty"] == "5.000"
    assert p3000[0]["amount"] == 895
    assert len(tc2["lines"]) == 3
    assert tc2["total"] == 358 + 1899 + 1250 + 537
    # card payments roll up per scheme
    assert {(p["scheme"], p["amount"]) for p in tc2["payments"]} == {
        ("visa", 2794),
        ("mastercard", 1250),
    }
    # P5000 lines not merged: different tax codes
    p5000 = [ln for ln in tc3["lines"] if ln["item"] == "P5000"]
    assert [(ln["tax_code"], ln["qty"]) for ln in p5000] == [
        ("VAT_STD", "1.000"),
        ("VAT_ZERO", "2.000"),
    ]
    assert {p["tender"]: p["amount"] for p in tc3["payments"]} == {"cash": 399, "cheque": 798}
    assert tc4["sources"][0]["register_no"] == "T20002"
    assert not tc4["rolled_up"]


def test_excluded_kinds_go_one_to_one_and_take_no_tc_number(ho: HeadOffice, tmp_path: Path) -> None:
    for i, kind in enumerate(["special_order", "layaway", "delivery", "sale_with_fulfilment"]):
        ho.add(sale(f"T1000{i}", "C1000", [line("P1000", "1.000", 1899)], kind=kind))
    ho.add(sale("T10010", "C1000", [line("P1000", "1.000", 1899)]))
    ho.add(
        sale("T10011", "C1000", [], [{"tender": "cash", "amount": 500}], kind="on_account_payment")
    )
    res = rollups(job.run(config(ho), now_ms=LATER))
    numbered = [r for r in res if r["consolidated_no"]]
    assert [r["consolidated_no"] for r in numbered] == ["TC0001"]
    singles = [r for r in res if not r["consolidated_no"]]
    assert [r["document_no"] for r in singles] == ["T10000", "T10001", "T10002", "T10003", "T10011"]
    assert all(len(r["sources"]) == 1 for r in singles)


def test_same_customer_different_type_not_merged(ho: HeadOffice, tmp_path: Path) -> None:
    ho.add(sale("T10001", "C1", [line("P1", "1.000", 100)]))
    ho.add(
        sale("T10002", "C1", [line("P1", "1.000", 100)], kind="sale_refund", return_type="RETURN")
    )
    ho.add(sale("T10003", "C1", [line("P1", "1.000", 100)]))
    res = rollups(job.run(config(ho), now_ms=LATER))
    assert [(r["type"], len(r["sources"])) for r in res] == [("sale", 2), ("sale_refund", 1)]


def test_business_day_schedule_waits_for_day_close(ho: HeadOffice, tmp_path: Path) -> None:
    cfg = config(ho, purchases_enabled=False, postings_enabled=False)
    ho.add(sale("T10001", "C1", [line("P1", "1.000", 100)], day="2026-01-01"))
    ho.add(sale("T10002", "C1", [line("P1", "1.000", 100)], day="2026-01-02"))
    first = job.run(cfg, now_ms=T0 + DAY + 3_600_000)  # 2026-01-02 01:00 UTC
    assert first.pending == {"business day not closed": 1}
    assert [r["business_day"] for r in rollups(first)] == ["2026-01-01"]
    # a late document for the closed day, and the next day closes: TC0002 and TC0003
    ho.add(sale("T10003", "C1", [line("P1", "1.000", 100)], day="2026-01-01"))
    second = job.run(cfg, now_ms=T0 + 2 * DAY + 1)
    assert [(r["consolidated_no"], r["business_day"]) for r in rollups(second)] == [
        ("TC0002", "2026-01-01"),
        ("TC0003", "2026-01-02"),
    ]
    assert job.run(cfg, now_ms=T0 + 3 * DAY).run is None  # nothing left


def test_rollup_disabled_sends_everything_one_to_one(ho: HeadOffice, tmp_path: Path) -> None:
    ho.add(sale("T10001", "C1", [line("P1", "1.000", 100)]))
    ho.add(sale("T10002", "C1", [line("P1", "1.000", 100)]))
    res = rollups(job.run(config(ho, rollup_enabled=False), now_ms=LATER))
    assert [r["document_no"] for r in res] == ["T10001", "T10002"]
