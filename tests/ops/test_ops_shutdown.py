"""An agent stopped at any moment of its start-up shuts down, leaving nothing behind.

Regression: a cancellation landing as an aiomqtt call completed was swallowed on Python 3.11
(CPython gh-86296), and one landing mid-commit was replaced by a failed ROLLBACK; either left a
TaskGroup waiting forever. The leak checker in tests/conftest.py fails any leftover task/thread.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agent import daemon as agent_daemon
from lanesync.broker import MosquittoBroker
from tests.ops.ops_helpers import lane_config


class Boom(Exception):
    pass


@pytest.mark.parametrize("step", range(24))
async def test_agent_cancelled_during_start_up_exits(
    tmp_path: Path, broker: MosquittoBroker, step: int
) -> None:
    cfg = lane_config(tmp_path, broker={"port": broker.port, "keepalive": 2})
    raised: BaseExceptionGroup[BaseException] | None = None
    async with asyncio.timeout(20):  # a hang fails the test instead of stalling the suite
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(agent_daemon.run(cfg, asyncio.Event()), name="agent under test")
                await asyncio.sleep(0.004 * step)
                raise Boom
        except BaseExceptionGroup as eg:
            raised = eg
    assert raised is not None
    assert raised.subgroup(Boom) is not None
