"""MosquittoBroker: lifecycle, errors, and the session persistence the fault tests depend on."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from pathlib import Path

import aiomqtt
import pytest

from lanesync import broker as broker_mod
from lanesync.broker import BrokerError, MosquittoBroker, free_port, wait_port

pytestmark = pytest.mark.timeout(30)

BrokerFactory = Callable[..., MosquittoBroker]  # the `broker_factory` fixture in conftest


def mqtt(broker: MosquittoBroker, **kwargs: object) -> aiomqtt.Client:
    return aiomqtt.Client(broker.host, broker.port, timeout=5, **kwargs)  # type: ignore[arg-type]


async def next_message(client: aiomqtt.Client, timeout: float = 3.0) -> aiomqtt.Message:
    async with asyncio.timeout(timeout):
        return await anext(client.messages)


def refuses(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


# -- lifecycle and errors -------------------------------------------------------------------


def test_start_stop_restart_same_port(tmp_path: Path) -> None:
    with MosquittoBroker(tmp_path) as broker:
        port = broker.port
        first_pid = broker.pid
        assert first_pid is not None
        assert "running" in broker.log_tail(5)
        conf = broker.conf_path.read_text()
        assert f"listener {port} 127.0.0.1" in conf
        assert "persistence false" in conf
        broker.kill()
        assert not broker.is_running
        assert refuses(port)
        broker.restart()
        assert broker.port == port
        assert broker.pid not in (None, first_pid)
        wait_port("127.0.0.1", port, 1.0)
    assert not broker.is_running
    assert refuses(port)


def test_bad_config_fails_with_log_tail(tmp_path: Path) -> None:
    broker = MosquittoBroker(tmp_path, extra_config=["no_such_option 1"])
    with pytest.raises(BrokerError, match="no_such_option"):
        broker.start()
    assert not broker.is_running


def test_fixed_port_in_use_fails_clearly(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as squatter:
        port = squatter.getsockname()[1]
        broker = MosquittoBroker(tmp_path, port=port)
        try:
            with pytest.raises(BrokerError, match=r"exited with code|did not listen"):
                broker.start()
        finally:
            broker.kill()  # never leave a process behind, even when the test fails


def test_missing_binary_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    monkeypatch.setattr(broker_mod, "FALLBACK_BINARY", "/nonexistent/mosquitto")
    with pytest.raises(BrokerError, match="apt-get install mosquitto"):
        broker_mod.find_mosquitto()


def test_free_port_and_wait_port_timeout() -> None:
    port = free_port()
    assert 0 < port < 65536
    with pytest.raises(TimeoutError):
        wait_port("127.0.0.1", port, 0.2)


def test_persistence_config(broker_factory: BrokerFactory) -> None:
    broker = broker_factory(persistence=True, autosave_interval=7)
    conf = broker.conf_path.read_text()
    assert "persistence true" in conf
    assert f"persistence_location {broker.workdir}/" in conf
    assert "autosave_interval 7" in conf
    broker.stop()
    assert broker.db_path.exists()  # a clean stop saves the db


# -- against a client -----------------------------------------------------------------------


async def test_pubsub(broker: MosquittoBroker) -> None:
    async with mqtt(broker) as sub, mqtt(broker) as pub:
        await sub.subscribe("t/basic", qos=1)
        await pub.publish("t/basic", b"hello", qos=1)
        assert (await next_message(sub)).payload == b"hello"


async def test_kill_disconnects_and_restart_same_port_accepts_reconnect(
    broker: MosquittoBroker,
) -> None:
    port = broker.port
    async with mqtt(broker) as lane:
        broker.kill()
        with pytest.raises(aiomqtt.MqttError):
            await next_message(lane, 3.0)
    with pytest.raises(aiomqtt.MqttError):
        async with mqtt(broker):
            pass
    broker.restart()
    assert broker.port == port
    async with mqtt(broker) as lane:
        await lane.subscribe("t/back", qos=1)
        await lane.publish("t/back", b"again", qos=1)
        assert (await next_message(lane)).payload == b"again"


async def _queue_for_offline_session(broker: MosquittoBroker, client_id: str) -> None:
    """Register a persistent QoS 1 subscription, go offline, and have a message queued for it."""
    async with mqtt(broker, identifier=client_id, clean_session=False) as sub:
        await sub.subscribe("t/queued", qos=1)
    async with mqtt(broker) as pub:
        await pub.publish("t/queued", b"while-offline", qos=1)


async def test_queued_message_survives_clean_stop_with_persistence(
    broker_factory: BrokerFactory,
) -> None:
    broker = broker_factory(persistence=True)
    await _queue_for_offline_session(broker, "lane-persist")
    broker.stop()
    broker.start()
    # No re-subscribe: session and queued message both come back from mosquitto.db.
    async with mqtt(broker, identifier="lane-persist", clean_session=False) as sub:
        msg = await next_message(sub)
        assert msg.payload == b"while-offline"
        assert msg.qos == 1


async def test_queued_message_lost_after_kill_without_persistence(
    broker_factory: BrokerFactory,
) -> None:
    broker = broker_factory(persistence=False)
    await _queue_for_offline_session(broker, "lane-volatile")
    broker.kill()
    broker.start()
    async with mqtt(broker, identifier="lane-volatile", clean_session=False) as sub:
        with pytest.raises(TimeoutError):
            await next_message(sub, 0.5)
        # The session itself is gone: a new publish no longer reaches the old subscription.
        async with mqtt(broker) as pub:
            await pub.publish("t/queued", b"after-restart", qos=1)
        with pytest.raises(TimeoutError):
            await next_message(sub, 0.5)
