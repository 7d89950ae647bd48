"""kill -9 of head office, again and again, while a lane drains a backlog and keeps selling.

The dangerous instant is between head office's commit and its ack reaching the lane: the lane
then resends what head office already holds. Nobody can hit that instant from outside on purpose,
so head office is killed several times at random moments while it is committing; the lane's ack
timeout must bring everything over and head office's dedupe must drop what it already has.
"""

from __future__ import annotations

import random
import time

from protocol.identity import LaneId
from tests.e2e.e2e_cluster import Cluster
from tests.e2e.e2e_helpers import (
    all_confirmed,
    assert_exactly_once,
    ho_counters,
    ho_hwm,
    read_lane_journal,
    wait_total,
    wait_until,
)

LANE = LaneId("S2", "L1")
KILLS = 5


def test_headoffice_sigkill_during_drain_nothing_lost_or_doubled(cluster: Cluster) -> None:
    rng = random.Random(20240611)
    cluster.start_broker()
    ho = cluster.headoffice(start=False)
    # Small batches, several in flight: every kill leaves some committed but unacknowledged.
    agent = cluster.agent(LANE, batch_max_entries=5, window=2, ack_timeout_s=1.0)
    backlog = [cluster.till(LANE, limit=1000) for _ in range(3)]
    wait_total(backlog, 3000, 30, "building the backlog")
    for t in backlog:
        t.stop()
    epoch = read_lane_journal(cluster.journal(LANE)).epoch
    selling = cluster.till(LANE, rate=40)  # the store keeps trading through it all

    # First the exact instant: head office dies right after a commit, before its acks leave.
    ho.env["LANESYNC_FAULT_CRASH_AFTER_COMMIT"] = "3"
    ho.start()
    assert ho.proc is not None
    assert ho.proc.wait(30) == 137, ho.log_tail()
    assert ho_hwm(cluster.ho_db, LANE, epoch) > 0
    assert read_lane_journal(cluster.journal(LANE)).acked_seq < ho_hwm(cluster.ho_db, LANE, epoch)
    del ho.env["LANESYNC_FAULT_CRASH_AFTER_COMMIT"]
    ho.stop()
    # Head office stays down until the lane's ack timeout has fired: the lane then resends
    # from its acked mark, i.e. entries head office committed but never acknowledged.
    wait_until(lambda: "no ack for" in agent.log_tail(200), 20, "the lane's ack timeout")
    cluster.start(ho)
    mid_drain = 1  # the crash above

    for kill in range(KILLS):
        # Let head office commit something after its restart, then kill it a random moment later.
        start = ho_hwm(cluster.ho_db, LANE, epoch)

        def progressed(s: int = start) -> bool:
            return ho_hwm(cluster.ho_db, LANE, epoch) > s

        wait_until(
            progressed,
            20,
            f"head office progress before kill {kill + 1}",
            cluster.logs,
        )
        time.sleep(rng.uniform(0.0, 0.25))  # fault injection timing, not an assertion
        ho.kill()
        if ho_hwm(cluster.ho_db, LANE, epoch) < read_lane_journal(cluster.journal(LANE)).last_seq:
            mid_drain += 1
        time.sleep(rng.uniform(0.0, 0.5))  # head office stays down a moment; the lane resends
        cluster.start(ho)
    assert mid_drain >= 3, f"only {mid_drain} of {KILLS + 1} kills landed before the drain ended"

    selling.wait_confirmed(selling.count + 20, 10, "after the last restart")
    cluster.stop_tills()
    cluster.wait_drained(LANE, timeout=30)
    report = assert_exactly_once(
        cluster.ho_db,
        cluster.journal(LANE),
        LANE,
        all_confirmed([*backlog, selling]),
        min_confirmed=3020,
    )
    assert report.at_head_office == report.journaled
    # The kills did leave head office holding entries the lane had to send again.
    redelivered = ho_counters(cluster.ho_db).get("entries_redelivered", 0)
    assert redelivered > 0, "no entry was ever redelivered: the kills missed the drain"
    print(f"mid-drain kills {mid_drain}/{KILLS}, entries redelivered {redelivered}")
