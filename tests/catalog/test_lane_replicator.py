"""The lane's catalog over a real Mosquitto: the retained head reaches the replicator at every
connect, requests and replies go through the broker, hello carries the version held, and a head
published while the link is cut arrives once it is back.

Head office here is a plain aiomqtt client answering with the scripted view of lane_helpers
(the real head office is in the end-to-end tests); it sees exactly what the lane publishes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt

from agent import config as agent_config
from agent.catalog.store import CatalogStore
from agent.catalog.sync import CatalogSync
from agent.journal import Journal
from agent.replicator import Replicator
from lanesync.broker import MosquittoBroker
from lanesync.proxy import TcpProxy
from protocol import codec
from protocol.identity import Channel, Topics
from protocol.messages import Hello, Reply, Request, Status
from tests.catalog.lane_helpers import LANE, ScriptedHeadOffice, item, items_view, view_hash

TOPICS = Topics()


def make_config(tmp_path: Path, port: int) -> agent_config.AgentConfig:
    return agent_config.parse(
        {
            "store": LANE.store,
            "lane": LANE.lane,
            "journal": {"path": str(tmp_path / "journal.db")},
            "broker": {"port": port, "keepalive": 2},
            "replication": {
                "linger_ms": 0,
                "backoff_initial_s": 0.05,
                "backoff_max_s": 0.3,
                "publish_timeout_s": 1.0,  # a connect attempt into the cut link gives up soon
            },
            "api": {"socket": str(tmp_path / "api.sock")},
            "catalog": {"chunk_rows": 25, "window": 3, "retry_initial_s": 0.05},
        }
    )


class MqttHeadOffice:
    """Answers the lane's catalog requests over MQTT from a ScriptedHeadOffice."""

    def __init__(self, client: aiomqtt.Client, view: ScriptedHeadOffice) -> None:
        self.client = client
        self.view = view
        self.hellos: asyncio.Queue[Hello] = asyncio.Queue()
        self.statuses: list[Status] = []

    async def run(self) -> None:
        async for m in self.client.messages:
            msg = codec.decode(bytes(m.payload))
            if isinstance(msg, Hello):
                await self.hellos.put(msg)
            elif isinstance(msg, Status):
                self.statuses.append(msg)
            elif isinstance(msg, Request):
                rep = await self.view.request(msg.op, msg.args, 1.0)
                reply = Reply(msg.lane, msg.corr, rep.ok, rep.result, rep.error)
                await self.client.publish(
                    TOPICS.topic(msg.lane, Channel.REPLY), codec.encode(reply), qos=1
                )

    async def publish_head(self, **kw: Any) -> None:
        await self.client.publish(
            TOPICS.catalog(LANE.store), self.view.head(**kw), qos=1, retain=True
        )


@contextlib.asynccontextmanager
async def mqtt_ho(port: int, view: ScriptedHeadOffice) -> AsyncIterator[MqttHeadOffice]:
    async with aiomqtt.Client("127.0.0.1", port, identifier="scripted-catalog-ho") as client:
        for ch in (Channel.HELLO, Channel.REQUEST, Channel.STATUS):
            await client.subscribe(TOPICS.all_lanes(ch), qos=1)
        ho = MqttHeadOffice(client, view)
        task = asyncio.create_task(ho.run(), name="scripted-catalog-ho")
        try:
            yield ho
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await task


async def wait_for(check: Any, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.01)


async def test_retained_head_loads_a_new_lane_and_hello_says_the_version(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    view = ScriptedHeadOffice()
    view.publish(items_view(120))
    cfg = make_config(tmp_path, broker.port)
    async with mqtt_ho(broker.port, view) as ho:
        await ho.publish_head()  # retained before the lane exists
        async with (
            Journal(cfg.journal_path, LANE) as journal,
            CatalogStore(cfg.catalog_path, LANE.store) as store,
            CatalogSync(store, cfg.catalog) as sync,
            Replicator(journal, cfg, sync) as rep,
        ):
            store.on_version(lambda _held: rep.status_soon())  # as the daemon wires it
            first: Hello = await asyncio.wait_for(ho.hellos.get(), 10)
            assert first.catalog == 0
            await wait_for(lambda: sync.version == 1 and sync.caught_up.is_set())
            assert store.held.hash == view_hash(view.versions[1])
            assert sync.stats.chunks == 5  # 120 rows in chunks of 25
            # The new version goes out in the lane's status at once, not at the 15 s tick.
            await wait_for(lambda: any(st.catalog == 1 for st in ho.statuses), timeout=3)
        # A restarted agent says in its first hello what it holds, and asks for nothing.
        view.requests.clear()
        async with (
            Journal(cfg.journal_path, LANE) as journal,
            CatalogStore(cfg.catalog_path, LANE.store) as store,
            CatalogSync(store, cfg.catalog) as sync,
            Replicator(journal, cfg, sync),
        ):
            again: Hello = await asyncio.wait_for(ho.hellos.get(), 10)
            assert again.catalog == 1
            await wait_for(sync.caught_up.is_set)
            assert view.requests == []


async def test_a_head_published_while_the_link_is_cut_arrives_after_reconnect(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    view = ScriptedHeadOffice()
    rows = items_view(30)
    view.publish(rows)
    async with (
        TcpProxy(broker.host, broker.port, name="wan") as wan,
        mqtt_ho(broker.port, view) as ho,
    ):
        cfg = make_config(tmp_path, wan.port)
        await ho.publish_head()
        async with (
            Journal(cfg.journal_path, LANE) as journal,
            CatalogStore(cfg.catalog_path, LANE.store) as store,
            CatalogSync(store, cfg.catalog) as sync,
            Replicator(journal, cfg, sync) as rep,
        ):
            await wait_for(lambda: sync.version == 1 and sync.caught_up.is_set())
            wan.cut()
            await wait_for(lambda: not rep.stats.connected)
            rows[("items", "I000003")] = item("I000003", description="Price changed offline")
            view.publish(rows)
            await ho.publish_head()  # small: the delta rides inline
            await asyncio.sleep(1.0)
            assert sync.version == 1  # offline: the last complete version stays
            assert store.head_version == 1  # nothing of version 2 reached the lane
            wan.resume()
            await wait_for(lambda: sync.version == 2 and sync.caught_up.is_set())
            assert store.held.hash == view_hash(rows)
            assert sync.stats.inline == 1
