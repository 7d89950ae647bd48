"""The fast paths of the extract give exactly what the plain ones give.

Roll-up by segments (and over forked workers) against the document-by-document roll-up, and the
posting and purchase writers against `output.dumps` and `output.csv_bytes`.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

from headoffice.extract import job, output, plugin, postings
from headoffice.extract.config import PosBatch, TaxDefinition
from headoffice.extract.documents import Row, read_rows
from tests.extract.extract_helpers import LATER, HeadOffice, card, config, line, sale


def _mixed(ho: HeadOffice) -> None:
    for i in range(60):
        store, lane = f"S{i % 2 + 1}", f"L{i % 3 + 1}"
        cust = [None, "C1", "C2"][i % 3]
        lines = [line("P1", "1.000", 199), line("P2", f"{i % 4 + 1}.250", 1250, "VAT_RED")]
        kind = "sale_refund" if i % 7 == 0 else "sale"
        extra: dict[str, Any] = {"return_type": "RETURN"} if kind == "sale_refund" else {}
        total = sum(ln["amount"] for ln in lines)
        pays = [card(total, "visa" if i % 2 else "amex")] if i % 2 else None
        doc = sale(f"T{i:05d}", cust, lines, pays, kind=kind, store=store, lane=lane, **extra)
        ho.add(doc)
    ho.add(sale("T90001", "C1", [line("P1", "1.000", 199)], kind="special_order"))
    ho.add({"kind": "sale", "register_no": "T90002", "lines": "oops"})


def _plan(ho: HeadOffice, rows: list[Row], workers: int = 1) -> plugin.Plan:
    cfg = config(ho, schedule="each_run")
    return job.compute(rows, cfg, now_ms=LATER, cursors={}, erp={}, next_tc=1, workers=workers)


def _rows(ho: HeadOffice) -> list[Row]:
    db = job.open_db(config(ho))
    try:
        return list(read_rows(db, 0))
    finally:
        db.close()


def test_forked_workers_give_the_same_plan(ho: HeadOffice, tmp_path: Path) -> None:
    _mixed(ho)
    rows = _rows(ho)
    one = _plan(ho, rows)
    assert one.rejects
    assert one.postings
    assert len(one.rollups) > 2
    for workers in (2, 3):
        many = _plan(ho, rows, workers)
        assert many == one


def test_rows_out_of_seq_order_fall_back_to_document_roll_up(
    ho: HeadOffice, tmp_path: Path
) -> None:
    _mixed(ho)
    rows = _rows(ho)
    in_order = _plan(ho, rows)
    reversed_ = _plan(ho, rows[::-1])
    assert reversed_.rollups == in_order.rollups
    assert reversed_.next_tc == in_order.next_tc


def test_fast_writers_give_the_bytes_of_the_plain_ones(ho: HeadOffice, tmp_path: Path) -> None:
    _mixed(ho)
    ho.add(sale("T90003", None, [line("P9", "2.000", 5, description='a "q" é\n,x')]))
    report = job.run(config(ho), now_ms=LATER)
    assert report.dir is not None
    cfg = config(ho)
    db = job.open_db(cfg)
    try:  # everything was emitted: recompute the records as if nothing had been
        rows = [r._replace(done=None) for r in read_rows(db, 0)]
    finally:
        db.close()
    plan = job.compute(rows, cfg, now_ms=LATER, cursors={}, erp={}, next_tc=1)
    dicts = [postings.as_dict(r) for r in plan.postings]
    batched = config(
        ho,
        pos_batches=(PosBatch("B1", "S1", "US", "CA", "W1", "proforma"),),
        tax=(TaxDefinition("US", "CA", None, Decimal("7.25"), frozenset({"VAT_RED"})),),
    )
    bplan = job.compute(rows, batched, now_ms=LATER, cursors={}, erp={}, next_tc=1)
    bdicts = [postings.as_dict(r) for r in bplan.postings]
    assert any("batch" in d for d in bdicts)
    assert output.postings_jsonl(bplan.postings) == output.jsonl(bdicts)
    assert output.postings_csv(bplan.postings) == output.csv_bytes(output.POSTING_COLUMNS, bdicts)
    assert output.postings_jsonl(plan.postings) == output.jsonl(dicts)
    assert output.postings_csv(plan.postings) == output.csv_bytes(output.POSTING_COLUMNS, dicts)
    assert plan.purchases
    for rec in plan.purchases:
        assert output.purchase_dumps(rec) == output.dumps(rec)
    assert output.purchases_csv(plan.purchases) == output.csv_bytes(
        output.PURCHASE_COLUMNS, output.flatten(plan.purchases, "lines")
    )
    written = (Path(report.dir) / "postings.jsonl").read_bytes()
    assert written == output.jsonl(dicts)
