"""`lanesync bench fleet`: a fleet of lanes trickling, cut off from head office, then draining.

Per head-office configuration (SQLite; PostgreSQL with 1 ingest worker; PostgreSQL with 3 workers
owning stores through leases, `pg3`; and, for comparison, 3 workers on one shared subscription,
`pg3share`, the mode before issue 17.4) a fresh Mosquitto and head office run as their own
processes, and `--lanes` lanes (lanesync.fleet: the agent's replicator over in-memory
journals, one MQTT connection each) reach the broker through a TCP proxy process that stands
for head office's internet link. Phases:

- trickle: every lane confirms `--rate` sales a second (with jitter) for `--trickle-s`;
- outage: the link is cut (every connection reset) for `--outage-s`; lanes keep selling, at
  `--outage-rate`: the outage is compressed, so a minute leaves the backlog of a longer one;
- drain: the link is back; lanes reconnect (their backoff is capped at 2 s here) and send their
  backlog while still selling. The drain ends when every entry confirmed before the link came
  back is acked by head office.

Reported per configuration: sustained entries/s during the drain (entries acked between the
link's return and the end of the drain, over that time), p50/p99 append-to-ack lag of entries
confirmed during the trickle and during the drain, and lost/duplicated/out-of-order counts
verified in head office's database. SQLite's drain carries its ratio to the embedded store's
ceiling measured in the same run (lanesync.bench.ceiling: head office's SQLite inserting the
rows this drain committed, in as many transactions, and nothing else); SQLite is the baseline of
the PostgreSQL configurations, which carry the ratio of their drain rate and p99 lag to it.
With leases the trickle starts once every store is held (`leases_settled_s`), and each worker's
heartbeat row gives its gap holds and takeovers (`ingest_workers`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from lanesync import stack
from lanesync.bench.ceiling import rows_ceiling
from lanesync.bench.common import in_workdir, print_result, scrape
from lanesync.broker import MosquittoBroker, free_port
from lanesync.fleet import LANES_PER_STORE, Fleet, Lags, read_postgres, read_sqlite, verify
from lanesync.pgscratch import scratch_schema

# name: (store, workers, how workers share the lanes: None one process, "share" a shared
# subscription, "leases" stores leased in PostgreSQL)
BACKENDS: dict[str, tuple[str, int, str | None]] = {
    "sqlite": ("sqlite", 1, None),
    "pg1": ("postgres", 1, "share"),
    "pg3": ("postgres", 3, "leases"),
    "pg3share": ("postgres", 3, "share"),
}
DEFAULT_PG_URL = "postgresql://127.0.0.1:5432/test"
# The agent's replication defaults except two, so the drain measures head office more than the
# lanes' waiting: the reconnect backoff cap (30 s in the field; lanes come back within 2 s of the
# link), and publish_timeout_s, which also bounds the wait for CONNACK: aiomqtt 2.5 ignores a
# connection reset before CONNACK (Client._on_disconnect returns early while not connected), so
# an attempt made while the link was cut sat out the whole 10 s default before the next one.
REPLICATION = {"backoff_initial_s": 0.2, "backoff_max_s": 2.0, "publish_timeout_s": 3.0}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "fleet", help="many lanes trickling, cut off, then draining into head office"
    )
    p.add_argument("--lanes", type=int, default=1000, help="simulated lanes (1000)")
    p.add_argument(
        "--rate", type=float, default=0.25, help="sales per lane per second (0.25; a busy till)"
    )
    p.add_argument(
        "--outage-rate",
        type=float,
        default=2.0,
        help="sales per lane per second while cut off (2.0: the backlog of a longer outage)",
    )
    p.add_argument(
        "--drain-timeout-s", type=float, default=300.0, help="give up on a drain after (300)"
    )
    p.add_argument("--trickle-s", type=float, default=10.0, help="seconds before the cut (10)")
    p.add_argument("--outage-s", type=float, default=60.0, help="seconds the link is cut (60)")
    p.add_argument(
        "--backends",
        default="sqlite,pg1,pg3",
        help="comma-separated: sqlite, pg1 (PostgreSQL, 1 worker), pg3 (3 workers owning "
        "stores through leases), pg3share (3 workers on a shared subscription)",
    )
    p.add_argument(
        "--pg-url",
        default=os.environ.get("LANESYNC_TEST_PG_URL", DEFAULT_PG_URL),
        help=f"PostgreSQL database to make a scratch schema in ({DEFAULT_PG_URL})",
    )
    p.add_argument(
        "--fleet-procs", type=int, default=2, help="processes the lanes are spread over (2)"
    )
    p.add_argument("--json", action="store_true", help="print only the JSON result")
    p.add_argument("--workdir", help="keep files here instead of a temporary directory")
    p.set_defaults(handler=cmd_fleet)


def cmd_fleet(args: argparse.Namespace) -> int:
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    problems = [
        f"--backends: unknown {b!r} ({', '.join(BACKENDS)})" for b in backends if b not in BACKENDS
    ]
    if not backends:
        problems.append(f"--backends: name at least one of {', '.join(BACKENDS)}")
    if args.lanes < 1:
        problems.append("--lanes: must be at least 1")
    if not 1 <= args.fleet_procs <= 16:
        problems.append("--fleet-procs: must be 1..16")
    if not args.rate > 0 or not args.outage_rate > 0:
        problems.append("--rate and --outage-rate: must be above 0")
    if not args.drain_timeout_s > 0:
        problems.append("--drain-timeout-s: must be above 0")
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
            outage_rate=args.outage_rate,
            drain_timeout_s=args.drain_timeout_s,
            trickle_s=args.trickle_s,
            outage_s=args.outage_s,
            pg_url=args.pg_url,
            quiet=args.json,
            fleet_procs=args.fleet_procs,
        ),
    )
    print_result(result, args.json)
    configs = result["configurations"].values()
    return 0 if all("error" not in r and r["verified"]["ok"] for r in configs) else 1


def _say(quiet: bool, text: str) -> None:
    if not quiet:
        print(text, file=sys.stderr, flush=True)


def run(
    workdir: Path,
    backends: list[str],
    *,
    lanes: int,
    rate: float,
    outage_rate: float,
    trickle_s: float,
    outage_s: float,
    drain_timeout_s: float,
    pg_url: str,
    quiet: bool,
    fleet_procs: int = 2,
) -> dict[str, Any]:
    configs: dict[str, dict[str, Any]] = {}
    for name in backends:
        kind, workers, mode = BACKENDS[name]
        _say(quiet, f"{name}: {lanes} lanes, {kind}, {workers} worker(s), {mode or 'one'} ...")
        try:
            configs[name] = run_one(
                workdir / name,
                kind,
                workers,
                mode=mode,
                lanes=lanes,
                rates=(rate, outage_rate),
                trickle_s=trickle_s,
                outage_s=outage_s,
                drain_timeout_s=drain_timeout_s,
                pg_url=pg_url,
                fleet_procs=fleet_procs,
            )
        except stack.StackError as exc:
            configs[name] = {"store": kind, "workers": workers, "mode": mode, "error": str(exc)}
            _say(quiet, f"{name}: FAILED: {exc}")
            continue
        _say(quiet, f"{name}: drain {configs[name]['drain_entries_per_s']} entries/s")
    base = configs.get("sqlite")
    if base is not None and "error" not in base:
        for name, r in configs.items():
            if name != "sqlite" and "error" not in r:
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
        "outage_rate_per_lane_per_s": outage_rate,
        "trickle_s": trickle_s,
        "outage_s": outage_s,
        "baseline": "sqlite (one head-office process, the embedded store)"
        if base is not None and "error" not in base
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
    mode: str | None = None,
    lanes: int,
    rates: tuple[float, float],
    trickle_s: float,
    outage_s: float,
    drain_timeout_s: float,
    pg_url: str,
    fleet_procs: int,
) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    with (
        MosquittoBroker(workdir / "broker") as broker,
        LinkProcess(broker.port, workdir) as link,
        scratch_schema(pg_url, "lanesync_bench")
        if kind == "postgres"
        else contextlib.nullcontext(None) as url,
    ):
        probe: Callable[[], dict[str, int]] | None = None
        if url is None:
            metrics_port = free_port()
            hos = [stack.headoffice(workdir, broker.port, metrics_port=metrics_port)]
            probe = lambda: _commit_mark(workdir / "headoffice.db", metrics_port)  # noqa: E731
        else:
            hos = (
                stack.headoffice_workers(
                    workdir, broker.port, workers, database_url=url, share_group=None, leases=True
                )
                if mode == "leases"
                else stack.headoffice_workers(workdir, broker.port, workers, database_url=url)
            )
        settle: Callable[[], None] | None = None
        settled: dict[str, Any] = {}
        if url is not None and mode == "leases":
            stores = -(-lanes // LANES_PER_STORE)
            settle = lambda: settled.update(wait_leases(url, stores, workers))  # noqa: E731
        try:
            for ho in hos:
                ho.start()
            for ho in hos:
                ho.wait_notify("STATUS=subscribed", 60)
            fleet = FleetProcesses(fleet_procs, lanes, link.port, workdir)
            try:
                cpu = CpuMeter(
                    {
                        "headoffice": lambda: sum(h.cpu_s() for h in hos),
                        "lanes": fleet.cpu_s,
                        "link": lambda: stack.process_cpu_s(link.pid),
                        "broker": lambda: stack.process_cpu_s(broker.pid),
                        "postgres": lambda: sum(
                            stack.process_cpu_s(p) for p in stack.processes_named("postgres")
                        ),
                    }
                )
                out = drive(
                    link,
                    fleet,
                    cpu,
                    rates=rates,
                    trickle_s=trickle_s,
                    outage_s=outage_s,
                    drain_timeout_s=drain_timeout_s,
                    settle=settle,
                    probe=probe,
                )
            finally:
                fleet.close()
        finally:
            for ho in hos:
                ho.stop()
        rows, docs = read_sqlite(workdir / "headoffice.db") if url is None else read_postgres(url)
        if settle is not None and url is not None:
            out["ingest_workers"] = read_workers(url)
    confirmed = out.pop("confirmed")
    out["verified"] = verify(confirmed, rows, docs).as_dict()
    if probe is not None:
        out |= _ceiling(workdir, out)
    return {"store": kind, "workers": workers, "mode": mode} | settled | out


def _commit_mark(db: Path, metrics_port: int) -> dict[str, int]:
    """Where head office's SQLite stands: its commits of journal entries so far (its
    /metrics) and the last journal rowid (rowid order is commit order)."""
    import sqlite3  # noqa: PLC0415 - only the SQLite ceiling needs it

    groups = scrape(metrics_port)["lanesync_ho_journal_groups_total"]
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        (rowid,) = conn.execute("SELECT coalesce(max(rowid), 0) FROM journal").fetchone()
    finally:
        conn.close()
    return {"groups": int(groups), "rowid": int(rowid)}


def _ceiling(workdir: Path, out: dict[str, Any]) -> dict[str, Any]:
    """The embedded store's ceiling for this drain (lanesync.bench.ceiling): the journal rows
    head office committed from the link's return on, as many as the drain acked, with their
    documents, in transactions of the drain's mean size (its commits of entries between the
    link's return and the end of the drain, read from its /metrics)."""
    back, drained = out.pop("commit_mark_at_back"), out.pop("commit_mark_at_drained")
    rows = drained["rowid"] - back["rowid"]
    groups = max(1, drained["groups"] - back["groups"])
    n = out["drain_entries"]
    txns = max(1, round(n / max(1.0, rows / groups)))
    ceiling_s = rows_ceiling(
        workdir / "headoffice.db", workdir / "ceiling.db", back["rowid"], n, txns
    )
    ceiling_per_s = n / ceiling_s
    return {
        "ceiling_per_s": round(ceiling_per_s),
        "ratio_drain_vs_ceiling": round(out["drain_entries_per_s"] / ceiling_per_s, 2),
        "ceiling_transactions": txns,
        "drain_entries_per_transaction": round(rows / groups, 1),
        "ceiling": "head office's SQLite schema in a fresh file (WAL, synchronous=FULL) "
        "inserting the rows this drain committed, in as many transactions of its mean size, "
        "and nothing else",
    }


