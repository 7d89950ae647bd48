"""Distribution from head office: retained heads per registered store and the catalog
requests, through a real broker (Mosquitto and NATS) with head office's daemon in-process."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from headoffice import config as ho_config
from headoffice import daemon as ho_daemon
from headoffice.catalog import load as loader
from headoffice.catalog import versions
from headoffice.config import HeadOfficeConfig
from headoffice.db import open_target
from headoffice.projections import PROJECTIONS
from lanesync.broker import Broker
from protocol import catalog as cat
from protocol import codec
from protocol.identity import Channel, LaneId, Topics
from protocol.messages import Reply, Request

TOPICS = Topics()
STORES = "id,name,timezone,currency,price_zone,can_receive_stock,active\n"


@pytest.fixture(params=["mosquitto", "nats"])
def broker_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def load(cfg: HeadOfficeConfig, dataset: str, path: Path) -> versions.LoadResult:
    store = open_target(cfg.database, projections=PROJECTIONS)
    try:
        return loader.load_file(store.sql, dataset, path)
    finally:
        store.close()


def view(cfg: HeadOfficeConfig, store_id: str) -> versions.View:
    store = open_target(cfg.database, projections=PROJECTIONS)
    try:
        return versions.view(store.sql, store_id)
    finally:
        store.close()


@asynccontextmanager
async def head_office(cfg: HeadOfficeConfig) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(ho_daemon.run(cfg, stop), name="head office under test")
    try:
        yield
    finally:
        stop.set()
        async with asyncio.timeout(15):
            await task


class Heads:
    """A subscriber to every store's head, as lanes (and an operator) would see them."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.got: dict[str, cat.CatalogHead | None] = {}

    async def until(self, check: Any, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            async for msg in self.client.messages:
                store = str(msg.topic).split("/")[-2]
                payload = bytes(msg.payload) if isinstance(msg.payload, bytes | bytearray) else b""
                self.got[store] = cat.decode_head(payload) if payload else None
                if check(self.got):
                    return


@asynccontextmanager
async def mqtt(broker: Broker, client_id: str) -> AsyncIterator[aiomqtt.Client]:
    async with aiomqtt.Client(broker.host, broker.port, identifier=client_id) as client:
        yield client


async def ask(client: aiomqtt.Client, lane: LaneId, op: str, args: dict[str, Any]) -> Reply:
    req = Request(lane, uuid.uuid4().hex, op, args)
    await client.publish(TOPICS.topic(lane, Channel.REQUEST), codec.encode(req), qos=1)
    async with asyncio.timeout(10):
        async for msg in client.messages:
            rep = codec.decode(bytes(msg.payload))  # type: ignore[arg-type]
            if isinstance(rep, Reply) and rep.corr == req.corr:
                return rep
    raise AssertionError("unreachable")


async def test_heads_for_registered_stores_inline_deltas_and_requests(
    broker: Broker, tmp_path: Path
) -> None:
    cfg = ho_config.parse(
        {"database": {"path": str(tmp_path / "ho.db")}, "broker": {"port": broker.port}}
    )
    # a price before any store exists: no head is published for anyone
    load(cfg, "prices", write(tmp_path / "p.csv", "item,valid_from,price\nA1,2026-01-01,100\n"))
    async with head_office(cfg), mqtt(broker, "observer") as obs:
        await obs.subscribe(TOPICS.all_catalogs(), qos=1)
        heads = Heads(obs)
        with pytest.raises(TimeoutError):
            await heads.until(bool, timeout=0.5)
        stores = STORES + "S1,One,Europe/Dublin,EUR,,1,1\nS2,Two,UTC,EUR,Z2,1,1\n"
        load(cfg, "stores", write(tmp_path / "s.csv", stores))
        await heads.until(lambda g: {"S1", "S2"} <= g.keys())
        for s in ("S1", "S2"):
            head, v = heads.got[s], view(cfg, s)
            assert head is not None
            assert (head.version, head.hash, head.rows) == (v.version, v.hash, v.rows)
            assert head.changes is None  # no earlier head to send the change from
        assert "S3" not in heads.got
        # a change of S2's zone price: only S2's head moves, with the change inline
        before_s1 = heads.got["S1"]
        assert before_s1 is not None
        prices = "item,store,zone,valid_from,price\nA1,,,2026-01-01,100\nA1,,Z2,2026-01-01,90\n"
        res = load(cfg, "prices", write(tmp_path / "p2.csv", prices))
        await heads.until(lambda g: g["S2"] is not None and g["S2"].version == res.version)
        s2 = heads.got["S2"]
        assert s2 is not None
        assert s2.prev is not None
        assert s2.prev < s2.version
        assert s2.changes is not None
        assert [(d, k) for d, k, _r in s2.changes] == [("prices", "A1||Z2|2026-01-01")]
        assert s2.hash == view(cfg, "S2").hash
        with pytest.raises(TimeoutError):  # S1's view did not change: no new head
            await heads.until(lambda g: g["S1"] != before_s1, timeout=0.5)
        # a lane of S2 asks for the delta and the snapshot over the request channel
        async with mqtt(broker, "lane-S2-L1") as lane_client:
            lane = LaneId("S2", "L1")
            await lane_client.subscribe(TOPICS.topic(lane, Channel.REPLY), qos=1)
            rep = await ask(lane_client, lane, cat.OP_DELTA, {"from": s2.prev, "to": s2.version})
            assert rep.ok, rep.error
            delta = cat.DeltaReply.from_map(rep.result)
            assert delta.changes == s2.changes
            assert delta.hash == s2.hash
            rep = await ask(
                lane_client, lane, cat.OP_SNAPSHOT, {"version": 0, "chunk": 0, "size": 2}
            )
            snap = cat.SnapshotReply.from_map(rep.result)
            assert (snap.version, snap.hash, snap.rows) == (s2.version, s2.hash, s2.rows)
            rows = list(snap.changes)
            for i in range(1, snap.chunks):
                rep = await ask(
                    lane_client,
                    lane,
                    cat.OP_SNAPSHOT,
                    {"version": snap.version, "chunk": i, "size": 2},
                )
                rows += cat.SnapshotReply.from_map(rep.result).changes
            assert cat.view_hash((cat.DATASETS[d], r) for d, _k, r in rows) == s2.hash
            rep = await ask(lane_client, lane, cat.OP_DELTA, {"from": 0, "to": s2.version})
            assert not rep.ok
            assert rep.result["code"] == cat.SNAPSHOT_NEEDED
            rep = await ask(lane_client, lane, cat.OP_DELTA, {"from": 1, "tu": 2})
            assert (rep.ok, rep.result["code"], rep.result["field"]) == (False, "bad_request", "tu")
        async with mqtt(broker, "lane-S9-L1") as stranger:
            lane = LaneId("S9", "L1")
            await stranger.subscribe(TOPICS.topic(lane, Channel.REPLY), qos=1)
            rep = await ask(stranger, lane, cat.OP_SNAPSHOT, {"version": 0, "chunk": 0, "size": 2})
            assert (rep.ok, rep.result["code"]) == (False, cat.UNREGISTERED)
            assert "unregistered store S9" in (rep.error or "")
        # S1 leaves the registry: its retained head is cleared
        load(cfg, "stores", write(tmp_path / "s2.csv", STORES + "S2,Two,UTC,EUR,Z2,1,1\n"))
        await heads.until(lambda g: g.get("S1", 0) is None)


async def test_a_restarted_head_office_republishes_heads_a_wiped_broker_lost(
    broker: Broker, tmp_path: Path
) -> None:
    cfg = ho_config.parse(
        {"database": {"path": str(tmp_path / "ho.db")}, "broker": {"port": broker.port}}
    )
    load(cfg, "stores", write(tmp_path / "s.csv", STORES + "S1,One,UTC,EUR,,1,1\n"))
    async with head_office(cfg), mqtt(broker, "observer") as obs:
        await obs.subscribe(TOPICS.catalog("S1"), qos=1)
        await Heads(obs).until(lambda g: g.get("S1") is not None)
    async with mqtt(broker, "wiper") as wiper:  # what a broker restarted without its store loses
        await wiper.publish(TOPICS.catalog("S1"), b"", qos=1, retain=True)
    async with mqtt(broker, "observer2") as obs:
        await obs.subscribe(TOPICS.catalog("S1"), qos=1)
        heads = Heads(obs)
        with pytest.raises(TimeoutError):  # the broker has no head for S1 any more
            await heads.until(bool, timeout=0.5)
        async with head_office(cfg):
            await heads.until(lambda g: g.get("S1") is not None)
        head = heads.got["S1"]
        assert head is not None
        assert head.hash == view(cfg, "S1").hash


async def test_heads_come_back_after_the_broker_restarts_without_its_store(
    broker_factory: Any, tmp_path: Path
) -> None:
    broker: Broker = broker_factory(persistence=False)
    cfg = ho_config.parse(
        {"database": {"path": str(tmp_path / "ho.db")}, "broker": {"port": broker.port}}
    )
    load(cfg, "stores", write(tmp_path / "s.csv", STORES + "S1,One,UTC,EUR,,1,1\n"))
    async with head_office(cfg):
        async with mqtt(broker, "observer") as obs:
            await obs.subscribe(TOPICS.catalog("S1"), qos=1)
            await Heads(obs).until(lambda g: g.get("S1") is not None)
        broker.restart()  # no persistence: every retained message is gone
        async with mqtt(broker, "observer2") as obs:
            await obs.subscribe(TOPICS.catalog("S1"), qos=1)
            heads = Heads(obs)
            # the publisher reconnects (with backoff) and publishes every head again
            await heads.until(lambda g: g.get("S1") is not None, timeout=30)
        head = heads.got["S1"]
        assert head is not None
        assert head.hash == view(cfg, "S1").hash
