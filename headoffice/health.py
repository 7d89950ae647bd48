"""`lanesync headoffice status [--json]`: is head office up and taking lanes' entries?

For monitoring and for a technician, with the exit codes every command uses
(protocol.runtime.cli.Exit, in the manner of pg_isready and `systemctl status`):

- 0 accepting: every ingest worker answers, each is subscribed to its broker, nothing is held,
  and no lane's entries wait while ingest stands still;
- 1 up, but a problem: a worker lost its broker link or does not answer (of `--workers N`),
  entries are held for an operator (`lanesync held list`), ingest lags and does not move, or
  the database cannot be read; each problem is printed;
- 2 could not check: the configuration cannot be read, or gives no fixed place to ask
  (`[status_page] listen` unset, or on port 0);
- 3 not answering: no worker's status page answers (head office is down, or not yet up).

Two sources: each worker's own view from `/api/health` on its status page (worker N listens
N - 1 ports above `[status_page] listen`, as `lanesync headoffice --worker N` does): its link,
its counters and the lanes that said hello to it with the lanesync version each runs; and the
database read-only for what all workers together hold (lanes' lag, held entries).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp

from protocol.errors import ConfigError, LanesyncError
from protocol.runtime.cli import Exit

ACCEPTING, PROBLEM = int(Exit.OK), int(Exit.PROBLEM)
CANNOT_CHECK, NOT_ANSWERING = int(Exit.CANNOT_RUN), int(Exit.NOT_ANSWERING)
STATES = {
    ACCEPTING: "accepting",
    PROBLEM: "up, with problems",
    NOT_ANSWERING: "not answering",
    CANNOT_CHECK: "could not check",
}
HEALTH_PATH = "/api/health"  # headoffice.operations serves it on the status page
# Entries lanes have and head office lacks are normal for a moment while traffic flows; lag
# with no commit by any worker for this long means ingest does not move.
STALLED_AFTER_S = 30.0


def shift_listen(listen: str | None, by: int) -> str | None:
    """Worker N's listener: N - 1 ports above the configured one (port 0 is left as is)."""
    if listen is None or by == 0:
        return listen
    host, _, port = listen.rpartition(":")
    if int(port) == 0:
        return listen  # any free port
    if int(port) + by > 65535:
        raise ConfigError(f"--worker: {listen} + {by} is beyond port 65535")
    return f"{host}:{int(port) + by}"


def lanes_seen(hellos: Mapping[tuple[str, str], dict[str, Any]]) -> list[dict[str, Any]]:
    """The lanes that said hello to this worker (IngestStats.hellos) for its `/api/health`,
    newest last: each lane's lanesync version and the protocol it was told to use, so a
    mixed-version fleet shows which boxes are still to be upgraded (README "Protocol
    versions")."""
    return [{"lane": f"{store}/{lane}", **seen} for (store, lane), seen in hellos.items()]


@dataclass(slots=True)
class Worker:
    n: int
    url: str
    answering: bool = False
    error: str | None = None
    health: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class HeadOfficeHealth:
    code: int = ACCEPTING
    workers: list[Worker] = field(default_factory=list)
    database: str | None = None
    database_error: str | None = None
    lanes: int = 0
    lanes_lagging: int = 0
    lag_entries: int = 0
    held: int = 0
    # Each lane's current epoch ("S001/L1": epoch; None once every epoch of it was retired and
    # the new box has not spoken), never a retired one (headoffice/retire.py).
    lane_epochs: dict[str, int | None] = field(default_factory=dict)
    lanes_with_retired_epochs: int = 0
    last_commit_age_s: float | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def state(self) -> str:
        return STATES[self.code]

    def as_dict(self) -> dict[str, Any]:
        return {"state": self.state, **asdict(self)}


async def _ask(session: aiohttp.ClientSession, w: Worker, timeout: float) -> None:
    try:
        async with asyncio.timeout(timeout), session.get(w.url) as r:
            if r.status != 200:
                w.error = f"HTTP {r.status} from {w.url}"
                return
            w.health = await r.json()
            w.answering = True
    except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
        w.error = f"{w.url}: {exc or type(exc).__name__}"


