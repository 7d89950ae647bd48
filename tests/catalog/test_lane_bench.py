"""`lanesync bench catalog` end to end at a small size: it runs, every lane gets the change by
the path it claims, and the figures are there (their values are the benchmark's business)."""

from __future__ import annotations

from pathlib import Path

from lanesync.bench import catalog as bench


def test_bench_catalog_runs_small(tmp_path: Path) -> None:
    r = bench.run(tmp_path, items=300, lanes=8, timeout=60)
    assert r["errors"] == [], r.get("headoffice_log")
    assert r["initial_load"]["rows"] == 300 + 2 + 1  # items, 2 stores, 1 price
    prop = r["propagation"]
    assert (prop["reached"], prop["of"]) == (8, 8)
    assert prop["inline"] == 8  # one price: every store's head carries it inline
    assert prop["snapshots"] == 0
    assert prop["p50_s"] <= prop["p99_s"] <= prop["max_s"]
    base = r["baseline"]
    assert (base["reached"], base["of"]) == (8, 8)
    assert base["message_bytes"] > 300 * 20
    assert set(r["ratio"]) == {"p99_baseline_over_lanesync", "load_baseline_over_lanesync"}
    assert set(r["aims"]) == {"initial_load_under_5s", "p99_under_1s", "lane_rss_under_60mb"}
