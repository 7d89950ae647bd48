"""Issue 16 item 4 (a, c): a lane that reaches a broker no head office reads is a PROBLEM, and
the refused count is what was refused at journaling, with what it was."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from agent import config as agent_config
from agent import doctor, techcli
from agent import status as lane_status
from agent.api import LocalApi
from agent.config import AgentConfig
from agent.journal import Journal
from agent.operations import LinkWatch, Operations
from agent.replicator import Replicator, ReplicatorStats
from headoffice import config as ho_config
from headoffice.ingest import Ingest
from headoffice.operations import request_handlers
from lanesync.broker import MosquittoBroker
from protocol.identity import LaneId

LANE = LaneId("S016", "L4")


def lane_config(tmp_path: Path, port: int, **tables: dict[str, Any]) -> AgentConfig:
    data: dict[str, Any] = {
        "store": LANE.store,
        "lane": LANE.lane,
        "journal": {"path": str(tmp_path / "journal.db")},
        "api": {"socket": str(tmp_path / "api.sock")},
        "broker": {"port": port, "keepalive": 2},
        "replication": {"linger_ms": 0, "backoff_initial_s": 0.05, "backoff_max_s": 0.3},
    }
    data.update(tables)
    return agent_config.parse(data)


def status_exit(cfg_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    code = techcli.cmd_status(argparse.Namespace(config=str(cfg_path), json=True))
    return code, json.loads(capsys.readouterr().out)


def test_link_watch_dates_a_session_and_sees_its_first_ack() -> None:
    w, st = LinkWatch(), ReplicatorStats()
    assert not w.observe(st, 1.0)  # never connected: nothing to say
    st.connected, st.connects, st.last_ack_at = True, 1, None
    assert w.observe(st, 2.0)
    assert (w.connected_at, w.answered) == (2.0, False)
    assert not w.observe(st, 3.0)  # still silent: unchanged, dated at the first look
    st.last_ack_at = 3.5
    assert w.observe(st, 4.0)
    assert w.answered
    # the link drops and comes back: the old ack does not vouch for the new session
    st.connected = False
    assert w.observe(st, 5.0)
    assert w.connected_at is None
    st.connected, st.connects = True, 2
    w.observe(st, 6.0)
    assert (w.connected_at, w.answered) == (6.0, False)
    # a reconnect between two looks with an ack already in: answered at the first look
    st.connects, st.last_ack_at = 3, 6.7
    w.observe(st, 7.0)
    assert (w.connected_at, w.answered) == (7.0, True)


async def test_connected_to_a_broker_no_head_office_reads_is_a_problem_until_it_answers(
    tmp_path: Path,
    broker: MosquittoBroker,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(lane_status, "HEAD_OFFICE_SILENT_S", 1.0)
    cfg = lane_config(tmp_path, broker.port)
    cfg_path = tmp_path / "agent.toml"
    cfg_path.write_text(
        f'store = "{LANE.store}"\nlane = "{LANE.lane}"\n'
        f'[journal]\npath = "{cfg.journal_path}"\n[api]\nsocket = "{tmp_path / "api.sock"}"\n'
        f"[broker]\nport = {broker.port}\n",
        encoding="utf-8",
    )
    ho_cfg = ho_config.parse(
        {"database": {"path": str(tmp_path / "ho.db")}, "broker": {"port": broker.port}}
    )
    async with (
        Journal(cfg.journal_path, LANE) as journal,
        Replicator(journal, cfg) as rep,
        Operations(cfg, journal, rep) as ops,
    ):
        await journal.append("sale", {"kind": "sale", "register_no": "T1", "total": 100})
        async with asyncio.timeout(10):
            while not ops.link.connected_at:
                await asyncio.sleep(0.05)
        await asyncio.sleep(1.3)
        code, out = await asyncio.to_thread(status_exit, cfg_path, capsys)
        assert code == 1
        assert out["broker"]["connected"] is True
        assert out["broker"]["head_office_answered"] is False
        assert out["head_office_silent_s"] >= 1.0
        assert any("no head office has answered this lane" in p for p in out["problems"])
        text = lane_status.render(lane_status.collect(cfg))
        assert "connected, but head office NOT ANSWERING for" in text
        checks = doctor.running_agent_link(
            cfg, lane_status.read_live(lane_status.live_path(cfg.journal_path)) or {}
        )
        assert checks[0].outcome == "fail"
        assert "no head office has answered it" in checks[0].found

        async with Ingest(ho_cfg, handlers=request_handlers()):
            async with asyncio.timeout(15):
                while journal.acked_seq < 1 or not ops.link.answered:
                    await asyncio.sleep(0.05)
            await asyncio.sleep(0.1)  # the watch rewrote the live file on the change
            code, out = await asyncio.to_thread(status_exit, cfg_path, capsys)
            assert out["broker"]["head_office_answered"] is True
            assert out["head_office_silent_s"] is None
            assert not [p for p in out["problems"] if "head office" in p]
            assert code == 0, out["problems"]
            checks = doctor.running_agent_link(
                cfg, lane_status.read_live(lane_status.live_path(cfg.journal_path)) or {}
            )
            assert checks[0].outcome == "ok"


async def test_refused_counts_only_documents_refused_at_journaling_and_says_what(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    cfg = lane_config(tmp_path, broker.port)
    async with (
        Journal(cfg.journal_path, LANE) as journal,
        Replicator(journal, cfg) as rep,
        Operations(cfg, journal, rep) as ops,
        LocalApi(cfg.api, journal, rep, agent=cfg, counters=ops.counters),
    ):
        conn = aiohttp.UnixConnector(path=str(cfg.api.socket))
        async with aiohttp.ClientSession(connector=conn) as http:
            bad = {"kind": "sale", "register_no": "T9", "total": 1.5}  # money as a float
            async with http.post("http://lane/v1/documents/check", json=bad) as r:
                assert r.status >= 400  # refused, but nothing would have been journaled
            assert ops.counters.quarantined == 0
            async with http.post("http://lane/v1/documents", json=bad) as r:
                assert r.status >= 400
        assert ops.counters.quarantined == 1
        assert journal.last_seq == 0
        await asyncio.sleep(lane_status.LIVE_INTERVAL_S + 0.5)  # the live file's next rewrite
        st = lane_status.collect(cfg)
        assert st.quarantined == 1
        assert st.last_refusal is not None
        assert st.last_refusal["path"] == "/v1/documents"
        assert "total" in st.last_refusal["reason"]
        text = lane_status.render(st)
        assert "refused     1 document(s) refused at journaling since start; last" in text
        assert "/v1/documents: " in text


async def test_doctor_with_the_agent_stopped_fails_when_no_head_office_answers(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    cfg = lane_config(tmp_path, broker.port)
    checks = {c.name: c for c in await doctor.check_broker_and_clock(cfg, timeout=1.0)}
    assert checks["broker"].outcome == "ok"
    assert checks["head office"].outcome == "fail"
    assert "no head office answered within 1s" in checks["head office"].found
    assert "lanesync headoffice status" in checks["head office"].fix
    ho_cfg = ho_config.parse(
        {"database": {"path": str(tmp_path / "ho.db")}, "broker": {"port": broker.port}}
    )
    async with Ingest(ho_cfg, handlers=request_handlers()) as ingest:
        await asyncio.wait_for(ingest.ready.wait(), 10)
        checks = {c.name: c for c in await doctor.check_broker_and_clock(cfg, timeout=5.0)}
    assert checks["clock"].outcome == "ok", checks["clock"]
    assert "head office" not in checks
