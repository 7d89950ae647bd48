"""`lanesync headoffice status` (issue 16 item 4 d): head office up, its broker link, ingest
lag, held entries, and the exit codes every command uses (2 could not check, 3 not
answering), against a real head office (Ingest and its Operations with the status page) on a
real Mosquitto."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from typing import Any

import pytest

from agent import config as agent_config
from agent.journal import Journal
from agent.replicator import Replicator
from headoffice import config as ho_config
from headoffice import health
from headoffice.ingest import Ingest
from headoffice.operations import Operations, request_handlers
from headoffice.transit import bodies
from lanesync import cli
from lanesync.broker import MosquittoBroker
from protocol.identity import LaneId

LANE = LaneId("S016", "L1")
RECALLED = "P-RECALL"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(tmp_path: Path, broker_port: int, page_port: int | None) -> Path:
    path = tmp_path / "headoffice.toml"
    text = f'[database]\npath = "{tmp_path / "ho.db"}"\n[broker]\nport = {broker_port}\n'
    if page_port is not None:
        text += f'[status_page]\nlisten = "127.0.0.1:{page_port}"\n'
    path.write_text(text, encoding="utf-8")
    return path


def status(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    """`lanesync headoffice ... status --json` through the real command line."""
    code = cli.main(["headoffice", *argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


async def run_status(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    return await asyncio.to_thread(status, capsys, *argv)


def test_exit_2_when_it_cannot_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = status(capsys, "status", "--config", str(tmp_path / "missing.toml"))
    assert (code, out["state"]) == (2, "could not check")
    assert "missing.toml" in out["problems"][0]
    cfg = write_config(tmp_path, 1883, None)
    code, out = status(capsys, "--config", str(cfg), "status")
    assert code == 2
    assert "[status_page] listen is not set" in out["problems"][0]


def test_exit_3_when_no_worker_answers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path, 1883, free_port())
    code, out = status(capsys, "status", "--config", str(cfg))
    assert (code, out["state"]) == (3, "not answering")
    assert out["workers"][0]["answering"] is False
    assert "worker 1 not answering" in out["problems"][0]


async def test_accepting_then_held_then_broker_lost(
    tmp_path: Path,
    broker_factory: Any,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A rule head office enforces and the lane does not know: this item is refused, its entry
    # held at its seq (issue 16 item 1), the lane's later entries go on.
    real_parse = bodies.parse

    def parse(kind: str, body: bytes, store: str) -> bodies.Parsed:
        parsed = real_parse(kind, body, store)
        if isinstance(parsed, bodies.Adjustment) and any(
            line.item == RECALLED for line in parsed.lines
        ):
            raise bodies.BodyError("$.lines[0].item", "item is recalled")
        return parsed

    monkeypatch.setattr(bodies, "parse", parse)
    broker: MosquittoBroker = broker_factory(persistence=False)
    page = free_port()
    cfg_path = write_config(tmp_path, broker.port, page)
    ho_cfg = ho_config.load(str(cfg_path))
    lane = agent_config.parse(
        {
            "store": LANE.store,
            "lane": LANE.lane,
            "journal": {"path": str(tmp_path / "lane.db")},
            "api": {"socket": str(tmp_path / "lane.sock")},
            "broker": {"port": broker.port, "keepalive": 2},
            "replication": {"linger_ms": 0, "backoff_initial_s": 0.05, "backoff_max_s": 0.3},
        }
    )
    async with (
        Ingest(ho_cfg, handlers=request_handlers()) as ingest,
        Operations(ho_cfg, ingest),
        Journal(lane.journal_path, LANE) as journal,
        Replicator(journal, lane),
    ):
        for n in range(1, 11):
            await journal.append("sale", {"kind": "sale", "register_no": f"T{n}", "total": n})
        async with asyncio.timeout(15):
            while journal.acked_seq < 10:
                await asyncio.sleep(0.05)
        code, out = await run_status(capsys, "--config", str(cfg_path), "status")
        assert out["problems"] == []
        assert (code, out["state"]) == (0, "accepting")
        worker = out["workers"][0]
        assert worker["health"]["broker"]["connected"] is True
        assert worker["health"]["entries_applied"] == 10
        assert (out["lanes"], out["held"], out["lag_entries"]) == (1, 0, 0)
        assert out["last_commit_age_s"] < 15

        # worker 2 of --workers 2 is not running: a problem, not "not answering"
        code, out = await run_status(capsys, "--config", str(cfg_path), "status", "--workers", "2")
        assert code == 1
        assert out["problems"] == [out["problems"][0]]
        assert out["problems"][0].startswith("worker 2 not answering")

        await journal.append(
            "stock_adjustment",
            {
                "kind": "stock_adjustment",
                "reason": "COUNT",
                "lines": [{"item": RECALLED, "qty": "1.000"}],
            },
        )
        await journal.append("sale", {"kind": "sale", "register_no": "T12", "total": 12})
        async with asyncio.timeout(15):
            while journal.acked_seq < 12:
                await asyncio.sleep(0.05)
        code, out = await run_status(capsys, "--config", str(cfg_path), "status")
        assert (code, out["held"]) == (1, 1)
        assert any("1 entries held for an operator" in p for p in out["problems"])
        text = health.render(await asyncio.to_thread(health.check, str(cfg_path)))
        assert "head office: up, with problems (exit 1)" in text
        assert "PROBLEM     1 entries held for an operator" in text

        broker.stop()
        async with asyncio.timeout(15):
            while ingest.stats.connected:
                await asyncio.sleep(0.05)
        code, out = await run_status(capsys, "--config", str(cfg_path), "status")
        assert code == 1
        assert any("has lost its broker link" in p for p in out["problems"])
        assert "BROKER DISCONNECTED" in health.render(
            await asyncio.to_thread(health.check, str(cfg_path))
        )


def test_stalled_ingest_with_lag_is_a_problem() -> None:
    rep = health.HeadOfficeHealth(
        workers=[
            health.Worker(
                1,
                "http://127.0.0.1:1/api/health",
                answering=True,
                health={
                    "broker": {"connected": True},
                    "last_commit_at": 1000.0,
                    "started_at": 900.0,
                },
            )
        ],
        lanes=3,
        lanes_lagging=2,
        lag_entries=40,
    )
    health.judge(rep, now=1000.0 + health.STALLED_AFTER_S + 5)
    assert rep.code == 1
    assert "40 entries of 2 lane(s) not yet at head office" in rep.problems[0]
    moving = health.HeadOfficeHealth(workers=rep.workers, lanes=3, lanes_lagging=2, lag_entries=40)
    health.judge(moving, now=1010.0)  # lag while commits flow: normal
    assert (moving.code, moving.problems) == (0, [])
