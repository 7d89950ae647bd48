"""sd_notify READY, WATCHDOG and STATUS from both daemons, through a fake notify socket (item 4).

The daemons run in-process with $NOTIFY_SOCKET pointing at a datagram socket the test reads,
and $WATCHDOG_USEC set as systemd would set it for WatchdogSec=.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent import daemon as agent_daemon
from agent import status as lane_status
from headoffice import config as ho_config
from headoffice import daemon as ho_daemon
from lanesync.broker import MosquittoBroker
from protocol.runtime.notify import notify, notify_soon
from protocol.runtime.watchdog import run_watchdog, watchdog_interval
from tests.ops.ops_helpers import lane_config


class FakeSystemd:
    """The receiving end of $NOTIFY_SOCKET. Like PID 1 it reads whatever arrives as it arrives
    (an event-loop reader), so a test busy elsewhere never lets the queue fill up."""

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
async def systemd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeSystemd]:
    fake = FakeSystemd(tmp_path / "notify.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify.sock"))
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # WatchdogSec=0.2: a ping every 0.1 s
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    loop = asyncio.get_running_loop()
    loop.add_reader(fake.sock.fileno(), fake.drain)
    yield fake
    loop.remove_reader(fake.sock.fileno())
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


async def test_a_full_notify_queue_never_blocks_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PID 1 does not read its notify socket during a long daemon-reload. A blocking send would
    then freeze the daemon (CI once hung here 300 s: a watchdog ping blocked in sendall while the
    test, on the same loop, was the reader). Sends must fail fast; READY=1 is retried."""
    path = tmp_path / "stalled.sock"
    stalled = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    stalled.bind(str(path))
    stalled.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    try:
        qlen = int(Path("/proc/sys/net/unix/max_dgram_qlen").read_text())
        sent = 0
        while notify(f"WATCHDOG=1\nSTATUS=ping {sent}"):
            sent += 1
            assert sent <= qlen + 1, "the queue never filled: the test proves nothing"
        assert sent >= 1
        # Full: a watchdog ping is dropped at once instead of waiting for the reader.
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        assert notify("WATCHDOG=1") is False
        assert loop.time() - t0 < 0.5
        # READY=1 waits for room without blocking the loop: other tasks keep running meanwhile.
        ready = asyncio.create_task(notify_soon("READY=1", "STATUS=up", within_s=10))
        ticks = 0
        for _ in range(10):
            await asyncio.sleep(0.02)
            ticks += 1
        assert ticks == 10
        assert not ready.done()
        got = [stalled.recv(4096).decode() for _ in range(sent)]  # PID 1 reads again
        assert got[0] == "WATCHDOG=1\nSTATUS=ping 0"
        assert await asyncio.wait_for(ready, 5) is True
        assert stalled.recv(4096).decode() == "READY=1\nSTATUS=up"
        # A queue that stays full: notify_soon gives up after its deadline instead of hanging.
        while notify("WATCHDOG=1"):
            pass
        assert await notify_soon("STOPPING=1", within_s=0.2) is False
    finally:
        stalled.close()


def test_a_missing_notify_socket_is_reported_not_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone.sock"))
    assert notify("READY=1") is False
    assert "gone.sock" in caplog.text
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert notify("READY=1") is False
