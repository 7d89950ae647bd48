"""The other kind of identity: a user and password from `broker.password_file`, over TLS
(server certificate only), checked by Mosquitto's password_file and the same ACL."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiomqtt
import pytest

from agent import config as agent_config
from agent.config import AgentConfig
from agent.journal import Journal
from agent.replicator import Replicator
from headoffice import config as ho_config
from headoffice.ingest import Ingest
from lanesync.broker import MosquittoBroker
from protocol.runtime.brokerconn import TlsConfig
from tests.security.sec_helpers import PASSWORDS, Pki, broker_keys, client


async def test_lane_logs_in_with_its_password_file(
    tmp_path: Path, password_broker: MosquittoBroker, pki: Pki
) -> None:
    cfg: AgentConfig = agent_config.parse(
        {
            "store": "S002",
            "lane": "L1",
            "journal": {"path": str(tmp_path / "journal.db")},
            "api": {"socket": str(tmp_path / "api.sock")},
            "broker": broker_keys(tmp_path, password_broker, pki, "store-S002.L1"),
            "replication": {"linger_ms": 0, "backoff_initial_s": 0.05, "backoff_max_s": 0.3},
        }
    )
    assert cfg.broker.tls == TlsConfig(str(pki.ca.cert_path))  # the broker's cert only
    assert cfg.broker.password == PASSWORDS["store-S002.L1"]
    ho = ho_config.parse(
        {
            "database": {"path": str(tmp_path / "ho.db")},
            "broker": broker_keys(tmp_path, password_broker, pki, "headoffice"),
        }
    )
    async with Journal(cfg.journal_path, cfg.lane) as journal:
        for i in range(10):
            await journal.append("sale", {"kind": "sale", "register_no": f"T{i}", "total": i})
        async with Ingest(ho) as ingest, Replicator(journal, cfg):
            async with asyncio.timeout(20):
                while journal.acked_seq < 10:
                    await asyncio.sleep(0.05)
            assert ingest.stats.entries_applied == 10
    log = password_broker.log_tail(100)
    assert " as store-S002.L1 (p2, c1, k2, u'store-S002.L1')" in log  # its login is its id
    assert "u'headoffice'" in log


async def test_wrong_password_is_refused(password_broker: MosquittoBroker, pki: Pki) -> None:
    tls = TlsConfig(str(pki.ca.cert_path))
    with pytest.raises(aiomqtt.MqttCodeError, match=r"[Nn]ot authori"):
        async with client(password_broker, tls, username="store-S001", password="guess"):
            pytest.fail("connected with a wrong password")
    with pytest.raises(aiomqtt.MqttCodeError, match=r"[Nn]ot authori"):
        async with client(password_broker, tls):  # anonymous
            pytest.fail("connected without a user")
    # Positive control: the right password on the same listener.
    async with client(
        password_broker, tls, username="store-S001", password=PASSWORDS["store-S001"]
    ):
        pass
