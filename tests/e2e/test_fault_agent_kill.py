"""kill -9 of the lane agent, while tills append and while it drains a backlog.

Every document the API confirmed must be in the journal the moment the agent dies (invariant 1:
confirmed only after a synchronous=FULL commit), and a restarted agent on the same journal must
get all of it to head office exactly once, in order.
"""

from __future__ import annotations

from protocol.identity import LaneId
from tests.e2e.e2e_cluster import Cluster
from tests.e2e.e2e_helpers import (
    all_confirmed,
    assert_exactly_once,
    ho_hwm,
    read_lane_journal,
    wait_total,
    wait_until,
)

LANE = LaneId("S1", "L1")


def test_agent_sigkill_during_appends_loses_no_confirmed_sale(cluster: Cluster) -> None:
    cluster.start_broker()
    cluster.headoffice()
    agent = cluster.agent(LANE)
    # Three tills selling as fast as the agent answers: at any instant requests are in flight.
    tills = [cluster.till(LANE) for _ in range(3)]

    for kill in range(3):
        wait_total(tills, sum(t.count for t in tills) + 300, 20, f"before kill {kill + 1}")
        agent.kill()  # SIGKILL mid-stream: tills are mid-request, the replicator mid-batch
        # Nothing more can be confirmed now; everything confirmed so far is on disk.
        confirmed = all_confirmed(tills)
        journal = read_lane_journal(cluster.journal(LANE))
        on_disk = {txn: seq for seq, txn, _ in journal.entries}
        lost = [c for c in confirmed if on_disk.get(c.txn_id) != c.seq]
        assert not lost, f"kill {kill + 1}: {len(lost)} confirmed sales not journaled: {lost[:3]}"
        cluster.start(agent)  # same journal file

    wait_total(tills, sum(t.count for t in tills) + 300, 20, "after the last restart")
    cluster.stop_tills()
    assert sum(t.failed_attempts for t in tills) > 0, "no submit was ever cut off by a kill"
    cluster.wait_drained(LANE, timeout=30)
    assert_exactly_once(
        cluster.ho_db, cluster.journal(LANE), LANE, all_confirmed(tills), min_confirmed=1200
    )


def test_agent_sigkill_during_drain_then_restart_completes(cluster: Cluster) -> None:
    cluster.start_broker()
    ho = cluster.headoffice(start=False)  # head office down: the store trades into a backlog
    # Small batches and one in flight, so the drain takes seconds and the kills land inside it.
    agent = cluster.agent(LANE, batch_max_entries=10, window=1)
    tills = [cluster.till(LANE, limit=1200) for _ in range(3)]
    wait_total(tills, 3600, 30, "building the backlog")
    cluster.stop_tills()
    n = read_lane_journal(cluster.journal(LANE)).last_seq
    epoch = read_lane_journal(cluster.journal(LANE)).epoch
    assert n == 3600

    cluster.start(ho)
    for frac in (0.2, 0.5, 0.75):

        def past(f: float = frac) -> bool:
            return ho_hwm(cluster.ho_db, LANE, epoch) >= f * n

        wait_until(
            past,
            30,
            f"head office hwm past {frac:.0%} of the backlog",
            cluster.logs,
        )
        agent.kill()
        hwm = ho_hwm(cluster.ho_db, LANE, epoch)
        assert hwm < n, f"the drain finished (hwm {hwm}) before the kill; slow it down"
        cluster.start(agent)

    cluster.wait_drained(LANE, timeout=30)
    assert_exactly_once(
        cluster.ho_db, cluster.journal(LANE), LANE, all_confirmed(tills), min_confirmed=n
    )