def wait_leases(url: str, stores: int, workers: int, timeout: float = 60.0) -> dict[str, Any]:
    """Wait until every store is leased and every worker holds some (lease mode): the split
    the trickle should measure, not the first seconds' discovery and rebalancing."""
    import psycopg  # noqa: PLC0415 - only PostgreSQL runs need it

    started = time.monotonic()
    while True:
        with psycopg.connect(url) as conn:
            rows = conn.execute(
                "SELECT holder, count(*) FROM ingest_leases WHERE expires_at > now() "
                "AND store <> '*' GROUP BY holder"
            ).fetchall()
        if sum(n for _, n in rows) >= stores and len(rows) == workers:
            return {
                "leases_settled_s": round(time.monotonic() - started, 2),
                "stores_per_worker": sorted(int(n) for _, n in rows),
            }
        if time.monotonic() - started > timeout:
            raise stack.StackError(f"leases did not settle in {timeout} s: {rows}")
        time.sleep(0.1)


def read_workers(url: str) -> list[dict[str, Any]]:
    """Each lease worker's counters at its last heartbeat (or clean exit)."""
    import psycopg  # noqa: PLC0415 - only PostgreSQL runs need it

    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT worker, entries_applied, gaps, gaps_held, takeovers FROM ingest_workers "
            "ORDER BY worker"
        ).fetchall()
    keys = ("worker", "entries_applied", "gaps", "gaps_held", "takeovers")
    return [dict(zip(keys, r, strict=True)) for r in rows]


