"""RabbitMQBroker, the process wrapper: a node of its own, seeded, killed and restarted cleanly;
and SharedRabbitMQ, whose vhosts are lent to tests as brokers of their own.

The MQTT behaviour itself is checked by test_broker_features.py and the fault tests, which run
on RabbitMQ like on the other servers; these check what the wrappers promise: the machine's
node is never involved, a seeded node starts without its first-boot wait and shares nothing
with the seed or its siblings, nothing of a node outlives stop() or kill(), and a lent vhost
sees nothing of another's messages or sessions and cannot be stopped under its neighbours.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from pathlib import Path
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from lanesync import rabbitmq
from lanesync.broker import BrokerError
from lanesync.rabbitmq import NODE_NAME, RabbitMQBroker, SharedRabbitMQ, find_rabbitmq_server

pytestmark = pytest.mark.timeout(180)


def ra_configs(data_dir: Path) -> list[str]:
    return [p.read_text() for p in data_dir.rglob("config")]


async def publish_retained(port: int, topic: str, payload: bytes) -> None:
    async with aiomqtt.Client("127.0.0.1", port, timeout=10) as client:
        await client.publish(topic, payload, qos=1, retain=True)


def session_present(port: int, client_id: str, subscribe: str | None = None) -> bool:
    """Connect with a persistent session (optionally subscribing); whether the broker had one
    for `client_id` (CONNACK's session present flag; aiomqtt does not expose it)."""
    connected = threading.Event()
    subscribed = threading.Event()
    present: list[bool] = []

    def on_connect(_c: object, _u: object, flags: Any, _rc: object, _p: object) -> None:
        present.append(bool(flags.session_present))
        connected.set()

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
    client.on_connect = on_connect
    client.on_subscribe = lambda *_: subscribed.set()
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        assert connected.wait(10), "no CONNACK"
        if subscribe is not None:
            client.subscribe(subscribe, qos=1)
            assert subscribed.wait(10), "no SUBACK"
    finally:
        client.disconnect()
        client.loop_stop()
    return present[0]


async def retained(port: int, topic: str, wait: float = 2.0) -> list[bytes]:
    """What a new subscriber to `topic` is sent within `wait` seconds."""
    got: list[bytes] = []
    async with aiomqtt.Client("127.0.0.1", port, timeout=10) as client:
        await client.subscribe(topic, qos=1)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                async for msg in client.messages:
                    assert isinstance(msg.payload, bytes)
                    got.append(msg.payload)
    return got


async def test_seeded_node_is_its_own_and_leaves_nothing_behind(
    tmp_path: Path, rabbitmq_seed: Path
) -> None:
    seed_configs = ra_configs(rabbitmq_seed)
    first = RabbitMQBroker(tmp_path / "first", seed=rabbitmq_seed).start()
    try:
        port, pid = first.port, first.pid
        assert pid is not None
        log = first.log_tail(400)
        assert f"node           : {NODE_NAME}" in log
        assert f"database dir   : {first.data_dir}/{NODE_NAME}" in log
        # The seed spared it the first boot's wait for cluster peers.
        assert "will wait for" not in log, "a seeded node waited for cluster peers"
        assert all(str(first.data_dir) in c for c in ra_configs(first.data_dir))
        await publish_retained(port, "t/seeded", b"first")
        assert await retained(port, "t/seeded") == [b"first"]

        first.kill()
        assert not first.is_running
        assert not rabbitmq.process_group_alive(pid), "a process of the killed node still runs"
        first.restart()
        assert first.port == port
        assert first.pid not in (None, pid)
        # Without persistence a restart starts from a fresh copy of the seed: the retained
        # message is gone, so the first run wrote nothing into the seed.
        assert await retained(port, "t/seeded") == []
        pid = first.pid
    finally:
        first.stop()
    assert pid is not None
    assert not rabbitmq.process_group_alive(pid), "a process of the stopped node is still running"
    assert ra_configs(rabbitmq_seed) == seed_configs, "starting from the seed changed it"


def test_rabbitmq_bad_config_fails_with_the_log_tail(tmp_path: Path) -> None:
    broker = RabbitMQBroker(tmp_path, extra_config=["no_such_setting = 1"])
    with pytest.raises(BrokerError, match="exited with code") as err:
        broker.start()
    assert "no_such_setting" in str(err.value)
    assert not broker.is_running


def test_rabbitmq_on_a_taken_port_says_so(tmp_path: Path, rabbitmq_seed: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        broker = RabbitMQBroker(tmp_path, port=port, seed=rabbitmq_seed)
        with pytest.raises(BrokerError, match=f"cannot listen on 127.0.0.1:{port}") as err:
            broker.start()
    assert "eaddrinuse" in str(err.value)
    assert not broker.is_running
    assert broker.pid is None


def test_rabbitmq_names_the_debian_package_when_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(rabbitmq, "DEBIAN_SCRIPT", "/nonexistent/rabbitmq-server")
    with pytest.raises(BrokerError, match=r"apt-get install rabbitmq-server"):
        find_rabbitmq_server()


def test_a_seed_that_never_booted_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "seed"
    empty.mkdir()
    broker = RabbitMQBroker(tmp_path / "node", seed=empty)
    with pytest.raises(BrokerError, match="has no Ra server config"):
        broker.start()
    assert not broker.is_running


async def test_lent_vhosts_share_nothing_and_refuse_to_stop(
    tmp_path: Path, rabbitmq_shared: SharedRabbitMQ
) -> None:
    a = rabbitmq_shared.lease(tmp_path / "a")
    b = rabbitmq_shared.lease(tmp_path / "b")
    assert a is not None
    assert b is not None
    try:
        assert a.port != b.port
        await publish_retained(a.port, "t/lent", b"in a")
        ho = "lanesync-headoffice"
        assert not await asyncio.to_thread(session_present, a.port, ho, "t/#")
        assert await retained(a.port, "t/lent") == [b"in a"]
        assert await asyncio.to_thread(session_present, a.port, ho)
        # The other vhost has neither the retained message nor the session.
        assert await retained(b.port, "t/lent") == []
        assert not await asyncio.to_thread(session_present, b.port, ho)
        for refused in (a.stop, a.kill, a.restart):
            with pytest.raises(BrokerError, match="shared by other tests"):
                refused()
        assert a.is_running
    finally:
        a.release()
        b.release()
    assert not a.is_running
    with pytest.raises(BrokerError, match="released"):
        a.start()
    assert rabbitmq_shared.node.is_running, "releasing a lease stopped the shared node"
