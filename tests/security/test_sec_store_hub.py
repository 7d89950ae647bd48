"""A store hub: the store's lanes publish to a Mosquitto in the store, which bridges the
store's topics to head office's broker as the store's one identity, under the ACL that
`lanesync headoffice acl` writes. The bridge section is systemd/mosquitto-store-hub.example.conf
itself (placeholders filled in), so the documented file is the tested one.

The WAN between hub and head office is a proxy that is cut while the tills keep selling: the
lanes stay connected to the hub, their acks stop, and once the WAN is back everything they
confirmed is at head office once and in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable
from pathlib import Path

from agent import config as agent_config
from agent.journal import Journal
from agent.replicator import Replicator
from headoffice import config as ho_config
from headoffice.ingest import Ingest
from lanesync.broker import MosquittoBroker
from lanesync.proxy import ProxyThread
from protocol.identity import LaneId
from tests.security.sec_helpers import PASSWORDS, Pki, broker_keys

EXAMPLE = Path(__file__).resolve().parents[2] / "systemd" / "mosquitto-store-hub.example.conf"
LANES = [LaneId("S001", "L1"), LaneId("S001", "L2")]


def hub_config(wan_port: int, pki: Pki) -> list[str]:
    """The example file's settings with its placeholders filled in for this test."""
    text = EXAMPLE.read_text()
    text = text.replace("mqtt.example.com:8883", f"127.0.0.1:{wan_port}")
    text = text.replace("/etc/lanesync/broker-ca.pem", str(pki.ca.cert_path))
    text = text.replace("CHANGE-ME", PASSWORDS["store-S001"])
    text = text.replace("restart_timeout 2 30", "restart_timeout 1 2")  # the test's patience
    return [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]


def lane_config(tmp_path: Path, lane: LaneId, hub: MosquittoBroker) -> agent_config.AgentConfig:
    name = f"{lane.store}-{lane.lane}"
    return agent_config.parse(
        {
            "store": lane.store,
            "lane": lane.lane,
            "journal": {"path": str(tmp_path / f"{name}.db")},
            "api": {"socket": str(tmp_path / f"{name}.sock")},
            "broker": {"port": hub.port, "keepalive": 2},  # the store LAN: plain MQTT
            "replication": {
                "linger_ms": 5,
                "batch_max_entries": 10,
                "ack_timeout_s": 1.5,
                "backoff_initial_s": 0.05,
                "backoff_max_s": 0.3,
            },
        }
    )


async def sell(journal: Journal, n: int) -> None:
    for i in range(n):
        total = 100 + journal.last_seq + i
        await journal.append("sale", {"kind": "sale", "register_no": f"T{i}", "total": total})


async def wait_acked(journals: list[Journal], seq: int, timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while any(j.acked_seq < seq for j in journals):
            await asyncio.sleep(0.05)


async def test_lanes_behind_a_store_hub_replicate_through_a_wan_cut(
    tmp_path: Path,
    password_broker: MosquittoBroker,
    broker_factory: Callable[..., MosquittoBroker],
    pki: Pki,
) -> None:
    wan = ProxyThread("127.0.0.1", password_broker.port, name="wan").start()
    try:
        hub = broker_factory(extra_config=hub_config(wan.port, pki))
        ho = ho_config.parse(
            {
                "database": {"path": str(tmp_path / "ho.db")},
                "broker": broker_keys(tmp_path, password_broker, pki, "headoffice"),
            }
        )
        async with contextlib.AsyncExitStack() as stack:
            ingest = await stack.enter_async_context(Ingest(ho))
            journals, replicators = [], []
            for lane in LANES:
                cfg = lane_config(tmp_path, lane, hub)
                j = await stack.enter_async_context(Journal(cfg.journal_path, lane))
                replicators.append(await stack.enter_async_context(Replicator(j, cfg)))
                journals.append(j)
            for j in journals:
                await sell(j, 20)
            await wait_acked(journals, 20, 30)  # through hub, bridge and ACL

            wan.cut()
            for j in journals:
                await sell(j, 30)
            await asyncio.sleep(3.5)  # past two ack timeouts: the lanes rewound and resent
            assert [j.acked_seq for j in journals] == [20, 20]
            assert all(r.stats.connected for r in replicators)  # the hub is still there
            assert sum(r.stats.rewinds for r in replicators) > 0

            wan.resume()
            await wait_acked(journals, 50, 30)
            assert ingest.stats.entries_applied == 100
            assert ingest.stats.quarantined == 0
    finally:
        wan.close()
    db = sqlite3.connect(tmp_path / "ho.db")
    try:
        for j, lane in zip(journals, LANES, strict=True):
            rows = db.execute(
                "SELECT seq FROM journal WHERE store = ? AND lane = ? AND epoch = ? ORDER BY rowid",
                (lane.store, lane.lane, j.epoch),
            ).fetchall()
            assert [r[0] for r in rows] == list(range(1, 51))  # once each, in seq order
    finally:
        db.close()
    log = password_broker.log_tail(200)
    # The bridge logged in as the store's hub identity, which is also its client id there.
    assert " as store-S001 (p2, c0, k30, u'store-S001')" in log
