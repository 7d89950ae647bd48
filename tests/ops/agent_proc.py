"""A real `lanesync agent` process for tests that judge what it logs or loads at start.

The lane's broker is a port nobody listens on: the agent starts, reports READY and keeps
retrying the link with backoff, which is all these tests need from it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

LANESYNC = str(Path(sys.executable).parent / "lanesync")  # the console script pip installed
READY_LINE = "unacked)"  # the end of agent/daemon.py's start line


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def write_config(tmp_path: Path) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(
        f"""store = "S042"
lane = "L1"
[journal]
path = "{tmp_path / "journal.db"}"
[broker]
port = {closed_port()}
[api]
socket = "{tmp_path / "api.sock"}"
"""
    )
    return path


class AgentProcess:
    """stderr is read on a thread into `lines`, so the pipe never fills."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, name="agent-stderr", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, found: Callable[[str], bool], timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if found(line):
                    return line
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.01)
        raise AssertionError(f"no such line from the agent; it wrote: {self.lines[-20:]}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait(10)
        self._reader.join(10)
        return rc


@contextmanager
def agent(
    config: Path, *args: str, python_flags: tuple[str, ...] = (), log: tuple[str, ...] = ()
) -> Iterator[AgentProcess]:
    """`lanesync [log options] agent --config CONFIG [args]`, run by this interpreter."""
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "JOURNAL_STREAM")}
    env["PYTHONUNBUFFERED"] = "1"
    proc = subprocess.Popen(
        [sys.executable, *python_flags, LANESYNC, *log, "agent", "--config", str(config), *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    running = AgentProcess(proc)
    try:
        yield running
    finally:
        running.stop()
