"""`lanesync bench drain` as a user runs it, briefly: the agent is READY with its link down,
the backlog is filled through its API, nothing reaches head office until the link opens, then
every entry arrives once and in order, and the ceiling replays the same commits. The figures
themselves are for the benchmark, never for a test."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from lanesync.bench.drain import transactions


def test_transactions_are_the_seq_ranges_between_acked_hwms() -> None:
    # A redelivered ack repeats a hwm; acks may be seen out of order; the last covers n.
    assert transactions([3, 10, 3, 7, 12], 12) == [(1, 3), (4, 7), (8, 10), (11, 12)]
    assert transactions([], 5) == []


def test_bench_drain_after_the_fill_with_and_without_the_projection(tmp_path: Path) -> None:
    work = tmp_path / "w"
    args = ["--entries", "300", "--no-paho", "--projection", "both", "--json", "--workdir"]
    args.append(str(work))
    proc = subprocess.run(
        [sys.executable, "-m", "lanesync.cli", "bench", "drain", *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert out["confirmed"] == out["entries"] == 300
    assert (out["lost"], out["duplicated"], out["order_kept"]) == (0, 0, True)
    assert out["entries_per_s"] > 0
    assert out["ceiling_per_s"] > 0
    assert out["ratio"] == round(out["entries_per_s"] / out["ceiling_per_s"], 2)
    assert out["transactions"] >= 1
    assert 0 < out["first_ack_s"] <= out["drain_s"]
    # What the measured costs allow: every process of the drain, summed, over this box's cores.
    assert out["cores"] == len(os.sched_getaffinity(0))
    parts = ("agent", "headoffice", "broker", "link_and_watcher")
    summed = sum(out[f"{p}_cpu_us_per_entry"] for p in parts)
    assert out["cpu_us_per_entry_all"] == pytest.approx(summed, abs=0.25)
    assert out["cpu_us_per_entry_all"] >= out["headoffice_cpu_us_per_entry"]
    if out["cpu_us_per_entry_all"] > 0:  # /proc counts CPU in 10 ms ticks: 300 entries is few
        assert out["machine_bound_per_s"] == pytest.approx(
            out["cores"] * 1e6 / out["cpu_us_per_entry_all"], rel=0.02
        )
    # Both phases drained the same backlog, each to its own head office.
    assert out["extract_projection"] == "on"
    assert out["projection_off_entries_per_s"] > 0
    assert out["projection_off_ratio"] > 0
    assert isinstance(out["projection_slowdown"], float)
    with sqlite3.connect(work / "headoffice-projection-off.db") as off:
        assert off.execute("SELECT count(*), max(seq) FROM journal").fetchone() == (300, 300)
        assert off.execute("SELECT count(*) FROM extract_docs").fetchone() == (0,)
    # The ceiling wrote the very rows head office committed: journal, documents, projection.
    ho_db = work / "headoffice-projection-on.db"
    with sqlite3.connect(ho_db) as ho, sqlite3.connect(work / "ceiling.db") as c:
        assert ho.execute("SELECT count(*) FROM extract_docs").fetchone() == (300,)
        for table in ("journal", "documents", "extract_docs", "extract_lines"):
            q = f"SELECT * FROM {table} ORDER BY 1, 2, 3, 4, 5"
            assert c.execute(q).fetchall() == ho.execute(q).fetchall()
        assert c.execute("SELECT hwm FROM lanes").fetchone() == (300,)
