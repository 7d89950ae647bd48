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
    # master data down: a price changed online and one changed while both stores were
    # offline reached every lane, each charging the new price from its own catalog copy
    online, offline = result["price_changes"]
    assert (online["item"], online["while_offline"]) == ("P1000", False)
    assert (offline["item"], offline["while_offline"]) == ("P2000", True)
    for change in (online, offline):
        assert set(change["reached_s"]) == {"S1/L1", "S1/L2", "S2/L1", "S2/L2"}
        assert set(change["price_on_lanes"].values()) == {change["price"]}
    # while offline the lanes still held the version before it
    assert all(v < offline["version"] for v in offline["lanes_before_restore"].values())
