"""`lanesync status` on a store box: the lane's health in one screen, agent running or not.

Two sources, so it works when the agent is stopped: the journal file read read-only (epoch,
seqs, backlog, sizes; `journal_facts`) and a small JSON file the running agent rewrites every
few seconds next to its journal (`LiveStatus`: broker link, last ack, disk level, counters). A
live file whose pid is gone or that is stale means "not running".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import sqlite3
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.config import AgentConfig
from agent.journal.file import JournalFile, open_readonly
from protocol.runtime.tasks import Component, Loops

LIVE_INTERVAL_S = 5.0
# A lane behind its store's head for longer than this is a problem (a version normally
# arrives within seconds; behind for a minute means it cannot fetch it).
CATALOG_LAG_S = 60.0
STALE_AFTER_S = 3 * LIVE_INTERVAL_S
# Head office acks a lane's hello within milliseconds; a session this old with no ack at all
# means no head office reads this broker (down, or subscribed elsewhere): a problem, whatever
# the broker link itself says.
HEAD_OFFICE_SILENT_S = 15.0
# The live file is padded to this size, so that on a full disk it can still be rewritten in
# place (a new file for the atomic rename needs free blocks; overwriting allocated ones not).
LIVE_FILE_BYTES = 8192

log = logging.getLogger(__name__)


def live_path(journal_path: Path) -> Path:
    """Where the running agent writes its live status: beside the journal (StateDirectory)."""
    return journal_path.with_name(journal_path.name + ".status.json")


@dataclass(slots=True)
class JournalFacts:
    path: str
    exists: bool = False
    store: str | None = None
    lane: str | None = None
    epoch: int | None = None
    first_seq: int | None = None
    last_seq: int = 0
    acked_seq: int = 0
    acked_at: int | None = None  # ms since the Unix epoch
    backlog: int = 0
    backlog_bytes: int = 0
    oldest_unacked_ts: int | None = None  # ms since the Unix epoch
    quarantined: int | None = None  # rows of a `quarantine` table, when the journal has one
    size_bytes: int = 0  # database + WAL + shared-memory files
    free_disk_bytes: int | None = None
    error: str | None = None


def _files_size(path: Path) -> int:
    total = 0
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(OSError):
            total += (path.parent / (path.name + suffix)).stat().st_size
    return total


def journal_facts(path: str | Path) -> JournalFacts:
    """Read a journal read-only; safe while the agent writes (WAL) and when it is stopped."""
    p = Path(path)
    facts = JournalFacts(str(p))
    with contextlib.suppress(OSError):
        facts.free_disk_bytes = shutil.disk_usage(p.parent).free
    if not p.exists():
        facts.error = f"{p}: no journal file (the agent has never run with this configuration)"
        return facts
    facts.exists = True
    facts.size_bytes = _files_size(p)
    try:
        db = JournalFile(p)
    except (FileNotFoundError, sqlite3.Error) as exc:
        facts.error = f"{p}: cannot open read-only: {exc}"
        return facts
    try:
        meta = db.meta()
        facts.store, facts.lane = meta.get("store"), meta.get("lane")
        facts.epoch = int(meta["epoch"]) if "epoch" in meta else None
        facts.acked_seq, facts.acked_at = db.acked()
        first, last = db.seq_range()
        facts.first_seq, facts.last_seq = first, int(last or 0)
        facts.backlog = max(0, facts.last_seq - facts.acked_seq)
        facts.backlog_bytes, facts.oldest_unacked_ts = db.unacked(facts.acked_seq)
        facts.quarantined = db.quarantined()
    except (sqlite3.Error, KeyError, TypeError) as exc:
        facts.error = f"{p}: cannot read journal: {exc}"
    finally:
        db.close()
    return facts


@dataclass(slots=True)
class CatalogFacts:
    """The lane's catalog file read-only: the version held and the newest head it has seen."""

    path: str
    exists: bool = False
    version: int = 0  # complete version held (0: none yet)
    rows: int = 0
    applied_at: int | None = None  # ms since the Unix epoch
    head_version: int = 0  # the store's head as last received from head office
    head_at: int | None = None  # when head office published that head (ms)
    staging: str | None = None  # "snapshot of version 9: 12/50 chunks", "delta 7 -> 9: 3 pages"
    error: str | None = None

    @property
    def behind(self) -> bool:
        return self.head_version > self.version


