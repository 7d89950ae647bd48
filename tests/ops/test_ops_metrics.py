"""Prometheus metrics on the agent and head office (item 5)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from agent.journal import Journal
from agent.metrics import BatchSizes
from agent.operations import Operations
from agent.replicator import Replicator
from headoffice import config as ho_config
from headoffice.ingest import Ingest
from headoffice.operations import Operations as HoOperations
from headoffice.operations import request_handlers
from lanesync.broker import MosquittoBroker
from protocol.runtime.clock import clock_skew_s
from tests.ops.ops_helpers import LANE, fill, lane_config


def _value(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith((name + "{", name + " ")):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in metrics:\n{text}")


async def _get(url: str) -> str:
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        assert r.status == 200
        return await r.text()


async def test_agent_and_headoffice_metrics_and_clock_check(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    cfg = lane_config(
        tmp_path,
        broker={"port": broker.port, "keepalive": 2},
        replication={
            "linger_ms": 0,
            "backoff_initial_s": 0.05,
            "backoff_max_s": 0.3,
            "ack_timeout_s": 0.5,  # head office starts later: resend soon after it is up
        },
        metrics={"listen": "127.0.0.1:0"},
    )
    ho_cfg = ho_config.parse(
        {
            "database": {"path": str(tmp_path / "ho.db")},
            "broker": {"port": broker.port},
            "status_page": {"listen": "127.0.0.1:0"},
            "metrics": {"listen": "127.0.0.1:0"},
        }
    )
    async with Journal(cfg.journal_path, LANE) as journal:
        await fill(journal, 25)
        batch_sizes = BatchSizes()
        async with (
            Replicator(journal, cfg, on_batch=batch_sizes.observe) as rep,
            Operations(cfg, journal, rep, batch_sizes=batch_sizes) as ops,
        ):
            assert ops.http is not None
            url = f"http://127.0.0.1:{ops.http.port}/metrics"
            text = await _get(url)
            assert _value(text, "lanesync_agent_backlog_entries") == 25
            assert _value(text, "lanesync_agent_backlog_bytes") > 0
            assert _value(text, "lanesync_agent_ack_lag_seconds") >= 0
            assert _value(text, "lanesync_agent_journal_full") == 0
            async with (
                Ingest(ho_cfg, handlers=request_handlers()) as ingest,
                HoOperations(ho_cfg, ingest) as ho_ops,
            ):
                async with asyncio.timeout(15):
                    while journal.acked_seq < 25:
                        await asyncio.sleep(0.05)
                skew = await ops.check_clock()
                assert skew is not None
                assert abs(skew) < 1.0
                await asyncio.sleep(1.1)  # the cached journal facts refresh once a second
                text = await _get(url)
                assert _value(text, "lanesync_agent_backlog_entries") == 0
                assert _value(text, "lanesync_agent_broker_connected") == 1
                assert _value(text, "lanesync_agent_batch_entries_count") >= 1
                assert _value(text, "lanesync_agent_batch_entries_sum") >= 25
                assert "lanesync_agent_clock_skew_seconds" in text
                assert ho_ops.page is not None
                assert ho_ops.metrics_http is not None
                for port in (ho_ops.page.port, ho_ops.metrics_http.port):
                    ho = await _get(f"http://127.0.0.1:{port}/metrics")
                    assert _value(ho, "lanesync_ho_entries_applied_total") == 25
                    assert _value(ho, "lanesync_ho_lane_lag_entries") == 0
                    assert 'store="S042"' in ho
                    assert _value(ho, "lanesync_ho_broker_connected") == 1


def test_skew_is_head_office_minus_lane_at_the_midpoint() -> None:
    assert clock_skew_s(10_500, sent=10.0, received=10.2) == pytest.approx(0.4)
