"""`lanesync bench start`: how fast a lane's agent is READY, and how much memory it holds.

A till restarts the agent after every update and power cut; until READY the POS cannot journal
a sale. Each run starts a real `lanesync agent` (fresh journal, no broker: it backs off, as on a
lane whose link is down) and times spawn to sd_notify READY=1, then reads its peak resident set
(/proc VmHWM) half a second later.

Baseline, interleaved run by run: a process that only imports the third-party libraries the
agent is built on and then reports READY the same way: the floor no agent of this design can
beat on this machine. The ratio says how much of the start is lanesync's own.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from lanesync import stack
from lanesync.bench.common import in_workdir, print_result
from lanesync.bench.drain import AGENT_TARGETS

# The agent's HTTP server is h11 (agent.httpserver) since issue 17.2, no longer aiohttp.web.
_LIBRARIES = (
    "asyncio, sqlite3, ssl, h11, aiomqtt, aiosqlite, msgpack, prometheus_client, "
    "tenacity, uuid6, serial, evdev"
)
_FLOOR = f"""
import os, socket, time
import {_LIBRARIES}
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.sendto(b"READY=1", os.environ["NOTIFY_SOCKET"])
time.sleep(60)
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("start", help="agent start to READY and its RSS vs its libraries alone")
    p.add_argument("--runs", type=int, default=10, help="starts of each (10)")
    p.add_argument("--json", action="store_true", help="print only the JSON result")
    p.add_argument("--workdir", help="keep files here instead of a temporary directory")
    p.set_defaults(handler=cmd_start)


def cmd_start(args: argparse.Namespace) -> int:
    if args.runs < 1:
        print("lanesync bench start: --runs must be at least 1", file=sys.stderr)
        return 2
    result = in_workdir(args.workdir, "start", lambda d: run(d, args.runs))
    print_result(result, args.json)
    return 0


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise stack.StackError(f"VmHWM not found for process {pid}")


def _time_to_ready(argv: list[str], workdir: Path) -> tuple[float, float]:
    """Spawn `argv`; (seconds to its READY=1, its peak RSS in MiB half a second later)."""
    workdir.mkdir(parents=True, exist_ok=True)
    sock_path = workdir / "notify"
    sock_path.unlink(missing_ok=True)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(sock_path))
        notify.settimeout(30)
        env = {**os.environ, "NOTIFY_SOCKET": str(sock_path)}
        env.pop("JOURNAL_STREAM", None)
        log = (workdir / "process.log").open("wb")
        t0 = time.perf_counter()
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter
            argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        try:
            try:
                while b"READY=1" not in notify.recv(4096):
                    pass
            except TimeoutError:
                raise stack.StackError(
                    f"no READY=1 within 30 s from {argv[:4]} (exit code {proc.poll()}); see "
                    f"{workdir / 'process.log'}"
                ) from None
            ready_s = time.perf_counter() - t0
            time.sleep(0.5)  # past READY: the first reconnect attempts, the API listening
            return ready_s, _peak_rss_mb(proc.pid)
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()


def _summary(samples: list[tuple[float, float]]) -> dict[str, float]:
    ready = [s[0] for s in samples]
    rss = [s[1] for s in samples]
    return {
        "ready_s_median": round(statistics.median(ready), 3),
        "ready_s_min": round(min(ready), 3),
        "ready_s_max": round(max(ready), 3),
        "peak_rss_mb_median": round(statistics.median(rss), 1),
        "peak_rss_mb_max": round(max(rss), 1),
    }


def run(workdir: Path, runs: int) -> dict[str, Any]:
    agent: list[tuple[float, float]] = []
    floor: list[tuple[float, float]] = []
    for i in range(runs):
        d = workdir / f"agent-{i}"
        d.mkdir(parents=True, exist_ok=True)
        cfg = stack.write_toml(
            d / "agent.toml",
            {
                "store": "S1",
                "lane": "L1",
                "journal": {"path": str(d / "journal.db")},
                # No broker listens here: the replicator backs off, the lane trades offline.
                "broker": {"host": "127.0.0.1", "port": 9},
                "api": {"socket": str(d / "api.sock")},
            },
        )
        agent.append(
            _time_to_ready([sys.executable, "-m", "lanesync.cli", "agent", "--config", str(cfg)], d)
        )
        floor.append(_time_to_ready([sys.executable, "-c", _FLOOR], workdir / f"floor-{i}"))
    a, f = _summary(agent), _summary(floor)
    return {
        "bench": "start",
        "runs": runs,
        "agent": a,
        "baseline_libraries_only": f,
        "ratio_ready": round(a["ready_s_median"] / f["ready_s_median"], 2),
        "ratio_rss": round(a["peak_rss_mb_median"] / f["peak_rss_mb_median"], 2),
        "agent_targets": AGENT_TARGETS,
        "agent_targets_met": {
            "peak_rss_mb_below": a["peak_rss_mb_median"] < AGENT_TARGETS["peak_rss_mb_below"],
            "start_to_ready_s_below": a["ready_s_median"] < AGENT_TARGETS["start_to_ready_s_below"],
        },
        "baseline": f"a process that imports only the agent's libraries ({_LIBRARIES}) and "
        "then reports READY=1, started the same way, interleaved with the agent's starts",
        "setup": "lanesync agent, fresh journal, no broker (it backs off), API on a Unix socket",
    }
