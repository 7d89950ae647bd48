"""A real Mosquitto with a TLS listener that requires client certificates, maps each
certificate's CN to its MQTT user and enforces the ACL `lanesync headoffice acl` writes.

The PKI is made once per session; each test gets its own broker and ACL file.
"""

from __future__ import annotations

import datetime as dt
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from pki import DAY, Ca
from sec_helpers import PASSWORDS, STORES, Pki, mosquitto_passwd, tls_listener

from lanesync.broker import MosquittoBroker
from lanesync.cli import main


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    ca = Ca(root / "ca")
    now = dt.datetime.now(dt.UTC)
    return Pki(
        ca=ca,
        server=ca.issue("broker.lanesync.test", server=True),
        clients={cn: ca.issue(cn) for cn in ("store-S001", "store-S002", "headoffice")},
        rogue=Ca(root / "rogue", "some other CA").issue("store-S001"),
        expired=ca.issue("expired", not_before=now - 400 * DAY, not_after=now - DAY),
        expiring=ca.issue("expiring", not_after=now + 10 * DAY),
    )


@pytest.fixture
def acl_file(tmp_path: Path) -> Path:
    """The ACL exactly as an operator makes it: through the CLI."""
    path = tmp_path / "mosquitto.acl"
    assert main(["headoffice", "acl", "--stores", ",".join(STORES), "--output", str(path)]) == 0
    return path


@pytest.fixture
def tls_broker(
    broker_factory: Callable[..., MosquittoBroker], pki: Pki, acl_file: Path
) -> MosquittoBroker:
    return broker_factory(extra_config=tls_listener(pki, acl_file))


@pytest.fixture
def password_broker(
    tmp_path: Path, broker_factory: Callable[..., MosquittoBroker], pki: Pki, acl_file: Path
) -> MosquittoBroker:
    """TLS (server certificate only), a password_file with PASSWORDS, and the ACL."""
    users = tmp_path / "mosquitto.passwd"
    for i, (user, pw) in enumerate(PASSWORDS.items()):
        create = ["-c"] if i == 0 else []
        subprocess.run(
            [mosquitto_passwd(), *create, "-b", str(users), user, pw],
            check=True,
            capture_output=True,
        )
    return broker_factory(
        extra_config=[
            f"certfile {pki.server.cert}",
            f"keyfile {pki.server.key}",
            f"password_file {users}",
            f"acl_file {acl_file}",
            "allow_anonymous false",
        ]
    )
