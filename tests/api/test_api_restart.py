"""kill -9 in the middle of a sale and of a transit entry: the agent resumes where it was.

The lane leases SSCC serials from head office (issue 15.5): it gets a block while head office
is up, then everything after runs offline (head office stopped), the transit's SSCC coming
from the block the lane keeps in its journal database.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import msgpack
import pytest

from lanesync import stack
from lanesync.broker import Broker
from lanesync.posclient import PosClient
from protocol.identity import LaneId
from tests.rules.lane_catalog import standard


def agent_toml(tmp: Path, port: int) -> Path:
    return stack.write_toml(
        tmp / "agent.toml",
        {
            "store": "S1",
            "lane": "L1",
            "journal": {"path": str(tmp / "journal.db")},
            "broker": {"host": "127.0.0.1", "port": port, "keepalive": 5},
            "api": {"socket": str(tmp / "api.sock")},
            "transit": {"gs1_company_prefix": "5703538", "sscc_lane_prefix": "01"},
        },
    )


def _leased(db_path: Path) -> bool:
    try:
        with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as db:
            return db.execute("SELECT count(*) FROM sscc_leases").fetchone()[0] > 0
    except sqlite3.Error:
        return False


def test_open_sale_and_transit_survive_kill_9(tmp_path: Path, broker: Broker) -> None:
    cfg = agent_toml(tmp_path, broker.port)
    # The lane's catalog file (beside the journal), as head office would have sent it.
    standard(tmp_path / "journal-catalog.db", LaneId("S1", "L1"))
    ho = stack.headoffice(tmp_path, broker.port)
    agent = stack.Component("agent", ["agent", "--config", str(cfg)], tmp_path)
    client = PosClient(str(tmp_path / "api.sock"))
    try:
        ho.start().wait_notify("STATUS=subscribed", timeout=30)
        agent.start().wait_notify("READY=1")
        deadline = time.monotonic() + 20
        while not _leased(tmp_path / "headoffice.db"):
            if time.monotonic() > deadline:
                pytest.fail(f"no SSCC lease within 20 s:\n{agent.log_tail(20)}")
            time.sleep(0.05)
        ho.stop()  # from here on the lane is offline
        _, sale = client.request("POST", "/v1/sales", {"customer": "C1000"})
        _, transit = client.request("POST", "/v1/sales", {"mode": 8, "staff": "E042"})
        s, t = sale["id"], transit["id"]
        line = {
            "item": "P1000",
            "qty": "2.000",
            "unit_price": 1899,
            "tax_code": "VAT_STD",
            "tax": 317,
        }
        assert client.request("POST", f"/v1/sales/{s}/lines", line)[0] == 201
        for item in ("P2000", "P3000"):
            assert (
                client.request("POST", f"/v1/sales/{t}/lines", {"item": item, "qty": "3.000"})[0]
                == 201
            )
        client.request(
            "PUT",
            f"/v1/sales/{t}/transit",
            {"dest_store": "S2", "by": {"type": "customer", "id": "C1000"}},
        )
        agent.kill()  # SIGKILL: no shutdown code runs
        client.close()

        agent.start().wait_notify("READY=1")
        status, listing = client.request("GET", "/v1/sales")
        assert status == 200
        by_id = {o["id"]: o for o in listing["open"]}
        assert set(by_id) == {s, t}
        assert [li["item"] for li in by_id[s]["lines"]] == ["P1000"]
        assert by_id[t]["mode"] == 8
        assert by_id[t]["units"] == "6.000"
        assert by_id[t]["transit"]["dest_store"] == "S2"
        # Both carry on: the register counter did not go back over their numbers.
        _, s2 = client.request("POST", "/v1/sales", {})
        assert s2["register_no"] not in {by_id[s]["register_no"], by_id[t]["register_no"]}
        client.request("DELETE", f"/v1/sales/{s2['id']}")
        status, done = client.request(
            "POST", f"/v1/sales/{t}/payments", {"tender": "cash", "amount": 1}
        )
        assert status == 201
        assert done["document"]["kind"] == "transit_inventory"
        assert done["document"]["lines"][1]["qty"] == "3.000"
        status, done = client.request(
            "POST",
            f"/v1/sales/{s}/payments",
            {
                "tender": "card",
                "amount": 3798,
                "token": "tok_abcdefgh",
                "scheme": "visa",
                "last4": "1111",
            },
        )
        assert status == 201
        assert done["document"]["txn_id"] == s
        assert client.request("GET", "/v1/sales")[1]["open"] == []
    finally:
        client.close()
        agent.stop()
        ho.stop()
    with sqlite3.connect(tmp_path / "journal.db") as db:
        rows = db.execute("SELECT kind, txn_id, body FROM entries ORDER BY seq").fetchall()
    assert [(r[0], r[1]) for r in rows] == [("transit_inventory", t), ("sale", s)]
    assert msgpack.unpackb(rows[0][2])["sscc"].startswith("05703538")