def catalog_facts(path: str | Path) -> CatalogFacts:
    """Read the catalog file read-only; safe while the agent writes it (WAL)."""
    p = Path(path)
    facts = CatalogFacts(str(p))
    if not p.exists():
        return facts
    facts.exists = True
    try:
        db = open_readonly(p)
    except (FileNotFoundError, sqlite3.Error) as exc:
        facts.error = f"{p}: cannot open read-only: {exc}"
        return facts
    try:
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        facts.version = int(meta.get("version", 0))
        facts.rows = int(meta.get("rows", 0))
        facts.applied_at = meta.get("applied_at")
        facts.head_version = int(meta.get("head_version", 0))
        facts.head_at = meta.get("head_at")
        t = db.execute("SELECT kind, base, target, chunks FROM transfer").fetchone()
        if t is not None:
            parts = int(db.execute("SELECT count(*) FROM staged").fetchone()[0])
            kind, base, target, chunks = t
            facts.staging = (
                f"snapshot of version {target}: {parts}/{chunks} chunks"
                if kind == "snapshot"
                else f"delta {base} -> {target}: {parts} page(s)"
            )
    except (sqlite3.Error, TypeError, ValueError) as exc:
        facts.error = f"{p}: cannot read catalog: {exc}"
    finally:
        db.close()
    return facts


# --- the running agent's live file ----------------------------------------------------------


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user (the lanesync service user)
    return True


def read_live(path: Path, now: float | None = None) -> dict[str, Any] | None:
    """The running agent's live status, or None if it is not running (no file, stale, dead)."""
    live: Any = None
    for attempt in range(3):  # a rewrite in place (full disk) may be read half done: again
        try:
            live = json.loads(path.read_text(encoding="utf-8"))
            break
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            if attempt == 2:
                return None
            time.sleep(0.05)
    now = time.time() if now is None else now
    if not isinstance(live, dict) or not pid_alive(int(live.get("pid", 0))):
        return None
    if now - float(live.get("at", 0)) > STALE_AFTER_S:
        return None
    return live


