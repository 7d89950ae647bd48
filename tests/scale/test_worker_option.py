"""`lanesync headoffice --worker N`: each worker of a share group gets its own MQTT client id."""

from __future__ import annotations

import argparse

import pytest

from headoffice.cli import as_worker
from headoffice.config import parse
from protocol.errors import ConfigError


def test_worker_gets_its_own_client_id() -> None:
    cfg = parse({"database": {"path": "x.db"}, "broker": {"share_group": "ingest"}})
    out = as_worker(cfg, argparse.Namespace(worker=3))
    assert out.broker.client_id == "lanesync-headoffice-w3"
    assert as_worker(cfg, argparse.Namespace(worker=None)) is cfg


@pytest.mark.parametrize(
    ("broker", "worker", "message"),
    [
        ({}, 1, "--worker: needs broker.share_group"),
        ({"share_group": "ingest"}, 0, "--worker: must be 1..64, got 0"),
    ],
)
def test_worker_option_errors(broker: dict[str, str], worker: int, message: str) -> None:
    cfg = parse({"database": {"path": "x.db"}, "broker": broker})
    with pytest.raises(ConfigError, match=message):
        as_worker(cfg, argparse.Namespace(worker=worker))
