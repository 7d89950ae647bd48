"""Two real agents (stores S1 and S2), a real head office on SQLite and a tap on the broker.

Every process runs as in the field (lanesync.stack: its own process, sd_notify readiness) with
DEBUG logs to its own file; the tap subscribes to `#` and keeps every payload that crosses
the broker, retained ones included.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from lanesync import stack
from lanesync.posclient import PosClient
from lanesync.stack import Component
from protocol.identity import DEFAULT_PREFIX, LaneId
from tests.e2e.e2e_helpers import FAST_REPLICATION, wait_drained
from tests.rules.lane_catalog import standard

S1 = LaneId("S1", "L1")
S2 = LaneId("S2", "L1")
SSCC_LANE_PREFIX = {S1: "01", S2: "02"}


class MqttTap:
    """Every (topic, payload) published on the broker while it runs."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.seen: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id="pan-tap")
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = lambda *a: self._subscribed.set()
        self._client.on_message = self._on_message

    def _on_connect(self, client: paho.Client, *args: Any) -> None:
        client.subscribe("#", qos=1)

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        with self._lock:
            self.seen.append((msg.topic, bytes(msg.payload)))

    def start(self) -> MqttTap:
        self._client.connect("127.0.0.1", self.port)
        self._client.loop_start()
        if not self._subscribed.wait(10):
            raise AssertionError("the MQTT tap could not subscribe to #")
        return self

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def payloads(self) -> list[tuple[str, bytes]]:
        with self._lock:
            return list(self.seen)


def agent_toml(workdir: Path, lane: LaneId, port: int) -> Path:
    """The agent's configuration: stack.agent's, plus transit numbering; its catalog file (the
    items, tax rates and stores every document kind needs: tests/rules/lane_catalog.py) is
    written beside the journal, as head office would have sent it."""
    name = f"agent-{lane.store}-{lane.lane}"
    journal = stack.journal_path(workdir, lane)
    standard(journal.with_name(f"{journal.stem}-catalog.db"), lane)
    replication = "\n".join(f"{k} = {v!r}" for k, v in FAST_REPLICATION.items())
    text = f"""store = "{lane.store}"
lane = "{lane.lane}"

[journal]
path = "{stack.journal_path(workdir, lane)}"

[broker]
host = "127.0.0.1"
port = {port}
keepalive = 5
topic_prefix = "{DEFAULT_PREFIX}"

[replication]
{replication}

[api]
socket = "{stack.api_socket_path(workdir, lane)}"

[transit]
gs1_company_prefix = "5703538"
sscc_lane_prefix = "{SSCC_LANE_PREFIX[lane]}"
"""
    path = workdir / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    return path


class PanStack:
    def __init__(self, workdir: Path, broker_port: int) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.port = broker_port
        self.tap = MqttTap(broker_port)
        ho = stack.headoffice(workdir, broker_port)
        self.ho = Component(ho.name, ["--log-level", "DEBUG", *ho.argv], workdir)
        self.agents = {
            lane: Component(
                f"agent-{lane.store}-{lane.lane}",
                [
                    "--log-level",
                    "DEBUG",
                    "agent",
                    "--config",
                    str(agent_toml(workdir, lane, broker_port)),
                ],
                workdir,
            )
            for lane in (S1, S2)
        }
        self.pos = {lane: PosClient(str(stack.api_socket_path(workdir, lane))) for lane in (S1, S2)}

    def start(self) -> PanStack:
        self.tap.start()
        self.ho.start().wait_notify("STATUS=subscribed", timeout=30)
        for comp in self.agents.values():
            comp.start().wait_notify("READY=1", timeout=30)
        return self

    def call(self, lane: LaneId, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        return self.pos[lane].request(method, path, body)

    def wait_drained(self, timeout: float = 30.0) -> None:
        for lane in (S1, S2):
            wait_drained(
                self.workdir / "headoffice.db",
                stack.journal_path(self.workdir, lane),
                lane,
                timeout,
                self.logs,
            )

    def logs(self) -> str:
        return "\n".join(
            f"--- {c.name} ---\n{c.log_tail(20)}" for c in [self.ho, *self.agents.values()]
        )

    def close(self) -> None:
        for client in self.pos.values():
            client.close()
        for comp in [*self.agents.values(), self.ho]:
            comp.stop(timeout=10.0)
        self.tap.stop()

    @staticmethod
    def kept_files(root: Path) -> Iterator[Path]:
        """Every file under `root`: journals and their WAL, head office's database, the logs
        (the broker's too), the configurations."""
        for path in sorted(root.rglob("*")):
            if path.is_file() and not path.name.endswith(".notify"):
                yield path


def wait_until(cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g}s")
        time.sleep(0.05)
