"""Agent configuration (`/etc/lanesync/agent.toml`), validated at start.

Every key is documented in systemd/agent.example.toml; an error names the key at fault.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protocol.config import Table
from protocol.errors import ConfigError, ProtocolError
from protocol.identity import DEFAULT_PREFIX, LaneId, Topics


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = None
    keepalive: int = 15  # s; a dead (blackholed) link is noticed after 1.5 x keepalive
    topic_prefix: str = DEFAULT_PREFIX


@dataclass(frozen=True, slots=True)
class ReplicationConfig:
    batch_max_entries: int = 1000
    batch_max_bytes: int = 512 * 1024
    linger_ms: int = 20
    window: int = 32  # batches published but not yet acked by head office
    ack_timeout_s: float = 10.0  # no ack progress for this long: resend from the acked mark
    publish_timeout_s: float = 10.0  # no PUBACK for this long: the link is dead, reconnect
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0


@dataclass(frozen=True, slots=True)
class ApiConfig:
    socket: str | None = "/run/lanesync/api.sock"
    tcp: str | None = None  # "127.0.0.1:8641" to also listen on loopback TCP (needs a token)
    token: str | None = None


@dataclass(frozen=True, slots=True)
class AgentConfig:
    lane: LaneId
    journal_path: Path
    broker: BrokerConfig = field(default_factory=BrokerConfig)
    replication: ReplicationConfig = field(default_factory=ReplicationConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    scanners: list[dict[str, Any]] = field(default_factory=list)

    @property
    def topics(self) -> Topics:
        return Topics(self.broker.topic_prefix)


def parse(data: dict[str, Any]) -> AgentConfig:
    root = Table(data)
    try:
        lane = LaneId(root.str("store"), root.str("lane"))
    except ProtocolError as exc:
        raise ConfigError(str(exc)) from None
    j = root.table("journal")
    journal_path = Path(j.str("path", "/var/lib/lanesync/journal.db"))
    j.done()
    b = root.table("broker")
    broker = BrokerConfig(
        host=b.str("host", "127.0.0.1"),
        port=b.int("port", 1883, 1, 65535),
        username=b.str("username", None),
        password=b.str("password", None),
        keepalive=b.int("keepalive", 15, 2, 3600),
        topic_prefix=b.str("topic_prefix", DEFAULT_PREFIX),
    )
    b.done()
    try:
        Topics(broker.topic_prefix)
    except ProtocolError as exc:
        raise ConfigError(f"broker.{exc}") from None
    r = root.table("replication")
    d = ReplicationConfig()
    replication = ReplicationConfig(
        batch_max_entries=r.int("batch_max_entries", d.batch_max_entries, 1, 10_000),
        batch_max_bytes=r.int("batch_max_bytes", d.batch_max_bytes, 4096, 900 * 1024),
        linger_ms=r.int("linger_ms", d.linger_ms, 0, 10_000),
        window=r.int("window", d.window, 1, 256),
        ack_timeout_s=r.num("ack_timeout_s", d.ack_timeout_s, 0.1, 3600),
        publish_timeout_s=r.num("publish_timeout_s", d.publish_timeout_s, 0.1, 3600),
        backoff_initial_s=r.num("backoff_initial_s", d.backoff_initial_s, 0.01, 600),
        backoff_max_s=r.num("backoff_max_s", d.backoff_max_s, 0.01, 3600),
    )
    r.done()
    a = root.table("api")
    api = ApiConfig(
        socket=a.str("socket", "/run/lanesync/api.sock") or None,
        tcp=a.str("tcp", None) or None,
        token=a.str("token", None) or None,
    )
    if api.tcp is not None:
        host, sep, port = api.tcp.rpartition(":")
        if not sep or not port.isdigit() or host not in ("127.0.0.1", "localhost", "::1", "[::1]"):
            raise ConfigError(f"api.tcp: must be a loopback HOST:PORT, got {api.tcp!r}")
        if not api.token:
            raise ConfigError("api.token: required when api.tcp is set (the TCP API needs a token)")
    if api.socket is None and api.tcp is None:
        raise ConfigError("api: set api.socket and/or api.tcp; the POS needs a way in")
    a.done()
    scanners = root.array("scanners")
    root.done()
    return AgentConfig(lane, journal_path, broker, replication, api, scanners)


def load(path: str | Path) -> AgentConfig:
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such file (see systemd/agent.example.toml)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    try:
        return parse(data)
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from None
