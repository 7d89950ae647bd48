"""`lanesync bench api`: durable documents through the local API vs straight to the journal.

An agent runs as its own process (as in the field) with its API on a Unix socket; 32 POS
clients submit realistic sale documents (each names its txn_id, the agent numbers it) and the
clock runs from each request until its confirmation, which the agent sends only once the
journal entry is committed (invariant 1). Two runs: paced at --rate documents/s (open loop:
latency includes any queueing), then as fast as the clients go (closed loop: throughput).

Baseline, in the same run: the same documents appended straight to a Journal in this process
by 32 concurrent appenders (no HTTP, no validation, no numbering), closed loop.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import uuid6

from agent.journal import Journal
from lanesync import samples, stack
from lanesync.bench.common import in_workdir, print_result
from lanesync.bench.drain import AGENT_TARGETS
from protocol.identity import LaneId

LANE = LaneId("S1", "L1")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("api", help="documents through the local API vs straight to the journal")
    p.add_argument("--docs", type=int, default=5000, help="documents per run (5000)")
    p.add_argument("--rate", type=float, default=500.0, help="paced run, documents/s (500)")
    p.add_argument("--clients", type=int, default=32, help="concurrent POS clients (32)")
    p.add_argument("--json", action="store_true", help="print only the JSON result")
    p.add_argument("--workdir", help="keep files here instead of a temporary directory")
    p.add_argument("--seed", type=int, default=1, help="random seed for the documents")
    p.set_defaults(handler=cmd_api)


def cmd_api(args: argparse.Namespace) -> int:
    if args.docs < args.clients or args.clients < 1 or args.rate <= 0:
        print("lanesync bench api: need --docs >= --clients >= 1 and --rate > 0", file=sys.stderr)
        return 2
    result = in_workdir(args.workdir, "api", lambda d: run(d, args))
    print_result(result, args.json)
    return 0 if result["errors"] == 0 else 1


def documents(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        doc = samples.sale(rng, LANE.store, LANE.lane, i + 1)
        del doc["register_no"]  # the agent numbers it, as for a POS that does not
        doc["txn_id"] = str(uuid6.uuid7())  # the POS names it, so a retry is not a new sale
        out.append(doc)
    return out


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def _stats(lat: list[float], wall: float) -> dict[str, Any]:
    return {
        "docs": len(lat),
        "docs_per_s": round(len(lat) / wall),
        "p50_ms": round(_pct(lat, 0.50), 2),
        "p99_ms": round(_pct(lat, 0.99), 2),
        "max_ms": round(max(lat) * 1000, 2),
        "mean_ms": round(statistics.fmean(lat) * 1000, 2),
    }


async def through_api(
    sock: Path, docs: list[dict[str, Any]], clients: int, rate: float | None
) -> tuple[list[float], float, int]:
    """Submit `docs` with `clients` concurrent POS clients; (latencies, wall, errors)."""
    lat: list[float] = []
    errors = 0
    t0 = time.perf_counter()
    connector = aiohttp.UnixConnector(path=str(sock), limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def client(k: int) -> None:
            nonlocal errors
            for i in range(k, len(docs), clients):
                if rate is not None:  # open loop: document i is due at i / rate
                    delay = t0 + i / rate - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                start = time.perf_counter()
                async with session.post("http://lane/v1/documents", json=docs[i]) as r:
                    await r.read()
                    if r.status != 201:
                        errors += 1
                lat.append(time.perf_counter() - start)

        await asyncio.gather(*(client(k) for k in range(clients)))
    return lat, time.perf_counter() - t0, errors


async def straight(
    path: Path, docs: list[dict[str, Any]], clients: int
) -> tuple[list[float], float]:
    lat: list[float] = []
    async with Journal(path, LANE) as journal:
        t0 = time.perf_counter()

        async def appender(k: int) -> None:
            for i in range(k, len(docs), clients):
                start = time.perf_counter()
                await journal.append("sale", docs[i], txn_id=docs[i]["txn_id"])
                lat.append(time.perf_counter() - start)

        await asyncio.gather(*(appender(k) for k in range(clients)))
        return lat, time.perf_counter() - t0


def run(workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    sock = workdir / "api.sock"
    cfg = stack.write_toml(
        workdir / "agent.toml",
        {
            "store": LANE.store,
            "lane": LANE.lane,
            "journal": {"path": str(workdir / "journal.db")},
            # No broker listens here: the replicator backs off, the lane trades offline.
            "broker": {"host": "127.0.0.1", "port": 9, "keepalive": 5},
            "api": {"socket": str(sock)},
            # No head office, so no catalog: the bench measures the API, not the rules.
            "catalog": {"trade_without": True},
        },
    )
    paced_docs = documents(args.docs, args.seed)
    max_docs = documents(args.docs, args.seed + 1)
    agent = stack.Component("bench-agent", ["agent", "--config", str(cfg)], workdir)
    try:
        t_spawn = time.perf_counter()
        agent.start().wait_notify("READY=1")
        ready_s = time.perf_counter() - t_spawn
        paced = asyncio.run(through_api(sock, paced_docs, args.clients, args.rate))
        flat = asyncio.run(through_api(sock, max_docs, args.clients, None))
        rss = agent.peak_rss_mb()
    finally:
        agent.stop()
    base_lat, base_wall = asyncio.run(
        straight(workdir / "baseline.db", paced_docs + max_docs, args.clients)
    )
    paced_s = _stats(paced[0], paced[1])
    max_s = _stats(flat[0], flat[1])
    base_s = _stats(base_lat, base_wall)
    return {
        "bench": "api",
        "clients": args.clients,
        "target_rate_per_s": args.rate,
        "paced": paced_s,
        "max": max_s,
        "baseline_journal": base_s,
        "ratio_vs_journal": round(max_s["docs_per_s"] / base_s["docs_per_s"], 2),
        "p99_target_met": paced_s["p99_ms"] < 20.0 and paced_s["docs_per_s"] >= 0.95 * args.rate,
        "errors": paced[2] + flat[2],
        "agent_peak_rss_mb": round(rss, 1),  # VmHWM over start and both runs
        "agent_start_to_ready_s": round(ready_s, 3),
        "agent_targets": AGENT_TARGETS,
        "baseline": "the same documents appended straight to a Journal in this process by the "
        "same number of concurrent appenders: group commit, no HTTP, no validation",
        "transport": "HTTP/1.1 over the agent's Unix socket (aiohttp client), agent in its own "
        "process, synchronous=FULL",
    }
