"""SIGHUP reloads the config (issue 18.4): a real `lanesync agent`, its file edited, then HUP.

Each changed key is logged as applied or as needing a restart; a file with faults is refused
whole, its faults logged, and the agent runs on; RELOADING=1 ... READY=1 frame a reload.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from headoffice import config as ho_config
from headoffice import daemon as ho_daemon
from lanesync.broker import MosquittoBroker
from protocol.errors import ConfigError
from protocol.runtime.config import ConfigSource
from protocol.runtime.reload import Reloader, changed, flatten
from tests.ops.agent_proc import READY_LINE, agent, write_config


def _edit(path: Path, extra: str) -> None:
    path.write_text(path.read_text() + extra)


def test_sighup_applies_live_keys_and_names_the_ones_that_need_a_restart(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    base = config.read_text()
    done = "agent: reload done"
    with agent(config, log=("--log-level", "INFO")) as lane:
        lane.wait_for(lambda ln: READY_LINE in ln)
        config.write_text(base + "[replication]\nlinger_ms = 5\nwindow = 4\n")
        lane.proc.send_signal(signal.SIGHUP)
        lane.wait_for(lambda ln: "reload: replication.linger_ms changed: applied" in ln)
        lane.wait_for(lambda ln: "reload: replication.window changed: needs a restart" in ln)
        lane.wait_for(lambda ln: f"{done}: 1 key(s) applied, 1 need a restart" in ln)
        # [log] level applies at once: the INFO line closing this reload is no longer shown.
        config.write_text(
            base + '[replication]\nlinger_ms = 5\nwindow = 4\n[log]\nlevel = "warning"\n'
        )
        lane.proc.send_signal(signal.SIGHUP)
        lane.wait_for(lambda ln: "reload: log.level changed: applied" in ln)
        config.write_text("store = \n")  # not TOML: refused, logged at ERROR
        lane.proc.send_signal(signal.SIGHUP)
        lane.wait_for(lambda ln: "reload refused" in ln)
        assert sum(done in ln for ln in lane.lines) == 1
        # window still runs on its old value, so it is named again while the file differs
        assert sum("replication.window changed: needs a restart" in ln for ln in lane.lines) == 2
        assert lane.proc.poll() is None


def test_a_faulty_file_is_refused_whole_and_the_agent_runs_on(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    good = config.read_text()
    with agent(config, log=("--log-level", "INFO")) as lane:
        lane.wait_for(lambda ln: READY_LINE in ln)
        _edit(config, '[replication]\nlinger_ms = "x"\nbackoff_maxs = 3\n')
        lane.proc.send_signal(signal.SIGHUP)
        lane.wait_for(lambda ln: "reload refused" in ln)
        lane.wait_for(lambda ln: "replication.linger_ms: must be an integer" in ln)
        lane.wait_for(lambda ln: "did you mean 'backoff_max_s'?" in ln)
        assert not any("changed: applied" in ln for ln in lane.lines)
        config.write_text(good + "[replication]\nlinger_ms = 7\n")
        lane.proc.send_signal(signal.SIGHUP)
        lane.wait_for(lambda ln: "replication.linger_ms changed: applied" in ln)
        assert lane.proc.poll() is None
    assert lane.proc.returncode == 0


def test_flatten_and_changed_speak_the_files_keys() -> None:
    old = flatten({"a": 1, "replication": {"linger_ms": 5, "window": 4}})
    new = flatten({"a": 1, "replication": {"linger_ms": 6}, "log": {"level": "INFO"}})
    assert changed(old, new) == ["log.level", "replication.linger_ms", "replication.window"]


@dataclass
class _Cfg:
    level: str
    source: ConfigSource | None = field(default=None)


async def test_reload_is_framed_by_reloading_and_ready(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    sock.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify.sock"))

    def cfg(level: str) -> _Cfg:
        return _Cfg(
            level, ConfigSource(tmp_path / "x.toml", "default", "/d", {"log": {"level": level}})
        )

    files: list[Any] = [cfg("INFO"), ConfigError("x.toml: log.level: must be one of ...")]
    applied: list[str] = []

    def load() -> _Cfg:
        got = files.pop(0)
        if isinstance(got, Exception):
            raise got
        return got

    r = Reloader(cfg("WARNING"), load, {"log.level": lambda c: applied.append(c.level)}, "t")
    assert await r.reload() == [("log.level", "applied")]
    assert await r.reload() == []  # refused: nothing applied, still READY again
    await asyncio.sleep(0)
    lines = []
    while True:
        try:
            lines += sock.recv(4096).decode().splitlines()
        except BlockingIOError:
            break
    sock.close()
    assert applied == ["INFO"]
    kinds = [ln.split("=")[0] for ln in lines if ln.split("=")[0] in ("RELOADING", "READY")]
    assert kinds == ["RELOADING", "READY", "RELOADING", "READY"]
    assert sum(ln.startswith("MONOTONIC_USEC=") for ln in lines) == 2


async def test_head_office_reloads_its_log_level_on_sighup(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    broker: MosquittoBroker,
) -> None:
    """Head office in-process, its file edited, then SIGHUP to this process: the level is
    applied, every other change is named as needing a restart, READY=1 follows RELOADING=1."""

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    sock.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify.sock"))
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    lines: list[str] = []

    async def wait_for(text: str) -> None:
        async with asyncio.timeout(15):
            while not any(text in ln for ln in lines):
                with contextlib.suppress(BlockingIOError):
                    lines.extend(sock.recv(4096).decode().splitlines())
                await asyncio.sleep(0.02)

    toml = tmp_path / "headoffice.toml"
    base = f'[database]\npath = "{tmp_path / "ho.db"}"\n[broker]\nport = {broker.port}\n'
    toml.write_text(base)
    cfg = ho_config.load(toml)
    stop = asyncio.Event()
    root = logging.getLogger()
    level = root.level
    caplog.set_level(logging.WARNING)
    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(ho_daemon.run(cfg, stop), name="head office under test")
            await wait_for("STATUS=subscribed")
            toml.write_text(base + 'keepalive = 20\n[log]\nlevel = "ERROR"\n')
            os.kill(os.getpid(), signal.SIGHUP)
            await wait_for("STATUS=head office: config reloaded")
            stop.set()
    finally:
        applied_level = root.level
        root.setLevel(level)
        sock.close()
    assert applied_level == logging.ERROR
    said = [r.getMessage() for r in caplog.records if "reload:" in r.getMessage()]
    assert "head office: reload: log.level changed: applied" in said
    assert any("broker.keepalive changed: needs a restart" in m for m in said)
    kinds = [ln for ln in lines if ln in ("RELOADING=1", "READY=1")]
    assert kinds == ["READY=1", "RELOADING=1", "READY=1"]


@pytest.mark.parametrize(
    "unit",
    [
        "lanesync-agent.service",
        "lanesync-headoffice.service",
        "lanesync-headoffice-worker@.service",
    ],
)
def test_each_unit_reloads_with_sighup_and_stays_type_notify(unit: str) -> None:
    text = (Path(__file__).resolve().parents[2] / "systemd" / unit).read_text()
    lines = [ln.strip() for ln in text.splitlines() if not ln.startswith("#")]
    assert "ExecReload=/bin/kill -HUP $MAINPID" in lines
    assert "Type=notify" in lines
