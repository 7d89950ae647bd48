"""`lanesync bench flood` as a user runs it (console script, its processes, its JSON), briefly:
the flood reaches head office, head office survives it and the honest lanes' entries are all
there once. The figures themselves are for the benchmark, never for a test."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_bench_flood_reports_both_phases_and_verifies_the_honest_lanes(tmp_path: Path) -> None:
    args = ["--lanes", "8", "--seconds", "2", "--json", "--workdir", str(tmp_path / "w")]
    proc = subprocess.run(
        [sys.executable, "-m", "lanesync.cli", "bench", "flood", *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert out["headoffice_alive"] is True
    v = out["verified"]
    assert v["ok"], v
    assert v["lanes"] == 8
    assert v["confirmed"] == v["at_head_office"] == v["documents"] > 0
    for phase in ("honest_lag_baseline", "honest_lag_flood"):
        assert out[phase]["entries"] > 0
        assert out[phase]["p99_ms"] >= out[phase]["p50_ms"] > 0
    assert out["flood"]["messages_to_broker"] > 0
    ho = out["headoffice"]
    # every flood message head office got was applied as nothing: refused or shed, counted
    assert ho["messages_in_flood"] + ho["shed_total"] > 0
    assert ho["quarantined"] > 0
    assert set(ho["shed"]) <= {"SFLOOD"}
    rss = out["headoffice_rss_mb"]
    assert rss["flood_peak"] >= rss["start"] > 0
    assert set(out["cpu_s"]["flood"]) == {"headoffice", "broker", "lanes"}
