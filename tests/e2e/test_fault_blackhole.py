"""A WAN link that silently swallows traffic (no FIN, no RST) for longer than the keepalive.

Nothing tells the lane the link is dead: it has to find out from its own MQTT keepalive or a
publish that never gets its PUBACK, drop the connection, keep reconnecting through the dead link
and, once it carries traffic again, drain what the tills sold meanwhile.
"""

from __future__ import annotations

import time

from protocol.identity import LaneId
from tests.e2e.e2e_cluster import Cluster
from tests.e2e.e2e_helpers import assert_exactly_once, lane_status, wait_until

LANE = LaneId("S4", "L1")
KEEPALIVE = 2


def test_blackholed_link_is_noticed_reconnected_and_drained(cluster: Cluster) -> None:
    cluster.start_broker()
    cluster.headoffice()
    wan = cluster.proxy("wan-S4")
    cluster.agent(LANE, port=wan.port, keepalive=KEEPALIVE, publish_timeout_s=2.0)
    sock = cluster.socket(LANE)
    till = cluster.till(LANE, rate=60)
    till.wait_confirmed(60, 15, "before the outage")
    cluster.wait_caught_up(LANE, timeout=15)
    assert lane_status(sock)["connected"] is True
    reconnects_before = int(lane_status(sock)["reconnects"])

    wan.blackhole()
    at = time.monotonic()
    sold_before = till.count
    noticed = wait_until(
        lambda: not lane_status(sock)["connected"],
        4 * KEEPALIVE + 2,
        "the lane noticing the blackholed link (keepalive / publish timeout)",
        cluster.logs,
    )
    # Stay dark well past 1.5 x keepalive, so the reconnect attempts hit the dead link too.
    wait_until(lambda: time.monotonic() - at > 3 * KEEPALIVE, 10, "outage duration")
    assert not lane_status(sock)["connected"], "connected through a blackholed link?"
    assert till.count > sold_before + 100, "the tills could not sell during the outage"
    assert lane_status(sock)["backlog"] > 0

    wan.resume()
    back = time.monotonic()
    till.wait_confirmed(till.count + 30, 10, "after the link came back")
    cluster.stop_tills()
    cluster.wait_drained(LANE, timeout=30)
    recovered = time.monotonic() - back
    status = lane_status(sock)
    assert status["connected"] is True
    assert int(status["reconnects"]) > reconnects_before
    assert wan.proxy.bytes_dropped > 0  # the proxy really swallowed traffic
    assert_exactly_once(cluster.ho_db, cluster.journal(LANE), LANE, till.confirmed)
    print(f"blackhole noticed after {noticed:.1f}s, drained {recovered:.1f}s after resume")
