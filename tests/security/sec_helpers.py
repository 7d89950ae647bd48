"""Helpers for the security tests: the PKI bundle, the broker config, configs and clients.

The broker runs systemd/mosquitto-headoffice.example.conf itself (paths filled in, and for the
other login kinds the very edits its comments describe), so the documented file is the tested
one: a stores' listener where each identity is its own client id, and head office's listener.
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import aiomqtt
import msgpack
import pytest

from agent import config as agent_config
from agent.config import AgentConfig
from headoffice import config as ho_config
from headoffice.config import HeadOfficeConfig
from lanesync.broker import MosquittoBroker
from protocol.chain import entry_hash, genesis
from protocol.identity import LaneId
from protocol.messages import Entry, JournalBatch
from protocol.runtime.brokerconn import TlsConfig, tls_context
from tests.security.pki import Ca, Issued

STORES = ("S001", "S002")  # each also has a store hub identity (store-S001)
LANES = (LaneId("S001", "L1"), LaneId("S001", "L2"), LaneId("S002", "L1"))
HEADOFFICE = "headoffice"
BROKER_EXAMPLE = (
    Path(__file__).resolve().parents[2] / "systemd" / "mosquitto-headoffice.example.conf"
)
Login = Literal["cert", "password"]


def lane_user(lane: LaneId) -> str:
    """The broker identity `lanesync headoffice acl` gives a lane (its CN or login)."""
    return f"store-{lane.store}.{lane.lane}"


IDENTITIES = (*(lane_user(lane) for lane in LANES), *(f"store-{s}" for s in STORES))
# `lanesync headoffice acl` arguments granting every test identity above.
ACL_ARGV = ["--lanes", ",".join(str(lane) for lane in LANES), "--stores", ",".join(STORES)]


@dataclass(frozen=True)
class Pki:
    ca: Ca  # signs the broker's certificate and every store's and lane's
    ho_ca: Ca  # signs only head office's: the CA of head office's own listener
    server: Issued
    clients: dict[str, Issued]  # by CN: IDENTITIES and headoffice (from ho_ca)
    rogue: Issued  # CN store-S001, but issued by another CA
    expired: Issued
    expiring: Issued  # 10 days left

    def tls(self, cn: str) -> dict[str, Any]:
        """The [broker] TLS keys for the identity `cn`."""
        c = self.clients[cn]
        return {"ca_file": str(self.ca.cert_path), "cert_file": str(c.cert), "key_file": str(c.key)}


def _edit(text: str, old: str, new: str) -> str:
    if text.count(old) != 1:
        pytest.fail(f"{BROKER_EXAMPLE.name} no longer has exactly one {old!r}")
    return text.replace(old, new)


def broker_options(
    pki: Pki,
    acl: Path,
    *,
    stores: Login,
    headoffice: Login,
    passwd: dict[str, Path] | None = None,
    bind_client_ids: bool = True,
) -> dict[str, Any]:
    """MosquittoBroker options from the example file: its general lines, the stores' listener's
    options (after the broker's own listener line) and head office's listener (an extra one)."""
    text = BROKER_EXAMPLE.read_text()
    if stores == "password":
        text = _edit(
            text,
            "cafile /etc/mosquitto/certs/lanesync-ca.pem\n"
            "require_certificate true\nuse_identity_as_username true\n",
            "",
        )
        text = _edit(text, "#password_file ", "password_file ")
    if headoffice == "cert":
        text = _edit(text, "password_file /etc/mosquitto/lanesync-headoffice.passwd\n", "")
        for option in ("cafile ", "require_certificate ", "use_identity_as_username "):
            text = _edit(text, f"#{option}", option)
    if not bind_client_ids:  # only to show that the attack the tests make is real
        text = _edit(text, "use_username_as_clientid true\n", "")
    for path, real in {
        "/etc/mosquitto/certs/broker.crt": pki.server.cert,
        "/etc/mosquitto/certs/broker.key": pki.server.key,
        "/etc/mosquitto/certs/lanesync-ca.pem": pki.ca.cert_path,
        "/etc/mosquitto/certs/headoffice-ca.pem": pki.ho_ca.cert_path,
        "/etc/mosquitto/lanesync.acl": acl,
        **(passwd or {}),
    }.items():
        text = text.replace(path, str(real))
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    starts = [i for i, ln in enumerate(lines) if ln.startswith("listener ")]
    if [lines[i] for i in starts] != ["listener 8883", "listener 8884 10.0.0.5"]:
        pytest.fail(f"{BROKER_EXAMPLE.name}: expected the stores' and head office's listeners")
    return {
        "preamble": lines[: starts[0]],
        "extra_config": lines[starts[0] + 1 : starts[1]],
        "extra_listeners": [lines[starts[1] + 1 :]],
    }


def ho_port(broker: MosquittoBroker) -> int:
    """Head office's own listener (the stores' listener is `broker.port`)."""
    return broker.extra_ports[0]


def lane_cfg(
    tmp_path: Path, broker: MosquittoBroker, pki: Pki, store: str, lane: str = "L1"
) -> AgentConfig:
    return agent_config.parse(
        {
            "store": store,
            "lane": lane,
            "journal": {"path": str(tmp_path / f"{store}-{lane}.db")},
            "api": {"socket": str(tmp_path / f"{store}-{lane}.sock")},
            "broker": {"port": broker.port, "keepalive": 2}
            | pki.tls(lane_user(LaneId(store, lane))),
            "replication": {"linger_ms": 0, "backoff_initial_s": 0.05, "backoff_max_s": 0.3},
        }
    )


def ho_cfg(tmp_path: Path, broker: MosquittoBroker, pki: Pki) -> HeadOfficeConfig:
    return ho_config.parse(
        {
            "database": {"path": str(tmp_path / "ho.db")},
            "broker": {"port": ho_port(broker), "keepalive": 2} | pki.tls(HEADOFFICE),
        }
    )


def client(
    broker: MosquittoBroker,
    tls: TlsConfig | None,
    *,
    timeout: float = 5,
    port: int | None = None,
    identifier: str | None = None,
    **kwargs: Any,
) -> aiomqtt.Client:
    """A raw MQTT client over TLS as `tls` says (None: plain TCP), on the stores' listener
    unless `port` says otherwise."""
    return aiomqtt.Client(
        broker.host,
        port or broker.port,
        identifier=identifier or f"sec-{uuid.uuid4().hex[:8]}",
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


# Passwords for Mosquitto's password files (the `password_broker` fixture): the stores' file
# holds every lane's and hub's, head office's file only head office's.
PASSWORDS = {user: f"pw of {user}" for user in IDENTITIES} | {HEADOFFICE: "ho pw"}


def mosquitto_passwd() -> str:
    found = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    if not Path(found).exists():
        pytest.fail("mosquitto_passwd is missing: it ships in Debian's mosquitto package")
    return found


def password_file(path: Path, users: list[str]) -> Path:
    for i, user in enumerate(users):
        create = ["-c"] if i == 0 else []
        subprocess.run(
            [mosquitto_passwd(), *create, "-b", str(path), user, PASSWORDS[user]],
            check=True,
            capture_output=True,
        )
    return path


def secret_file(tmp_path: Path, user: str, password: str) -> str:
    path = tmp_path / f"{user}.pw"
    path.write_text(password + "\n")
    path.chmod(0o600)
    return str(path)


def broker_keys(tmp_path: Path, broker: MosquittoBroker, pki: Pki, user: str) -> dict[str, Any]:
    """[broker] keys for `user` logging in with its password over TLS (server cert only), on
    head office's listener for head office and on the stores' for everyone else."""
    return {
        "port": ho_port(broker) if user == HEADOFFICE else broker.port,
        "keepalive": 2,
        "ca_file": str(pki.ca.cert_path),
        "username": user,
        "password_file": secret_file(tmp_path, user, PASSWORDS[user]),
    }


@dataclass(frozen=True)
class Logins:
    """How identities log in on one of the fixtures' brokers: client certificates or passwords
    (over TLS with the broker's certificate only)."""

    kind: Login
    broker: MosquittoBroker
    pki: Pki
    tmp_path: Path

    def broker_keys(self, user: str) -> dict[str, Any]:
        """A [broker] table for `user`: head office on its own listener, others on the stores'."""
        if self.kind == "password":
            return broker_keys(self.tmp_path, self.broker, self.pki, user)
        port = ho_port(self.broker) if user == HEADOFFICE else self.broker.port
        return {"port": port, "keepalive": 2} | self.pki.tls(user)

    def client(
        self, user: str, *, identifier: str, port: int | None = None, timeout: float = 5
    ) -> aiomqtt.Client:
        """A raw client logged in as `user` that asks for client id `identifier`."""
        if self.kind == "cert":
            c = self.pki.clients[user]
            tls = TlsConfig(str(self.pki.ca.cert_path), str(c.cert), str(c.key))
            # A username in CONNECT is ignored under use_identity_as_username: say the victim's.
            return client(self.broker, tls, port=port, identifier=identifier, username=identifier)
        return client(
            self.broker,
            TlsConfig(str(self.pki.ca.cert_path)),
            port=port,
            identifier=identifier,
            username=user,
            password=PASSWORDS[user],
        )
