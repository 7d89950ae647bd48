"""End to end on real processes: 2 stores x 3 lanes, a real broker and head office.

A transit sale at store A becomes a parcel (SSCC), is received at store B exactly once while two
B lanes race for it, a second scan elsewhere is refused, and stock at A, in transit and at B is
right at every step, including when head office dies (as under kill -9) right after committing
an accept, before its reply leaves: the lane reports the failure, and retrying the same receive
gets the original success without moving stock twice.
"""

from __future__ import annotations

import concurrent.futures
from pathlib import Path
from typing import Any

from lanesync import stack
from lanesync.posclient import PosClient
from lanesync.stack import Component
from protocol.identity import LaneId
from tests.e2e.e2e_cluster import Cluster
from tests.e2e.e2e_helpers import FAST_REPLICATION, ro, wait_until
from tests.rules.lane_catalog import standard

LANES = [LaneId(s, f"L{n}") for s in ("A", "B") for n in (1, 2, 3)]


def start_agent(c: Cluster, lane: LaneId, n: int) -> Component:
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
            "transit": {
                "gs1_company_prefix": "5703538",
                "sscc_lane_prefix": f"{n:02d}",
                "receive_timeout_s": 2.0,
            },
        },
    )
    # The lane's catalog (stores A and B, the items and rates), as head office sends it.
    journal = c.journal(lane)
    standard(journal.with_name(f"{journal.stem}-catalog.db"), lane)
    comp = Component(name, ["agent", "--config", str(cfg)], c.workdir)
    c.agents[lane] = comp
    return c.start(comp)


def stock(db_path: Path) -> dict[tuple[str, str], str]:
    db = ro(db_path)
    try:
        return {
            (loc, item): f"{q / 1000:.3f}"
            for loc, item, q in db.execute("SELECT location, item, qty FROM stock")
            if q
        }
    finally:
        db.close()


def transit_row(db_path: Path, sscc: str) -> dict[str, Any] | None:
    db = ro(db_path)
    try:
        cur = db.execute("SELECT * FROM transit_inventory WHERE sscc = ?", (sscc,))
        row = cur.fetchone()
        return None if row is None else {d[0]: v for d, v in zip(cur.description, row, strict=True)}
    except Exception:  # schema not there yet
        return None
    finally:
        db.close()


