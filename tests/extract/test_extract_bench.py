"""`lanesync bench extract` runs on both backends and reports a whole, correct run (a small one:
the figures themselves are for the benchmark, never for a test)."""

from __future__ import annotations

import json
import logging

import pytest

from lanesync.cli import main
from tests.pgutil import PG_URL, pg_connect


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_bench_extract_reports_a_whole_run(
    backend: str, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    if backend == "postgres":
        pg_connect().close()  # fails (never skips) when PostgreSQL is unreachable
    args = ["bench", "extract", "--entries", "400", "--json", "--backend", backend]
    assert main([*args, "--pg-url", PG_URL]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["backend"] == backend
    assert (out["entries"], out["full_run_purchases"], out["full_run_rejects"]) == (400, 400, 0)
    assert out["rollups"] > 0
    assert out["postings"] > 400
    assert out["baseline_groups"] > 0
    assert out["ratio"] == pytest.approx(out["entries_per_s"] / out["baseline_per_s"], abs=0.001)
    assert out["bodies_per_s"] > 0  # the bodies' path ran too, and gave the same plan
    # The refunds' return type is in the catalog the bench loads: stock moves and nothing is
    # logged (it was an ERROR a refund).
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    if backend == "postgres":
        with pg_connect() as conn:
            left = conn.execute(
                "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'lanesync\\_xbench\\_%'"
            ).fetchone()
        assert left == (0,)  # the scratch schema is dropped
