"""A real Mosquitto running systemd/mosquitto-headoffice.example.conf: a stores' listener where
each lane's (or store hub's) identity is its own client id, and head office's own listener,
both under the ACL `lanesync headoffice acl` writes.

The PKI is made once per session; each test gets its own broker and ACL file.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pytest

from lanesync.broker import MosquittoBroker
from lanesync.cli import main
from tests.security.pki import DAY, Ca
from tests.security.sec_helpers import (
    ACL_ARGV,
    HEADOFFICE,
    IDENTITIES,
    Pki,
    broker_options,
    password_file,
)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    ca = Ca(root / "ca")
    ho_ca = Ca(root / "ho-ca", "lanesync test head-office CA")
    now = dt.datetime.now(dt.UTC)
    return Pki(
        ca=ca,
        ho_ca=ho_ca,
        server=ca.issue("broker.lanesync.test", server=True),
        clients={cn: ca.issue(cn) for cn in IDENTITIES} | {HEADOFFICE: ho_ca.issue(HEADOFFICE)},
        rogue=Ca(root / "rogue", "some other CA").issue("store-S001"),
        expired=ca.issue("expired", not_before=now - 400 * DAY, not_after=now - DAY),
        expiring=ca.issue("expiring", not_after=now + 10 * DAY),
    )


@pytest.fixture
def acl_file(tmp_path: Path) -> Path:
    """The ACL exactly as an operator makes it: through the CLI."""
    path = tmp_path / "mosquitto.acl"
    assert main(["headoffice", "acl", *ACL_ARGV, "--output", str(path)]) == 0
    return path


@pytest.fixture
def passwd_files(tmp_path: Path) -> dict[str, Path]:
    """The example file's two password files: every store identity's, and head office's."""
    return {
        "/etc/mosquitto/lanesync-stores.passwd": password_file(
            tmp_path / "stores.passwd", list(IDENTITIES)
        ),
        "/etc/mosquitto/lanesync-headoffice.passwd": password_file(
            tmp_path / "headoffice.passwd", [HEADOFFICE]
        ),
    }


@pytest.fixture
def tls_broker(
    broker_factory: Callable[..., MosquittoBroker], pki: Pki, acl_file: Path
) -> MosquittoBroker:
    """Client certificates on both listeners (head office's from its own CA)."""
    return broker_factory(**broker_options(pki, acl_file, stores="cert", headoffice="cert"))


@pytest.fixture
def password_broker(
    broker_factory: Callable[..., MosquittoBroker],
    pki: Pki,
    acl_file: Path,
    passwd_files: dict[str, Path],
) -> MosquittoBroker:
    """TLS (server certificate only) and passwords on both listeners, each its own file."""
    return broker_factory(
        **broker_options(
            pki, acl_file, stores="password", headoffice="password", passwd=passwd_files
        )
    )