class LiveStatus(Component):
    """Async context manager that rewrites the live file every few seconds (atomic rename)."""

    def __init__(self, path: Path, snapshot: Callable[[], dict[str, Any]]) -> None:
        self.path = path
        self.snapshot = snapshot
        super().__init__("live-status")

    def write(self) -> None:
        data = {"pid": os.getpid(), "at": time.time(), **self.snapshot()}
        text = json.dumps(data).encode()
        text += b" " * max(0, LIVE_FILE_BYTES - len(text))  # room to rewrite in place
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            tmp.write_bytes(text)
            tmp.replace(self.path)
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink()
            # A full disk: overwrite the blocks the file already has, if the text fits them.
            if not self._fits_in_place(len(text)):
                raise
            with self.path.open("r+b") as f:
                f.write(text)
                f.truncate(len(text))

    def _fits_in_place(self, size: int) -> bool:
        try:
            return self.path.stat().st_size >= size
        except OSError:
            return False

    def write_logged(self) -> None:
        try:
            self.write()
        except OSError as exc:  # a full disk must not stop the agent; status shows stale
            log.warning("cannot write %s: %s", self.path, exc)

    async def setup(self) -> None:
        self.write_logged()

    def loops(self) -> Loops:
        return [("rewrite", self._loop())]

    async def teardown(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(LIVE_INTERVAL_S)
            self.write_logged()


# --- the report -------------------------------------------------------------------------------


@dataclass(slots=True)
class StatusReport:
    store: str
    lane: str
    running: bool
    journal: JournalFacts
    journal_full: bool = False  # running, but documents are refused until the disk has room
    broker: dict[str, Any] = field(default_factory=dict)
    last_ack_age_s: float | None = None
    oldest_unacked_age_s: float | None = None
    disk: dict[str, Any] = field(default_factory=dict)
    quarantined: int | None = None  # documents refused at journaling since the agent started
    last_refusal: dict[str, Any] | None = None  # {"at", "path", "reason"} of the last one
    head_office_silent_s: float | None = None  # connected, and no ack since for this long
    # What head office announced to the running agent: {"version", "protocols", ...} (18.3)
    head_office: dict[str, Any] = field(default_factory=dict)
    scan_errors: int | None = None
    scanners: list[dict[str, Any]] = field(default_factory=list)
    catalog: CatalogFacts | None = None
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.catalog is not None:
            d["catalog"]["behind"] = self.catalog.behind
        return d


def _scanner_rows(cfg: AgentConfig) -> list[dict[str, Any]]:
    try:
        from hardware.cli import collect_rows  # noqa: PLC0415 - optional: evdev may be absent
        from hardware.config import parse_scanners  # noqa: PLC0415

        return collect_rows(parse_scanners(cfg.scanners), probe=False)
    except (ImportError, OSError, ValueError) as exc:
        return [{"name": None, "state": f"cannot list scanners: {exc}"}]


def collect(cfg: AgentConfig, now: float | None = None) -> StatusReport:
    now = time.time() if now is None else now
    facts = journal_facts(cfg.journal_path)
    live = read_live(live_path(cfg.journal_path), now)
    rep = StatusReport(cfg.lane.store, cfg.lane.lane, live is not None, facts)
    rep.broker = {"host": cfg.broker.host, "port": cfg.broker.port, "connected": None}
    if facts.error:
        rep.problems.append(facts.error)
    if facts.oldest_unacked_ts is not None:
        rep.oldest_unacked_age_s = round(now - facts.oldest_unacked_ts / 1000, 1)
    if facts.acked_at is not None:
        rep.last_ack_age_s = round(now - facts.acked_at / 1000, 1)
    if live is not None:
        rep.broker.update(live.get("broker", {}))
        rep.disk = dict(live.get("disk", {}))
        rep.head_office = dict(live.get("head_office") or {})
        counters = live.get("counters", {})
        # Only documents refused where they would have been journaled (the running agent's
        # count): a refused check or lookup journals nothing, and what head office holds is
        # `lanesync held` at head office, not this lane's.
        rep.quarantined = int(counters.get("quarantined", 0))
        rep.last_refusal = counters.get("last_refusal")
        rep.scan_errors = int(counters.get("scan_errors", 0))
        silent = head_office_silent(rep.broker, now)
        if silent is not None:
            rep.head_office_silent_s = round(silent, 1)
            rep.problems.append(
                f"connected to the broker {cfg.broker.host}:{cfg.broker.port}, but no head "
                f"office has answered this lane for {int(silent)}s (not even its hello): "
                "head office is down or reads another broker or topic prefix; sales wait in "
                "the journal (`lanesync headoffice status` at head office)"
            )
        if not rep.broker.get("connected"):
            rep.problems.append(
                f"not connected to the broker {cfg.broker.host}:{cfg.broker.port}"
                + (f" ({rep.broker['last_error']})" if rep.broker.get("last_error") else "")
                + "; run `lanesync doctor`"
            )
        rep.journal_full = rep.disk.get("level") == "full"
        if rep.journal_full:
            rep.problems.append(
                "journal full: new documents are refused until there is room"
                + (f" ({rep.disk['reason']})" if rep.disk.get("reason") else "")
                + "; the agent still serves lookups, sends the backlog and resumes by itself"
            )
        elif rep.disk.get("level") == "high":
            rep.problems.append("journal disk budget is high: see `lanesync doctor`")
    else:
        rep.problems.append("the agent is not running (systemctl status lanesync-agent)")
    if facts.free_disk_bytes is not None:
        rep.disk.setdefault("free_disk_bytes", facts.free_disk_bytes)
    rep.scanners = (live or {}).get("scanners") or _scanner_rows(cfg)
    rep.catalog = cat = catalog_facts(cfg.catalog_path)
    if cat.error:
        rep.problems.append(cat.error)
    elif cat.behind and cat.head_at is not None and now - cat.head_at / 1000 > CATALOG_LAG_S:
        rep.problems.append(
            f"catalog behind: holds version {cat.version}, the store's head is "
            f"{cat.head_version} since {_age(now - cat.head_at / 1000)}"
            + (f" ({cat.staging})" if cat.staging else "")
        )
    return rep


def head_office_silent(broker: dict[str, Any], now: float) -> float | None:
    """Seconds this session has gone without any ack from head office, when that is a
    problem (beyond HEAD_OFFICE_SILENT_S); None while it answers, or if not connected."""
    if not broker.get("connected") or broker.get("head_office_answered", True):
        return None  # an agent older than the field reads as answering: no false alarm
    since = broker.get("connected_at")
    if since is None or now - float(since) < HEAD_OFFICE_SILENT_S:
        return None
    return now - float(since)


def _refused_line(rep: StatusReport) -> str:
    if rep.quarantined is None:
        return "refused     unknown (agent not running; counted by the running agent)"
    line = f"refused     {rep.quarantined} document(s) refused at journaling since start"
    last = rep.last_refusal
    if rep.quarantined and last:
        line += f"; last {_age(time.time() - float(last['at']))} on {last['path']}: "
        line += str(last["reason"])[:300]
    return line


def _head_office_line(rep: StatusReport) -> str:
    ho = rep.head_office
    if not rep.running:
        return "head office unknown (agent not running; `lanesync doctor` asks it)"
    if not ho.get("version"):
        return "head office version not announced yet"
    serves = ", ".join(str(v) for v in ho.get("protocols") or ()) or "?"
    used = f", this lane speaks protocol {ho['protocol']}" if ho.get("protocol") else ""
    return f"head office lanesync {ho['version']} (serves protocol {serves}){used}"


def _catalog_line(cat: CatalogFacts | None) -> str:
    if cat is None or not cat.exists:
        return "catalog     none yet (the agent has not run, or head office sent nothing)"
    line = f"catalog     version {cat.version} ({cat.rows} rows)"
    if cat.head_version:
        line += f", head {cat.head_version}" + (": BEHIND" if cat.behind else ": up to date")
    if cat.staging:
        line += f", staging {cat.staging}"
    return line


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 120:
        return f"{s}s ago"
    if s < 7200:
        return f"{s // 60}m ago"
    if s < 172_800:
        return f"{s // 3600}h ago"
    return f"{s // 86400}d ago"


def _mib(n: int | None) -> str:
    return "-" if n is None else f"{n / 1048576:.1f} MiB"


def render(rep: StatusReport) -> str:
    """Plain text for a technician: one fact a line, problems last."""
    f = rep.journal
    broker = rep.broker
    link = (
        "unknown (agent not running)"
        if broker.get("connected") is None
        else ("connected" if broker["connected"] else "DISCONNECTED")
    )
    if rep.head_office_silent_s is not None:
        link += f", but head office NOT ANSWERING for {int(rep.head_office_silent_s)}s"
    elif broker.get("connected") and broker.get("head_office_answered") is False:
        link += ", waiting for head office's first ack"
    state = "running" if rep.running else "NOT RUNNING"
    if rep.journal_full:
        free = rep.disk.get("free_disk_bytes")
        state += f", journal full ({free if free is not None else 'unknown'} bytes free)"
    lines = [
        f"lane {rep.store}/{rep.lane}: agent {state}",
        f"broker      {broker.get('host')}:{broker.get('port')} {link}"
        + (f", {broker.get('reconnects', 0)} reconnects" if rep.running else "")
        + (
            f", {broker['session_renewals']} renewed for want of acks"
            if rep.running and broker.get("session_renewals")
            else ""
        ),
        f"journal     {f.path} ({_mib(f.size_bytes)}), epoch {f.epoch}, last seq {f.last_seq}",
        f"backlog     {f.backlog} entries, {_mib(f.backlog_bytes)}, oldest unacked "
        f"{_age(rep.oldest_unacked_age_s)}",
        f"last ack    seq {f.acked_seq}, {_age(rep.last_ack_age_s)}",
        _refused_line(rep),
        f"scan errors {rep.scan_errors if rep.scan_errors is not None else '-'}",
        f"disk        {_mib(rep.disk.get('free_disk_bytes'))} free"
        + (f", budget {rep.disk['level']}" if rep.disk.get("level") else ""),
    ]
    lines.append(_head_office_line(rep))
    lines.append(_catalog_line(rep.catalog))
    lines += [
        f"scanner     {s.get('name') or '(unconfigured)'}: {s.get('state')}" for s in rep.scanners
    ]
    if not rep.scanners:
        lines.append("scanner     none configured")
    lines += [f"PROBLEM     {p}" for p in rep.problems]
    return "\n".join(lines)


def iso(ms: int | None) -> str | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC).isoformat()
