"""`lanesync bench all`: every benchmark in one run, and README's figures table made from it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lanesync import cli
from lanesync.bench import suite


def _bench(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lanesync.cli", "bench", "all", *argv],
        capture_output=True,
        text=True,
        check=False,
        cwd=cwd,
        timeout=600,
    )


def _bench_subcommands() -> set[str]:
    paths = (path for path, _, _ in cli.subcommands(cli.build_parser()))
    return {p.split()[1] for p in paths if p.startswith("bench ") and p != "bench all"}


def test_every_benchmark_is_in_the_suite() -> None:
    """A new benchmark that `bench all` does not run would be missing from README's table."""
    in_suite = {b.full[0] for b in suite.BENCHES}
    assert _bench_subcommands() == in_suite


def test_one_run_makes_the_table_and_rewrites_only_the_marked_part(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    before, after = "# Title\n\nSome text.\n\n", "\n\n## Next\nMore text.\n"
    readme.write_text(f"{before}{suite.BEGIN}\nold table\n{suite.END}{after}")
    out = tmp_path / "all.json"
    p = _bench(
        "--quick",
        "--only",
        "start,lookup",
        "--readme",
        str(readme),
        "--out",
        str(out),
        cwd=tmp_path,
    )
    assert p.returncode == 0, p.stderr
    text = readme.read_text()
    assert text.startswith(before + suite.BEGIN + "\n")
    assert text.endswith(suite.END + after)
    assert "old table" not in text
    result = json.loads(out.read_text())
    assert set(result["runs"]) == {"start", "lookup"}
    assert all(r["ok"] for r in result["runs"].values())
    rows = {r["bench"]: r for r in result["rows"]}
    # The figures in the table are the ones the benchmark itself printed.
    start = result["runs"]["start"]["result"]
    assert f"start to READY {start['agent']['ready_s_median']} s" in rows["start"]["lanesync"]
    assert rows["start"]["ratio"] == f"{start['ratio_ready']:.2f} / {start['ratio_rss']:.2f}"
    lookup = result["runs"]["lookup"]["result"]
    assert f"{lookup['baseline_key_read']['p50_us']} µs" in rows["lookup"]["baseline"]
    assert "| start | " in text
    assert "`lanesync bench start --runs 2 --json`" in text
    assert "--quick" in text  # a quick run says so: its figures are not for publishing


def test_a_failing_benchmark_is_a_failed_row_and_a_failed_run(tmp_path: Path) -> None:
    p = _bench(
        "--quick",
        "--only",
        "extract-postgres",
        "--pg-url",
        "postgresql://127.0.0.1:1/nowhere",
        "--json",
        cwd=tmp_path,
    )
    assert p.returncode == 1
    result = json.loads(p.stdout)
    (row,) = result["rows"]
    assert row["bench"] == "extract-postgres"
    assert row["lanesync"].startswith("FAILED: ")
    assert row["met"] is False


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--only", "drain,nonesuch"], "--only: unknown benchmark nonesuch"),
        (["--readme", "no-such-file.md"], "no '<!-- bench-all:begin -->'"),
    ],
)
def test_usage_errors_name_what_is_wrong(tmp_path: Path, argv: list[str], message: str) -> None:
    p = _bench(*argv, cwd=tmp_path)
    assert p.returncode == 2
    assert message in p.stderr
