"""Helpers for the security tests: the PKI bundle, broker listener lines, configs and clients."""

from __future__ import annotations

import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import msgpack
import pytest
from pki import Ca, Issued

from agent import config as agent_config
from agent.config import AgentConfig
from headoffice import config as ho_config
from headoffice.config import HeadOfficeConfig
from lanesync.broker import MosquittoBroker
from protocol.brokerconn import TlsConfig, tls_context
from protocol.chain import entry_hash, genesis
from protocol.identity import LaneId
from protocol.messages import Entry, JournalBatch

STORES = ("S001", "S002")


@dataclass(frozen=True)
class Pki:
    ca: Ca
    server: Issued
    clients: dict[str, Issued]  # by CN: store-S001, store-S002, headoffice
    rogue: Issued  # CN store-S001, but issued by another CA
    expired: Issued
    expiring: Issued  # 10 days left

    def tls(self, cn: str) -> dict[str, Any]:
        """The [broker] TLS keys for the identity `cn`."""
        c = self.clients[cn]
        return {"ca_file": str(self.ca.cert_path), "cert_file": str(c.cert), "key_file": str(c.key)}


def tls_listener(pki: Pki, acl: Path) -> list[str]:
    """mosquitto.conf lines for the broker's one listener (they follow its `listener` line)."""
    return [
        f"cafile {pki.ca.cert_path}",
        f"certfile {pki.server.cert}",
        f"keyfile {pki.server.key}",
        "require_certificate true",
        # The client certificate's CN becomes the user the ACL names (mosquitto.conf(5)).
        "use_identity_as_username true",
        f"acl_file {acl}",
        # Overrides MosquittoBroker's `allow_anonymous true`: the later line wins.
        "allow_anonymous false",
    ]


def lane_cfg(
    tmp_path: Path, broker: MosquittoBroker, pki: Pki, store: str, lane: str = "L1"
) -> AgentConfig:
    return agent_config.parse(
        {
            "store": store,
            "lane": lane,
            "journal": {"path": str(tmp_path / f"{store}-{lane}.db")},
            "api": {"socket": str(tmp_path / f"{store}-{lane}.sock")},
            "broker": {"port": broker.port, "keepalive": 2} | pki.tls(f"store-{store}"),
            "replication": {"linger_ms": 0, "backoff_initial_s": 0.05, "backoff_max_s": 0.3},
        }
    )


def ho_cfg(tmp_path: Path, broker: MosquittoBroker, pki: Pki) -> HeadOfficeConfig:
    return ho_config.parse(
        {
            "database": {"path": str(tmp_path / "ho.db")},
            "broker": {"port": broker.port, "keepalive": 2} | pki.tls("headoffice"),
        }
    )


def client(
    broker: MosquittoBroker, tls: TlsConfig | None, *, timeout: float = 5, **kwargs: Any
) -> aiomqtt.Client:
    """A raw MQTT client over TLS as `tls` says (None: plain TCP)."""
    return aiomqtt.Client(
        broker.host,
        broker.port,
        identifier=f"sec-{uuid.uuid4().hex[:8]}",
        tls_context=tls_context(tls),
        timeout=timeout,
        **kwargs,
    )


def identity(pki: Pki, cn: str) -> TlsConfig:
    c = pki.clients[cn]
    return TlsConfig(str(pki.ca.cert_path), str(c.cert), str(c.key))


def batch(lane: LaneId, n: int, epoch: int = 7) -> JournalBatch:
    """A well-formed, correctly chained batch of `n` sales for `lane` (seq 1..n)."""
    prev = genesis(lane, epoch)
    entries = []
    for seq in range(1, n + 1):
        body = msgpack.packb({"kind": "sale", "register_no": f"T{seq}", "total": 100 + seq})
        txn = str(uuid.uuid4())
        ts = 1_700_000_000_000 + seq
        entries.append(
            Entry(seq, "sale", txn, ts, body, entry_hash(prev, seq, "sale", txn, ts, body))
        )
        prev = entries[-1].hash
    return JournalBatch(lane, epoch, genesis(lane, epoch), entries)


# Per-store passwords for Mosquitto's password_file (the `password_broker` fixture).
PASSWORDS = {"store-S001": "lane pw S001", "store-S002": "lane pw S002", "headoffice": "ho pw"}


def mosquitto_passwd() -> str:
    found = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    if not Path(found).exists():
        pytest.fail("mosquitto_passwd is missing: it ships in Debian's mosquitto package")
    return found


def secret_file(tmp_path: Path, user: str, password: str) -> str:
    path = tmp_path / f"{user}.pw"
    path.write_text(password + "\n")
    path.chmod(0o600)
    return str(path)


def broker_keys(tmp_path: Path, broker: MosquittoBroker, pki: Pki, user: str) -> dict[str, Any]:
    """[broker] keys for `user` logging in with its password over TLS (server cert only)."""
    return {
        "port": broker.port,
        "keepalive": 2,
        "ca_file": str(pki.ca.cert_path),
        "username": user,
        "password_file": secret_file(tmp_path, user, PASSWORDS[user]),
    }
