"""`lanesync bench drain`: journal N sales offline, then time the drain to head office.

The lane journals N realistic sale documents while no agent runs (the link is down), then the
agent starts: the clock runs from its READY until head office's ack covers the last entry,
i.e. until every entry is committed in the head-office database. Afterwards every txn_id the lane
confirmed is compared with what head office holds (lost, duplicated). The agent's start to
READY and its peak RSS (/proc VmHWM, over start and drain) are reported beside the aims.

Baseline, in the same run and through the same broker: what one would write by hand with
paho-mqtt, one QoS 1 message per document, each sent once the previous one's PUBACK is in, with
no journal and no head office (so it proves nothing reached a database). The same publishes
pipelined are reported too (`baseline_pipelined_per_s`), so the ratio can be read both ways.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from agent.journal import Journal
from lanesync import samples, stack
from lanesync.bench.common import in_workdir, print_result
from lanesync.broker import MosquittoBroker
from lanesync.reconcile import reconcile
from protocol import codec
from protocol.documents import check_document, encode_body
from protocol.identity import Channel, LaneId, Topics
from protocol.messages import Ack

# Issue 17.2's aims for the lane's process (a till has little memory to spare): reported
# beside the figures, never asserted.
AGENT_TARGETS = {"peak_rss_mb_below": 40, "start_to_ready_s_below": 0.5}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("drain", help="offline backlog drained to head office vs a paho baseline")
    p.add_argument("--entries", type=int, default=200_000, help="documents to journal (200000)")
    p.add_argument("--json", action="store_true", help="print only the JSON result")
    p.add_argument("--workdir", help="keep files here instead of a temporary directory")
    p.add_argument("--seed", type=int, default=1, help="random seed for the documents")
    p.set_defaults(handler=cmd_drain)


def cmd_drain(args: argparse.Namespace) -> int:
    if args.entries < 1:
        print("lanesync bench drain: --entries must be at least 1", file=sys.stderr)
        return 2
    result = in_workdir(
        args.workdir, "drain", lambda d: run(d, args.entries, args.seed, quiet=args.json)
    )
    print_result(result, args.json)
    return 0 if result["lost"] == 0 and result["duplicated"] == 0 else 1


def _say(quiet: bool, text: str) -> None:
    if not quiet:
        print(text, file=sys.stderr, flush=True)


async def journal_offline(path: Path, lane: LaneId, n: int, seed: int) -> tuple[float, list[bytes]]:
    """Append n sale documents through the journal (group commit, 256 POS clients at once)."""
    rng = random.Random(seed)
    docs = [samples.sale(rng, lane.store, lane.lane, i + 1) for i in range(n)]
    for d in docs:
        check_document(d)  # what the local API does before journaling
    t0 = time.perf_counter()
    async with Journal(path, lane) as journal:
        step = 256
        for i in range(0, n, step):
            await asyncio.gather(*(journal.append("sale", d) for d in docs[i : i + step]))
    bodies = [encode_body(d) for d in docs]  # the same bytes, for the baseline
    return time.perf_counter() - t0, bodies


class AckWatcher:
    """Subscribes to the lane's ack topic and notes when head office's hwm reaches a target."""

    def __init__(self, port: int, lane: LaneId, target: int) -> None:
        self.port, self.lane, self.target = port, lane, target
        self.done_at: float | None = None
        self.acks = 0
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


def run(workdir: Path, n: int, seed: int, *, quiet: bool) -> dict[str, Any]:
    lane = LaneId("S1", "L1")
    workdir.mkdir(parents=True, exist_ok=True)
    _say(quiet, f"journaling {n} sale documents offline ...")
    journal_s, bodies = asyncio.run(
        journal_offline(stack.journal_path(workdir, lane), lane, n, seed)
    )
    with MosquittoBroker(workdir / "broker") as broker:
        ho = stack.headoffice(workdir, broker.port)
        ag = stack.agent(workdir, lane, broker.port)
        watcher = AckWatcher(broker.port, lane, n)
        try:
            ho.start().wait_notify("STATUS=subscribed")
            watcher.start()
            _say(quiet, "draining to head office ...")
            t_spawn = time.perf_counter()
            ag.start()
            ag.wait_notify("READY=1")
            t_ready = time.perf_counter()
            cpu0 = ag.cpu_s(), ho.cpu_s()
            if not watcher.wait(timeout=max(120.0, n / 1000)):
                raise stack.StackError(
                    f"head office did not ack seq {n}; agent log:\n{ag.log_tail()}\n"
                    f"head office log:\n{ho.log_tail()}"
                )
            assert watcher.done_at is not None
            drain_s = watcher.done_at - t_ready
            wall_s = watcher.done_at - t_spawn
            rss = ag.peak_rss_mb()
            cpu = ag.cpu_s() - cpu0[0], ho.cpu_s() - cpu0[1]
        finally:
            watcher.stop()
            ag.stop()
            ho.stop()
        report = reconcile(stack.journal_path(workdir, lane), workdir / "headoffice.db", lane)
        _say(quiet, "baseline: paho-mqtt, one QoS 1 message per document ...")
        baseline_s = paho_baseline(broker.port, bodies, pipelined=False)
        pipelined_s = paho_baseline(broker.port, bodies, pipelined=True)
    entries_per_s = n / drain_s
    baseline_per_s = n / baseline_s
    pipelined_per_s = n / pipelined_s
    return {
        "bench": "drain",
        "entries": n,
        "confirmed": report.confirmed,
        "entries_per_s": round(entries_per_s),
        "baseline_per_s": round(baseline_per_s),
        "ratio": round(entries_per_s / baseline_per_s, 2),
        "lost": report.lost,
        "duplicated": report.duplicated,
        "order_kept": report.order_kept,
        "agent_peak_rss_mb": round(rss, 1),  # VmHWM over start and the whole drain
        "agent_start_to_ready_s": round(t_ready - t_spawn, 3),
        "agent_targets": AGENT_TARGETS,
        "drain_s": round(drain_s, 3),
        "agent_cpu_s": round(cpu[0], 2),
        "headoffice_cpu_s": round(cpu[1], 2),
        "drain_incl_agent_start_s": round(wall_s, 3),
        "entries_per_s_incl_agent_start": round(n / wall_s),
        "journal_offline_s": round(journal_s, 3),
        "journal_appends_per_s": round(n / journal_s),
        "baseline_s": round(baseline_s, 3),
        "baseline": "paho-mqtt 2, QoS 1, one message per document, each sent after the "
        "previous PUBACK (a hand-written reliable sender); broker only, nothing committed",
        "baseline_pipelined_per_s": round(pipelined_per_s),
        "ratio_vs_pipelined": round(entries_per_s / pipelined_per_s, 2),
        "broker": "mosquitto (loopback)",
    }
