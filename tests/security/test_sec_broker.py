"""TLS with client certificates and the per-store ACL, on a real Mosquitto.

Each refusal is shown next to a positive control in the same test (the same message from the
identity that IS allowed arrives), so a test whose observer is deaf cannot pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shutil
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt
import pytest

from agent.journal import Journal
from agent.replicator import Replicator
from headoffice.ingest import Ingest
from lanesync.broker import MosquittoBroker
from lanesync.cli import main
from protocol import codec
from protocol.identity import LaneId
from protocol.runtime.brokerconn import TlsConfig
from tests.security.sec_helpers import (
    ACL_ARGV,
    Pki,
    batch,
    client,
    ho_cfg,
    ho_port,
    identity,
    lane_cfg,
)

P = "lanesync/v1"
QUIET_S = 0.5  # after the positive control arrived, how long a forbidden message gets too


class Observer:
    """Collects (topic, payload) of everything a client receives."""

    def __init__(self, c: aiomqtt.Client) -> None:
        self.client = c
        self.seen: list[tuple[str, bytes]] = []
        self._new = asyncio.Event()

    async def run(self) -> None:
        async for m in self.client.messages:
            self.seen.append((str(m.topic), bytes(m.payload)))  # type: ignore[arg-type]
            self._new.set()

    async def until(self, want: set[tuple[str, bytes]], timeout: float = 5) -> None:
        async with asyncio.timeout(timeout):
            while not want <= set(self.seen):
                self._new.clear()
                await self._new.wait()
        await asyncio.sleep(QUIET_S)  # anything forbidden would have come by now


@contextlib.asynccontextmanager
async def observing(
    broker: MosquittoBroker, tls: TlsConfig, filters: list[str], port: int | None = None
) -> AsyncIterator[Observer]:
    async with client(broker, tls, port=port) as c, asyncio.TaskGroup() as tg:
        for f in filters:
            await c.subscribe(f, qos=1)
        obs = Observer(c)
        task = tg.create_task(obs.run())
        try:
            yield obs
        finally:
            task.cancel()


@pytest.mark.parametrize("share_group", [None, "ingest"])
async def test_lane_and_head_office_over_tls_with_client_certificates(
    tmp_path: Path, tls_broker: MosquittoBroker, pki: Pki, share_group: str | None
) -> None:
    """With share_group, head office subscribes to $share/ingest/...: the ACL covers it too."""
    cfg = lane_cfg(tmp_path, tls_broker, pki, "S001")
    assert cfg.broker.tls is not None
    assert cfg.broker.port == tls_broker.port
    ho = ho_cfg(tmp_path, tls_broker, pki)
    ho = dataclasses.replace(ho, broker=dataclasses.replace(ho.broker, share_group=share_group))
    async with Journal(cfg.journal_path, cfg.lane) as journal:
        for i in range(25):
            await journal.append("sale", {"kind": "sale", "register_no": f"T{i}", "total": i})
        async with Ingest(ho) as ingest, Replicator(journal, cfg):
            async with asyncio.timeout(20):
                while journal.acked_seq < 25:
                    await asyncio.sleep(0.05)
            assert ingest.stats.entries_applied == 25
    log = tls_broker.log_tail(200)
    # Mosquitto took each side's user from its certificate's CN, and on the stores' listener
    # made the lane's user its client id (the agent sent lanesync-S001-L1).
    assert " as store-S001.L1 (p2, c1, k2, u'store-S001.L1')" in log
    assert "u'headoffice'" in log
    assert " as lanesync-headoffice (" in log  # head office's listener keeps its client id


async def test_lane_keeps_trading_while_its_key_is_missing_and_connects_once_it_is_back(
    tmp_path: Path, tls_broker: MosquittoBroker, pki: Pki
) -> None:
    """A file that breaks after start is a link failure (logged with the key), not a crash."""
    key = tmp_path / "store.key"
    shutil.copy(pki.clients["store-S001.L1"].key, key)
    cfg = lane_cfg(tmp_path, tls_broker, pki, "S001")
    cfg = dataclasses.replace(
        cfg,
        broker=dataclasses.replace(
            cfg.broker, tls=dataclasses.replace(cfg.broker.tls, key_file=str(key))
        ),
    )
    key.unlink()
    async with (
        Journal(cfg.journal_path, cfg.lane) as journal,
        Ingest(ho_cfg(tmp_path, tls_broker, pki)),
        Replicator(journal, cfg) as replicator,
    ):
        async with asyncio.timeout(10):
            while "broker.key_file: no such file" not in (replicator.stats.last_error or ""):
                await asyncio.sleep(0.02)
        for i in range(5):  # the till keeps selling
            await journal.append("sale", {"kind": "sale", "register_no": f"T{i}", "total": i})
        assert journal.acked_seq == 0
        shutil.copy(pki.clients["store-S001.L1"].key, key)
        async with asyncio.timeout(20):
            while journal.acked_seq < 5:
                await asyncio.sleep(0.05)


@pytest.mark.parametrize(
    ("who", "broker_says"),
    [
        ("no certificate", "peer did not return a certificate"),
        ("certificate from another CA", "certificate verify failed"),
        ("plain MQTT, no TLS", None),
    ],
)
async def test_client_without_a_valid_certificate_is_refused(
    tls_broker: MosquittoBroker, pki: Pki, who: str, broker_says: str | None
) -> None:
    ca = str(pki.ca.cert_path)
    tls = {
        "no certificate": TlsConfig(ca),
        "certificate from another CA": TlsConfig(ca, str(pki.rogue.cert), str(pki.rogue.key)),
        "plain MQTT, no TLS": None,
    }[who]
    with pytest.raises(aiomqtt.MqttError):
        async with client(tls_broker, tls, timeout=2):
            pytest.fail(f"{who}: connected")
    if broker_says is not None:
        assert broker_says in tls_broker.log_tail(50)
    # Positive control: the same broker takes store S001's own certificate.
    async with client(tls_broker, identity(pki, "store-S001"), timeout=5):
        pass


async def test_broker_name_is_checked(tls_broker: MosquittoBroker, pki: Pki) -> None:
    """The broker's certificate says 127.0.0.1, localhost, broker.lanesync.test."""
    base = identity(pki, "store-S001")
    named = TlsConfig(base.ca_file, base.cert_file, base.key_file, "broker.lanesync.test")
    async with client(tls_broker, named):
        pass
    wrong = TlsConfig(base.ca_file, base.cert_file, base.key_file, "broker.elsewhere.test")
    with pytest.raises(aiomqtt.MqttError, match="Hostname mismatch"):
        async with client(tls_broker, wrong):
            pass


