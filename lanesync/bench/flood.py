"""`lanesync bench flood`: one store publishing garbage flat out while honest lanes trickle.

Issue 12 found that 1,000,000 malformed messages from one store's credentials (8,000 a second)
grew head office from 91 to 312 MB and held back an honest lane's acks for up to 81 s: head
office queued whatever the broker delivered, in arrival order, without bound. This benchmark
runs the same attack against head office's inbox (headoffice.inbox: a bounded queue per store,
served in turn, the excess shed).

A fresh Mosquitto and a head-office process (SQLite) run as their own processes; `--lanes`
honest lanes (lanesync.fleet: the agent's replicator over in-memory journals with real hash
chains, in a process of their own) trickle `--rate` sales a second each. Two phases of
`--seconds` each, in one run:

- baseline: the honest trickle alone;
- flood: the same trickle while `--flood-procs` processes publish garbage as store SFLOOD
  (its own client ids and its own topics, as a store's credentials allow) as fast as the
  broker takes it, QoS 1: random bytes, msgpack of the wrong shape, batches whose chain does
  not hold, hellos naming ever new epochs.

Reported: the honest lanes' append-to-ack lag (p50/p99/max) in each phase and the ratio of the
flood's p99 to the baseline's; head office's RSS at the start, its peak and at the end of each
phase (sampled every 0.2 s); messages the flood got to the broker and their rate; messages
head office shed, per store (from its /metrics); and the honest lanes' entries verified in
head office's database (lost, duplicated, order). The aim from issue 12: honest p99 under 1 s
and RSS flat while the flood runs.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import random
import sys
import threading
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import msgpack
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from lanesync import stack
from lanesync.bench.common import in_workdir, print_result, scrape
from lanesync.bench.fleet import FleetProcesses
from lanesync.broker import MosquittoBroker, free_port
from lanesync.fleet import Lags, read_sqlite, verify
from protocol import codec
from protocol.identity import DEFAULT_PREFIX, LaneId
from protocol.messages import Entry, Hello, JournalBatch

FLOOD_STORE = "SFLOOD"
FLOOD_LANES = 8
POOL = 2000  # distinct garbage payloads each flooder cycles through
MAX_OUTSTANDING = 2000  # publishes not yet PUBACKed before a flooder waits a moment


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("flood", help="one store flooding head office while honest lanes trickle")
    p.add_argument("--lanes", type=int, default=40, help="honest lanes (40)")
    p.add_argument("--rate", type=float, default=1.0, help="sales per honest lane a second (1)")
    p.add_argument("--seconds", type=float, default=20.0, help="length of each phase (20)")
    p.add_argument("--flood-procs", type=int, default=1, help="processes publishing garbage (1)")
    p.add_argument(
        "--flood-rate",
        type=float,
        default=0.0,
        help="messages a second per flooding process; 0: as fast as the broker takes them (0)",
    )
    p.add_argument("--json", action="store_true", help="print only the JSON result")
    p.add_argument("--workdir", help="keep files here instead of a temporary directory")
    p.set_defaults(handler=cmd_flood)


def cmd_flood(args: argparse.Namespace) -> int:
    problems = []
    if args.lanes < 1:
        problems.append("--lanes: must be at least 1")
    if not args.rate > 0:
        problems.append("--rate: must be above 0")
    if not args.seconds > 0:
        problems.append("--seconds: must be above 0")
    if not 1 <= args.flood_procs <= 8:
        problems.append("--flood-procs: must be 1..8")
    if args.flood_rate < 0:
        problems.append("--flood-rate: must be 0 (flat out) or above")
    if problems:
        for p in problems:
            print(f"lanesync bench flood: {p}", file=sys.stderr)
        return 2
    result = in_workdir(
        args.workdir,
        "flood",
        lambda d: run(
            d,
            lanes=args.lanes,
            rate=args.rate,
            seconds=args.seconds,
            flood_procs=args.flood_procs,
            flood_rate=args.flood_rate,
            quiet=args.json,
        ),
    )
    print_result(result, args.json)
    return 0 if result["verified"]["ok"] and result["headoffice_alive"] else 1


def _say(quiet: bool, text: str) -> None:
    if not quiet:
        print(text, file=sys.stderr, flush=True)


def run(
    workdir: Path,
    *,
    lanes: int,
    rate: float,
    seconds: float,
    flood_procs: int,
    quiet: bool,
    flood_rate: float = 0.0,
) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    metrics_port = free_port()
    with MosquittoBroker(workdir / "broker") as broker:
        ho = stack.headoffice(workdir, broker.port, metrics_port=metrics_port)
        ho.start()
        try:
            ho.wait_notify("STATUS=subscribed", 60)
            rss = RssSampler(ho.pid)
            with rss:
                out = drive(
                    workdir,
                    broker,
                    ho,
                    rss,
                    metrics_port,
                    lanes=lanes,
                    rate=rate,
                    seconds=seconds,
                    flood_procs=flood_procs,
                    flood_rate=flood_rate,
                    quiet=quiet,
                )
            alive = ho.proc is not None and ho.proc.poll() is None
        finally:
            ho.stop()
    rows, docs = read_sqlite(workdir / "headoffice.db")
    confirmed = out.pop("confirmed")
    out["verified"] = verify(confirmed, rows, docs).as_dict()
    out["headoffice_alive"] = alive
    return out


def drive(
    workdir: Path,
    broker: MosquittoBroker,
    ho: stack.Component,
    rss: RssSampler,
    metrics_port: int,
    *,
    lanes: int,
    rate: float,
    seconds: float,
    flood_procs: int,
    flood_rate: float,
    quiet: bool,
) -> dict[str, Any]:
    port = broker.port
    fleet = FleetProcesses(1, lanes, port, workdir)

    def cpu() -> dict[str, float]:
        return {
            "headoffice": ho.cpu_s(),
            "broker": stack.process_cpu_s(broker.pid),
            "lanes": fleet.cpu_s(),
        }

    try:
        fleet.call("connect", 120.0)
        fleet.call("drained", 60.0, False)  # the hellos' acks: every lane is in step
        _say(quiet, f"baseline: {lanes} honest lanes at {rate}/s for {seconds:g} s ...")
        rss_start = rss.now_mb()
        cpu0 = cpu()
        t0 = time.monotonic()
        fleet.call("trickle", seconds, rate)
        t1 = time.monotonic()
        fleet.call("drained", 120.0, False)
        base_rss = rss.window(t0, time.monotonic())
        base_cpu = {k: round(v - cpu0[k], 2) for k, v in cpu().items()}
        metrics_before = scrape(metrics_port)
        _say(quiet, f"flood: the same trickle while {flood_procs} process(es) flood ...")
        with Flooders(flood_procs, port, seconds + 1.0, flood_rate) as flooders:
            time.sleep(1.0)  # the flood is under way before the honest clock starts
            cpu1 = cpu()
            t2 = time.monotonic()
            fleet.call("trickle", seconds, rate)
            t3 = time.monotonic()
            published = flooders.result()
        fleet.call("drained", 120.0, False)
        t4 = time.monotonic()
        flood_rss = rss.window(t2 - 1.0, t4)
        flood_cpu = {k: round(v - cpu1[k], 2) for k, v in cpu().items()}
        rss_end = rss.now_mb()
        metrics = scrape(metrics_port)
        results = fleet.call("result")
    finally:
        fleet.close()
    lags = Lags()
    for r in results:
        lags.appended += r["appended_at"]
        lags.acked += r["acked_at"]
    base = lags.summary(t0, t1)
    flood = lags.summary(t2, t3)
    shed = {
        k.split('store="', 1)[1].rstrip('"}'): int(v)
        for k, v in metrics.items()
        if k.startswith("lanesync_ho_messages_shed_total{")
    }
    return {
        "bench": "flood",
        "lanes": lanes,
        "rate_per_lane_per_s": rate,
        "phase_s": seconds,
        "baseline": "the same honest trickle without the flood, in this run",
        "honest_lag_baseline": base,
        "honest_lag_flood": flood,
        "ratio_p99_flood_vs_baseline": _ratio(flood.get("p99_ms"), base.get("p99_ms")),
        "aim": "honest p99 under 1000 ms, head office RSS flat while the flood runs",
        "flood": {
            "store": FLOOD_STORE,
            "processes": flood_procs,
            "rate_asked_per_process": flood_rate or "flat out",
            "messages_to_broker": published["acked"],
            "per_s": round(published["acked"] / max(published["seconds"], 1e-9)),
            "payload_kinds": "random bytes, msgpack of the wrong shape, broken chains, hellos "
            "naming new epochs",
        },
        "headoffice_rss_mb": {
            "start": rss_start,
            "baseline_peak": base_rss["peak"],
            "baseline_end": base_rss["end"],
            "flood_peak": flood_rss["peak"],
            "flood_end": flood_rss["end"],
            "end": rss_end,
        },
        # CPU seconds per phase: head office, the broker, the honest lanes' process (the
        # flooders run at a lower priority and take what is left)
        "cpu_s": {"baseline": base_cpu, "flood": flood_cpu},
        "headoffice": {
            "messages": int(metrics.get("lanesync_ho_messages_total", 0)),
            "messages_in_flood": int(
                metrics.get("lanesync_ho_messages_total", 0)
                - metrics_before.get("lanesync_ho_messages_total", 0)
            ),
            "shed": shed,
            "shed_total": sum(shed.values()),
            "quarantined": int(metrics.get("lanesync_ho_quarantined_total", 0)),
            "epochs_refused": int(metrics.get("lanesync_ho_epochs_refused_total", 0)),
            "inbox_messages_at_end": int(metrics.get("lanesync_ho_inbox_messages", 0)),
        },
        "cpus": os.cpu_count(),
        "confirmed": [c for r in results for c in r["confirmed"]],
    }


def _ratio(a: float | int | None, b: float | int | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None


class RssSampler:
    """Head office's resident set, sampled every 0.2 s in a thread, in MiB."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def now_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
        raise stack.StackError("VmRSS not found")

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            with contextlib.suppress(OSError, stack.StackError):
                self.samples.append((time.monotonic(), self.now_mb()))

    def window(self, start: float, end: float) -> dict[str, float]:
        xs = [mb for t, mb in self.samples if start <= t <= end] or [self.now_mb()]
        return {"peak": max(xs), "end": xs[-1]}


