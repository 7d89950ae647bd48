"""Recovery after a head-office restart within a second, not an ack timeout (issue 16.2).

A real lane (journal and replicator) and a real head office (ingest over a SQLite file) on a
real Mosquitto. Head office receives the lane's batches and dies before committing them: its
writer thread is held (the one seam: a job queued on ingest's own single-writer executor) and
the process's ingest is torn down, so what paho had already PUBACKed is gone with it. The lane's
window is then full of batches nobody will ever acknowledge. A new head office starts on the
same database; the figure is the time from its start (subscribed) to its first applied entry.

Without the announcement (`Ingest(announce=False)`, the "before") the lane resends only when its
ack timeout fires; with it, as soon as it sees the new incarnation. The ack timeout here is 4 s
(10 s by default): the "after" must come well within it, the "before" not before it. The
figures are printed (`-s`) and reported in README ("Recovery after a head-office restart").
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from agent import config as agent_config
from agent.journal import Journal
from agent.replicator import Replicator
from headoffice import config as ho_config
from headoffice.ingest import Ingest
from lanesync.broker import MosquittoBroker
from protocol.identity import LaneId
from protocol.runtime.tasks import cancel_and_wait

LANE = LaneId("S7", "L1")
ACK_TIMEOUT_S = 4.0


def lane_config(tmp_path: Path, port: int) -> agent_config.AgentConfig:
    return agent_config.parse(
        {
            "store": LANE.store,
            "lane": LANE.lane,
            "journal": {"path": str(tmp_path / "journal.db")},
            "broker": {"port": port, "keepalive": 2},
            "replication": {
                "linger_ms": 0,
                "backoff_initial_s": 0.05,
                "backoff_max_s": 0.3,
                "batch_max_entries": 5,
                "window": 2,
                "ack_timeout_s": ACK_TIMEOUT_S,
            },
            "api": {"socket": str(tmp_path / "api.sock")},
        }
    )


async def fill(journal: Journal, n: int) -> None:
    for i in range(n):
        await journal.append("sale", {"kind": "sale", "n": i})


async def until(what: str, cond: Any, timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.01)
    assert cond(), what


async def restart_figure(tmp_path: Path, broker: MosquittoBroker, *, announce: bool) -> float:
    """Seconds from the new head office's start to its first applied entry."""
    cfg = lane_config(tmp_path, broker.port)
    ho_cfg = ho_config.parse(
        {"database": {"path": str(tmp_path / "ho.db")}, "broker": {"port": broker.port}}
    )
    async with Journal(cfg.journal_path, LANE) as journal:
        await fill(journal, 10)
        first = Ingest(ho_cfg, announce=announce)
        release = threading.Event()
        await first.__aenter__()
        try:
            await first.ready.wait()
            async with Replicator(journal, cfg) as rep:
                await until("first drain", lambda: journal.acked_seq == 10, 10)
                # Head office stops committing: the writer is held by the job below.
                held = asyncio.get_running_loop().run_in_executor(first.writer, release.wait)
                await fill(journal, 20)
                # The lane's window fills with batches head office received but never commits.
                await until(
                    "a full window in flight",
                    lambda: rep.stats.entries_sent >= 20 and rep.batches_in_flight == 2,
                    10,
                )
                await asyncio.sleep(0.3)  # fault timing: loopback delivery to head office
                # Tear it down like a crash: its queued groups are dropped, nothing is acked.
                main = first.session
                assert main is not None
                await cancel_and_wait(main)
                release.set()
                await held
                await first.__aexit__(None, None, None)
                assert journal.acked_seq == 10
                assert first.stats.entries_applied == 10, "the dead one committed more"
                second = Ingest(ho_cfg, announce=announce)
                async with second:
                    await second.ready.wait()
                    started = time.monotonic()
                    await until(
                        "the first re-applied entry",
                        lambda: second.stats.entries_applied > 0,
                        3 * ACK_TIMEOUT_S,
                    )
                    figure = time.monotonic() - started
                    await until("everything acked", lambda: journal.acked_seq == 30, 10)
                    assert second.stats.entries_applied == 20  # each entry applied once
                if announce:
                    assert rep.stats.ho_restarts_seen >= 1
        finally:
            release.set()
            if first.session is not None and not first.session.done():
                await first.__aexit__(None, None, None)  # the test failed before its crash
    return figure


@pytest.mark.parametrize("announce", [False, True], ids=["before", "after"])
async def test_restart_to_first_reapplied_entry(
    tmp_path: Path, broker: MosquittoBroker, announce: bool
) -> None:
    figure = await restart_figure(tmp_path, broker, announce=announce)
    label = "after (announced incarnation)" if announce else "before (ack timeout)"
    print(f"\nhead-office restart to first re-applied entry, {label}: {figure:.3f} s")
    if announce:
        assert figure < ACK_TIMEOUT_S / 2, f"{figure:.3f} s: the lane waited for its ack timeout"
    else:
        # The lane's timer started when its oldest batch was sent, before the restart.
        assert figure > 0.5, f"{figure:.3f} s: something other than the ack timeout resent"