async def test_store_cannot_publish_as_another_store_or_forge_acks(
    tls_broker: MosquittoBroker, pki: Pki
) -> None:
    """Store S001's hub identity against store S002's lane and its own lanes' acks."""
    lanes = ("journal", "hello", "status", "request")
    ho_filters = [f"{P}/+/+/{ch}" for ch in lanes]
    a, b, ho = (identity(pki, cn) for cn in ("store-S001", "store-S002", "headoffice"))
    # Observers with the lanes' own identities: one identity holds one session at a time.
    lane_a, lane_b = identity(pki, "store-S001.L1"), identity(pki, "store-S002.L1")
    async with (
        observing(tls_broker, ho, ho_filters, ho_port(tls_broker)) as at_ho,
        observing(tls_broker, lane_b, [f"{P}/S002/L1/ack", f"{P}/S002/L1/reply"]) as at_b,
        observing(tls_broker, lane_a, [f"{P}/S001/L1/ack", f"{P}/S001/L1/reply"]) as at_a,
        client(tls_broker, a) as store_a,
        client(tls_broker, b) as store_b,
        client(tls_broker, ho, port=ho_port(tls_broker)) as head_office,
    ):
        forged = [f"{P}/S002/L1/{ch}" for ch in (*lanes, "ack", "reply")]
        forged += [f"{P}/S001/L1/ack", f"{P}/S001/L1/reply"]  # a store never acks itself
        for topic in forged:
            # MQTT 3.1.1 has no way to refuse a publish: the PUBACK comes, the message dies.
            await store_a.publish(topic, b"forged by S001", qos=1)
        # Positive controls, published after the forgeries went through the same broker.
        await store_a.publish(f"{P}/S001/L1/journal", b"S001 own", qos=1)
        await store_b.publish(f"{P}/S002/L1/journal", b"S002 own", qos=1)
        await head_office.publish(f"{P}/S002/L1/ack", b"ack from HO", qos=1)
        await head_office.publish(f"{P}/S001/L1/reply", b"reply from HO", qos=1)
        await at_ho.until(
            {(f"{P}/S001/L1/journal", b"S001 own"), (f"{P}/S002/L1/journal", b"S002 own")}
        )
        await at_b.until({(f"{P}/S002/L1/ack", b"ack from HO")})
        await at_a.until({(f"{P}/S001/L1/reply", b"reply from HO")})
    assert sorted(at_ho.seen) == [
        (f"{P}/S001/L1/journal", b"S001 own"),
        (f"{P}/S002/L1/journal", b"S002 own"),
    ]
    assert at_b.seen == [(f"{P}/S002/L1/ack", b"ack from HO")]
    assert at_a.seen == [(f"{P}/S001/L1/reply", b"reply from HO")]


