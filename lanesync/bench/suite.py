"""`lanesync bench all`: every benchmark in one run, and README's figures table from it.

Figures from different days and different loads cannot be compared, so the table in README's
"Measured" section is regenerated from one run of all of them (issue 17.5): each benchmark runs
in a process of its own (`lanesync bench NAME --json`, one after the other, so none measures
another's load), its JSON is kept whole, and one row per benchmark (per configuration for the
fleet) gives lanesync's figure, the baseline or ceiling the same benchmark measured in the same
run, their ratio, the aim and whether it was met. The machine's load average is recorded before
and after each benchmark: on a shared machine it says how far to trust a row.

`--readme README.md` rewrites the table between the markers `<!-- bench-all:begin -->` and
`<!-- bench-all:end -->`; `--quick` runs every benchmark at a tiny size (a check that the suite
runs, not figures to publish).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lanesync.bench.common import print_result

BEGIN = "<!-- bench-all:begin -->"
END = "<!-- bench-all:end -->"


@dataclass(frozen=True)
class Row:
    """One line of the figures table."""

    bench: str
    lanesync: str
    baseline: str
    ratio: str
    aim: str
    met: bool | None  # None: the benchmark has no aim of its own


Summary = Callable[[dict[str, Any]], list[Row]]


@dataclass(frozen=True)
class Bench:
    """A benchmark of the suite: its arguments at full and at quick size, and its row maker."""

    name: str
    full: tuple[str, ...]
    quick: tuple[str, ...]
    summary: Summary

    def argv(self, quick: bool) -> list[str]:
        return [*(self.quick if quick else self.full), "--json"]


def _n(x: float | int | None) -> str:
    """A figure with thousands separators; '-' when the benchmark could not measure it."""
    if x is None:
        return "-"
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:,.3g}"


def _r(x: float | int | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _bounds(r: dict[str, Any]) -> str:
    """What the run's own CPU costs allow on its cores (bench drain's `cpu_bounds`)."""
    if r.get("machine_bound_per_s") is None:
        return ""
    return (
        f"; at these costs one head-office core allows {_n(r['headoffice_bound_per_s'])}/s "
        f"and the {r['cores']} cores {_n(r['machine_bound_per_s'])}/s"
    )


def _drain(r: dict[str, Any]) -> list[Row]:
    t = r["targets"]
    paho = f"; paho-mqtt serial {_n(r['paho_serial_per_s'])}/s" if "paho_serial_per_s" in r else ""
    return [
        Row(
            "drain",
            f"{_n(r['entries_per_s'])} entries/s from the link's return to the last ack "
            f"({_n(r['entries'])} entries; head office {r['headoffice_cpu_us_per_entry']} µs, "
            f"agent {r['agent_cpu_us_per_entry']} µs CPU an entry; lost {r['lost']}, "
            f"duplicated {r['duplicated']}){_bounds(r)}",
            f"SQLite ceiling {_n(r['ceiling_per_s'])}/s{paho}",
            _r(r["ratio"]),
            f"≥ {_n(t['entries_per_s_at_least'])}/s and ≥ {t['ratio_to_ceiling_at_least']} "
            "of the ceiling",
            r["entries_per_s"] >= t["entries_per_s_at_least"]
            and r["ratio"] >= t["ratio_to_ceiling_at_least"],
        ),
        Row(
            "drain (agent)",
            f"peak RSS {r['agent_peak_rss_mb']} MB while draining; start to READY "
            f"{r['agent_start_to_ready_s']} s",
            "-",
            "-",
            f"RSS < {r['agent_targets']['peak_rss_mb_below']} MB",
            r["agent_peak_rss_mb"] < r["agent_targets"]["peak_rss_mb_below"],
        ),
    ]


def _api(r: dict[str, Any]) -> list[Row]:
    p, m, b = r["paced"], r["max"], r["baseline_journal"]
    return [
        Row(
            "api",
            f"at {_n(r['target_rate_per_s'])} documents/s: p50 {p['p50_ms']} ms, p99 "
            f"{p['p99_ms']} ms; flat out {_n(m['docs_per_s'])}/s, p99 {m['p99_ms']} ms; agent "
            f"peak RSS {r['agent_peak_rss_mb']} MB",
            f"straight to the journal {_n(b['docs_per_s'])}/s",
            _r(r["ratio_vs_journal"]),
            f"p99 < 20 ms at the paced rate; RSS < {r['agent_targets']['peak_rss_mb_below']} MB",
            bool(r["p99_target_met"])
            and r["agent_peak_rss_mb"] < r["agent_targets"]["peak_rss_mb_below"],
        )
    ]


def _start(r: dict[str, Any]) -> list[Row]:
    a, f, t = r["agent"], r["baseline_libraries_only"], r["agent_targets"]
    return [
        Row(
            "start",
            f"start to READY {a['ready_s_median']} s, peak RSS {a['peak_rss_mb_median']} MB "
            f"(medians of {r['runs']})",
            f"its libraries alone {f['ready_s_median']} s, {f['peak_rss_mb_median']} MB",
            f"{_r(r['ratio_ready'])} / {_r(r['ratio_rss'])}",
            f"< {t['start_to_ready_s_below']} s, < {t['peak_rss_mb_below']} MB",
            all(r["agent_targets_met"].values()),
        )
    ]


def _transit(r: dict[str, Any]) -> list[Row]:
    lk, acc, b = r["lookup"], r["accept_all_at_once"], r["baseline_mqtt_echo"]
    return [
        Row(
            "transit",
            f"{r['lanes']} lanes: SSCC lookup p50 {lk['p50_ms']} ms, p99 {lk['p99_ms']} ms, "
            f"{_n(lk['per_s'])} round trips/s; all accept at once p99 {acc['p99_ms']} ms",
            f"bare MQTT request/echo p99 {b['p99_ms']} ms",
            _r(r["ratio_p99_lookup_vs_echo"]),
            "lookup p99 < 50 ms",
            bool(r["p99_under_50ms"]),
        )
    ]


def _lookup(r: dict[str, Any]) -> list[Row]:
    c, g, h, b = (
        r["item_by_code"],
        r["item_by_gtin"],
        r["http_item_by_code"],
        r["baseline_key_read"],
    )
    return [
        Row(
            "lookup",
            f"{_n(r['items'])} items: by code p50 {c['p50_us']} µs, by GTIN p50 {g['p50_us']} "
            f"µs, over the API p50 {h['p50_us']} µs",
            f"one primary-key read p50 {b['p50_us']} µs",
            f"{_r(r['ratio']['by_code_p50_over_baseline'])} / "
            f"{_r(r['ratio']['by_gtin_p50_over_baseline'])}",
            "-",
            None,
        )
    ]


def _catalog(r: dict[str, Any]) -> list[Row]:
    if r.get("errors"):
        return [_failed("catalog", "; ".join(r["errors"]))]
    il, pr, b, a = r["initial_load"], r["propagation"], r["baseline"], r["aims"]
    return [
        Row(
            "catalog",
            f"{_n(r['items'])} items, {r['lanes']} lanes: a new lane's initial load "
            f"{il['seconds']} s (peak RSS {il['peak_rss_mb']} MB); a price change reaches "
            f"every lane p99 {pr['p99_s']} s",
            # The baseline is not the same bytes: it re-sends each store's whole catalog on
            # every change (bench/catalog.py), so its p99 measures that design, not MQTT.
            f"the whole catalog re-sent per store on each change over bare MQTT: load "
            f"{b['initial_load_s']} s, p99 {b['p99_s']} s",
            f"{_r(r['ratio']['load_baseline_over_lanesync'])} / "
            f"{_r(r['ratio']['p99_baseline_over_lanesync'])}",
            "load < 5 s, p99 < 1 s, lane RSS < 60 MB",
            all(a.values()),
        )
    ]


def _extract(r: dict[str, Any]) -> list[Row]:
    t = r["targets"]
    return [
        Row(
            f"extract ({r['backend']})",
            f"{_n(r['entries_per_s'])} entries/s roll-up + postings over {_n(r['entries'])} "
            f"entries; full run with purchases and files {_n(r['full_run_entries_per_s'])}/s",
            f"SQL GROUP BY over the same lines {_n(r['baseline_per_s'])}/s",
            _r(r["ratio"]),
            f"≥ {_n(t['entries_per_s_at_least'])}/s and ≥ {t['ratio_at_least']} of the baseline",
            r["entries_per_s"] >= t["entries_per_s_at_least"] and r["ratio"] >= t["ratio_at_least"],
        )
    ]


def _flood(r: dict[str, Any]) -> list[Row]:
    b, f, rss = r["honest_lag_baseline"], r["honest_lag_flood"], r["headoffice_rss_mb"]
    return [
        Row(
            "flood",
            f"{r['lanes']} honest lanes while store {r['flood']['store']} sends "
            f"{_n(r['flood']['per_s'])} garbage messages/s: p50 {f.get('p50_ms')} ms, p99 "
            f"{f.get('p99_ms')} ms; head office RSS {rss['start']} -> {rss['flood_peak']} MB; "
            f"shed {_n(r['headoffice']['shed_total'])}",
            f"the same lanes without the flood: p99 {b.get('p99_ms')} ms",
            _r(r["ratio_p99_flood_vs_baseline"]),
            "honest p99 < 1000 ms",
            f.get("p99_ms") is not None and f["p99_ms"] < 1000,
        )
    ]


_FLEET_NAMES = {
    "sqlite": "SQLite, 1 process",
    "pg1": "PostgreSQL, 1 worker",
    "pg3": "PostgreSQL, 3 workers owning stores",
    "pg3share": "PostgreSQL, 3 workers on one shared subscription",
}


def _fleet(r: dict[str, Any]) -> list[Row]:
    rows = []
    base = r["configurations"].get("sqlite", {})
    for name, c in r["configurations"].items():
        label = f"fleet: {_FLEET_NAMES.get(name, name)}"
        if "error" in c:
            rows.append(_failed(label, c["error"]))
            continue
        v = c["verified"]
        trickle, drain = c["trickle_lag"].get("p99_ms"), c["drain_entries_per_s"]
        aim_drain = drain >= 30_000
        aim_lag = name != "pg3" or (trickle is not None and trickle < 100)
        rows.append(
            Row(
                label,
                f"{r['lanes']} lanes: whole drain {_n(drain)} entries/s; trickle p99 "
                f"{_n(trickle)} ms; lost {v.get('lost')}, duplicated {v.get('duplicated')}, "
                f"order {'kept' if v.get('ok') else 'NOT kept'}",
                f"ceiling: head office's SQLite inserting the same rows in as many "
                f"transactions, {_n(c.get('ceiling_per_s'))} entries/s"
                if name == "sqlite"
                else f"SQLite {_n(base.get('drain_entries_per_s'))} entries/s, trickle p99 "
                f"{_n(base.get('trickle_lag', {}).get('p99_ms'))} ms",
                _r(c.get("ratio_drain_vs_ceiling"))
                if name == "sqlite"
                else _r(c.get("ratio_drain_vs_sqlite")),
                "≥ 30,000 entries/s" + ("; trickle p99 < 100 ms" if name == "pg3" else ""),
                bool(v.get("ok")) and aim_drain and aim_lag,
            )
        )
    return rows


BENCHES: tuple[Bench, ...] = (
    Bench(
        "drain",
        ("drain", "--entries", "200000"),
        ("drain", "--entries", "2000", "--no-paho"),
        _drain,
    ),
    Bench("api", ("api",), ("api", "--docs", "300", "--rate", "200"), _api),
    Bench("start", ("start",), ("start", "--runs", "2"), _start),
    Bench("transit", ("transit",), ("transit", "--lanes", "5", "--requests", "5"), _transit),
    Bench("lookup", ("lookup",), ("lookup", "--items", "500", "--lookups", "200"), _lookup),
    Bench("catalog", ("catalog",), ("catalog", "--items", "1000", "--lanes", "8"), _catalog),
    Bench(
        "extract", ("extract", "--entries", "1000000"), ("extract", "--entries", "2000"), _extract
    ),
    Bench(
        "extract-postgres",
        ("extract", "--entries", "1000000", "--backend", "postgres"),
        ("extract", "--entries", "2000", "--backend", "postgres"),
        _extract,
    ),
    Bench("flood", ("flood",), ("flood", "--lanes", "5", "--seconds", "3"), _flood),
    Bench(
        "fleet",
        ("fleet", "--lanes", "1000", "--backends", "sqlite,pg1,pg3,pg3share"),
        (
            "fleet",
            "--lanes",
            "20",
            "--trickle-s",
            "2",
            "--outage-s",
            "3",
            "--backends",
            "sqlite,pg3",
        ),
        _fleet,
    ),
)


def _failed(bench: str, why: str) -> Row:
    return Row(bench, f"FAILED: {why[:300]}", "-", "-", "-", False)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    names = ", ".join(b.name for b in BENCHES)
    p = sub.add_parser("all", help="every benchmark in one run; README's figures table from it")
    p.add_argument("--only", help=f"comma-separated subset of: {names}")
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks the run, not figures")
    p.add_argument("--readme", help="rewrite the table between the bench-all markers in this file")
    p.add_argument("--out", help="write the whole result (every benchmark's JSON) to this file")
    p.add_argument("--json", action="store_true", help="print the whole result as JSON")
    p.add_argument(
        "--pg-url",
        default=os.environ.get("LANESYNC_TEST_PG_URL"),
        help="PostgreSQL database for the benchmarks that use one (their default otherwise)",
    )
    p.set_defaults(handler=cmd_all)


def cmd_all(args: argparse.Namespace) -> int:
    chosen = list(BENCHES)
    if args.only:
        wanted = [w.strip() for w in args.only.split(",") if w.strip()]
        known = {b.name for b in BENCHES}
        unknown = [w for w in wanted if w not in known]
        if unknown:
            print(
                f"lanesync bench all: --only: unknown benchmark {', '.join(unknown)} "
                f"(known: {', '.join(sorted(known))})",
                file=sys.stderr,
            )
            return 2
        chosen = [b for b in BENCHES if b.name in wanted]
    if args.readme and not _has_markers(Path(args.readme)):
        print(
            f"lanesync bench all: --readme {args.readme}: no '{BEGIN}' ... '{END}' markers "
            "to put the table between",
            file=sys.stderr,
        )
        return 2
    result = run(chosen, quick=args.quick, pg_url=args.pg_url, quiet=args.json)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    if args.readme:
        update_readme(Path(args.readme), result["markdown"])
    if args.json:
        print_result(result, compact=True)
    else:
        print(result["markdown"])
    return 0 if all(r["ok"] for r in result["runs"].values()) else 1


def run(chosen: list[Bench], *, quick: bool, pg_url: str | None, quiet: bool) -> dict[str, Any]:
    """Each benchmark in turn, in a process of its own; their JSON and the table made from it."""
    started = datetime.datetime.now(datetime.UTC)
    runs: dict[str, dict[str, Any]] = {}
    rows: list[Row] = []
    for b in chosen:
        argv = b.argv(quick)
        if pg_url and b.name in ("fleet", "extract-postgres"):
            argv += ["--pg-url", pg_url]
        if not quiet:
            print(f"bench all: lanesync bench {' '.join(argv)} ...", file=sys.stderr, flush=True)
        one = run_one(argv)
        runs[b.name] = one
        if one["result"] is None:
            rows.append(_failed(b.name, one["stderr_tail"] or f"exit {one['exit']}"))
            continue
        try:
            rows.extend(b.summary(one["result"]))
        except (KeyError, TypeError, ValueError) as exc:
            one["ok"] = False
            rows.append(_failed(b.name, f"its JSON lacks {exc!r}"))
        if not quiet:
            print(f"bench all: {b.name}: {one['wall_s']} s", file=sys.stderr, flush=True)
    ended = datetime.datetime.now(datetime.UTC)
    machine = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "commit": _commit(),
        "started": started.isoformat(timespec="seconds"),
        "ended": ended.isoformat(timespec="seconds"),
        "quick": quick,
    }
    return {
        "bench": "all",
        "machine": machine,
        "runs": runs,
        "rows": [r.__dict__ for r in rows],
        "markdown": markdown(rows, machine, runs),
    }


def run_one(argv: list[str]) -> dict[str, Any]:
    """`lanesync bench ARGV` in a fresh process: its JSON (the last stdout line), exit and load."""
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    p = subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "lanesync.cli", "bench", *argv],
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - t0
    result: dict[str, Any] | None = None
    lines = [ln for ln in p.stdout.splitlines() if ln.strip()]
    if lines:
        try:
            result = json.loads(lines[-1])
        except json.JSONDecodeError:
            result = None
    return {
        "argv": argv,
        "exit": p.returncode,
        "ok": p.returncode == 0 and result is not None,
        "wall_s": round(wall, 1),
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "stderr_tail": "\n".join(p.stderr.strip().splitlines()[-5:]),
        "result": result,
    }


def markdown(rows: list[Row], machine: dict[str, Any], runs: dict[str, dict[str, Any]]) -> str:
    """The figures table, with the commands and the load each benchmark ran under."""
    out = [
        f"One run of `lanesync bench all`{' --quick' if machine['quick'] else ''} at commit "
        f"{machine['commit']}, {machine['started']} to {machine['ended']}, "
        f"{machine['cpus']} CPUs, Python {machine['python']}.",
        "",
        "| benchmark | lanesync | baseline or ceiling, same run | ratio | aim | met |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        met = "-" if r.met is None else ("yes" if r.met else "no")
        cells = [r.bench, r.lanesync, r.baseline, r.ratio, r.aim, met]
        out.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    out += ["", "| benchmark | command | seconds | load average before / after |"]
    out.append("| --- | --- | --- | --- |")
    for name, one in runs.items():
        out.append(
            f"| {name} | `lanesync bench {' '.join(one['argv'])}` | {one['wall_s']} | "
            f"{one['load_before'][0]} / {one['load_after'][0]} |"
        )
    return "\n".join(out)


def _has_markers(path: Path) -> bool:
    try:
        text = path.read_text()
    except OSError:
        return False
    return BEGIN in text and END in text and text.index(BEGIN) < text.index(END)


def update_readme(path: Path, table: str) -> None:
    """Replace what lies between the markers; the rest of the file is left byte for byte."""
    text = path.read_text()
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{BEGIN}\n{table}\n{END}{tail}")


def _commit() -> str:
    """The commit measured (and whether the tree had changes): figures belong to code."""
    git = shutil.which("git")
    here = Path(__file__).resolve().parent
    if git is None:
        return "unknown (no git)"

    def out(*argv: str) -> str:
        p = subprocess.run(  # noqa: S603 - fixed argv, no shell
            [git, *argv], capture_output=True, text=True, check=False, cwd=here
        )
        return p.stdout.strip()

    commit = out("rev-parse", "--short", "HEAD") or "unknown (not a git checkout)"
    dirty = out("status", "--porcelain", "--untracked-files=no")
    return f"{commit} with uncommitted changes" if dirty else commit
