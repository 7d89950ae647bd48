"""Runs lanesync components as separate processes, the way they run in the field.

Used by `lanesync demo`, `lanesync bench` and the end-to-end fault tests: writes each component's
TOML, starts it with its own sd_notify socket (so we know when it is READY, exactly as systemd
would), and stops or kills it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from protocol.identity import DEFAULT_PREFIX, LaneId


class StackError(RuntimeError):
    """A component did not start or stop as expected; the message carries its log tail."""


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    raise TypeError(f"cannot write {v!r} as TOML")


def write_toml(path: Path, data: dict[str, Any]) -> Path:
    """Write a two-level TOML file (top-level keys, then tables)."""
    lines = [f"{k} = {toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for name, table in data.items():
        if isinstance(table, dict):
            lines.append(f"\n[{name}]")
            lines += [f"{k} = {toml_value(v)}" for k, v in table.items() if v is not None]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def process_cpu_s(pid: int | None) -> float:
    """User plus system CPU seconds process `pid` has used so far (0 when it is gone)."""
    if pid is None:
        return 0.0
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def processes_named(comm: str) -> list[int]:
    """Pids whose command name is `comm` (every PostgreSQL backend is "postgres")."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if (d / "comm").read_text().strip() == comm:
                    pids.append(int(d.name))
            except OSError:
                continue  # ended meanwhile
    return pids


@dataclass
class Component:
    """One running lanesync process."""

    name: str
    argv: list[str]
    workdir: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    _notify: socket.socket | None = None
    _log: IO[bytes] | None = None
    status_lines: list[str] = field(default_factory=list)

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise StackError(f"{self.name} is not running")
        return self.proc.pid

    def start(self) -> Component:
        self.workdir.mkdir(parents=True, exist_ok=True)
        sock_path = self.workdir / f"{self.name}.notify"
        sock_path.unlink(missing_ok=True)
        self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._notify.bind(str(sock_path))
        self._log = self.log_path.open("ab")
        env = {**os.environ, **self.env, "NOTIFY_SOCKET": str(sock_path), "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "lanesync.cli", *self.argv],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        return self

    def wait_notify(self, prefix: str = "READY=1", timeout: float = 30.0) -> str:
        """Wait for an sd_notify line starting with `prefix`; returns it."""
        assert self._notify is not None
        deadline = time.monotonic() + timeout
        while True:
            for line in self.status_lines:
                if line.startswith(prefix):
                    return line
            left = deadline - time.monotonic()
            if left <= 0 or (self.proc is not None and self.proc.poll() is not None):
                raise StackError(
                    f"{self.name} did not report {prefix!r} within {timeout:g}s "
                    f"(exit code {self.proc.poll() if self.proc else None}); log tail:\n"
                    + self.log_tail()
                )
            self._notify.settimeout(min(left, 0.2))
            try:
                data = self._notify.recv(4096)
            except TimeoutError:
                continue
            self.status_lines += data.decode(errors="replace").splitlines()

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except FileNotFoundError:
            return "(no log)"

    def peak_rss_mb(self) -> float:
        """The process's peak resident set (VmHWM), in MiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise StackError("VmHWM not found")

    def cpu_s(self) -> float:
        """User plus system CPU seconds the process has used so far."""
        return process_cpu_s(self.pid)

    def stop(self, timeout: float = 15.0) -> int | None:
        return self._end(signal.SIGTERM, timeout)

    def kill(self) -> int | None:
        return self._end(signal.SIGKILL, 10.0)

    def _end(self, sig: signal.Signals, timeout: float) -> int | None:
        rc = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(sig)
                try:
                    rc = self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    rc = self.proc.wait()
            else:
                rc = self.proc.returncode
            self.proc = None
        if self._notify is not None:
            self._notify.close()
            self._notify = None
        if self._log is not None:
            self._log.close()
            self._log = None
        self.status_lines.clear()
        return rc


def headoffice(
    workdir: Path,
    broker_port: int,
    *,
    name: str = "headoffice",
    database_url: str | None = None,
    share_group: str | None = None,
    metrics_port: int | None = None,
    **ingest: Any,
) -> Component:
    """Head office on `{name}.db` in `workdir`, or on PostgreSQL at `database_url`; its
    Prometheus /metrics on 127.0.0.1:`metrics_port` when given."""
    config: dict[str, Any] = {
        "database": {"url": database_url}
        if database_url
        else {"path": str(workdir / f"{name}.db")},
        "broker": {
            "host": "127.0.0.1",
            "port": broker_port,
            "client_id": f"lanesync-{name}",
            "share_group": share_group,
        },
        "ingest": ingest,
    }
    if metrics_port is not None:
        config["metrics"] = {"listen": f"127.0.0.1:{metrics_port}"}
    cfg = write_toml(workdir / f"{name}.toml", config)
    return Component(name, ["headoffice", "--config", str(cfg)], workdir)


def headoffice_workers(
    workdir: Path,
    broker_port: int,
    workers: int,
    *,
    database_url: str,
    share_group: str | None = "ingest",
    **ingest: Any,
) -> list[Component]:
    """`workers` ingest processes on one shared subscription and one PostgreSQL database,
    started as `lanesync headoffice --worker N` from one config, the way an operator would
    (`share_group=None, leases=True`: workers owning stores through leases instead)."""
    one = headoffice(
        workdir,
        broker_port,
        name="headoffice-shared",
        database_url=database_url,
        share_group=share_group,
        **ingest,
    )
    return [
        Component(f"headoffice-w{n}", [*one.argv, "--worker", str(n)], workdir)
        for n in range(1, workers + 1)
    ]


def agent(
    workdir: Path,
    lane: LaneId,
    broker_port: int,
    *,
    replication: dict[str, Any] | None = None,
    keepalive: int = 5,
    trade_without_catalog: bool = True,
    catalog: dict[str, Any] | None = None,
) -> Component:
    """An agent's config and process. `trade_without_catalog`: the lane journals documents
    before it holds a catalog (a lab's lane; `[catalog] trade_without`); False as a chain's
    lanes, which refuse documents until head office's master data has arrived."""
    name = f"agent-{lane.store}-{lane.lane}"
    cfg = write_toml(
        workdir / f"{name}.toml",
        {
            "store": lane.store,
            "lane": lane.lane,
            "journal": {"path": str(journal_path(workdir, lane))},
            "broker": {
                "host": "127.0.0.1",
                "port": broker_port,
                "keepalive": keepalive,
                "topic_prefix": DEFAULT_PREFIX,
            },
            "replication": replication or {},
            "api": {"socket": str(api_socket_path(workdir, lane))},
            "catalog": {"trade_without": trade_without_catalog, **(catalog or {})},
        },
    )
    return Component(name, ["agent", "--config", str(cfg)], workdir)


def journal_path(workdir: Path, lane: LaneId) -> Path:
    return workdir / f"journal-{lane.store}-{lane.lane}.db"


def api_socket_path(workdir: Path, lane: LaneId) -> Path:
    return workdir / f"api-{lane.store}-{lane.lane}.sock"