async def ask_workers(listen: str, workers: int, timeout: float) -> list[Worker]:
    found = []
    for n in range(1, workers + 1):
        where = shift_listen(listen, n - 1) or listen
        host, _, port = where.rpartition(":")
        host = host.strip("[]")
        host = "127.0.0.1" if host in ("", "0.0.0.0") else ("::1" if host == "::" else host)  # noqa: S104
        shown = f"[{host}]" if ":" in host else host
        found.append(Worker(n, f"http://{shown}:{port}{HEALTH_PATH}"))
    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(_ask(session, w, timeout) for w in found))
    return found


def read_database(rep: HeadOfficeHealth, target: Any, offline_after_s: float) -> None:
    """What all workers hold together: lanes, their lag, entries held for an operator."""
    from headoffice.statuspage import collect  # noqa: PLC0415 - the database drivers

    data = collect(target, offline_after_s=offline_after_s)
    if data.get("error"):
        rep.database_error = str(data["error"])
        return
    lanes = data["lanes"]
    rep.lanes = len(lanes)
    rep.lag_entries = sum(int(ln["lag_entries"]) for ln in lanes)
    rep.lanes_lagging = sum(1 for ln in lanes if ln["lag_entries"])
    rep.held = int(data.get("held_total", 0))
    rep.lane_epochs = {f"{ln['store']}/{ln['lane']}": ln["epoch"] for ln in lanes}
    rep.lanes_with_retired_epochs = sum(1 for ln in lanes if ln.get("retired_epochs"))


def check(config_path: str, *, workers: int = 1, timeout: float = 3.0) -> HeadOfficeHealth:
    from headoffice import config as ho_config  # noqa: PLC0415
    from headoffice.db import describe, target  # noqa: PLC0415

    rep = HeadOfficeHealth()
    try:
        cfg = ho_config.load(config_path)
    except LanesyncError as exc:
        rep.code = CANNOT_CHECK
        rep.problems.append(str(exc))
        return rep
    listen = cfg.ops.status_page.listen
    if not listen or listen.rpartition(":")[2] == "0":
        rep.code = CANNOT_CHECK
        rep.problems.append(
            f"{config_path}: [status_page] listen is "
            + ("not set" if not listen else f"{listen!r} (any free port)")
            + ": this command asks the running head office there; set a fixed HOST:PORT"
        )
        return rep
    rep.workers = asyncio.run(ask_workers(listen, workers, timeout))
    rep.database = describe(target(cfg))
    read_database(rep, target(cfg), cfg.ops.status_page.offline_after_s)
    judge(rep, time.time())
    return rep


def judge(rep: HeadOfficeHealth, now: float) -> None:
    """Set the exit code and say each problem, worst first."""
    up = [w for w in rep.workers if w.answering]
    if not up:
        rep.code = NOT_ANSWERING
        rep.problems += [f"worker {w.n} not answering: {w.error}" for w in rep.workers]
        return
    for w in rep.workers:
        if not w.answering:
            rep.problems.append(f"worker {w.n} not answering: {w.error}")
        elif not w.health.get("broker", {}).get("connected"):
            b = w.health.get("broker", {})
            rep.problems.append(
                f"worker {w.n} ({w.health.get('client_id')}) has lost its broker link to "
                f"{b.get('host')}:{b.get('port')}: lanes' entries wait at the broker or in "
                "their journals"
            )
        elif w.health.get("commit_failures"):
            rep.problems.append(
                f"worker {w.n}: {w.health['commit_failures']} commit(s) to the database "
                "failed since it started (see its log)"
            )
    commits = [float(w.health["last_commit_at"]) for w in up if w.health.get("last_commit_at")]
    started = min(float(w.health.get("started_at") or now) for w in up)
    last = max(commits) if commits else started
    rep.last_commit_age_s = round(now - last, 1) if commits else None
    if rep.database_error:
        rep.problems.append(f"database: {rep.database_error}")
    if rep.held:
        rep.problems.append(
            f"{rep.held} entries held for an operator (their lanes go on): `lanesync held list`"
        )
    if rep.lag_entries and now - last > STALLED_AFTER_S:
        rep.problems.append(
            f"{rep.lag_entries} entries of {rep.lanes_lagging} lane(s) not yet at head office, "
            f"and no worker has committed anything for {int(now - last)}s: ingest is stalled"
        )
    rep.code = PROBLEM if rep.problems else ACCEPTING


