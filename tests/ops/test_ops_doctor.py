"""`lanesync doctor`: each check says what it found and, when not ok, a plain fix (item 2)."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from agent import doctor
from headoffice import config as ho_config
from headoffice.ingest import Ingest
from headoffice.operations import request_handlers
from lanesync.broker import MosquittoBroker
from lanesync.cli import main
from protocol.identity import LaneId
from protocol.messages import HeadOffice, Reply
from protocol.runtime.version import VERSION
from tests.ops.ops_helpers import lane_config


def _toml(tmp_path: Path, port: int, extra: str = "") -> Path:
    p = tmp_path / "agent.toml"
    p.write_text(
        'store = "S042"\nlane = "L1"\n'
        f'[journal]\npath = "{tmp_path / "journal.db"}"\n'
        f'[api]\nsocket = "{tmp_path / "api.sock"}"\n'
        f"[broker]\nport = {port}\nkeepalive = 2\n" + extra
    )
    return p


def test_bad_config_is_one_failed_check_naming_the_key(tmp_path: Path) -> None:
    p = tmp_path / "agent.toml"
    p.write_text('store = "S042"\nlane = "L1"\n[broker]\nport = "x"\n')
    (check,) = doctor.run(str(p), network=False)
    assert check.outcome == "fail"
    assert "broker.port" in check.found
    assert "agent.example.toml" in check.fix


async def test_broker_login_and_clock_against_a_running_head_office(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    cfg = lane_config(tmp_path, broker={"port": broker.port, "keepalive": 2})
    ho_cfg = ho_config.parse(
        {"database": {"path": str(tmp_path / "ho.db")}, "broker": {"port": broker.port}}
    )
    async with Ingest(ho_cfg, handlers=request_handlers()) as ingest:
        await asyncio.wait_for(ingest.ready.wait(), 10)
        checks = {c.name: c for c in await doctor.check_broker_and_clock(cfg, timeout=5)}
    assert checks["broker"].outcome == "ok"
    assert checks["clock"].outcome == "ok", checks["clock"]
    assert "round trip" in checks["clock"].found


async def test_unreachable_broker_says_what_to_check(tmp_path: Path) -> None:
    cfg = lane_config(tmp_path, broker={"port": 9, "keepalive": 2})
    checks = {c.name: c for c in await doctor.check_broker_and_clock(cfg, timeout=1)}
    assert checks["broker"].outcome == "fail"
    assert "127.0.0.1:9" in checks["broker"].found
    assert "host and port" in checks["broker"].fix
    assert checks["clock"].outcome == "warn"


def test_clock_skew_thresholds() -> None:
    lane = LaneId("S042", "L1")
    now = time.time()
    ok = doctor.skew_check(Reply(lane, "c", True, {"now_ms": int(now * 1000)}), now, now)
    assert ok.outcome == "ok"
    far = doctor.skew_check(Reply(lane, "c", True, {"now_ms": int((now + 90) * 1000)}), now, now)
    assert far.outcome == "fail"
    assert "behind head office" in far.found
    assert "timedatectl" in far.fix


def test_devices_disk_key_and_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg_path = _toml(
        tmp_path,
        9,
        '[[scanners]]\nname = "dock"\ntype = "serial"\n'
        'path = "/dev/serial/by-id/usb-nothing-here"\n'
        "[retention]\nmin_free_disk_mb = 0\n",
    )
    assert main(["doctor", "--config", str(cfg_path), "--offline", "--json"]) == 1
    checks = {c["name"]: c for c in json.loads(capsys.readouterr().out)}
    assert checks["config"]["outcome"] == "ok"
    scanner = checks["scanner dock"]
    assert scanner["outcome"] == "fail"
    assert "Plug the scanner in" in scanner["fix"]
    assert checks["disk"]["outcome"] == "ok"
    assert checks["export key"]["outcome"] == "warn"
    assert checks["agent"]["outcome"] == "warn"
    assert "systemctl start" in checks["agent"]["fix"]
    assert main(["doctor", "--config", str(cfg_path), "--offline"]) == 1
    out = capsys.readouterr().out
    assert "[FAIL] scanner dock" in out
    assert "fix: Plug the scanner in" in out


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI not installed")
def test_certificate_expiry(tmp_path: Path) -> None:
    cert = tmp_path / "ca.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "10",
            "-subj",
            "/CN=lanesync-test",
            "-keyout",
            str(tmp_path / "k.pem"),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    assert doctor.cert_not_after(str(cert)).timestamp() > time.time()
    cfg = lane_config(tmp_path, broker={"ca_file": str(cert)})
    (soon,) = doctor.check_certificates(cfg)
    assert soon.outcome == "warn"
    assert "expires in" in soon.found
    assert "renewed" in soon.fix
    (expired,) = doctor.check_certificates(cfg, now=time.time() + 20 * 86400)
    assert expired.outcome == "fail"
    assert "expired" in expired.found


async def test_doctor_shows_this_box_and_head_office_versions(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    """Issue 18 item 3: the lane's own version, and head office's from its announcement."""
    cfg = lane_config(tmp_path, broker={"port": broker.port, "keepalive": 2})
    ho_cfg = ho_config.parse(
        {"database": {"path": str(tmp_path / "ho.db")}, "broker": {"port": broker.port}}
    )
    async with Ingest(ho_cfg, handlers=request_handlers()) as ingest:
        await asyncio.wait_for(ingest.ready.wait(), 10)
        checks = {c.name: c for c in await doctor.check_broker_and_clock(cfg, timeout=5)}
    ho = checks["head office version"]
    assert ho.outcome == "ok", ho
    assert f"head office runs lanesync {VERSION} (serves protocol 1, 2)" in ho.found
    own = doctor.version_check()
    assert (own.outcome, own.found) == ("ok", f"lanesync {VERSION}, protocol 2 (speaks 1, 2)")


def test_head_office_version_outside_this_lanes_range_is_a_failure() -> None:
    newer = HeadOffice("online", 1, "w1", "9.0.0", (3, 4))
    check = doctor.head_office_version_check(newer)
    assert check.outcome == "fail"
    assert "this box speaks only 1, 2" in check.found
    assert "Upgrade lanesync on this box" in check.fix
    older = doctor.head_office_version_check(HeadOffice("online", 1, "w1", "0.1.0", (0,)))
    assert (older.outcome, "upgrade head office first" in older.fix) == ("fail", True)
    silent = doctor.head_office_version_check(None)
    assert silent.outcome == "warn"
    assert "announced no version" in silent.found