async def test_a_lane_cannot_touch_another_lane_of_its_own_store(
    tls_broker: MosquittoBroker, pki: Pki
) -> None:
    """Lane S001/L2's identity: its own lane's topics, not L1's (a per-lane ACL)."""
    channels = ("journal", "hello", "status", "request")
    ho, l1, l2 = (identity(pki, cn) for cn in ("headoffice", "store-S001.L1", "store-S001.L2"))
    # L2 tries to read L1's acks and replies (and wildcards over its store), beside its own.
    l2_filters = [f"{P}/S001/L1/ack", f"{P}/S001/+/reply", f"{P}/S001/#", f"{P}/S001/L2/ack"]
    async with (
        observing(
            tls_broker, ho, [f"{P}/+/+/{ch}" for ch in channels], ho_port(tls_broker)
        ) as at_ho,
        observing(tls_broker, l1, [f"{P}/S001/L1/ack", f"{P}/S001/L1/reply"]) as at_l1,
        observing(tls_broker, l2, l2_filters) as at_l2,
        client(tls_broker, ho, port=ho_port(tls_broker)) as head_office,
    ):
        lane_2 = at_l2.client  # one session per identity: L2 publishes on the same one
        for ch in (*channels, "ack", "reply"):
            await lane_2.publish(f"{P}/S001/L1/{ch}", b"forged by L2", qos=1)
        # Positive controls, after the forgeries.
        await lane_2.publish(f"{P}/S001/L2/journal", b"L2 own", qos=1)
        await head_office.publish(f"{P}/S001/L1/ack", b"ack for L1", qos=1)
        await head_office.publish(f"{P}/S001/L1/reply", b"reply for L1", qos=1)
        await head_office.publish(f"{P}/S001/L2/ack", b"ack for L2", qos=1)
        await at_ho.until({(f"{P}/S001/L2/journal", b"L2 own")})
        await at_l1.until(
            {(f"{P}/S001/L1/ack", b"ack for L1"), (f"{P}/S001/L1/reply", b"reply for L1")}
        )
        await at_l2.until({(f"{P}/S001/L2/ack", b"ack for L2")})
    assert at_ho.seen == [(f"{P}/S001/L2/journal", b"L2 own")]
    assert sorted(at_l1.seen) == [
        (f"{P}/S001/L1/ack", b"ack for L1"),
        (f"{P}/S001/L1/reply", b"reply for L1"),
    ]
    # L2's '#' filter also matches its own ack: the one message it may read.
    assert set(at_l2.seen) == {(f"{P}/S001/L2/ack", b"ack for L2")}


async def test_store_cannot_read_another_stores_acks_replies_or_status(
    tls_broker: MosquittoBroker, pki: Pki
) -> None:
    a, b, ho = (identity(pki, cn) for cn in ("store-S001", "store-S002", "headoffice"))
    snoop = [f"{P}/S002/L1/ack", f"{P}/S002/+/reply", f"{P}/+/+/ack", f"{P}/#", "#"]
    async with client(tls_broker, b) as store_b:
        await store_b.publish(f"{P}/S002/L1/status", b"S002 online", qos=1, retain=True)
    async with (
        observing(tls_broker, a, snoop) as at_a,
        observing(tls_broker, b, [f"{P}/S002/L1/ack", f"{P}/S002/L1/reply"]) as at_b,
        client(tls_broker, ho, port=ho_port(tls_broker)) as head_office,
    ):
        await head_office.publish(f"{P}/S002/L1/ack", b"ack for S002", qos=1)
        await head_office.publish(f"{P}/S002/L1/reply", b"reply for S002", qos=1)
        await at_b.until(
            {(f"{P}/S002/L1/ack", b"ack for S002"), (f"{P}/S002/L1/reply", b"reply for S002")}
        )
    assert at_a.seen == []


