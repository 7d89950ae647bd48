"""`lanesync bench fleet` as a user runs it (the console script, its processes, its JSON), on a
small fleet: every configuration drains, head office's copy is verified, and the report says
where the CPU went. The figures themselves are for the benchmark, never for a test."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.pgutil import PG_URL, pg_connect

_BENCH_SCHEMAS = "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'lanesync\\_bench\\_%'"


def _bench_schemas() -> set[str]:
    with pg_connect() as conn:
        return {row[0] for row in conn.execute(_BENCH_SCHEMAS)}


def test_bench_fleet_reports_verified_drains_for_sqlite_and_three_workers(
    tmp_path: Path,
) -> None:
    # Fails (never skips) when PostgreSQL is unreachable. Schemas of other runs (a bench
    # running beside this one, or one killed before it cleaned up) are not this run's.
    before = _bench_schemas()
    work = tmp_path / "work"
    args = ["--lanes", "24", "--rate", "2", "--outage-rate", "4", "--trickle-s", "1"]
    args += ["--outage-s", "2", "--drain-timeout-s", "60", "--backends", "sqlite,pg3"]
    args += ["--json", "--pg-url", PG_URL, "--workdir", str(work)]
    proc = subprocess.run(
        [sys.executable, "-m", "lanesync.cli", "bench", "fleet", *args],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert set(out["configurations"]) == {"sqlite", "pg3"}
    for name, r in out["configurations"].items():
        assert "error" not in r, (name, r)
        v = r["verified"]
        assert v["ok"], (name, v)
        assert v["lanes"] == 24
        assert v["confirmed"] == v["at_head_office"] == v["documents"] == r["entries"]
        assert (v["lost"], v["duplicated"], v["out_of_order_lanes"]) == (0, 0, 0)
        assert r["backlog_at_reconnect"] > 0  # the lanes sold while cut off
        assert r["drain_entries"] >= r["backlog_at_reconnect"]
        assert r["drain_entries_per_s"] > 0
        assert set(r["cpu_s_in_drain"]) == {"headoffice", "lanes", "link", "broker", "postgres"}
        assert r["cpu_s_in_drain"]["headoffice"] > 0
        assert (work / name / "fleet-1.log").exists()
    sqlite = out["configurations"]["sqlite"]  # its ratio is to the store's in-run ceiling
    assert sqlite["ceiling_per_s"] > 0
    assert 1 <= sqlite["ceiling_transactions"] <= sqlite["drain_entries"]
    ratio = sqlite["drain_entries_per_s"] / sqlite["ceiling_per_s"]
    assert abs(sqlite["ratio_drain_vs_ceiling"] - ratio) < 0.01
    assert (work / "sqlite" / "ceiling.db").exists()
    pg3 = out["configurations"]["pg3"]
    assert pg3["workers"] == 3
    base = out["configurations"]["sqlite"]["drain_entries_per_s"]
    assert abs(pg3["ratio_drain_vs_sqlite"] - pg3["drain_entries_per_s"] / base) < 0.01
    # lane logs went to the files, not to the bench's stderr
    assert "link down" not in proc.stderr
    assert _bench_schemas() <= before  # the run's scratch schemas are dropped
