"""`lanesync bench drain`: a running lane's backlog drained once its link comes back.

What a store lives through (issue 17.1): head office runs, the agent runs and is READY, but its
link is down (a TCP proxy from lanesync/proxy.py between the agent and the broker resets every
connection). N realistic sale documents are submitted through the running agent's local API by
32 POS clients and journaled. Then the link opens, and the clock runs from that moment until
head office's ack covers the last entry, i.e. until every entry is committed in the head-office
database (the ack is published only after the commit). Agent and head-office CPU per entry
(from /proc) are counted over the same interval only: journaling is not drain work. Afterwards
every txn_id the lane confirmed is compared with what head office holds (lost, duplicated).

Ceiling, in the same run: head office's own SQLite schema, in a fresh file with WAL and
synchronous=FULL as head office opens it, inserting exactly the rows this drain committed (read
back from the drained database) in exactly its transaction sizes (one head-office commit per
ack of a single lane), and nothing else: no broker, no decoding, no checks. That is the physical
limit of the embedded store, so `ratio` is the drain's share of it.

Reference, also in the same run (skip with --no-paho): what one would write by hand with
paho-mqtt, one QoS 1 message per document, each sent once the previous one's PUBACK is in, and
the same pipelined, straight to the broker, no journal and no head office.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from lanesync import stack
from lanesync.bench.ceiling import lane_ceiling
from lanesync.bench.common import in_workdir, print_result
from lanesync.broker import MosquittoBroker
from lanesync.proxy import ProxyThread
from lanesync.reconcile import reconcile
from protocol import codec
from protocol.documents import encode_body
from protocol.identity import Channel, LaneId, Topics
from protocol.messages import Ack

# Issue 17.2's aims for the lane's process (a till has little memory to spare): reported
# beside the figures, never asserted.
AGENT_TARGETS = {"peak_rss_mb_below": 40, "start_to_ready_s_below": 0.5}
# Issue 17.1's aims for the drain, reported beside the figures.
DRAIN_TARGETS = {"entries_per_s_at_least": 100_000, "ratio_to_ceiling_at_least": 0.5}
RECONNECT = {"backoff_initial_s": 0.01, "backoff_max_s": 0.05}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "drain", help="a running lane's backlog drained when its link opens, vs the SQLite ceiling"
    )
    p.add_argument("--entries", type=int, default=200_000, help="documents to journal (200000)")
    p.add_argument(
        "--no-paho", action="store_true", help="skip the paho-mqtt reference (broker only)"
    )
    p.add_argument(
        "--projection",
        choices=("on", "off", "both"),
        default="off",
        help="head office's extract projection (issue 17.3, off by default); both: drain the "
        "same backlog without it, then with it, and report the slowdown (off)",
    )
    p.add_argument("--json", action="store_true", help="print only the JSON result")
    p.add_argument("--workdir", help="keep files here instead of a temporary directory")
    p.add_argument("--seed", type=int, default=1, help="random seed for the documents")
    p.set_defaults(handler=cmd_drain)


def cmd_drain(args: argparse.Namespace) -> int:
    if args.entries < 1:
        print("lanesync bench drain: --entries must be at least 1", file=sys.stderr)
        return 2
    result = in_workdir(
        args.workdir,
        "drain",
        lambda d: run(
            d,
            args.entries,
            args.seed,
            quiet=args.json,
            paho_ref=not args.no_paho,
            projection=args.projection,
        ),
    )
    print_result(result, args.json)
    return 0 if result["lost"] == 0 and result["duplicated"] == 0 else 1


def _say(quiet: bool, text: str) -> None:
    if not quiet:
        print(text, file=sys.stderr, flush=True)


class AckWatcher:
    """Subscribes to the lane's ack topic and notes when head office's hwm reaches a target."""

    def __init__(self, port: int, lane: LaneId, target: int) -> None:
        self.port, self.lane, self.target = port, lane, target
        self.done_at: float | None = None
        self.first_at: float | None = None
        self.acks = 0
        self.hwms: list[int] = []  # every ack's hwm: a lane's acks, one per head-office commit
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="bench-ack-watcher", daemon=True)

    def start(self) -> AckWatcher:
        self._thread.start()
        if not self.ready.wait(10):
            raise stack.StackError("ack watcher could not subscribe")
        return self

    def _main(self) -> None:
        asyncio.run(self._watch())

    async def _watch(self) -> None:
        topic = Topics().topic(self.lane, Channel.ACK)
        async with aiomqtt.Client("127.0.0.1", self.port, identifier="bench-ack-watcher") as c:
            await c.subscribe(topic, qos=1)
            self.ready.set()
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._until_stopped(c))
                async for m in c.messages:
                    ack = codec.decode(bytes(m.payload))
                    self.acks += 1
                    if isinstance(ack, Ack):
                        self.hwms.append(ack.hwm)
                        if self.first_at is None and ack.hwm > 0:
                            self.first_at = time.perf_counter()
                    if isinstance(ack, Ack) and ack.hwm >= self.target and self.done_at is None:
                        self.done_at = time.perf_counter()
                        self._stop.set()
                    if self._stop.is_set():
                        break

    async def _until_stopped(self, c: aiomqtt.Client) -> None:
        while not self._stop.is_set():  # noqa: ASYNC110 - set from another thread
            await asyncio.sleep(0.05)
        # Publishing to our own topic wakes the message loop so it can see the stop flag.
        await c.publish(f"lanesync-bench/{id(self)}/wake", b"", qos=0)

    def wait(self, timeout: float) -> bool:
        self._thread.join(timeout)
        return self.done_at is not None

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def paho_baseline(port: int, bodies: list[bytes], *, pipelined: bool) -> float:
    """One QoS 1 publish per document with paho-mqtt; seconds until every PUBACK arrived.

    Serial (the hand-written sender that marks a document sent once its PUBACK is in, then
    sends the next) or pipelined (1000 published, then their PUBACKs awaited; paho keeps 20 in
    flight by default). Queueing all N in paho at once makes Mosquitto drop the client.
    """
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-baseline")
    connected = threading.Event()
    client.on_connect = lambda *a: connected.set()
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        if not connected.wait(10):
            raise stack.StackError("baseline: no CONNACK from the broker")
        t0 = time.perf_counter()
        infos = []
        for b in bodies:
            info = client.publish("bench/baseline/S1/L1/journal", b, qos=1)
            if info.rc != paho.MQTT_ERR_SUCCESS:
                raise stack.StackError(f"baseline: publish failed: {paho.error_string(info.rc)}")
            infos.append(info)
            if not pipelined or len(infos) % 1000 == 0:
                info.wait_for_publish(timeout=60)
        for info in infos:
            info.wait_for_publish(timeout=120)
        elapsed = time.perf_counter() - t0
        if not all(i.is_published() for i in infos):
            raise stack.StackError("baseline: not every message was acknowledged")
        return elapsed
    finally:
        client.disconnect()
        client.loop_stop()


def transactions(hwms: list[int], n: int) -> list[tuple[int, int]]:
    """Head office's commits of one lane as seq ranges, from the hwm of each of its acks
    (ingest publishes one ack per lane per committed group; a redelivered ack repeats a hwm)."""
    out: list[tuple[int, int]] = []
    last = 0
    for hwm in sorted(set(hwms)):
        if hwm > last:
            out.append((last + 1, min(hwm, n)))
            last = hwm
    return out


def _documents(n: int, seed: int) -> list[dict[str, Any]]:
    from lanesync.bench import api as bench_api  # noqa: PLC0415 - it imports AGENT_TARGETS

    return bench_api.documents(n, seed)


def fill_through_agent(sock: Path, n: int, seed: int) -> tuple[float, int]:
    """Submit n sale documents through the running agent's API (32 POS clients, closed loop);
    (seconds, errors)."""
    from lanesync.bench import api as bench_api  # noqa: PLC0415 - it imports AGENT_TARGETS

    docs = bench_api.documents(n, seed)
    _, wall, errors = asyncio.run(bench_api.through_api(sock, docs, 32, None))
    return wall, errors


def _journal_files(workdir: Path, lane: LaneId) -> list[Path]:
    path = stack.journal_path(workdir, lane)
    return [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]


def _snapshot(workdir: Path, lane: LaneId, *, restore: bool) -> None:
    """Keep (or put back) the filled journal, so each phase drains the very same backlog."""
    for f in _journal_files(workdir, lane):
        kept = f.with_name(f.name + ".filled")
        src, dst = (kept, f) if restore else (f, kept)
        dst.unlink(missing_ok=True)
        if src.exists():
            shutil.copyfile(src, dst)


def _phase(
    workdir: Path,
    broker: MosquittoBroker,
    link: ProxyThread,
    ag: stack.Component,
    lane: LaneId,
    n: int,
    projection: str,
    name: str,
) -> dict[str, Any]:
    """One drain: head office `name` (extract projection on or off) subscribed, the agent READY
    behind the closed link, then the link opens; the clock runs until the ack of seq n.

    CPU is taken over the same interval for every process the drain goes through: the agent,
    head office, the broker and this one (the TCP proxy standing in for the WAN, and the ack
    watcher), so the run can say what rate these costs allow on this machine at all."""
    broker_port = broker.port
    ho = stack.headoffice(workdir, broker_port, name=name)
    ho.env = {"LANESYNC_EXTRACT_PROJECTION": projection}
    watcher = AckWatcher(broker_port, lane, n)
    try:
        ho.start().wait_notify("STATUS=subscribed")
        watcher.start()
        if ag.proc is None or ag.proc.poll() is not None:
            t_spawn = time.perf_counter()
            ag.start()
            ag.wait_notify("READY=1")
            ready_s = time.perf_counter() - t_spawn
        else:
            ready_s = float("nan")
        if watcher.acks:
            raise stack.StackError("head office acked entries while the link was down")
        cpu0 = ag.cpu_s(), ho.cpu_s(), stack.process_cpu_s(broker.pid), time.process_time()
        t_open = time.perf_counter()
        link.resume()
        if not watcher.wait(timeout=max(120.0, n / 1000)):
            raise stack.StackError(
                f"head office did not ack seq {n}; agent log:\n{ag.log_tail()}\n"
                f"head office log:\n{ho.log_tail()}"
            )
        assert watcher.done_at is not None
        assert watcher.first_at is not None
        drain_s = watcher.done_at - t_open
        cpu = (
            ag.cpu_s() - cpu0[0],
            ho.cpu_s() - cpu0[1],
            stack.process_cpu_s(broker.pid) - cpu0[2],
            time.process_time() - cpu0[3],
        )
        rss = ag.peak_rss_mb()
        first_ack_s = watcher.first_at - t_open
    finally:
        watcher.stop()
        link.cut()
        ag.stop()
        ho.stop()
    db = workdir / f"{name}.db"
    report = reconcile(stack.journal_path(workdir, lane), db, lane)
    txns = transactions(watcher.hwms, n)
    sizes = [last - first + 1 for first, last in txns]
    return {
        "projection": projection,
        "drain_s": drain_s,
        "first_ack_s": first_ack_s,
        "cpu": cpu,
        "rss": rss,
        "ready_s": ready_s,
        "report": report,
        "txns": txns,
        "sizes": sizes,
        "db": db,
    }


def cpu_bounds(cpu: tuple[float, ...], n: int) -> dict[str, Any]:
    """What the measured CPU costs allow here, whatever the design around them: head office
    applies on one core (its ingest holds the GIL), so it cannot pass one entry per its CPU
    per entry; and every process of the drain shares this machine's cores, so together they
    cannot pass the cores over their summed CPU per entry (the bench runs on one box)."""
    cores = len(os.sched_getaffinity(0))
    total = sum(cpu)
    return {
        "cores": cores,
        "cpu_us_per_entry_all": round(total / n * 1e6, 1),
        "headoffice_bound_per_s": round(n / cpu[1]) if cpu[1] > 0 else None,
        "machine_bound_per_s": round(cores * n / total) if total > 0 else None,
        "bounds": "headoffice_bound: n over head office's CPU seconds (one core); "
        "machine_bound: cores x n over the CPU seconds of agent, head office, broker, "
        "link proxy and ack watcher together, all measured over this drain",
    }


def _start_and_fill(
    workdir: Path, ag: stack.Component, lane: LaneId, n: int, seed: int, quiet: bool
) -> tuple[float, float]:
    """Start the agent (link down) and journal n documents through it: (start to READY, fill)."""
    t_spawn = time.perf_counter()
    ag.start()
    ag.wait_notify("READY=1")
    ready_s = time.perf_counter() - t_spawn
    _say(quiet, f"{n} sale documents through the agent's API, link down ...")
    fill_s, errors = fill_through_agent(stack.api_socket_path(workdir, lane), n, seed)
    if errors:
        raise stack.StackError(f"the agent refused {errors} documents:\n{ag.log_tail()}")
    return ready_s, fill_s


def run(
    workdir: Path,
    n: int,
    seed: int,
    *,
    quiet: bool,
    paho_ref: bool = True,
    projection: str = "off",
) -> dict[str, Any]:
    """`projection` on, off, or both: off then on, each draining the same filled journal."""
    lane = LaneId("S1", "L1")
    workdir.mkdir(parents=True, exist_ok=True)
    modes = ["off", "on"] if projection == "both" else [projection]
    with (
        MosquittoBroker(workdir / "broker") as broker,
        ProxyThread("127.0.0.1", broker.port, name="bench-link") as link,
    ):
        link.cut()  # the link is down: every connection the agent opens is reset
        # Retries every 10-50 ms while the link is down, so the clock measures the drain, not
        # the field default's backoff (up to 30 s) after the link's return.
        ag = stack.agent(workdir, lane, link.port, replication=RECONNECT)
        try:
            ready_s, fill_s = _start_and_fill(workdir, ag, lane, n, seed, quiet)
            if len(modes) > 1:
                ag.stop()  # a restart with the backlog: the same journal for every phase
                _snapshot(workdir, lane, restore=False)
        except BaseException:
            ag.stop()
            raise
        phases = []
        for i, mode in enumerate(modes):
            if i:
                _snapshot(workdir, lane, restore=True)
            _say(quiet, f"link open: draining to head office (extract projection {mode}) ...")
            name = "headoffice" if len(modes) == 1 else f"headoffice-projection-{mode}"
            phases.append(_phase(workdir, broker, link, ag, lane, n, mode, name))
        main = phases[-1]
        _say(quiet, f"ceiling: the same rows in the same {len(main['txns'])} transactions ...")
        ceiling_s = lane_ceiling(main["db"], workdir / "ceiling.db", lane, main["txns"])
        paho: dict[str, Any] = {}
        drain_s = main["drain_s"]
        if paho_ref:
            _say(quiet, "reference: paho-mqtt, one QoS 1 message per document ...")
            bodies = [encode_body(d) for d in _documents(n, seed)]
            serial_s = paho_baseline(broker.port, bodies, pipelined=False)
            pipelined_s = paho_baseline(broker.port, bodies, pipelined=True)
            paho = {
                "paho_serial_per_s": round(n / serial_s),
                "ratio_vs_paho_serial": round(serial_s / drain_s, 2),
                "paho_pipelined_per_s": round(n / pipelined_s),
                "ratio_vs_paho_pipelined": round(pipelined_s / drain_s, 2),
                "paho": "paho-mqtt 2, QoS 1, one message per document, serial: each sent after "
                "the previous PUBACK (a hand-written reliable sender); pipelined: 1000 at a "
                "time; broker only, nothing committed",
            }
    entries_per_s = n / drain_s
    ceiling_per_s = n / ceiling_s
    report, cpu, sizes = main["report"], main["cpu"], main["sizes"]
    lost = sum(p["report"].lost for p in phases)
    duplicated = sum(p["report"].duplicated for p in phases)
    out: dict[str, Any] = {
        "bench": "drain",
        "entries": n,
        "confirmed": report.confirmed,
        "extract_projection": main["projection"],
        "entries_per_s": round(entries_per_s),
        "ceiling_per_s": round(ceiling_per_s),
        "ratio": round(entries_per_s / ceiling_per_s, 2),
        "targets": DRAIN_TARGETS,
        "lost": lost,
        "duplicated": duplicated,
        "order_kept": all(p["report"].order_kept for p in phases),
        "drain_s": round(drain_s, 3),
        "first_ack_s": round(main["first_ack_s"], 3),  # reconnect, hello, first group
        "agent_cpu_us_per_entry": round(cpu[0] / n * 1e6, 1),
        "headoffice_cpu_us_per_entry": round(cpu[1] / n * 1e6, 1),
        "broker_cpu_us_per_entry": round(cpu[2] / n * 1e6, 1),
        "link_and_watcher_cpu_us_per_entry": round(cpu[3] / n * 1e6, 1),
        "agent_cpu_s": round(cpu[0], 2),
        "headoffice_cpu_s": round(cpu[1], 2),
        **cpu_bounds(cpu, n),
        "transactions": len(main["txns"]),
        "entries_per_transaction": {
            "mean": round(n / max(1, len(main["txns"]))),
            "min": min(sizes, default=0),
            "max": max(sizes, default=0),
        },
        "ceiling_s": round(ceiling_s, 3),
        "ceiling": "head office's SQLite schema in a fresh file (WAL, synchronous=FULL) "
        "inserting the rows this drain committed, in its transactions, and nothing else",
    }
    if len(phases) > 1:
        off, on = phases
        off_ceiling_s = lane_ceiling(off["db"], workdir / "ceiling-off.db", lane, off["txns"])
        out["projection_off_entries_per_s"] = round(n / off["drain_s"])
        out["projection_off_ceiling_per_s"] = round(n / off_ceiling_s)
        out["projection_off_ratio"] = round(off_ceiling_s / off["drain_s"], 2)
        out["projection_off_headoffice_cpu_us_per_entry"] = round(off["cpu"][1] / n * 1e6, 1)
        out["projection_slowdown"] = round(on["drain_s"] / off["drain_s"] - 1, 3)
        out["projection_slowdown_at_most"] = 0.10
        out["projection_comparison"] = (
            "the same filled journal drained twice in this run, to a head office without the "
            "extract projection, then to one with it (each a fresh database; the agent "
            "restarted with its backlog before each)"
        )
    out |= {
        **paho,
        "agent_peak_rss_mb": round(main["rss"], 1),  # VmHWM of the last agent process
        "agent_start_to_ready_s": round(ready_s, 3),
        "agent_targets": AGENT_TARGETS,
        "fill_through_api_s": round(fill_s, 3),
        "fill_docs_per_s": round(n / fill_s),
        "reconnect_backoff_s": [RECONNECT["backoff_initial_s"], RECONNECT["backoff_max_s"]],
        "broker": "mosquitto (loopback), agent behind a TCP proxy",
    }
    return out