def drive(
    link: LinkProcess,
    fleet: FleetProcesses,
    cpu: CpuMeter,
    *,
    rates: tuple[float, float],
    trickle_s: float,
    outage_s: float,
    drain_timeout_s: float,
    settle: Callable[[], None] | None = None,
    probe: Callable[[], dict[str, int]] | None = None,
) -> dict[str, Any]:
    """The three phases, the fleet's processes stepping together (after `settle`, when
    given, once the lanes are connected). `probe`, when given, reads head office's commit mark
    just before the link's return and just after the drain, each outside the drain's clock."""
    rate, outage_rate = rates
    fleet.call("connect", 120.0)
    if settle is not None:
        settle()
    t_trickle = time.monotonic()
    fleet.call("trickle", trickle_s, rate)
    fleet.call("drained", drain_timeout_s, False)  # the trickle's tail: lags about it alone
    t_cut = time.monotonic()
    link.cut()
    after_cut = fleet.call("trickle", outage_s, outage_rate)
    still = sum(r["connected"] for r in after_cut)
    if still:
        raise stack.StackError(f"{still} lanes still connected through a cut link")
    backlog = sum(r["appended"] - r["acked"] for r in after_cut)
    fleet.call("mark")
    mark_at_back = probe() if probe is not None else None
    cpu0 = cpu.sample()
    t_back = time.monotonic()
    link.resume()
    fleet.call("sell", rate)  # lanes keep selling while they drain
    drained = fleet.call("drained", drain_timeout_s, True)
    t_drained = max(r["at"] for r in drained)
    cpu_used = cpu.since(cpu0)
    mark_at_drained = probe() if probe is not None else None
    fleet.call("stop-selling")
    fleet.call("drained", drain_timeout_s, False)  # everything, for the verification
    results = fleet.call("result")
    lags = Lags()
    for r in results:
        lags.appended += r["appended_at"]
        lags.acked += r["acked_at"]
    drain_s = t_drained - t_back
    drained_entries = lags.acked_between(t_back, t_drained)
    stats: dict[str, int] = {}
    for r in results:
        for k, v in r["stats"].items():
            stats[k] = stats.get(k, 0) + v
    per_s = lags.rate_windows(t_back, t_drained)
    t_all_back = max(r["reconnected_at"] for r in drained)
    return {
        "drain_entries_per_s": round(drained_entries / drain_s),
        # the best second, and the rate once every lane was back (the lanes' reconnect spread
        # excluded: what head office sustained while all of them were sending)
        "drain_peak_1s_entries_per_s": max(per_s),
        "drain_after_all_reconnected_entries_per_s": round(
            lags.acked_between(t_all_back, t_drained) / (t_drained - t_all_back)
        )
        if t_drained - t_all_back > 1.0
        else None,
        "drain_entries_per_s_by_second": per_s,
        "drain_s": round(drain_s, 3),
        "drain_entries": drained_entries,
        "backlog_at_reconnect": backlog,
        "all_lanes_reconnected_s": round(t_all_back - t_back, 3),
        "trickle_lag": lags.summary(t_trickle, t_cut),
        # p99 of the sales made in each second of the trickle: a stall shows where it was
        "trickle_p99_ms_by_second": [
            lags.summary(t, min(t + 1.0, t_cut)).get("p99_ms")
            for t in (t_trickle + i for i in range(math.ceil(t_cut - t_trickle)))
        ],
        "drain_lag": lags.summary(t_back, t_drained),
        "backlog_lag": lags.summary(t_cut, t_back),
        "entries": len(lags.appended),
        # Where the machine's CPU went during the drain (of drain_s x cpus available): head
        # office; the simulated lanes; the relay standing for the WAN link; the broker; and
        # every PostgreSQL process on the machine.
        "cpu_s_in_drain": cpu_used,
        "cpu_s_available_in_drain": round(drain_s * (os.cpu_count() or 1), 2),
        "fleet_processes": len(results),
        "lane_stats": stats,
        "confirmed": [c for r in results for c in r["confirmed"]],
    } | (
        {"commit_mark_at_back": mark_at_back, "commit_mark_at_drained": mark_at_drained}
        if probe is not None
        else {}
    )


