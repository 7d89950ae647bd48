"""`lanesync doctor` on a TLS-configured lane: certificate expiry, files, and the login."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from agent import config as agent_config
from agent import daemon as agent_daemon
from agent import doctor
from agent.config import AgentConfig
from agent.status import LIVE_INTERVAL_S, live_path, read_live
from headoffice.ingest import Ingest
from headoffice.operations import request_handlers
from lanesync.broker import MosquittoBroker
from lanesync.cli import main
from protocol.identity import LaneId
from tests.security.pki import Issued
from tests.security.sec_helpers import Pki, ho_cfg, lane_cfg, lane_user


def lane_with(tmp_path: Path, pki: Pki, cert: Issued, **broker: object) -> AgentConfig:
    return agent_config.parse(
        {
            "store": "S001",
            "lane": "L1",
            "journal": {"path": str(tmp_path / "journal.db")},
            "api": {"socket": str(tmp_path / "api.sock")},
            "broker": {
                "ca_file": str(pki.ca.cert_path),
                "cert_file": str(cert.cert),
                "key_file": str(cert.key),
            }
            | broker,
        }
    )


def by_name(checks: list[doctor.Check]) -> dict[str, doctor.Check]:
    return {c.name: c for c in checks}


def test_certificate_expiry_ok_warn_and_fail(tmp_path: Path, pki: Pki) -> None:
    ok = by_name(doctor.check_certificates(lane_with(tmp_path, pki, pki.clients["store-S001.L1"])))
    assert set(ok) == {"certificate broker.ca_file", "certificate broker.cert_file"}
    assert all(c.outcome == "ok" for c in ok.values()), ok
    assert "valid until" in ok["certificate broker.cert_file"].found

    soon = by_name(doctor.check_certificates(lane_with(tmp_path, pki, pki.expiring)))
    warn = soon["certificate broker.cert_file"]
    assert warn.outcome == "warn"
    assert "expires in 10 days" in warn.found or "expires in 9 days" in warn.found
    assert "renewed" in warn.fix
    assert soon["certificate broker.ca_file"].outcome == "ok"

    gone = by_name(doctor.check_certificates(lane_with(tmp_path, pki, pki.expired)))
    fail = gone["certificate broker.cert_file"]
    assert fail.outcome == "fail"
    assert f"{pki.expired.cert} expired on" in fail.found
    assert "Ask head office for a renewed certificate" in fail.fix


def test_plain_mqtt_with_a_password_is_a_warning(tmp_path: Path) -> None:
    cfg = agent_config.parse(
        {"store": "S001", "lane": "L1", "broker": {"username": "store-S001", "password": "pw"}}
    )
    (check,) = doctor.check_certificates(cfg)
    assert check.outcome == "warn"
    assert "password crosses the network readable" in check.found
    assert "ca_file" in check.fix


def test_world_readable_key_is_a_warning(tmp_path: Path, pki: Pki) -> None:
    src = pki.clients["store-S001.L1"]
    key = tmp_path / "store.key"
    shutil.copy(src.key, key)
    key.chmod(0o644)
    checks = by_name(doctor.check_certificates(lane_with(tmp_path, pki, Issued(src.cert, key))))
    assert checks["secret broker.key_file"].outcome == "warn"
    assert f"chmod 0640 {key}" in checks["secret broker.key_file"].fix
    key.chmod(0o600)
    assert "secret broker.key_file" not in by_name(
        doctor.check_certificates(lane_with(tmp_path, pki, Issued(src.cert, key)))
    )


def test_wrong_key_is_one_failed_certificate_check(
    tmp_path: Path, pki: Pki, capsys: object
) -> None:
    toml = tmp_path / "agent.toml"
    s1, s2 = pki.clients["store-S001.L1"], pki.clients["store-S002.L1"]
    toml.write_text(
        'store = "S001"\nlane = "L1"\n[broker]\n'
        f'ca_file = "{pki.ca.cert_path}"\ncert_file = "{s1.cert}"\nkey_file = "{s2.key}"\n'
    )
    (check,) = doctor.run(str(toml), network=False)
    assert check.name == "certificates"
    assert check.outcome == "fail"
    assert "broker.key_file: the private key" in check.found
    assert "does not belong to the certificate" in check.found
    assert "issued for this store" in check.fix
    assert main(["doctor", "--config", str(toml), "--offline"]) == 1


async def test_broker_login_over_tls(tmp_path: Path, tls_broker: MosquittoBroker, pki: Pki) -> None:
    cfg = lane_cfg(tmp_path, tls_broker, pki, "S001")
    async with Ingest(ho_cfg(tmp_path, tls_broker, pki), handlers=request_handlers()) as ingest:
        await asyncio.wait_for(ingest.ready.wait(), 10)
        checks = by_name(await doctor.check_broker_and_clock(cfg, timeout=5))
    assert checks["broker"].outcome == "ok", checks["broker"]
    assert checks["clock"].outcome == "ok", checks["clock"]  # request/reply pass the ACL


async def test_certificate_from_another_ca_fails_with_a_tls_hint(
    tmp_path: Path, tls_broker: MosquittoBroker, pki: Pki
) -> None:
    cfg = lane_with(tmp_path, pki, pki.rogue, port=tls_broker.port)
    checks = by_name(await doctor.check_broker_and_clock(cfg, timeout=2))
    assert checks["broker"].outcome == "fail"
    assert "certificate verify failed" in checks["broker"].fix
    assert checks["clock"].outcome == "warn"


async def test_doctor_beside_a_running_agent_does_not_take_over_its_session(
    tmp_path: Path, tls_broker: MosquittoBroker, pki: Pki
) -> None:
    """The lane's identity is its client id on the broker: a second login as the lane would
    close the agent's session, so doctor reports the running agent's own link instead."""
    lane = LaneId("S001", "L1")
    c = pki.clients[lane_user(lane)]
    toml = tmp_path / "agent.toml"
    toml.write_text(
        f'store = "S001"\nlane = "L1"\n[journal]\npath = "{tmp_path / "journal.db"}"\n'
        f'[api]\nsocket = "{tmp_path / "api.sock"}"\n'
        f'[broker]\nport = {tls_broker.port}\nkeepalive = 2\nca_file = "{pki.ca.cert_path}"\n'
        f'cert_file = "{c.cert}"\nkey_file = "{c.key}"\n'
    )
    cfg = agent_config.load(str(toml))
    stop = asyncio.Event()
    async with (
        Ingest(ho_cfg(tmp_path, tls_broker, pki), handlers=request_handlers()),
        asyncio.TaskGroup() as tg,
    ):
        tg.create_task(agent_daemon.run(cfg, stop), name="agent under test")
        async with asyncio.timeout(LIVE_INTERVAL_S + 10):
            while (
                not ((live := read_live(live_path(cfg.journal_path))) or {})
                .get("broker", {})
                .get("connected")
            ):
                await asyncio.sleep(0.1)
        checks = by_name(await asyncio.to_thread(doctor.run, str(toml)))
        await asyncio.sleep(1)  # a takeover and the agent's reconnect would be logged by now
        live = read_live(live_path(cfg.journal_path))
        stop.set()
    log = tls_broker.log_tail(300)
    assert "Client store-S001.L1 already connected" not in log
    assert log.count(" as store-S001.L1 (") == 1  # the agent's one login; doctor made none
    assert live is not None
    assert live["broker"]["connects"] == 1
    assert checks["broker"].outcome == "ok", checks["broker"]
    assert "the running agent is connected and logged in" in checks["broker"].found
    assert checks["clock"].found == "the running agent has not measured it yet"
    assert checks["agent"].outcome == "ok"
