"""kill -9 in the middle of a sale and of a transit entry: the agent resumes where it was."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import msgpack
from rules.lane_catalog import standard

from lanesync import stack
from lanesync.posclient import PosClient
from protocol.identity import LaneId


def agent_toml(tmp: Path) -> Path:
    return stack.write_toml(
        tmp / "agent.toml",
        {
            "store": "S1",
            "lane": "L1",
            "journal": {"path": str(tmp / "journal.db")},
            "broker": {"host": "127.0.0.1", "port": 9, "keepalive": 5},  # no broker: offline
            "api": {"socket": str(tmp / "api.sock")},
            "transit": {"gs1_company_prefix": "5703538", "sscc_lane_prefix": "01"},
        },
    )


def test_open_sale_and_transit_survive_kill_9(tmp_path: Path) -> None:
    cfg = agent_toml(tmp_path)
    # The lane's catalog file (beside the journal), as head office would have sent it.
    standard(tmp_path / "journal-catalog.db", LaneId("S1", "L1"))
    agent = stack.Component("agent", ["agent", "--config", str(cfg)], tmp_path)
    client = PosClient(str(tmp_path / "api.sock"))
    try:
        agent.start().wait_notify("READY=1")
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
    with sqlite3.connect(tmp_path / "journal.db") as db:
        rows = db.execute("SELECT kind, txn_id, body FROM entries ORDER BY seq").fetchall()
    assert [(r[0], r[1]) for r in rows] == [("transit_inventory", t), ("sale", s)]
    assert msgpack.unpackb(rows[0][2])["sscc"].startswith("05703538")
