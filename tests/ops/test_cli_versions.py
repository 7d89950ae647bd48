"""Issue 18.3, the rest: head office's `/api/health` (each worker's own view) lists the lanes
that said hello to it with the lanesync version each runs, and `lanesync doctor` beside a
running agent shows head office's version as the agent heard it announced. A real head office
(Ingest and its Operations with the status page) and a real lane on a real Mosquitto; doctor
and status run as subprocesses of the console script, as a technician runs them."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp

from agent import config as agent_config
from agent import status as lane_status
from agent.journal import Journal
from agent.operations import Operations as LaneOperations
from agent.replicator import Replicator
from headoffice import config as ho_config
from headoffice import health
from headoffice.ingest import Ingest
from headoffice.operations import Operations, request_handlers
from lanesync.broker import MosquittoBroker
from protocol.identity import LaneId
from protocol.messages import PROTOCOL_VERSION
from protocol.runtime.version import VERSION

LANE = LaneId("S018", "L3")
LANESYNC = str(Path(sys.executable).parent / "lanesync")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def lanesync_json(*argv: str) -> tuple[int, Any]:
    res = subprocess.run(
        [LANESYNC, *argv, "--json"], capture_output=True, text=True, timeout=60, check=False
    )
    return res.returncode, json.loads(res.stdout)


async def test_health_lists_lanes_with_versions_and_doctor_shows_head_offices(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    page = free_port()
    ho_path = tmp_path / "headoffice.toml"
    ho_path.write_text(
        f'[database]\npath = "{tmp_path / "ho.db"}"\n[broker]\nport = {broker.port}\n'
        f'[status_page]\nlisten = "127.0.0.1:{page}"\n',
        encoding="utf-8",
    )
    lane_path = tmp_path / "agent.toml"
    lane_path.write_text(
        f'store = "{LANE.store}"\nlane = "{LANE.lane}"\n'
        f'[journal]\npath = "{tmp_path / "journal.db"}"\n'
        f'[api]\nsocket = "{tmp_path / "api.sock"}"\n'
        f"[broker]\nport = {broker.port}\nkeepalive = 2\n"
        "[replication]\nlinger_ms = 0\nbackoff_initial_s = 0.05\nbackoff_max_s = 0.3\n",
        encoding="utf-8",
    )
    ho_cfg = ho_config.load(str(ho_path))
    cfg = agent_config.load(str(lane_path))
    live = lane_status.live_path(cfg.journal_path)
    async with (
        Ingest(ho_cfg, handlers=request_handlers()) as ingest,
        Operations(ho_cfg, ingest),
        Journal(cfg.journal_path, LANE) as journal,
        Replicator(journal, cfg) as rep,
        LaneOperations(cfg, journal, rep),
    ):
        await journal.append("sale", {"kind": "sale", "register_no": "T1", "total": 998})
        async with asyncio.timeout(20):
            while journal.acked_seq < 1 or rep.stats.ho_version is None:
                await asyncio.sleep(0.05)
            # the running agent's live file carries what head office announced (rewritten
            # every few seconds)
            while ((lane_status.read_live(live) or {}).get("head_office") or {}).get(
                "version"
            ) is None:
                await asyncio.sleep(0.1)

        # (a) each worker's own view: the lanes that said hello to it, with their versions
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{page}{health.HEALTH_PATH}") as r,
        ):
            own = await r.json()
        assert own["version"] == VERSION
        (seen,) = own["lanes"]
        assert (seen["lane"], seen["version"], seen["protocol"]) == (
            str(LANE),
            VERSION,
            PROTOCOL_VERSION,
        )
        code, out = await asyncio.to_thread(
            lanesync_json, "headoffice", "status", "--config", str(ho_path)
        )
        assert code == 0, out["problems"]
        assert out["workers"][0]["health"]["lanes"] == own["lanes"]
        text = health.render(await asyncio.to_thread(health.check, str(ho_path)))
        assert f"lanes       lanesync {VERSION} (protocol {PROTOCOL_VERSION}): 1 ({LANE})" in text
        assert f"worker 1    lanesync {VERSION}, pid" in text

        # (b) doctor beside the running agent: head office's version, from the agent
        code, checks = await asyncio.to_thread(lanesync_json, "doctor", "--config", str(lane_path))
        by_name = {c["name"]: c for c in checks}
        ho = by_name["head office version"]
        assert ho["outcome"] == "ok", checks
        assert f"head office runs lanesync {VERSION}" in ho["found"]
        assert by_name["broker"]["found"].startswith("the running agent is connected")
        code, st = await asyncio.to_thread(lanesync_json, "status", "--config", str(lane_path))
        assert st["head_office"]["version"] == VERSION
        assert st["head_office"]["protocol"] == PROTOCOL_VERSION
        assert f"head office lanesync {VERSION}" in lane_status.render(lane_status.collect(cfg))
