"""Three ingest workers on one shared subscription over PostgreSQL, 200 lanes, one worker killed
with SIGKILL mid-run: nothing lost, nothing duplicated, every lane's order kept.

Real parts throughout: Mosquitto, PostgreSQL (a schema of its own in database `test`), three
`lanesync headoffice --worker N` processes, and 200 lanes each running the agent's own
replicator in this process (lanesync.fleet: real protocol and hash chains, journals in memory).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from lanesync import stack
from lanesync.broker import Broker
from lanesync.fleet import Fleet, read_postgres, verify
from tests.pgutil import pg_schema

LANES = 200
RATE = 2.0  # sales per lane per second: 400 entries/s over the fleet

# Lanes notice a lost batch by the next batch's gap answer, or by the ack timeout when no batch
# follows; 3 s instead of the agent's 10 s keeps the test short, the rule is the same.
REPLICATION = {"ack_timeout_s": 3.0, "backoff_initial_s": 0.1, "backoff_max_s": 1.0}


async def test_three_workers_one_killed_nothing_lost_or_duplicated(
    tmp_path: Path, broker: Broker
) -> None:
    with pg_schema() as url:
        workers = stack.headoffice_workers(tmp_path, broker.port, 3, database_url=url)
        try:
            for w in workers:
                w.start()
            for w in workers:
                await asyncio.to_thread(w.wait_notify, "STATUS=subscribed", 60)
            async with Fleet(LANES, broker.port, replication=REPLICATION) as fleet:
                await fleet.wait_connected(30)
                before = await fleet.trickle(RATE, 4.0)
                acked_before_kill = fleet.acked
                killed_at = time.monotonic()
                assert workers[1].kill() == -9
                # a rush right after the kill: several batches of a lane in flight at once, so
                # the survivors see batches ahead of their predecessors and hold them
                after = await fleet.trickle(3 * RATE, 2.0)
                after += await fleet.trickle(RATE, 2.0)
                await fleet.wait_drained(60)
                drained_s = time.monotonic() - killed_at
                confirmed = list(fleet.confirmed())
                lane_stats = fleet.stats()
            for w in (workers[0], workers[2]):
                assert w.proc is not None
                assert w.proc.poll() is None, w.log_tail()
        finally:
            for w in workers:
                w.stop()
        rows, documents = await asyncio.to_thread(read_postgres, url)
    verdict = verify(confirmed, rows, documents)
    assert verdict.ok, (verdict, lane_stats)
    assert verdict.lanes == LANES
    assert verdict.confirmed == before + after
    assert verdict.at_head_office == verdict.documents == verdict.confirmed
    # the kill landed mid-run: traffic before it was acked, and more came after it
    assert 0 < acked_before_kill < verdict.confirmed
    assert after > 0
    assert drained_s < 60
