"""Purchase records (seed 000): ERP posting, open items, delay; exactly-once across crashes."""

from __future__ import annotations

import fcntl
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from headoffice.extract import job
from headoffice.extract.job import ExtractError
from tests.extract.extract_helpers import LATER, T0, HeadOffice, config, line, sale


def records(report: job.RunReport) -> list[dict[str, Any]]:
    if report.dir is None:
        return []
    return [json.loads(x) for x in (Path(report.dir) / "purchases.jsonl").read_text().splitlines()]


def test_a_sale_becomes_one_record_with_a_stable_id(ho: HeadOffice, tmp_path: Path) -> None:
    txn = ho.add(sale("T10001", "C1000", [line("P1", "2.000", 250, "VAT_RED")]))
    (rec,) = records(job.run(config(ho), now_ms=LATER))
    assert rec["record_id"] == f"pur-{txn}"
    assert (rec["customer"], rec["store"], rec["date"], rec["total"]) == (
        "C1000",
        "S1",
        "2026-01-01",
        500,
    )
    assert rec["lines"][0]["qty"] == "2.000"
    assert rec["erp_ref"] is None
    assert job.run(config(ho), now_ms=LATER).purchases == 0  # never again


def test_require_erp_posting_waits_and_extracts_the_corrected_values(
    ho: HeadOffice, tmp_path: Path
) -> None:
    cfg = config(ho, require_erp_posting=True, postings_enabled=False)
    txn = ho.add(sale("T10001", "C9999", [line("P1", "1.000", 1000)]))
    first = job.run(cfg, now_ms=LATER)
    assert first.purchases == 0
    assert first.pending["waiting for ERP posting"] == 1
    fixed = [line("P1", "1.000", 900)]
    fixed[0]["line_no"] = 1
    job.record_posting(cfg, txn, "INV-77", {"customer": "C1000", "lines": fixed, "total": 900})
    (rec,) = records(job.run(cfg, now_ms=LATER))
    assert (rec["customer"], rec["total"], rec["erp_ref"]) == ("C1000", 900, "INV-77")


def test_record_posting_refuses_bad_corrections_naming_the_field(
    ho: HeadOffice, tmp_path: Path
) -> None:
    cfg = config(ho)
    txn = ho.add(sale("T10001", "C1", [line("P1", "1.000", 1000)]))
    with pytest.raises(ExtractError, match=r"\$\.lines\[0\]\.qty"):
        job.record_posting(cfg, txn, "INV-1", {"lines": [{"item": "P1", "qty": 1}]})
    with pytest.raises(ExtractError, match=r"corrections\.store"):
        job.record_posting(cfg, txn, "INV-1", {"store": "S9"})
    with pytest.raises(ExtractError, match="txn_id"):
        job.record_posting(cfg, "00000000-0000-4000-8000-000000000000", "INV-1", None)


@pytest.mark.parametrize(
    ("include", "qty", "amount"), [(True, "3.000", 300), (False, "1.000", 100)]
)
def test_include_open_items(
    ho: HeadOffice, tmp_path: Path, include: bool, qty: str, amount: int
) -> None:
    ho.add(
        sale(
            "T10001",
            "C1",
            [line("P1", "3.000", 100, open_qty="2.000"), line("P2", "1.000", 50, open_qty="1.000")],
            kind="special_order",
        )
    )
    (rec,) = records(job.run(config(ho, include_open_items=include), now_ms=LATER))
    assert rec["lines"][0]["qty"] == qty
    assert rec["lines"][0]["amount"] == amount
    assert len(rec["lines"]) == (2 if include else 1)  # fully open line left out


def test_delay_period(ho: HeadOffice, tmp_path: Path) -> None:
    cfg = config(ho, delay_period_s=48 * 3600, postings_enabled=False)
    ho.add(sale("T10001", "C1", [line("P1", "1.000", 100)]), ts=T0)
    early = job.run(cfg, now_ms=T0 + 47 * 3_600_000)
    assert early.purchases == 0
    assert early.pending == {"in delay period": 1}
    assert job.run(cfg, now_ms=T0 + 48 * 3_600_000).purchases == 1


def test_crash_before_commit_then_rerun_emits_each_record_once(
    ho: HeadOffice, tmp_path: Path
) -> None:
    cfg = config(ho)
    ids = {ho.add(sale(f"T1{i:04d}", "C1", [line("P1", "1.000", 100)])) for i in range(20)}

    def crash(point: str) -> None:
        if point == "files_written":
            raise RuntimeError("power cut")

    with pytest.raises(RuntimeError):
        job.run(cfg, now_ms=LATER, fail_point=crash)
    assert not (cfg.output_dir / "run-000001").exists()  # only the .tmp was written
    more = {ho.add(sale(f"T2{i:04d}", "C1", [line("P1", "1.000", 100)])) for i in range(5)}
    job.run(cfg, now_ms=LATER)
    job.run(cfg, now_ms=LATER)
    emitted = [r["txn_id"] for d in sorted(cfg.output_dir.glob("run-*")) for r in records_in(d)]
    assert sorted(emitted) == sorted(ids | more)  # nothing missed, nothing twice
    assert not list(cfg.output_dir.glob("*.tmp"))


def test_crash_after_commit_before_rename_is_finished_by_the_next_run(
    ho: HeadOffice, tmp_path: Path
) -> None:
    cfg = config(ho)
    for i in range(5):
        ho.add(sale(f"T1{i:04d}", "C1", [line("P1", "1.000", 100)]))

    def crash(point: str) -> None:
        if point == "committed":
            raise RuntimeError("power cut")

    with pytest.raises(RuntimeError):
        job.run(cfg, now_ms=LATER, fail_point=crash)
    report = job.run(cfg, now_ms=LATER)
    assert report.recovered == [1]
    assert report.run is None
    assert len(records_in(cfg.output_dir / "run-000001")) == 5


def records_in(d: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (d / "purchases.jsonl").read_text().splitlines()]


def test_concurrent_runs_are_refused(ho: HeadOffice, tmp_path: Path) -> None:
    cfg = config(ho)
    cfg.output_dir.mkdir()
    with open(cfg.output_dir / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        with pytest.raises(ExtractError, match="another extract run"):
            job.run(cfg, now_ms=LATER)
    shutil.rmtree(cfg.output_dir)
