"""The catalog heads under the ACL `lanesync headoffice acl` writes, on a real Mosquitto: a lane
(or store hub) of S001 reads S001's head only, never S002's (its prices and staff), and cannot
publish its own store's head; head office writes every store's head.

Each refusal sits next to a positive control in the same test (the message the identity IS
allowed arrives), so a deaf observer cannot make the test pass.
"""

from __future__ import annotations

import asyncio

import aiomqtt

from lanesync.broker import MosquittoBroker
from protocol import catalog as cat
from protocol.identity import Topics
from tests.security.sec_helpers import Pki, client, ho_port, identity

T = Topics()
QUIET_S = 0.5


def head(store: str, version: int) -> bytes:
    return cat.encode_head(cat.CatalogHead(store, version, bytes([version]) * 32, 1, 1))


async def collect(c: aiomqtt.Client, want: set[str], seen: list[tuple[str, bytes]]) -> None:
    """Receive until every topic in `want` has arrived, then QUIET_S more."""
    deadline = 5.0
    try:
        async with asyncio.timeout(deadline) as scope:
            async for m in c.messages:
                seen.append((str(m.topic), bytes(m.payload)))  # type: ignore[arg-type]
                if want <= {t for t, _p in seen}:
                    # anything forbidden would have come by now
                    scope.reschedule(asyncio.get_running_loop().time() + QUIET_S)
    except TimeoutError:
        if not want <= {t for t, _p in seen}:
            raise


async def test_a_lane_reads_only_its_stores_head_and_cannot_write_it(
    tls_broker: MosquittoBroker, pki: Pki
) -> None:
    ho = identity(pki, "headoffice")
    async with client(tls_broker, ho, port=ho_port(tls_broker)) as head_office:
        for store in ("S001", "S002"):
            await head_office.publish(T.catalog(store), head(store, 1), qos=1, retain=True)
    # S001's lane tries to overwrite its own store's head and to plant one for S002.
    async with client(tls_broker, identity(pki, "store-S001.L1")) as lane:
        await lane.publish(T.catalog("S001"), head("S001", 99), qos=1, retain=True)
        await lane.publish(T.catalog("S002"), head("S002", 99), qos=1, retain=True)
    for cn in ("store-S001.L2", "store-S001"):  # another lane of S001, and S001's hub
        seen: list[tuple[str, bytes]] = []
        async with client(tls_broker, identity(pki, cn)) as reader:
            # the wildcard over every store's head, S002's own topic, and its own store's
            await reader.subscribe(T.all_catalogs(), qos=1)
            await reader.subscribe(T.catalog("S002"), qos=1)
            await collect(reader, {T.catalog("S001")}, seen)
        assert {t for t, _p in seen} == {T.catalog("S001")}, cn  # never S002's
        assert {cat.decode_head(p).version for _t, p in seen} == {1}, cn  # the forgery dropped
    # S002's lane reads S002's head, still head office's.
    seen = []
    async with client(tls_broker, identity(pki, "store-S002.L1")) as other:
        await other.subscribe(T.all_catalogs(), qos=1)
        await collect(other, {T.catalog("S002")}, seen)
    assert [(t, cat.decode_head(p).version) for t, p in seen] == [(T.catalog("S002"), 1)]
