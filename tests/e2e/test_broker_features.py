"""The MQTT features lanesync relies on, checked on each server the end-to-end suite runs on.

The fault tests show the whole chain works; these say which broker feature it stands on, so a
difference between the servers shows up here by name instead of as a slow drain somewhere
else. Features a server lacks are strict xfails on that server (`broker_lacks`), never skips.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from lanesync.broker import Broker, BrokerError
from lanesync.nats import NatsBroker, find_nats_server
from lanesync.proxy import ProxyThread

# A RabbitMQ restart test boots two nodes (and the session's seed, if first): 10-25 s each on a
# loaded 2-core machine.
pytestmark = pytest.mark.timeout(180)

BrokerFactory = Callable[..., Broker]
JOURNAL = "lanesync/v1/{store}/{lane}/journal"
STATUS = "lanesync/v1/S1/L1/status"


class Mqtt:
    """A bare paho client that records what it receives; every call waits for its answer."""

    def __init__(
        self,
        port: int,
        client_id: str,
        *,
        clean_session: bool = True,
        will: tuple[str, bytes] | None = None,
        protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv311,
    ) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []  # (topic, payload, retain)
        self.session_present: bool | None = None
        self.connack: str | None = None
        self.granted: list[int] = []
        self.disconnected = threading.Event()
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        kw: dict[str, Any] = {"client_id": client_id, "protocol": protocol}
        if protocol != MQTTProtocolVersion.MQTTv5:
            kw["clean_session"] = clean_session
        self.client = paho.Client(CallbackAPIVersion.VERSION2, **kw)
        if will is not None:
            self.client.will_set(will[0], will[1], qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.on_disconnect = lambda *_: self.disconnected.set()
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        # Until the CONNACK, or the broker closing the connection instead of sending one.
        deadline = time.monotonic() + 10
        while not self._connected.wait(0.02) and not self.disconnected.is_set():
            if time.monotonic() > deadline:
                break

    def _on_connect(self, _c: object, _u: object, flags: Any, rc: Any, _p: object) -> None:
        self.connack = str(rc)
        self.session_present = bool(flags.session_present)
        self._connected.set()

    def _on_subscribe(self, _c: object, _u: object, _mid: int, codes: Any, _p: object) -> None:
        self.granted = [int(c.value) for c in codes]
        self._subscribed.set()

    def _on_message(self, _c: object, _u: object, msg: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

    @property
    def ok(self) -> bool:
        return self.connack == "Success"

    def subscribe(self, topic: str, qos: int = 1) -> list[int]:
        self._subscribed.clear()
        self.client.subscribe(topic, qos=qos)
        assert self._subscribed.wait(10), f"no SUBACK for {topic}"
        return self.granted

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> bool:
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(timeout=3)
        return info.is_published()

    def payloads(self) -> list[bytes]:
        with self._lock:
            return [p for _, p, _ in self.messages]

    def wait_for(self, n: int, timeout: float = 5.0) -> list[bytes]:
        deadline = time.monotonic() + timeout
        while len(self.payloads()) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.payloads()

    def settle(self, quiet: float = 0.5) -> list[bytes]:
        """Wait until nothing new arrived for `quiet` seconds (to see that nothing more comes)."""
        seen = -1
        while seen != len(self.payloads()):
            seen = len(self.payloads())
            time.sleep(quiet)
        return self.payloads()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def mqtt() -> Iterator[Callable[..., Mqtt]]:
    clients: list[Mqtt] = []

    def make(port: int, client_id: str, **kw: Any) -> Mqtt:
        c = Mqtt(port, client_id, **kw)
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.close()


# -- what every lane and head office uses ------------------------------------------------------


def test_qos1_wildcard_subscription_keeps_each_publishers_order(
    broker: Broker, mqtt: Callable[..., Mqtt]
) -> None:
    ho = mqtt(broker.port, "lanesync-headoffice")
    assert ho.subscribe(JOURNAL.format(store="+", lane="+")) == [1]
    lanes = [mqtt(broker.port, f"lanesync-S{i}-L1") for i in (1, 2)]
    for n in range(50):
        for i, lane in enumerate(lanes, 1):
            assert lane.publish(JOURNAL.format(store=f"S{i}", lane="L1"), b"S%d-%d" % (i, n))
    got = ho.wait_for(100)
    for i in (1, 2):
        mine = [p for p in got if p.startswith(b"S%d-" % i)]
        assert mine == [b"S%d-%d" % (i, n) for n in range(50)]


def test_last_will_is_retained_and_replaced_by_the_next_online_status(
    broker: Broker, mqtt: Callable[..., Mqtt]
) -> None:
    link = ProxyThread(broker.host, broker.port, name="wan").start()
    try:
        lane = mqtt(link.port, "lanesync-S1-L1", will=(STATUS, b"offline"))
        assert lane.ok
        assert lane.publish(STATUS, b"online", retain=True)
        watcher = mqtt(broker.port, "watcher")
        watcher.subscribe(STATUS)
        assert watcher.wait_for(1) == [b"online"]
        link.cut()  # the lane's link dies without a DISCONNECT: the broker sends the will
        assert watcher.wait_for(2)[1:] == [b"offline"]
    finally:
        link.close()
    late = mqtt(broker.port, "late-watcher")
    late.subscribe(STATUS)
    assert late.wait_for(1) == [b"offline"]
    assert late.messages[0][2] is True, "the will was not retained"


@pytest.mark.broker_lacks(
    rabbitmq="RabbitMQ 3.10 looks retained messages up by the subscription's filter as an exact "
    "topic (rabbit_mqtt_processor:maybe_send_retained_message), so a wildcard subscription "
    "gets none: a head office with a new session learns each lane's status only when the lane "
    "next publishes it (at its next connect)"
)
def test_retained_status_reaches_a_wildcard_subscription(
    broker: Broker, mqtt: Callable[..., Mqtt]
) -> None:
    """Head office subscribes to `lanesync/v1/+/+/status`; on connect it is sent every lane's
    retained status (online, or the offline of a will)."""
    lane = mqtt(broker.port, "lanesync-S1-L1")
    assert lane.publish(STATUS, b"online", retain=True)
    ho = mqtt(broker.port, "lanesync-headoffice")
    ho.subscribe("lanesync/v1/+/+/status")
    assert ho.wait_for(1) == [b"online"]
    assert ho.messages[0][2] is True, "not flagged as retained"


def test_persistent_session_queues_qos1_while_head_office_is_away(
    broker: Broker, mqtt: Callable[..., Mqtt]
) -> None:
    ho = mqtt(broker.port, "lanesync-headoffice", clean_session=False)
    ho.subscribe(JOURNAL.format(store="+", lane="+"))
    ho.close()
    lane = mqtt(broker.port, "lanesync-S1-L1")
    for n in range(20):
        assert lane.publish(JOURNAL.format(store="S1", lane="L1"), b"%d" % n)
    back = mqtt(broker.port, "lanesync-headoffice", clean_session=False)
    assert back.session_present is True
    # No SUBSCRIBE this time: the session remembered it. (NATS may redeliver out of order: "Known
    # issues" in github.com/nats-io/nats-server server/README-MQTT.md; ingest orders by seq.)
    assert sorted(back.wait_for(20), key=int) == [b"%d" % n for n in range(20)]


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_persistent_session_across_a_broker_restart(
    broker_factory: BrokerFactory, mqtt: Callable[..., Mqtt], how: str
) -> None:
    """With persistence on, a clean stop keeps head office's session and what was queued for
    it on every server. kill -9 is where they differ: Mosquitto keeps only what its last
    autosave wrote (nothing here: autosave_interval 60 s); NATS's JetStream file store and
    RabbitMQ's durable queue (a QoS 1 PUBLISH is acknowledged once the message is on disk) keep
    it all. Either is fine for lanesync: lanes resend whatever head office has not acked."""
    broker = broker_factory(persistence=True)
    ho = mqtt(broker.port, "lanesync-headoffice", clean_session=False)
    ho.subscribe(JOURNAL.format(store="+", lane="+"))
    ho.close()
    lane = mqtt(broker.port, "lanesync-S1-L1")
    for n in range(10):
        assert lane.publish(JOURNAL.format(store="S1", lane="L1"), b"%d" % n)
    lane.close()
    if how == "stop":
        broker.stop()
    else:
        broker.kill()
    broker.restart()
    back = mqtt(broker.port, "lanesync-headoffice", clean_session=False)
    got = back.settle()
    if how == "kill" and broker.kind == "mosquitto":
        assert back.session_present is False
        assert got == []
    else:
        assert back.session_present is True
        assert sorted(got, key=int) == [b"%d" % n for n in range(10)]


def test_broker_without_persistence_forgets_sessions_on_restart(
    broker_factory: BrokerFactory, mqtt: Callable[..., Mqtt]
) -> None:
    broker = broker_factory(persistence=False)
    ho = mqtt(broker.port, "lanesync-headoffice", clean_session=False)
    ho.subscribe(JOURNAL.format(store="+", lane="+"))
    ho.close()
    lane = mqtt(broker.port, "lanesync-S1-L1")
    assert lane.publish(JOURNAL.format(store="S1", lane="L1"), b"queued")
    lane.close()
    broker.stop()
    broker.restart()
    back = mqtt(broker.port, "lanesync-headoffice", clean_session=False)
    assert back.session_present is False
    assert back.settle() == []


# -- what lanesync uses optionally, and what it avoids ------------------------------------------


@pytest.mark.broker_lacks(
    nats="NATS 2.9 has no shared subscriptions: `$share/<group>/<filter>` is taken as a "
    "literal topic and matches nothing, so head office cannot scale out with share_group",
    rabbitmq="RabbitMQ 3.10 has no shared subscriptions: `$share/<group>/<filter>` is an "
    "ordinary filter that matches nothing, so head office cannot scale out with share_group",
)
def test_shared_subscription_gives_each_message_to_one_member(
    broker: Broker, mqtt: Callable[..., Mqtt]
) -> None:
    workers = [mqtt(broker.port, f"lanesync-headoffice-{i}") for i in (1, 2)]
    for w in workers:
        w.subscribe("$share/ho/" + JOURNAL.format(store="+", lane="+"))
    lane = mqtt(broker.port, "lanesync-S1-L1")
    sent = [b"%d" % n for n in range(40)]
    for p in sent:
        assert lane.publish(JOURNAL.format(store="S1", lane="L1"), p)
    got = [w.settle() for w in workers]
    assert sorted(got[0] + got[1], key=int) == sent, "each message exactly once in the group"
    assert got[0], "the second member got everything: not shared"
    assert got[1], "the first member got everything: not shared"


@pytest.mark.broker_lacks(
    nats="NATS 2.9 closes the connection on a QoS 2 PUBLISH ('publish QoS=2 not "
    "supported'); lanesync only uses QoS 1",
    rabbitmq="RabbitMQ 3.10 downgrades QoS 2 to QoS 1 (SUBACK grants 1, a QoS 2 PUBLISH is "
    "answered with PUBACK); lanesync only uses QoS 1",
)
def test_qos2_publish_is_delivered_once(broker: Broker, mqtt: Callable[..., Mqtt]) -> None:
    sub = mqtt(broker.port, "qos2-sub")
    assert sub.subscribe("qos2/test", qos=2) == [2], "the broker granted less than QoS 2"
    pub = mqtt(broker.port, "qos2-pub")
    assert pub.publish("qos2/test", b"once", qos=2)
    assert sub.settle() == [b"once"]
    assert not pub.disconnected.is_set()


@pytest.mark.broker_lacks(
    nats="NATS 2.9 speaks MQTT 3.1.1 only and refuses a v5 CONNECT (return code 1); "
    "lanesync connects with 3.1.1",
    rabbitmq="RabbitMQ 3.10 speaks MQTT 3.1.1 only (MQTT 5 came with 3.13): it cannot parse a "
    "v5 CONNECT and closes the connection without a CONNACK; lanesync connects with 3.1.1",
)
def test_mqtt5_connect_is_accepted(broker: Broker, mqtt: Callable[..., Mqtt]) -> None:
    client = mqtt(broker.port, "v5-client", protocol=MQTTProtocolVersion.MQTTv5)
    assert client.ok, client.connack


# -- the NatsBroker process wrapper itself ----------------------------------------------------


def test_nats_broker_restarts_on_the_same_port_after_kill(tmp_path: Path) -> None:
    with NatsBroker(tmp_path) as broker:
        port, pid = broker.port, broker.pid
        broker.kill()
        assert not broker.is_running
        broker.restart()
        assert broker.port == port
        assert broker.pid not in (None, pid)
        assert "Listening for MQTT clients" in broker.log_tail(30)


def test_nats_broker_bad_config_fails_with_the_log_tail(tmp_path: Path) -> None:
    broker = NatsBroker(tmp_path, extra_config=["no_such_block {"])
    with pytest.raises(BrokerError, match="exited with code") as err:
        broker.start()
    assert "Parse error" in str(err.value)
    assert not broker.is_running


def test_nats_broker_names_the_debian_package_when_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr("lanesync.nats.FALLBACK_BINARY", "/nonexistent/nats-server")
    with pytest.raises(BrokerError, match=r"apt-get install nats-server"):
        find_nats_server()


def test_nats_broker_on_a_taken_port_says_so(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        broker = NatsBroker(tmp_path, port=taken.getsockname()[1])
        with pytest.raises(BrokerError, match="address already in use"):
            broker.start()
    assert not broker.is_running
