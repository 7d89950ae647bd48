"""`lanesync bench fleet`: a fleet of lanes trickling, cut off from head office, then draining.

Per head-office configuration (SQLite; PostgreSQL with 1 ingest worker; PostgreSQL with 3 workers
on one shared subscription) a fresh Mosquitto and head office run as their own processes, and
`--lanes` lanes (lanesync.fleet: the agent's replicator over in-memory journals, one MQTT
connection each) reach the broker through a TCP proxy process that stands for head office's
internet link. Phases:

- trickle: every lane confirms `--rate` sales a second (with jitter) for `--trickle-s`;
- outage: the link is cut (every connection reset) for `--outage-s`; lanes keep selling;
- drain: the link is back; lanes reconnect (their backoff is capped at 2 s here) and send their
  backlog while still selling. The drain ends when every entry confirmed before the link came
  back is acked by head office.

Reported per configuration: sustained entries/s during the drain (entries acked between the
link's return and the end of the drain, over that time), p50/p99 append-to-ack lag of entries
confirmed during the trickle and during the drain, and lost/duplicated/out-of-order counts
verified in head office's database. SQLite is the baseline: the PostgreSQL configurations carry
the ratio of their drain rate and p99 lag to it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg

from lanesync import stack
from lanesync.bench.common import in_workdir, print_result
from lanesync.broker import MosquittoBroker
from lanesync.fleet import Fleet, read_postgres, read_sqlite, verify

BACKENDS = {"sqlite": ("sqlite", 1), "pg1": ("postgres", 1), "pg3": ("postgres", 3)}
DEFAULT_PG_URL = "postgresql://127.0.0.1:5432/test"
# The agent's replication defaults except the reconnect backoff cap (30 s in the field): lanes
# come back within 2 s of the link, so the drain measures head office, not the lanes' jitter.
REPLICATION = {"backoff_initial_s": 0.2, "backoff_max_s": 2.0}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "fleet", help="many lanes trickling, cut off, then draining into head office"
    )
    p.add_argument("--lanes", type=int, default=1000, help="simulated lanes (1000)")
    p.add_argument("--rate", type=float, default=1.0, help="sales per lane per second (1.0)")
    p.add_argument("--trickle-s", type=float, default=10.0, help="seconds before the cut (10)")
    p.add_argument("--outage-s", type=float, default=60.0, help="seconds the link is cut (60)")
    p.add_argument(
        "--backends",
        default="sqlite,pg1,pg3",
        help="comma-separated: sqlite, pg1 (PostgreSQL, 1 worker), pg3 (3 workers)",
    )
    p.add_argument(
        "--pg-url",
        default=os.environ.get("LANESYNC_TEST_PG_URL", DEFAULT_PG_URL),
        help=f"PostgreSQL database to make a scratch schema in ({DEFAULT_PG_URL})",
    )
    p.add_argument("--json", action="store_true", help="print only the JSON result")
    p.add_argument("--workdir", help="keep files here instead of a temporary directory")
    p.set_defaults(handler=cmd_fleet)


def cmd_fleet(args: argparse.Namespace) -> int:
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    problems = [
        f"--backends: unknown {b!r} (sqlite, pg1, pg3)" for b in backends if b not in BACKENDS
    ]
    if not backends:
        problems.append("--backends: name at least one of sqlite, pg1, pg3")
    if args.lanes < 1:
        problems.append("--lanes: must be at least 1")
    if not args.rate > 0:
        problems.append("--rate: must be above 0")
    if args.trickle_s <= 0 or args.outage_s <= 0:
        problems.append("--trickle-s and --outage-s: must be above 0")
    if problems:
        for p in problems:
            print(f"lanesync bench fleet: {p}", file=sys.stderr)
        return 2
    result = in_workdir(
        args.workdir,
        "fleet",
        lambda d: run(
            d,
            backends,
            lanes=args.lanes,
            rate=args.rate,
            trickle_s=args.trickle_s,
            outage_s=args.outage_s,
            pg_url=args.pg_url,
            quiet=args.json,
        ),
    )
    print_result(result, args.json)
    return 0 if all(r["verified"]["ok"] for r in result["configurations"].values()) else 1


def _say(quiet: bool, text: str) -> None:
    if not quiet:
        print(text, file=sys.stderr, flush=True)


def run(
    workdir: Path,
    backends: list[str],
    *,
    lanes: int,
    rate: float,
    trickle_s: float,
    outage_s: float,
    pg_url: str,
    quiet: bool,
) -> dict[str, Any]:
    configs: dict[str, dict[str, Any]] = {}
    for name in backends:
        kind, workers = BACKENDS[name]
        _say(quiet, f"{name}: {lanes} lanes, {kind}, {workers} worker(s) ...")
        configs[name] = run_one(
            workdir / name,
            kind,
            workers,
            lanes=lanes,
            rate=rate,
            trickle_s=trickle_s,
            outage_s=outage_s,
            pg_url=pg_url,
        )
        _say(quiet, f"{name}: drain {configs[name]['drain_entries_per_s']} entries/s")
    base = configs.get("sqlite")
    if base is not None:
        for name, r in configs.items():
            if name != "sqlite":
                r["ratio_drain_vs_sqlite"] = round(
                    r["drain_entries_per_s"] / max(1, base["drain_entries_per_s"]), 2
                )
                r["ratio_drain_p99_vs_sqlite"] = _ratio(
                    r["drain_lag"].get("p99_ms"), base["drain_lag"].get("p99_ms")
                )
                r["ratio_trickle_p99_vs_sqlite"] = _ratio(
                    r["trickle_lag"].get("p99_ms"), base["trickle_lag"].get("p99_ms")
                )
    return {
        "bench": "fleet",
        "lanes": lanes,
        "rate_per_lane_per_s": rate,
        "trickle_s": trickle_s,
        "outage_s": outage_s,
        "baseline": "sqlite (one head-office process, the embedded store)"
        if base is not None
        else None,
        "configurations": configs,
        "cpus": os.cpu_count(),
        "broker": "mosquitto (loopback), lanes through a TCP proxy process (the cut link)",
    }


def _ratio(a: float | int | None, b: float | int | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None


def run_one(
    workdir: Path,
    kind: str,
    workers: int,
    *,
    lanes: int,
    rate: float,
    trickle_s: float,
    outage_s: float,
    pg_url: str,
) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    with (
        MosquittoBroker(workdir / "broker") as broker,
        LinkProcess(broker.port, workdir) as link,
        scratch_schema(pg_url) if kind == "postgres" else contextlib.nullcontext(None) as url,
    ):
        if url is None:
            hos = [stack.headoffice(workdir, broker.port)]
        else:
            hos = stack.headoffice_workers(workdir, broker.port, workers, database_url=url)
        try:
            for ho in hos:
                ho.start()
            for ho in hos:
                ho.wait_notify("STATUS=subscribed", 60)
            out = asyncio.run(
                drive(link, hos, lanes=lanes, rate=rate, trickle_s=trickle_s, outage_s=outage_s)
            )
        finally:
            for ho in hos:
                ho.stop()
        rows, docs = read_sqlite(workdir / "headoffice.db") if url is None else read_postgres(url)
    confirmed = out.pop("confirmed")
    out["verified"] = verify(confirmed, rows, docs).as_dict()
    return {"store": kind, "workers": workers} | out


async def drive(
    link: LinkProcess,
    hos: list[stack.Component],
    *,
    lanes: int,
    rate: float,
    trickle_s: float,
    outage_s: float,
) -> dict[str, Any]:
    async with Fleet(lanes, link.port, replication=REPLICATION) as fleet:
        await fleet.wait_connected(120)
        t_trickle = time.monotonic()
        await fleet.trickle(rate, trickle_s)
        await fleet.wait_drained(120)  # the trickle's tail: lags are about the trickle alone
        t_cut = time.monotonic()
        link.cut()
        await fleet.trickle(rate, outage_s)
        if fleet.connected:
            raise stack.StackError(f"{fleet.connected} lanes still connected through a cut link")
        backlog = fleet.appended - fleet.acked
        marks = fleet.marks()
        ho_cpu0 = sum(h.cpu_s() for h in hos)
        own_cpu0 = _own_cpu_s()
        t_back = time.monotonic()
        link.resume()
        selling = asyncio.create_task(fleet.trickle(rate, 3600), name="fleet-drain-sales")
        try:
            reconnected = asyncio.create_task(_all_connected(fleet), name="fleet-reconnected")
            t_drained = await fleet.wait_drained(600, marks)
            ho_cpu = sum(h.cpu_s() for h in hos) - ho_cpu0
            own_cpu = _own_cpu_s() - own_cpu0
            t_reconnected = await reconnected
        finally:
            selling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await selling
        await fleet.wait_drained(120)  # everything, for the verification
        drain_s = t_drained - t_back
        drained = fleet.lags.acked_between(t_back, t_drained)
        return {
            "drain_entries_per_s": round(drained / drain_s),
            "drain_s": round(drain_s, 3),
            "drain_entries": drained,
            "backlog_at_reconnect": backlog,
            "all_lanes_reconnected_s": round(t_reconnected - t_back, 3),
            "trickle_lag": fleet.lags.summary(t_trickle, t_cut),
            "drain_lag": fleet.lags.summary(t_back, t_drained),
            "backlog_lag": fleet.lags.summary(t_cut, t_back),
            "entries": fleet.appended,
            "headoffice_cpu_s_in_drain": round(ho_cpu, 2),
            "fleet_cpu_s_in_drain": round(own_cpu, 2),
            "lane_stats": fleet.stats(),
            "confirmed": list(fleet.confirmed()),
        }


async def _all_connected(fleet: Fleet) -> float:
    await fleet.wait_connected(600)
    return time.monotonic()


def _own_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


@contextlib.contextmanager
def scratch_schema(pg_url: str) -> Iterator[str]:
    """A schema of its own in `pg_url`'s database for one configuration; dropped after."""
    name = f"lanesync_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {name}")
    sep = "&" if "?" in pg_url else "?"
    try:
        yield f"{pg_url}{sep}options=-csearch_path%3D{name}"
    finally:
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA {name} CASCADE")


class LinkProcess:
    """Head office's internet link: a TcpProxy in a process of its own (so relaying the whole
    fleet's bytes does not compete with the lanes for one interpreter), cut and restored by
    signals."""

    def __init__(self, upstream_port: int, workdir: Path) -> None:
        self.upstream_port = upstream_port
        self.workdir = workdir
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> LinkProcess:
        self._proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "lanesync.fleet", "link", str(self.upstream_port)],
            stdout=subprocess.PIPE,
            stderr=(self.workdir / "link.log").open("ab"),
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line.strip().isdigit():
            self.__exit__()
            raise stack.StackError(f"the link proxy did not start: {line!r}")
        self.port = int(line)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            if self._proc.stdout is not None:
                self._proc.stdout.close()
            self._proc = None

    def _signal(self, sig: signal.Signals) -> None:
        assert self._proc is not None
        self._proc.send_signal(sig)
        assert self._proc.stdout is not None
        self._proc.stdout.readline()  # the proxy answers once it switched

    def cut(self) -> None:
        self._signal(signal.SIGUSR1)

    def resume(self) -> None:
        self._signal(signal.SIGUSR2)
