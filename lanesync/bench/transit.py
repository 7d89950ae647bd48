"""`lanesync bench transit`: transit receive round trips with many lanes asking at once.

A real Mosquitto and head office (its own process, as in the field) with transits seeded into
its database; `--lanes` MQTT clients (one per lane of the receiving store) each look up a parcel
by SSCC (`transit_lookup`, mode receive) in a closed loop and finally all accept their own parcel
at the same moment (`transit_accept`, one committed transaction each). The clock runs from
publishing a request until its correlated reply arrives.

Baseline, in the same run and the same clients: a bare MQTT request/echo round trip (an echo
client answers every request at once, no head office, no database). `ratio` = p99 / baseline p99.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import socket
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiomqtt
import msgpack

from headoffice.db import SqliteDatabase
from headoffice.projections import PROJECTIONS
from lanesync import stack
from lanesync.broker import MosquittoBroker
from protocol import codec
from protocol.chain import entry_hash, genesis
from protocol.identity import Channel, LaneId, Topics
from protocol.messages import Entry, JournalBatch, Reply, Request

SOURCE = LaneId("A", "L1")
TOPICS = Topics()
NODELAY = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)  # as the replicator and ingest


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("transit", help="transit receive round trips (lookup, accept) vs MQTT echo")
    p.add_argument("--lanes", type=int, default=50, help="lanes asking at once (50)")
    p.add_argument("--requests", type=int, default=40, help="lookups per lane (40)")
    p.add_argument("--json", action="store_true", help="print only the JSON result")
    p.set_defaults(handler=cmd_transit)


def cmd_transit(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="lanesync-bench-transit-") as d:
        result = run(Path(d), args.lanes, args.requests)
    print(json.dumps(result, indent=None if args.json else 2))
    return 0 if result["errors"] == 0 else 1


def sscc(n: int) -> str:
    from biip.checksums import gs1_standard_check_digit  # noqa: PLC0415

    payload = f"357035389{n:08d}"
    return payload + str(gs1_standard_check_digit(payload))


def seed(db: Path, n: int) -> None:
    """n transits from A to B, journaled by A/L1 and ingested as head office would."""
    store = SqliteDatabase(db, projections=PROJECTIONS)
    try:
        epoch, prev, entries = 1, genesis(SOURCE, 1), []
        for i in range(1, n + 1):
            doc = {
                "kind": "transit_inventory",
                "register_no": f"T1{i:04d}",
                "transit_no": f"T1{i:04d}",
                "sscc": sscc(i),
                "source_store": "A",
                "dest_store": "B",
                "by": {"type": "staff", "id": "E1"},
                "currency": "EUR",
                "lines": [{"line_no": 1, "item": "P1000", "qty": "1.000"}],
            }
            body = msgpack.packb(doc, use_bin_type=True)
            txn, ts = str(uuid.uuid4()), time.time_ns() // 1_000_000
            h = entry_hash(prev, i, "transit_inventory", txn, ts, body)
            entries.append(Entry(i, "transit_inventory", txn, ts, body, h))
            prev = h
        store.apply_batch(JournalBatch(SOURCE, epoch, genesis(SOURCE, 1), entries), 0)
        store.commit()
    finally:
        store.close()


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)


def _stats(lat: list[float], wall: float) -> dict[str, Any]:
    return {
        "round_trips": len(lat),
        "per_s": round(len(lat) / wall) if wall else 0,
        "p50_ms": _pct(lat, 0.5),
        "p99_ms": _pct(lat, 0.99),
        "max_ms": round(max(lat) * 1000, 2),
    }


class LaneClient:
    def __init__(self, port: int, lane: LaneId) -> None:
        self.lane = lane
        self.client = aiomqtt.Client(
            "127.0.0.1", port, identifier=f"bench-{lane.lane}", socket_options=NODELAY
        )
        self.pending: dict[str, asyncio.Future[Reply]] = {}
        self.seq = itertools.count()

    async def receive(self) -> None:
        async for m in self.client.messages:
            msg = codec.decode(bytes(m.payload))
            if isinstance(msg, Reply) and msg.corr in self.pending:
                self.pending.pop(msg.corr).set_result(msg)

    async def ask(self, op: str, args: dict[str, Any]) -> tuple[float, Reply]:
        corr = f"{self.lane.lane}-{next(self.seq)}"
        fut: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self.pending[corr] = fut
        t0 = time.perf_counter()
        await self.client.publish(
            TOPICS.topic(self.lane, Channel.REQUEST),
            codec.encode(Request(self.lane, corr, op, args)),
            qos=1,
        )
        reply = await asyncio.wait_for(fut, 10)
        return time.perf_counter() - t0, reply


async def _echo(port: int, ready: asyncio.Event) -> None:
    async with aiomqtt.Client(
        "127.0.0.1", port, identifier="bench-echo", socket_options=NODELAY
    ) as c:
        await c.subscribe(TOPICS.all_lanes(Channel.REQUEST), qos=1)
        ready.set()
        async for m in c.messages:
            req = codec.decode(bytes(m.payload))
            assert isinstance(req, Request)
            rep = Reply(req.lane, req.corr, True, {"echo": True})
            await c.publish(TOPICS.topic(req.lane, Channel.REPLY), codec.encode(rep), qos=1)


async def _load(port: int, lanes: int, requests: int, ho: stack.Component) -> dict[str, Any]:
    errors = 0
    clients = [LaneClient(port, LaneId("B", f"L{i:02d}")) for i in range(lanes)]
    async with asyncio.TaskGroup() as tg:
        for cl in clients:
            await cl.client.__aenter__()
            await cl.client.subscribe(TOPICS.topic(cl.lane, Channel.REPLY), qos=1)
        receivers = [tg.create_task(cl.receive()) for cl in clients]

        async def loop(cl: LaneClient, op: str, n: int, args: dict[str, Any]) -> list[float]:
            nonlocal errors
            out = []
            for _ in range(n):
                dt, rep = await cl.ask(op, args)
                out.append(dt)
                errors += 0 if rep.ok else 1
            return out

        async def phase(op: str, n: int, argf: Any) -> dict[str, Any]:
            t0 = time.perf_counter()
            res = await asyncio.gather(*(loop(cl, op, n, argf(i)) for i, cl in enumerate(clients)))
            return _stats([x for r in res for x in r], time.perf_counter() - t0)

        ready = asyncio.Event()
        echo = tg.create_task(_echo(port, ready))
        await ready.wait()
        await phase("echo", 3, lambda i: {})  # warm-up
        baseline = await phase("echo", requests, lambda i: {})
        echo.cancel()
        ho.start().wait_notify("STATUS=subscribed", 30)
        await phase("transit_lookup", 3, lambda i: {"sscc": sscc(i + 1), "mode": "receive"})
        lookup = await phase(
            "transit_lookup", requests, lambda i: {"sscc": sscc(i + 1), "mode": "receive"}
        )
        accept = await phase(
            "transit_accept",
            1,
            lambda i: {"sscc": sscc(i + 1), "request_id": str(uuid.uuid4())},
        )
        for r in receivers:
            r.cancel()
        for cl in clients:
            await cl.client.__aexit__(None, None, None)
    return {
        "lanes": lanes,
        "baseline_mqtt_echo": baseline,
        "lookup": lookup,
        "accept_all_at_once": accept,
        "ratio_p99_lookup_vs_echo": round(lookup["p99_ms"] / max(baseline["p99_ms"], 0.01), 2),
        "p99_under_50ms": lookup["p99_ms"] < 50,
        "errors": errors,
    }


def run(workdir: Path, lanes: int, requests: int) -> dict[str, Any]:
    broker = MosquittoBroker(workdir / "broker").start()
    ho = stack.headoffice(workdir, broker.port)
    try:
        seed(workdir / "headoffice.db", lanes)
        return asyncio.run(_load(broker.port, lanes, requests, ho))
    finally:
        ho.stop()
        broker.stop()
