"""Client ids are bound to identities: with store S001's hub credential, or lane S001/L2's, an
attacker connects again and again with lane S001/L1's client id, another store's lane's and
head office's, and takes over nobody's session, with client certificates and with passwords.

The broker is systemd/mosquitto-headoffice.example.conf (sec_helpers.broker_options): on the
stores' listener `use_username_as_clientid true` replaces whatever client id a client sends with
its own identity, and head office's workers log in on a listener of their own. The last test
runs the same attack with that one line removed and sees it succeed, so the attack is real.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiomqtt
import pytest

from agent import config as agent_config
from agent.journal import Journal
from agent.replicator import Replicator
from headoffice import config as ho_config
from headoffice.cli import as_worker
from headoffice.ingest import Ingest
from lanesync.broker import MosquittoBroker
from protocol.identity import LaneId
from protocol.runtime.brokerconn import TlsConfig
from tests.pgutil import pg_schema
from tests.security.sec_helpers import HEADOFFICE, Logins, Pki, broker_options, client, ho_port

VICTIM_LANES = (LaneId("S001", "L1"), LaneId("S002", "L1"))
ATTACKERS = ("store-S001", "store-S001.L2")  # the victim's store's hub, a lane of that store
# The client ids the victims send (lanesync-...), the ids the broker gives them (store-...),
# head office's single-process and worker ids, and head office's user name.
TARGET_IDS = (
    "lanesync-S001-L1",
    "store-S001.L1",
    "lanesync-S002-L1",
    "store-S002.L1",
    "lanesync-headoffice",
    "lanesync-headoffice-w1",
    "lanesync-headoffice-w2",
    HEADOFFICE,
)
HOLD_S = 0.3  # how long each attacking connection stays up


@pytest.fixture(params=["cert", "password"])
def logins(request: pytest.FixtureRequest, tmp_path: Path, pki: Pki) -> Logins:
    broker = request.getfixturevalue("tls_broker" if request.param == "cert" else "password_broker")
    return Logins(request.param, broker, pki, tmp_path)


def lane_config(logins: Logins, lane: LaneId) -> agent_config.AgentConfig:
    name = f"{lane.store}-{lane.lane}"
    return agent_config.parse(
        {
            "store": lane.store,
            "lane": lane.lane,
            "journal": {"path": str(logins.tmp_path / f"{name}.db")},
            "api": {"socket": str(logins.tmp_path / f"{name}.sock")},
            "broker": logins.broker_keys(f"store-{lane.store}.{lane.lane}"),
            "replication": {"linger_ms": 0, "backoff_initial_s": 0.05, "backoff_max_s": 0.3},
        }
    )


async def sell_until(journal: Journal, stop: asyncio.Event) -> None:
    """A till selling all along, one sale every 50 ms."""
    while not stop.is_set():
        await journal.append("sale", {"kind": "sale", "register_no": "T", "total": 100})
        await asyncio.sleep(0.05)


async def attack(logins: Logins, user: str, identifier: str) -> None:
    """Connect as `user` asking for `identifier` and hold it; the broker may refuse."""
    with contextlib.suppress(aiomqtt.MqttError):
        async with logins.client(user, identifier=identifier):
            await asyncio.sleep(HOLD_S)


async def refused_on_headoffice_listener(logins: Logins, user: str, identifier: str) -> None:
    with pytest.raises(aiomqtt.MqttError):
        async with logins.client(
            user, identifier=identifier, port=ho_port(logins.broker), timeout=2
        ):
            pytest.fail(f"{user} logged in on head office's listener")


@contextlib.asynccontextmanager
async def victims(
    logins: Logins, ho: ho_config.HeadOfficeConfig, workers: int
) -> AsyncIterator[tuple[list[Journal], list[Replicator], list[Ingest]]]:
    """Head office (`workers` ingest workers, or one process for 0) and two selling lanes."""
    async with contextlib.AsyncExitStack() as stack:
        ingests = []
        for n in range(1, workers + 1) if workers else [None]:
            cfg = ho if n is None else as_worker(ho, argparse.Namespace(worker=n))
            ingest = await stack.enter_async_context(Ingest(cfg))
            await asyncio.wait_for(ingest.ready.wait(), 20)
            ingests.append(ingest)
        journals, replicators = [], []
        for lane in VICTIM_LANES:
            cfg = lane_config(logins, lane)
            journal = await stack.enter_async_context(Journal(cfg.journal_path, lane))
            replicators.append(await stack.enter_async_context(Replicator(journal, cfg)))
            journals.append(journal)
        async with asyncio.timeout(20):
            while not all(r.stats.connected for r in replicators):
                await asyncio.sleep(0.02)
        yield journals, replicators, ingests


async def test_no_store_credential_takes_over_a_lane_or_head_office(logins: Logins) -> None:
    broker = logins.broker
    with pg_schema() as url:
        ho = ho_config.parse(
            {
                "database": {"url": url},
                "broker": logins.broker_keys(HEADOFFICE) | {"share_group": "ingest"},
            }
        )
        async with victims(logins, ho, workers=2) as (journals, replicators, ingests):
            stop = asyncio.Event()
            async with asyncio.TaskGroup() as tg:
                for j in journals:
                    tg.create_task(sell_until(j, stop))
                acked_before = [j.acked_seq for j in journals]
                for user in ATTACKERS:
                    for target in TARGET_IDS:
                        await attack(logins, user, target)
                # ... and on head office's listener, where client ids are not replaced (at
                # once: a refused TLS client waits out its timeout).
                await asyncio.gather(
                    *(
                        refused_on_headoffice_listener(logins, user, target)
                        for user in ATTACKERS
                        for target in ("lanesync-headoffice-w1", "lanesync-headoffice")
                    )
                )
                acked_during = [j.acked_seq for j in journals]
                if logins.kind == "password":  # guessing the victim's password gets nowhere
                    with pytest.raises(aiomqtt.MqttCodeError, match=r"[Nn]ot authori"):
                        async with client(
                            broker,
                            TlsConfig(str(logins.pki.ca.cert_path)),
                            identifier="store-S001.L1",
                            username="store-S001.L1",
                            password="guess",
                        ):
                            pytest.fail("logged in with a guessed password")
                stop.set()
            sold = [j.last_seq for j in journals]
            # The victims kept draining during the attack and drain what was sold in it.
            async with asyncio.timeout(30):
                while [j.acked_seq for j in journals] != sold:
                    await asyncio.sleep(0.05)
            assert all(d > b for d, b in zip(acked_during, acked_before, strict=True)), (
                acked_before,
                acked_during,
            )
            # Nobody was kicked: each victim is on its first connection.
            assert [(r.stats.connects, r.stats.connected) for r in replicators] == [(1, True)] * 2
            assert [(i.stats.connects, i.stats.connected) for i in ingests] == [(1, True)] * 2
            assert sum(i.stats.entries_applied for i in ingests) == sum(sold)
    log = broker.log_tail(2000)
    # Head office's listener: a store's certificate is not from its CA, a store's password is
    # not in its password file.
    refused = "certificate verify failed" if logins.kind == "cert" else "not authorised"
    assert refused in log
    for victim in (
        "store-S001.L1",
        "store-S002.L1",
        "lanesync-headoffice-w1",
        "lanesync-headoffice-w2",
    ):
        assert f"Client {victim} already connected" not in log, victim
    # Every attacking connection got in, as its own identity whatever id it asked for.
    for user in ATTACKERS:
        got_in = re.findall(rf" as {re.escape(user)} \(p\d, c1, k\d+, u'{re.escape(user)}'\)", log)
        assert len(got_in) >= len(TARGET_IDS), (user, len(got_in))
    asked_for = re.findall(r"New client connected from \S+ as (\S+) ", log)
    assert set(asked_for) <= {
        *ATTACKERS,
        "store-S001.L1",  # the victims themselves, once each
        "store-S002.L1",
        "lanesync-headoffice-w1",  # head office's workers, on their own listener
        "lanesync-headoffice-w2",
    }, set(asked_for)


async def test_without_use_username_as_clientid_the_same_attack_takes_over(
    tmp_path: Path,
    broker_factory: Callable[..., MosquittoBroker],
    pki: Pki,
    acl_file: Path,
) -> None:
    """The control: the example file minus `use_username_as_clientid true`, certificates."""
    broker = broker_factory(
        **broker_options(pki, acl_file, stores="cert", headoffice="cert", bind_client_ids=False)
    )
    logins = Logins("cert", broker, pki, tmp_path)
    ho = ho_config.parse(
        {"database": {"path": str(tmp_path / "ho.db")}, "broker": logins.broker_keys(HEADOFFICE)}
    )
    async with victims(logins, ho, workers=0) as (_, replicators, ingests):
        await attack(logins, "store-S001.L2", "lanesync-S001-L1")
        await attack(logins, "store-S001.L2", "lanesync-headoffice")
        async with asyncio.timeout(20):  # both come back, having been kicked off
            while replicators[0].stats.connects < 2 or ingests[0].stats.connects < 2:
                await asyncio.sleep(0.05)
        assert replicators[1].stats.connects == 1  # S002/L1 was not attacked
    log = broker.log_tail(500)
    assert "Client lanesync-S001-L1 already connected, closing old connection." in log
    assert "Client lanesync-headoffice already connected, closing old connection." in log
