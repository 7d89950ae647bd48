"""`lanesync headoffice --worker N`: each worker of a share group gets its own MQTT client id,
and its own status-page and metrics ports when the workers share one config file."""

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


def test_workers_sharing_a_config_listen_on_their_own_ports() -> None:
    cfg = parse(
        {
            "database": {"path": "x.db"},
            "broker": {"share_group": "ingest"},
            "status_page": {"listen": "0.0.0.0:8642"},
            "metrics": {"listen": "127.0.0.1:9642"},
        }
    )
    listens = [
        (w.ops.status_page.listen, w.ops.metrics.listen)
        for w in (as_worker(cfg, argparse.Namespace(worker=n)) for n in (1, 2, 3))
    ]
    assert listens == [
        ("0.0.0.0:8642", "127.0.0.1:9642"),
        ("0.0.0.0:8643", "127.0.0.1:9643"),
        ("0.0.0.0:8644", "127.0.0.1:9644"),
    ]
    quiet = parse({"database": {"path": "x.db"}, "broker": {"share_group": "ingest"}})
    w2 = as_worker(quiet, argparse.Namespace(worker=2))
    assert (w2.ops.status_page.listen, w2.ops.metrics.listen) == (None, None)
    high = parse(
        {
            "database": {"path": "x.db"},
            "broker": {"share_group": "ingest"},
            "metrics": {"listen": "127.0.0.1:65535"},
        }
    )
    with pytest.raises(ConfigError, match=r"--worker: 127.0.0.1:65535 \+ 1 is beyond port 65535"):
        as_worker(high, argparse.Namespace(worker=2))


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