async def test_head_office_quarantines_a_payload_that_does_not_match_its_topic(
    tmp_path: Path, tls_broker: MosquittoBroker, pki: Pki
) -> None:
    """Store S001 may write under S001/L1; what it claims inside is checked by head office."""
    topic = f"{P}/S001/L1/journal"
    other_lane = codec.encode(batch(LaneId("S001", "L2"), 2))
    other_store = codec.encode(batch(LaneId("S002", "L1"), 2))
    honest = codec.encode(batch(LaneId("S001", "L1"), 3))
    async with Ingest(ho_cfg(tmp_path, tls_broker, pki)) as ingest:
        await asyncio.wait_for(ingest.ready.wait(), 10)
        async with client(tls_broker, identity(pki, "store-S001")) as store_a:
            for raw in (other_lane, other_store, honest):
                await store_a.publish(topic, raw, qos=1)
        async with asyncio.timeout(10):
            while ingest.stats.entries_applied < 3:
                await asyncio.sleep(0.05)
        assert ingest.stats.quarantined == 2
    rows = _query(
        tmp_path / "ho.db", "SELECT topic, store, lane, reason FROM quarantine ORDER BY id"
    )
    assert rows == [
        (topic, "S001", "L1", "payload is for S001/L2 but was published under S001/L1's topic"),
        (topic, "S001", "L1", "payload is for S002/L1 but was published under S001/L1's topic"),
    ]
    assert _query(tmp_path / "ho.db", "SELECT store, lane, count(*) FROM journal") == [
        ("S001", "L1", 3)
    ]


def _query(path: Path, sql: str) -> list[tuple[object, ...]]:
    import sqlite3  # noqa: PLC0415

    db = sqlite3.connect(path)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


async def test_acl_reload_adds_and_removes_stores_without_a_restart(
    tls_broker: MosquittoBroker, pki: Pki, acl_file: Path
) -> None:
    """Operators regenerate the ACL and send SIGHUP (mosquitto.conf(5): acl_file is reloaded)."""
    s3 = pki.ca.issue("store-S003")
    new = TlsConfig(str(pki.ca.cert_path), str(s3.cert), str(s3.key))
    removed = identity(pki, "store-S002")
    argv = ["headoffice", "acl", *ACL_ARGV[:2], "--stores", "S001,S003", "-o", str(acl_file)]
    ho = identity(pki, "headoffice")
    async with (
        observing(tls_broker, ho, [f"{P}/+/+/journal"], ho_port(tls_broker)) as at_ho,
        client(tls_broker, new) as store_3,
        client(tls_broker, removed) as store_2,
    ):
        await store_3.publish(f"{P}/S003/L1/journal", b"S003 before", qos=1)
        await store_2.publish(f"{P}/S002/L1/journal", b"S002 before", qos=1)
        await at_ho.until({(f"{P}/S002/L1/journal", b"S002 before")})
        assert main(argv) == 0
        assert tls_broker.pid is not None
        os.kill(tls_broker.pid, signal.SIGHUP)
        async with asyncio.timeout(10):
            while (f"{P}/S003/L1/journal", b"S003 after") not in at_ho.seen:
                await store_3.publish(f"{P}/S003/L1/journal", b"S003 after", qos=1)
                await asyncio.sleep(0.1)
        await store_2.publish(f"{P}/S002/L1/journal", b"S002 after", qos=1)
        await store_3.publish(f"{P}/S003/L1/journal", b"S003 control", qos=1)
        await at_ho.until({(f"{P}/S003/L1/journal", b"S003 control")})
    payloads = {payload for _, payload in at_ho.seen}
    assert b"S002 before" in payloads
    assert b"S003 before" not in payloads
    assert b"S002 after" not in payloads
