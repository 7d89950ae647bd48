"""`lanesync demo --broker nats`: the whole chain, WAN outage included, on NATS's MQTT listener.

tests/test_demo.py runs the demo on Mosquitto; this keeps the `--broker nats` path honest.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_demo_on_nats_reports_nothing_lost(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "lanesync.cli",
            "demo",
            "--broker",
            "nats",
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
    assert "Listening for MQTT clients" in (tmp_path / "broker" / "nats.log").read_text()