def garbage(rng: random.Random, n: int) -> Iterator[tuple[str, bytes]]:
    """(topic, payload) of a store sending what no lane sends, under its own topics. A tenth
    are hellos naming a new epoch each (made as they are sent: `hello_for_new_epoch`)."""
    for i in range(n):
        lane = LaneId(FLOOD_STORE, f"L{i % FLOOD_LANES}")
        topic = f"{DEFAULT_PREFIX}/{lane.store}/{lane.lane}"
        kind = i % 10
        if kind < 6:
            yield f"{topic}/journal", rng.randbytes(rng.randrange(16, 400))
        elif kind < 8:
            junk = {"v": 1, "t": "batch", "entries": [rng.randbytes(8)], "x": rng.random()}
            yield f"{topic}/journal", msgpack.packb(junk)
        elif kind < 9:
            entry = Entry(1, "sale", "0" * 8 + "-0000-7000-8000-" + "0" * 12, 1, b"", bytes(32))
            batch = JournalBatch(lane, rng.randrange(1, 1 << 62), rng.randbytes(32), [entry])
            yield f"{topic}/journal", codec.encode(batch)
        else:
            yield f"{topic}/hello", b""


def hello_for_new_epoch(rng: random.Random, topic: str) -> bytes:
    _, store, lane, _ = topic.rsplit("/", 3)
    return codec.encode(Hello(LaneId(store, lane), rng.randrange(1, 1 << 62), 0, 1, "flood", 0))


