"""End to end on real processes (a real broker, head office and three agents): SSCC serials
leased from head office never repeat across lanes and across a lane's recreated journal.

A/L1 and A/L2 are configured with the same `sscc_lane_prefix` (a box replaced with a copied
configuration, or a typo): serials come from head office's one counter, so their SSCCs still
differ. A/L1's journal is then deleted and the lane starts again with a new epoch and no
memory of its serials: what it prints next is new too, and head office holds every parcel
(its `transit_inventory.sscc` is unique) with the leases on record per epoch.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from agent.documents.sscc import check_sscc
from lanesync import stack
from lanesync.posclient import PosClient
from lanesync.stack import Component
from protocol.identity import LaneId
from tests.e2e.e2e_cluster import Cluster, cluster  # noqa: F401 - the fixture
from tests.e2e.e2e_helpers import FAST_REPLICATION, ro, wait_until
from tests.rules.lane_catalog import standard

A1, A2, B1 = LaneId("A", "L1"), LaneId("A", "L2"), LaneId("B", "L1")
PREFIX = {A1: "01", A2: "01", B1: "02"}


def start_agent(c: Cluster, lane: LaneId) -> Component:
    assert c.broker is not None
    name = f"agent-{lane.store}-{lane.lane}"
    cfg = stack.write_toml(
        c.workdir / f"{name}.toml",
        {
            "store": lane.store,
            "lane": lane.lane,
            "journal": {"path": str(c.journal(lane))},
            "broker": {"host": "127.0.0.1", "port": c.broker.port, "keepalive": 5},
            "replication": dict(FAST_REPLICATION),
            "api": {"socket": str(c.socket(lane))},
            "transit": {"gs1_company_prefix": "5703538", "sscc_lane_prefix": PREFIX[lane]},
        },
    )
    # The lane's catalog file (beside the journal), as head office would have sent it: the
    # store's currency and the items it sells come from there.
    catalog = c.journal(lane)
    if not catalog.with_name(f"{catalog.stem}-catalog.db").exists():
        standard(catalog.with_name(f"{catalog.stem}-catalog.db"), lane)
    comp = Component(name, ["agent", "--config", str(cfg)], c.workdir)
    c.agents[lane] = comp
    return c.start(comp)


def query(db_path: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    try:
        db = ro(db_path)
    except Exception:
        return []
    try:
        return list(db.execute(sql, args))
    except Exception:
        return []
    finally:
        db.close()


def call(c: Cluster, lane: LaneId, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    client = PosClient(str(c.socket(lane)), timeout=15)
    try:
        return client.request(method, path, body)
    finally:
        client.close()


def transit(c: Cluster, lane: LaneId, dest: str) -> str:
    st, sale = call(c, lane, "POST", "/v1/sales", {"mode": 8, "staff": "E7"})
    assert st == 201, sale
    st, out = call(c, lane, "POST", f"/v1/sales/{sale['id']}/lines", {"item": "P1", "qty": "1.000"})
    assert st == 201, out
    st, done = call(
        c,
        lane,
        "POST",
        f"/v1/sales/{sale['id']}/payments",
        {
            "tender": "cash",
            "amount": 0,
            "transit": {"dest_store": dest, "by": {"type": "staff", "id": "E7"}},
        },
    )
    assert st == 201, done
    return check_sscc(done["sscc"], "sscc")


def leased(c: Cluster, lane: LaneId) -> set[int]:
    """The epochs head office leased serials to for `lane`."""
    rows = query(
        c.ho_db, "SELECT epoch FROM sscc_leases WHERE store = ? AND lane = ?", lane.store, lane.lane
    )
    return {int(r[0]) for r in rows}


def epoch_of(c: Cluster, lane: LaneId) -> int:
    st, status = call(c, lane, "GET", "/v1/status")
    assert st == 200, status
    return int(status["epoch"])


def test_no_sscc_repeats_across_lanes_and_a_recreated_journal(cluster: Cluster) -> None:  # noqa: F811
    c = cluster
    c.start_broker(persistence=False)
    c.headoffice()
    for lane in (A1, A2, B1):
        start_agent(c, lane)
    for lane in (A1, A2, B1):
        e = epoch_of(c, lane)
        wait_until(lambda lane=lane, e=e: e in leased(c, lane), 20, f"a lease for {lane}", c.logs)
    seen = [transit(c, A1, "B"), transit(c, A1, "B"), transit(c, A2, "B"), transit(c, B1, "A")]
    first_epoch = epoch_of(c, A1)

    # A/L1's journal is lost (recreated empty): a new epoch, no memory of its serials.
    c.wait_drained(A1)
    c.agents[A1].stop()
    for p in c.journal(A1).parent.glob(c.journal(A1).name + "*"):
        p.unlink()
    start_agent(c, A1)
    second_epoch = epoch_of(c, A1)
    assert second_epoch != first_epoch
    wait_until(lambda: second_epoch in leased(c, A1), 20, "a lease for the new epoch", c.logs)
    seen += [transit(c, A1, "B"), transit(c, A1, "B")]

    assert len(set(seen)) == len(seen), seen
    # the same lane prefix on A/L1 and A/L2, still no repeat
    assert seen[0][8:10] == seen[2][8:10] == "01"
    assert leased(c, A1) == {first_epoch, second_epoch}
    wait_until(
        lambda: len(query(c.ho_db, "SELECT sscc FROM transit_inventory")) == len(seen),
        30,
        "every parcel at head office",
        c.logs,
    )
    assert sorted(r[0] for r in query(c.ho_db, "SELECT sscc FROM transit_inventory")) == sorted(
        seen
    )
    blocks = query(c.ho_db, "SELECT first, last FROM sscc_leases ORDER BY first")
    for (_f1, l1), (f2, _) in itertools.pairwise(blocks):
        assert l1 < f2, blocks  # blocks never overlap
