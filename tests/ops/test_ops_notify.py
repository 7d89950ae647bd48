"""sd_notify READY, WATCHDOG and STATUS from both daemons, through a fake notify socket (item 4).

The daemons run in-process with $NOTIFY_SOCKET pointing at a datagram socket the test reads,
and $WATCHDOG_USEC set as systemd would set it for WatchdogSec=.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from ops_helpers import lane_config

from agent import daemon as agent_daemon
from agent import status as lane_status
from headoffice import config as ho_config
from headoffice import daemon as ho_daemon
from lanesync.broker import MosquittoBroker
from protocol.watchdog import run_watchdog, watchdog_interval


class FakeSystemd:
    """The receiving end of $NOTIFY_SOCKET."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.lines: list[str] = []

    def drain(self) -> list[str]:
        while True:
            try:
                self.lines += self.sock.recv(4096).decode().splitlines()
            except BlockingIOError:
                return self.lines

    async def wait_for(self, prefix: str, count: int = 1, timeout: float = 10.0) -> list[str]:
        async with asyncio.timeout(timeout):
            while True:
                got = [ln for ln in self.drain() if ln.startswith(prefix)]
                if len(got) >= count:
                    return got
                await asyncio.sleep(0.02)


@pytest.fixture
def systemd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSystemd]:
    fake = FakeSystemd(tmp_path / "notify.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify.sock"))
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # WatchdogSec=0.2: a ping every 0.1 s
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    yield fake
    fake.sock.close()


async def test_agent_sends_ready_watchdog_status_and_stopping(
    tmp_path: Path, systemd: FakeSystemd, broker: MosquittoBroker
) -> None:
    cfg = lane_config(tmp_path, broker={"port": broker.port, "keepalive": 2})
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tg:
        tg.create_task(agent_daemon.run(cfg, stop), name="agent under test")
        await systemd.wait_for("READY=1")
        await systemd.wait_for("WATCHDOG=1", count=3)
        statuses = await systemd.wait_for("STATUS=lane S042/L1 seq 0, backlog 0, broker connected")
        assert statuses
        # `lanesync status` sees the running agent through its live file.
        async with asyncio.timeout(lane_status.LIVE_INTERVAL_S + 5):
            while not (rep := lane_status.collect(cfg)).broker.get("connected"):
                await asyncio.sleep(0.2)  # the live file is rewritten every few seconds
        assert rep.running
        assert rep.disk["level"] == "ok"
        assert "agent running" in lane_status.render(rep)
        stop.set()
    await systemd.wait_for("STOPPING=1")


async def test_headoffice_sends_ready_watchdog_status_and_stopping(
    tmp_path: Path, systemd: FakeSystemd, broker: MosquittoBroker
) -> None:
    cfg = ho_config.parse(
        {"database": {"path": str(tmp_path / "ho.db")}, "broker": {"port": broker.port}}
    )
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tg:
        tg.create_task(ho_daemon.run(cfg, stop), name="head office under test")
        await systemd.wait_for("READY=1")
        await systemd.wait_for("WATCHDOG=1", count=3)
        await systemd.wait_for("STATUS=subscribed, 0 entries applied")
        stop.set()
    await systemd.wait_for("STOPPING=1")


async def test_watchdog_stops_pinging_while_the_probe_hangs(systemd: FakeSystemd) -> None:
    healthy = asyncio.Event()
    healthy.set()

    async def probe() -> None:
        await healthy.wait()

    assert watchdog_interval() == pytest.approx(0.1)
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(run_watchdog(probe, lambda: "fine"), name="watchdog under test")
        await systemd.wait_for("WATCHDOG=1", count=2)
        healthy.clear()  # e.g. the journal writer is stuck
        await asyncio.sleep(0.15)
        before = len([ln for ln in systemd.drain() if ln == "WATCHDOG=1"])
        await asyncio.sleep(0.5)
        after = len([ln for ln in systemd.drain() if ln == "WATCHDOG=1"])
        assert after == before  # no pings: systemd would restart the service
        healthy.set()
        await systemd.wait_for("WATCHDOG=1", count=after + 1)
        task.cancel()


def test_no_watchdog_without_watchdog_usec_or_for_another_pid(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", "1")
    assert watchdog_interval() is None
