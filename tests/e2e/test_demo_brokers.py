"""`lanesync demo --broker nats|rabbitmq`: the whole chain, WAN outage included, on NATS's MQTT
listener and on a RabbitMQ node of the demo's own.

tests/test_demo.py runs the demo on Mosquitto; this keeps the other `--broker` paths honest.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

# What each server logs once its MQTT listener is open, in the demo's broker directory.
LISTENING = {
    "nats": ("nats.log", "Listening for MQTT clients"),
    "rabbitmq": ("rabbitmq.log", "started MQTT TCP listener"),
}


@pytest.fixture(
    params=[
        "nats",
        # 50 s on a loaded 2-core machine (a fresh node's first boot, then a slower drain):
        # opt-in, like the other long runs. The broker itself is covered by the fault tests.
        pytest.param("rabbitmq", marks=pytest.mark.soak),
    ]
)
def broker_kind(request: pytest.FixtureRequest) -> str:
    """Mosquitto's demo is tests/test_demo.py's."""
    kind: str = request.param
    return kind


def test_demo_reports_nothing_lost(tmp_path: Path, broker_kind: str) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "lanesync.cli",
            "demo",
            "--broker",
            broker_kind,
            "--json",
            "--outage",
            "3",
            "--rate",
            "10",
            "--workdir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    assert result["ok"] is True
    total = result["total"]
    assert total["confirmed"] > 40
    assert total["lost"] == 0
    assert total["duplicated"] == 0
    assert total["at_head_office"] == total["confirmed"]
    assert all(lane["backlog_during_outage"] > 0 for lane in result["lanes"])
    log, listening = LISTENING[broker_kind]
    assert listening in (tmp_path / "broker" / log).read_text()