def render(rep: HeadOfficeHealth) -> str:
    lines = [f"head office: {rep.state} (exit {rep.code})"]
    for w in rep.workers:
        h = w.health
        if not w.answering:
            lines.append(f"worker {w.n}    NOT ANSWERING ({w.error})")
            continue
        b = h.get("broker", {})
        link = "subscribed" if b.get("connected") else "BROKER DISCONNECTED"
        lines.append(
            f"worker {w.n}    lanesync {h.get('version', '?')}, pid {h.get('pid')}, {link} to "
            f"{b.get('host')}:{b.get('port')}, {h.get('entries_applied', 0)} entries applied, "
            f"inbox {h.get('inbox_queued', 0)}"
        )
    lines += lane_version_lines(rep.workers)
    if rep.database:
        lines.append(
            f"database    {rep.database}: "
            + (
                f"CANNOT READ ({rep.database_error})"
                if rep.database_error
                else f"{rep.lanes} lanes ({rep.lanes_with_retired_epochs} with a retired "
                f"epoch), {rep.held} entries held"
            )
        )
    if rep.workers and not rep.database_error:
        age = "-" if rep.last_commit_age_s is None else f"{rep.last_commit_age_s:.0f}s ago"
        lines.append(
            f"ingest lag  {rep.lag_entries} entries over {rep.lanes_lagging} lane(s), "
            f"last commit {age}"
        )
    lines += [f"PROBLEM     {p}" for p in rep.problems]
    return "\n".join(lines)


def lane_version_lines(workers: list[Worker]) -> list[str]:
    """The lanes the workers heard from, grouped by the lanesync version they run (the
    newest hello of each lane over all workers): "lanes 0.9.0: 12 (S001/L1, S001/L2, ...)"."""
    newest: dict[str, dict[str, Any]] = {}
    for w in workers:
        for seen in w.health.get("lanes") or ():
            known = newest.get(seen["lane"])
            if known is None or float(seen.get("at") or 0) > float(known.get("at") or 0):
                newest[seen["lane"]] = seen
    by_version: dict[str, list[str]] = {}
    for name, seen in sorted(newest.items()):
        by_version.setdefault(
            f"{seen.get('version')} (protocol {seen.get('protocol')})", []
        ).append(name)
    lines = []
    for version, names in sorted(by_version.items()):
        shown = ", ".join(names[:8]) + (f", ... {len(names) - 8} more" if len(names) > 8 else "")
        lines.append(f"lanes       lanesync {version}: {len(names)} ({shown})")
    return lines


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], default: str) -> None:
    p = sub.add_parser(
        "status",
        help="is head office up and taking entries (exit 0 accepting, 1 a problem, "
        "2 could not check, 3 not answering)",
        description="Is head office up and taking the lanes' entries? Asks each ingest "
        "worker's status page (its link, counters, and the lanes that said hello to it with "
        "their lanesync versions) and reads the database for lag and held entries.",
        epilog="Exit codes: 0 accepting, 1 up but a problem, 2 could not check (config), "
        "3 not answering (like pg_isready; `lanesync help exit-codes`).",
    )
    p.add_argument("--config", default=argparse.SUPPRESS, help=f"TOML (default {default})")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.add_argument("--workers", type=int, default=1, metavar="N", help="ingest workers to ask (1)")
    p.add_argument("--timeout", type=float, default=3.0, help="seconds per worker (3)")
    p.set_defaults(handler=cmd_status)


def cmd_status(args: argparse.Namespace) -> int:
    if args.workers < 1:
        print("lanesync headoffice status: --workers must be at least 1", file=sys.stderr)
        return CANNOT_CHECK
    rep = check(args.config, workers=args.workers, timeout=args.timeout)
    print(json.dumps(rep.as_dict()) if args.json else render(rep))
    return rep.code
