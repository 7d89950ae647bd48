"""`lanesync demo` end to end: separate processes, a WAN outage, a clean reconciliation."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_demo_json_reports_nothing_lost(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "lanesync.cli",
            "demo",
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
    assert len(result["lanes"]) == 4
    total = result["total"]
    assert total["confirmed"] > 40
    assert total["lost"] == 0
    assert total["duplicated"] == 0
    assert total["at_head_office"] == total["confirmed"]
    # the tills kept trading while the links were down
    assert all(lane["backlog_during_outage"] > 0 for lane in result["lanes"])
