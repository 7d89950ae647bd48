"""`lanesync headoffice store add|remove` on a real Mosquitto (issue 18 item 2).

What the command writes is used as written: the stores' password file and the ACL by the
broker (the example config's stores' listener), the lane's agent.toml (its /etc paths pointed
at the folder the command wrote, as a technician copies it) by a real lane that journals and
drains to head office; after `store remove` and a broker reload the lane can no longer log in.
The certificate kind is checked against the same broker with the CA `pki init` made.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import tomllib
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiomqtt
import pytest

from agent import config as agent_config
from agent.journal import Journal
from agent.replicator import Replicator
from headoffice import config as ho_config
from headoffice.ingest import Ingest
from lanesync.broker import MosquittoBroker
from lanesync.cli import main
from lanesync.stack import write_toml
from protocol.runtime.brokerconn import TlsConfig
from tests.security.sec_helpers import (
    HEADOFFICE,
    Pki,
    broker_keys,
    broker_options,
    client,
    password_file,
)


def ho_toml(tmp_path: Path, login: str, broker: dict[str, Any] | None = None) -> Path:
    return write_toml(
        tmp_path / "headoffice.toml",
        {
            "database": {"path": str(tmp_path / "ho.db")},
            "broker": broker or {"port": 1883},
            "enrol": {
                "login": login,
                "pki_dir": str(tmp_path / "pki"),
                "password_file": str(tmp_path / "stores.passwd"),
                "acl_file": str(tmp_path / "lanesync.acl"),
                "out_dir": str(tmp_path / "stores"),
                "lane_broker_host": "127.0.0.1",
                "lane_ca_file": "/etc/lanesync/broker-ca.pem",
            },
        },
    )


def as_copied(agent_toml: Path, tmp_path: Path, broker: MosquittoBroker, pki: Pki) -> Any:
    """The printed agent.toml as it runs on the box: /etc/lanesync/* are the folder's files, the
    broker's CA is the test broker's, the journal and socket in tmp_path."""
    data = tomllib.loads(agent_toml.read_text())
    folder = agent_toml.parent
    b = data["broker"]
    for key in ("password_file", "cert_file", "key_file"):
        if key in b:
            b[key] = str(folder / Path(b[key]).name)
    b.update(ca_file=str(pki.ca.cert_path), port=broker.port, keepalive=2)
    data["journal"] = {"path": str(tmp_path / "journal.db")}
    data["api"] = {"socket": str(tmp_path / "api.sock")}
    data["replication"] = {"linger_ms": 0, "backoff_initial_s": 0.05, "backoff_max_s": 0.3}
    return agent_config.parse(data)


async def test_store_add_with_passwords_then_remove(
    tmp_path: Path, broker_factory: Callable[..., MosquittoBroker], pki: Pki
) -> None:
    config = ho_toml(tmp_path, "password")
    assert (
        main(
            [
                "headoffice",
                "--config",
                str(config),
                "store",
                "add",
                "S002",
                "--name",
                "Galway",
                "--lanes",
                "L1,L2",
            ]
        )
        == 0
    )
    lane_dir = tmp_path / "stores" / "S002" / "L1"
    assert (lane_dir / "broker.pw").stat().st_mode & 0o077 == 0
    acl = (tmp_path / "lanesync.acl").read_text()
    assert "user store-S002.L1" in acl
    assert "user store-S002.L2" in acl
    ho_passwd = password_file(tmp_path / "headoffice.passwd", [HEADOFFICE])
    broker = broker_factory(
        **broker_options(
            pki,
            tmp_path / "lanesync.acl",
            stores="password",
            headoffice="password",
            passwd={
                "/etc/mosquitto/lanesync-stores.passwd": tmp_path / "stores.passwd",
                "/etc/mosquitto/lanesync-headoffice.passwd": ho_passwd,
            },
        )
    )
    ho = ho_config.parse(
        {
            "database": {"path": str(tmp_path / "ho.db")},
            "broker": broker_keys(tmp_path, broker, pki, HEADOFFICE),
        }
    )
    lane = as_copied(lane_dir / "agent.toml", tmp_path, broker, pki)
    async with Journal(lane.journal_path, lane.lane) as journal:
        for i in range(5):
            await journal.append("sale", {"kind": "sale", "register_no": f"T{i}", "total": i})
        async with Ingest(ho) as ingest, Replicator(journal, lane):
            async with asyncio.timeout(20):
                while journal.acked_seq < 5:
                    await asyncio.sleep(0.05)
            # registered by `store add`: applied, not held for the registry
            assert ingest.stats.entries_applied == 5
    assert main(["headoffice", "--config", str(config), "store", "remove", "S002"]) == 0
    assert "store-S002.L1" not in (tmp_path / "stores.passwd").read_text()
    assert "store-S002" not in (tmp_path / "lanesync.acl").read_text()
    assert broker.pid is not None
    os.kill(broker.pid, signal.SIGHUP)  # systemctl reload mosquitto
    password = (lane_dir / "broker.pw").read_text().strip()
    tls = TlsConfig(str(pki.ca.cert_path))

    async def logs_in() -> bool:
        try:
            async with client(broker, tls, username="store-S002.L1", password=password):
                return True
        except aiomqtt.MqttCodeError:
            return False

    async with asyncio.timeout(10):
        while await logs_in():  # the broker applies a reload asynchronously
            await asyncio.sleep(0.1)
    with pytest.raises(aiomqtt.MqttCodeError, match=r"[Nn]ot authori"):
        async with client(broker, tls, username="store-S002.L1", password=password):
            pytest.fail("a removed lane logged in")


async def test_store_add_with_certificates_then_revoke(
    tmp_path: Path, broker_factory: Callable[..., MosquittoBroker], pki: Pki
) -> None:
    config = ho_toml(tmp_path, "cert")
    assert (
        main(
            [
                "headoffice",
                "--config",
                str(config),
                "store",
                "add",
                "S003",
                "--name",
                "Cork",
                "--lanes",
                "L1",
            ]
        )
        == 2
    )  # no CA yet: refused, nothing registered
    assert not (tmp_path / "stores").exists()
    assert main(["headoffice", "--config", str(config), "pki", "init"]) == 0
    assert (
        main(
            [
                "headoffice",
                "--config",
                str(config),
                "store",
                "add",
                "S003",
                "--name",
                "Cork",
                "--lanes",
                "L1",
            ]
        )
        == 0
    )
    lane_dir = tmp_path / "stores" / "S003" / "L1"
    written = tomllib.loads((lane_dir / "agent.toml").read_text())
    assert written["broker"]["cert_file"] == "/etc/lanesync/lane.crt"
    assert (lane_dir / "lane.key").stat().st_mode & 0o077 == 0

    def broker_with_crl() -> MosquittoBroker:
        # the stores' listener trusts the CA `pki init` made (the broker's own certificate
        # stays the test CA's)
        stores_ca = SimpleNamespace(cert_path=tmp_path / "pki" / "ca.crt")
        opts = broker_options(
            dataclasses.replace(pki, ca=stores_ca),  # type: ignore[arg-type]
            tmp_path / "lanesync.acl",
            stores="cert",
            headoffice="cert",
        )
        opts["extra_config"] = [*opts["extra_config"], f"crlfile {tmp_path / 'pki' / 'ca.crl'}"]
        return broker_factory(**opts)

    lane_tls = TlsConfig(
        str(pki.ca.cert_path), str(lane_dir / "lane.crt"), str(lane_dir / "lane.key")
    )
    broker = broker_with_crl()
    async with client(broker, lane_tls, identifier="store-S003.L1"):
        pass  # the issued certificate logs in on the stores' listener
    broker.stop()
    assert main(["headoffice", "--config", str(config), "store", "remove", "S003"]) == 0
    broker = broker_with_crl()  # a restart rereads the CRL
    with pytest.raises((aiomqtt.MqttError, OSError)):
        async with client(broker, lane_tls, identifier="store-S003.L1"):
            pytest.fail("a revoked certificate logged in")
