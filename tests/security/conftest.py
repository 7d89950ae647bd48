"""A real Mosquitto with a TLS listener that requires client certificates, maps each
certificate's CN to its MQTT user and enforces the ACL `lanesync headoffice acl` writes.

The PKI is made once per session; each test gets its own broker and ACL file.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pytest
from pki import DAY, Ca
from sec_helpers import STORES, Pki, tls_listener

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