def call(c: Cluster, lane: LaneId, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    client = PosClient(str(c.socket(lane)), timeout=15)
    try:
        return client.request(method, path, body)
    finally:
        client.close()


def make_transit(c: Cluster, lane: LaneId, lines: list[tuple[str, str]]) -> str:
    st, sale = call(c, lane, "POST", "/v1/sales", {"mode": 8, "staff": "E7"})
    assert st == 201, sale
    for item, qty in lines:
        st, out = call(c, lane, "POST", f"/v1/sales/{sale['id']}/lines", {"item": item, "qty": qty})
        assert st == 201, out
    transit = {"dest_store": "B", "by": {"type": "staff", "id": "E7"}}
    st, done = call(
        c,
        lane,
        "POST",
        f"/v1/sales/{sale['id']}/payments",
        {"tender": "cash", "amount": 0, "transit": transit},
    )
    assert st == 201, done
    return str(done["sscc"])


def test_two_stores_three_lanes_receive_exactly_once(cluster: Cluster) -> None:
    c = cluster
    c.start_broker(persistence=False)
    ho = c.headoffice()
    for i, lane in enumerate(LANES):
        start_agent(c, lane, i + 1)
    a1, a2, a3, b1, b2, b3 = LANES

    # Stock at A, then a transit sale at A/L1: 5 x P1000 and 1.5 x P2000 to store B.
    adj = {
        "kind": "stock_adjustment",
        "reason": "COUNT",
        "lines": [{"item": "P1000", "qty": "10.000"}, {"item": "P2000", "qty": "4.000"}],
    }
    assert call(c, a1, "POST", "/v1/documents", adj)[0] == 201
    sscc = make_transit(c, a1, [("P1000", "5.000"), ("P2000", "1.500")])

    wait_until(lambda: transit_row(c.ho_db, sscc) is not None, 20, "transit at head office", c.logs)
    wait_until(lambda: ("A", "P1000") in stock(c.ho_db), 10, "adjustment at head office", c.logs)
    assert stock(c.ho_db) == {
        ("A", "P1000"): "5.000",
        ("A", "P2000"): "2.500",
        ("@transit", "P1000"): "5.000",
        ("@transit", "P2000"): "1.500",
    }

    # Nothing entered: nothing happens.
    assert call(c, b1, "POST", "/v1/transit/receive", {"sscc": "", "transit_no": " "})[0] == 204
    # Two B lanes scan the parcel and accept at the same moment: one wins.
    st1, s1 = call(c, b1, "POST", "/v1/transit/receive", {"sscc": sscc})
    st2, s2 = call(c, b2, "POST", "/v1/transit/receive", {"sscc": sscc})
    assert (st1, st2) == (200, 200), (s1, s2)
    assert s1["transit"]["source_store"] == "A"
    assert len(s1["transit"]["lines"]) == 2
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        f1 = pool.submit(call, c, b1, "POST", f"/v1/transit/receive/{s1['id']}/accept", {})
        f2 = pool.submit(call, c, b2, "POST", f"/v1/transit/receive/{s2['id']}/accept", {})
        results = sorted([f1.result(), f2.result()], key=lambda r: r[0])
    (ok_status, ok), (no_status, no) = results
    assert (ok_status, no_status) == (201, 409), results
    assert no["code"] == "already_received"
    assert no["received"]["store"] == "B"
    assert ok["received"]["store"] == "B"
    assert ok["txn_id"] in (s1["id"], s2["id"])
    winner = b1 if ok["txn_id"] == s1["id"] else b2
    # The winning lane journaled its receive record (durable before it answered).
    st, journaled = call(c, winner, "GET", f"/v1/documents/{ok['txn_id']}")
    assert st == 200
    assert journaled["document"]["kind"] == "transit_inventory_accept"

    # A second scan of the same SSCC at another lane of B: refused, with where and when.
    st, again = call(c, b3, "POST", "/v1/transit/receive", {"sscc": sscc})
    assert st == 409, again
    assert again["code"] == "already_received", again
    assert again["received"]["lane"] == winner.lane
    assert again["received"]["at"] > 0
    # The same transit number keyed at store A: meant for another store.
    no_ = s1["transit"]["transit_no"]
    st, other = call(c, a2, "POST", "/v1/transit/receive", {"transit_no": no_, "source_store": "A"})
    assert st == 409, other
    assert other["code"] == "other_store", other
    after_first = {
        ("A", "P1000"): "5.000",
        ("A", "P2000"): "2.500",
        ("B", "P1000"): "5.000",
        ("B", "P2000"): "1.500",
    }
    assert stock(c.ho_db) == after_first
    # The lane's accept document reaches head office and is linked, moving nothing again.
    c.wait_drained(winner)
    row = transit_row(c.ho_db, sscc)
    assert row is not None
    assert row["accept_txn_id"] == ok["txn_id"]
    assert row["status"] == "received"
    assert row["received_lane"] == winner.lane
    assert stock(c.ho_db) == after_first

    # A second parcel from A/L3, and head office dies right after committing its accept.
    sscc2 = make_transit(c, a3, [("P1000", "2.000")])
    wait_until(lambda: transit_row(c.ho_db, sscc2) is not None, 20, "second transit", c.logs)
    in_transit = {**after_first, ("A", "P1000"): "3.000", ("@transit", "P1000"): "2.000"}
    assert stock(c.ho_db) == in_transit
    st, s3 = call(c, b3, "POST", "/v1/transit/receive", {"transit_no": "", "sscc": sscc2})
    assert st == 200, s3
    ho.stop()
    ho.env["LANESYNC_FAULT_TRANSIT_CRASH_AFTER_ACCEPT"] = "1"
    c.start(ho)
    wait_until(lambda: call(c, b3, "GET", "/v1/status")[1]["connected"], 10, "b3 connected")
    st, failed = call(c, b3, "POST", f"/v1/transit/receive/{s3['id']}/accept", {"staff": "E9"})
    assert st == 503, failed
    assert failed["code"] == "unreachable", failed
    assert "NOT received" in failed["detail"]
    assert ho.proc is not None
    assert ho.proc.wait(10) == 137
    # Head office committed it (stock moved once); the lane journaled nothing.
    received = {**after_first, ("A", "P1000"): "3.000", ("B", "P1000"): "7.000"}
    assert stock(c.ho_db) == received
    assert call(c, b3, "GET", f"/v1/documents/{s3['id']}")[0] == 404
    del ho.env["LANESYNC_FAULT_TRANSIT_CRASH_AFTER_ACCEPT"]
    ho.stop()
    c.start(ho)
    # The POS retries the same receive: head office's original success, journaled once.
    st, done = call(c, b3, "POST", f"/v1/transit/receive/{s3['id']}/accept", {"staff": "E9"})
    assert st == 201, done
    assert done["replayed"] is True, done
    st, dup = call(c, b3, "POST", f"/v1/transit/receive/{s3['id']}/accept", {"staff": "E9"})
    assert st == 200
    assert dup["duplicate"] is True
    assert dup["seq"] == done["seq"]
    c.wait_drained(b3)
    assert stock(c.ho_db) == received
    row2 = transit_row(c.ho_db, sscc2)
    assert row2 is not None
    assert row2["accept_txn_id"] == s3["id"]
    assert row2["received_by"] == "E9"