class Flooders:
    """`procs` processes, each one MQTT client of store SFLOOD publishing garbage at QoS 1
    as fast as the broker acknowledges it, for `seconds`."""

    def __init__(self, procs: int, port: int, seconds: float, rate: float) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conns: list[Connection] = []
        self._procs: list[BaseProcess] = []
        for i in range(procs):
            parent, child = ctx.Pipe()
            proc = ctx.Process(
                target=_flood, args=(child, port, seconds, rate, i), name=f"flood-{i}"
            )
            proc.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(proc)

    def __enter__(self) -> Flooders:
        return self

    def result(self) -> dict[str, float]:
        acked = 0
        longest = 0.0
        for conn in self._conns:
            r = conn.recv()
            if "error" in r:
                raise stack.StackError(f"flooder failed: {r['error']}")
            acked += r["acked"]
            longest = max(longest, r["seconds"])
        return {"acked": acked, "seconds": longest}

    def __exit__(self, *exc: object) -> None:
        for proc in self._procs:
            proc.join(30)
            if proc.is_alive():
                proc.kill()
                proc.join()
        for conn in self._conns:
            conn.close()


def _flood(conn: Connection, port: int, seconds: float, rate: float, n: int) -> None:
    # The flooding store stands for a store elsewhere: on this one machine it must not take
    # head office's CPU (that would measure the benchmark, not head office), so it runs at a
    # lower priority and floods with every cycle the others leave.
    os.nice(10)
    try:
        conn.send(flood(port, seconds, rate, n))
    except Exception as exc:  # noqa: BLE001 - sent to the parent, which raises it there
        conn.send({"error": repr(exc)})
    finally:
        conn.close()


def flood(port: int, seconds: float, rate: float, n: int) -> dict[str, float]:
    """Publish garbage for `seconds` (at `rate` a second, or flat out for 0); returns how
    many the broker acknowledged."""
    rng = random.Random(n)
    pool = list(garbage(rng, POOL))
    acked = 0
    lock = threading.Lock()

    def on_publish(*_: Any) -> None:
        nonlocal acked
        with lock:
            acked += 1

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"lanesync-{FLOOD_STORE}-flood{n}")
    client.max_inflight_messages_set(MAX_OUTSTANDING)
    client.on_publish = on_publish
    client.connect("127.0.0.1", port)
    client.loop_start()
    sent = 0
    started = time.monotonic()
    try:
        while (now := time.monotonic()) - started < seconds:
            if sent - acked > MAX_OUTSTANDING or (rate and sent > rate * (now - started)):
                time.sleep(0.001)
                continue
            topic, payload = pool[sent % len(pool)]
            info = client.publish(topic, payload or hello_for_new_epoch(rng, topic), qos=1)
            if info.rc != paho.MQTT_ERR_SUCCESS:
                time.sleep(0.01)
                continue
            sent += 1
        took = now - started
    finally:
        client.disconnect()
        client.loop_stop()
    return {"acked": acked, "seconds": took}
