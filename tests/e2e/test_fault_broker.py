"""The broker goes away and comes back, with its persistence (clean stop) and without (kill -9).

The store keeps trading while the broker is down: every lane keeps confirming sales to its
tills, and once the broker is back everything reaches head office exactly once, in order.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from protocol.identity import LaneId
from tests.e2e.e2e_cluster import Cluster
from tests.e2e.e2e_helpers import assert_exactly_once, lane_status, wait_until

LANES = [LaneId("S3", "L1"), LaneId("S3", "L2")]


@pytest.mark.parametrize(
    "persistence", [True, False], ids=["stop-restart-persistent", "kill-restart-volatile"]
)
def test_broker_outage_lanes_keep_trading_and_everything_arrives(
    cluster: Cluster, persistence: bool
) -> None:
    broker = cluster.start_broker(persistence=persistence)
    cluster.headoffice()
    for lane in LANES:
        cluster.agent(lane)
    tills = {lane: cluster.till(lane, rate=80) for lane in LANES}
    for lane, till in tills.items():
        till.wait_confirmed(80, 15, "before the outage")
        cluster.wait_caught_up(lane, timeout=15)

    if persistence:
        broker.stop()  # SIGTERM: mosquitto saves sessions and queued messages
    else:
        broker.kill()  # SIGKILL, and nothing persisted anyway
    down_at = {lane: till.count for lane, till in tills.items()}
    for lane, till in tills.items():
        sock = cluster.socket(lane)
        # Trading goes on: each lane confirms another ~2 s of sales with no broker at all.
        till.wait_confirmed(down_at[lane] + 150, 15, "while the broker is down")

        def offline(s: Path = sock) -> bool:
            return not lane_status(s)["connected"]

        wait_until(
            offline,
            10,
            f"{lane} noticing the broker is gone",
        )
    assert all(lane_status(cluster.socket(lane))["backlog"] > 0 for lane in LANES)

    broker.restart()  # same port
    back = time.monotonic()
    for till in tills.values():
        till.wait_confirmed(till.count + 40, 15, "after the broker came back")
    cluster.stop_tills()
    for lane in LANES:
        cluster.wait_drained(lane, timeout=45)
    recovery = time.monotonic() - back
    for lane, till in tills.items():
        assert_exactly_once(cluster.ho_db, cluster.journal(lane), lane, till.confirmed)
        assert lane_status(cluster.socket(lane))["reconnects"] >= 1
    print(f"broker {'stop' if persistence else 'kill'}: drained {recovery:.1f}s after restart")
