"""The agent says READY before its replicator starts (issue 17.1): READY means the lane takes
sales, and a drain clocked from READY (or from the link's return) must not have begun before
it. The daemon runs in-process; READY is observed where it is sent."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agent import config as agent_config
from agent import daemon as agent_daemon
from lanesync.broker import MosquittoBroker


async def test_replicator_starts_only_after_ready(
    tmp_path: Path, broker: MosquittoBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = agent_config.parse(
        {
            "store": "S1",
            "lane": "L1",
            "journal": {"path": str(tmp_path / "journal.db")},
            "api": {"socket": str(tmp_path / "api.sock")},
            "broker": {"port": broker.port, "keepalive": 2},
        }
    )
    tasks_at_ready: list[str] = []
    ready = asyncio.Event()

    async def notify_soon(*lines: str) -> None:
        if "READY=1" in lines:
            tasks_at_ready.extend(t.get_name() for t in asyncio.all_tasks())
            ready.set()

    monkeypatch.setattr(agent_daemon, "notify_soon", notify_soon)
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tg:
        tg.create_task(agent_daemon.run(cfg, stop), name="agent under test")
        async with asyncio.timeout(10):
            await ready.wait()
            while not any(t.get_name() == "replicator S1/L1: session" for t in asyncio.all_tasks()):
                await asyncio.sleep(0.01)  # it starts right after READY
        stop.set()
    assert "agent under test" in tasks_at_ready  # the list was taken, from the daemon's side
    assert not [name for name in tasks_at_ready if name.startswith("replicator")]