class CpuMeter:
    """CPU seconds of named parts of the run, sampled together."""

    def __init__(self, parts: dict[str, Callable[[], float]]) -> None:
        self.parts = parts

    def sample(self) -> dict[str, float]:
        return {name: read() for name, read in self.parts.items()}

    def since(self, before: dict[str, float]) -> dict[str, float]:
        return {name: round(v - before[name], 2) for name, v in self.sample().items()}


class FleetProcesses:
    """The fleet split over processes (one interpreter cannot drive 1000 MQTT clients and
    reconnect them all at once on one core); `call` sends a step to every process and waits
    for all of them. Monotonic clocks are shared by processes on one machine, so their
    timestamps compare."""

    def __init__(self, procs: int, lanes: int, port: int, workdir: Path) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conns: list[Connection] = []
        self._procs: list[BaseProcess] = []
        per = -(-lanes // procs)
        for i, first in enumerate(range(0, lanes, per)):
            parent, child = ctx.Pipe()
            proc = ctx.Process(
                target=_fleet_process,
                args=(child, first, min(per, lanes - first), port, i + 1, workdir),
                name=f"fleet-{i + 1}",
            )
            proc.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(proc)

    def call(self, op: str, *args: Any) -> list[dict[str, Any]]:
        for conn in self._conns:
            conn.send((op, args))
        out = []
        for conn in self._conns:
            reply = conn.recv()
            if "error" in reply:
                raise stack.StackError(f"fleet process failed at {op}: {reply['error']}")
            out.append(reply)
        return out

    def cpu_s(self) -> float:
        return sum(stack.process_cpu_s(proc.pid) for proc in self._procs)

    @property
    def pids(self) -> list[int]:
        """The fleet's processes (memory and CPU figures of a soak)."""
        return [proc.pid for proc in self._procs if proc.pid is not None]

    def close(self) -> None:
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.send(("quit", ()))
        for proc in self._procs:
            proc.join(30)
            if proc.is_alive():
                proc.kill()
                proc.join()
        for conn in self._conns:
            conn.close()


def _fleet_process(
    conn: Connection, first: int, lanes: int, port: int, seed: int, workdir: Path
) -> None:
    # A thousand lanes losing their link log thousands of lines (paho's socket errors, each
    # lane's reconnect and resend); they go to fleet-N.log beside head office's logs, so the
    # bench's own stderr (progress, errors) stays readable.
    logging.basicConfig(
        filename=workdir / f"fleet-{seed}.log",
        level=logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        asyncio.run(_fleet_steps(conn, first, lanes, port, seed))
    except Exception as exc:  # noqa: BLE001 - sent to the parent, which raises it there
        conn.send({"error": repr(exc)})
    finally:
        conn.close()


async def _fleet_steps(conn: Connection, first: int, lanes: int, port: int, seed: int) -> None:
    async with Fleet(
        lanes, port, replication=REPLICATION, seed=seed * 7919, first_lane=first
    ) as fleet:
        marks: list[int] | None = None
        selling: asyncio.Task[int] | None = None
        reconnected: asyncio.Task[float] | None = None
        while True:
            op, args = await asyncio.to_thread(conn.recv)
            reply: dict[str, Any] = {}
            if op == "connect":
                await fleet.wait_connected(args[0])
            elif op == "trickle":
                await fleet.trickle(args[1], args[0])
                reply = {
                    "appended": fleet.appended,
                    "acked": fleet.acked,
                    "connected": fleet.connected,
                }
            elif op == "mark":
                marks = fleet.marks()
            elif op == "sell":
                selling = asyncio.create_task(fleet.trickle(args[0], 3600), name="fleet-selling")
                reconnected = asyncio.create_task(_all_connected(fleet), name="fleet-back")
            elif op == "drained":
                at = await fleet.wait_drained(args[0], marks if args[1] else None)
                reply = {"at": at}
                if reconnected is not None:
                    reply["reconnected_at"] = await reconnected
                    reconnected = None
            elif op == "stop-selling" and selling is not None:
                selling.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await selling
            elif op == "result":
                reply = {
                    "appended_at": fleet.lags.appended,
                    "acked_at": fleet.lags.acked,
                    "stats": fleet.stats(),
                    "confirmed": list(fleet.confirmed()),
                }
            elif op == "quit":
                return
            conn.send(reply)


async def _all_connected(fleet: Fleet) -> float:
    await fleet.wait_connected(600)
    return time.monotonic()


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

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def _signal(self, sig: signal.Signals) -> None:
        assert self._proc is not None
        self._proc.send_signal(sig)
        assert self._proc.stdout is not None
        self._proc.stdout.readline()  # the proxy answers once it switched

    def cut(self) -> None:
        self._signal(signal.SIGUSR1)

    def resume(self) -> None:
        self._signal(signal.SIGUSR2)
