"""A price change made at head office while a store is offline, end to end: real Mosquitto,
head office and agent as their own processes (lanesync.stack), the link cut by a proxy.

What the store sold meanwhile carries the old price and the old catalog version (the lane
trades on the last complete version it holds); after reconnect the new price and version
count from the next document, with no restart; head office keeps each document's version.
A lane that holds no catalog yet refuses documents with 503.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

from agent import config as agent_config
from headoffice.catalog import load as loader
from headoffice.catalog import versions
from headoffice.db import open_target
from headoffice.projections import PROJECTIONS
from lanesync import stack
from lanesync.broker import Broker
from lanesync.posclient import PosClient
from lanesync.proxy import ProxyThread
from lanesync.stack import Component
from protocol.identity import LaneId

LANE = LaneId("S1", "L1")
FAST_REPLICATION = {
    "ack_timeout_s": 1.0,
    "publish_timeout_s": 3.0,
    "backoff_initial_s": 0.05,
    "backoff_max_s": 0.5,
    "linger_ms": 5,
}
MASTER = {
    "stores": "id,name,timezone,currency,can_receive_stock,active\nS1,High St,UTC,EUR,1,1\n",
    "items": "code,description,tax_code,variant,active\nP1,Espresso,VAT_STD,0,1\n",
    "tax_rates": "code,valid_from,rate_bp\nVAT_STD,2000-01-01,2000\n",
    "settings": "scope,store,lane,name,value\nchain,,,PriceOverride,refused\n",
}


def prices(p1: int) -> str:
    return f"item,store,zone,valid_from,price\nP1,,,2000-01-01,{p1}\n"


class Lane:
    def __init__(self, workdir: Path, broker: Broker) -> None:
        self.workdir = workdir
        self.ho = stack.headoffice(workdir, broker.port)
        self.proxy = ProxyThread(broker.host, broker.port, name="wan").start()
        self.agent = stack.agent(
            workdir,
            LANE,
            self.proxy.port,
            replication=FAST_REPLICATION,
            keepalive=2,
            trade_without_catalog=False,  # as a chain's lane
        )
        cfg = agent_config.load(workdir / f"{self.agent.name}.toml")
        self.catalog_path = cfg.catalog_path
        self.journal_path = cfg.journal_path
        self.pos = PosClient(str(stack.api_socket_path(workdir, LANE)))

    def load(self, dataset: str, text: str) -> int | None:
        path = self.workdir / f"{dataset}-{time.monotonic_ns()}.csv"
        path.write_text(text, encoding="utf-8")
        store = open_target(self.workdir / "headoffice.db", projections=PROJECTIONS)
        try:
            version: int | None = loader.load_file(store.sql, dataset, path).version
            return version
        finally:
            store.close()

    def ho_version(self) -> int:
        store = open_target(self.workdir / "headoffice.db", projections=PROJECTIONS)
        try:
            return versions.view(store.sql, LANE.store).version
        finally:
            store.close()

    def lane_version(self) -> int:
        if not self.catalog_path.exists():
            return 0
        db = sqlite3.connect(f"file:{self.catalog_path}?mode=ro", uri=True)
        try:
            row = db.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()
        except sqlite3.OperationalError:
            return 0
        finally:
            db.close()
        return int(row[0]) if row else 0

    def sell(self, price: int) -> tuple[int, Any]:
        doc = {
            "kind": "sale",
            "customer": None,
            "lines": [
                {
                    "item": "P1",
                    "qty": "1.000",
                    "unit_price": price,
                    "tax_code": "VAT_STD",
                    "amount": price,
                    "tax": (price * 2000 + 6000) // 12000,  # half up, integer minor units
                }
            ],
            "payments": [{"tender": "cash", "amount": price}],
            "total": price,
        }
        return self.pos.request("POST", "/v1/documents", doc)

    def journaled(self, txn_id: str) -> dict[str, Any]:
        status, out = self.pos.request("GET", f"/v1/documents/{txn_id}")
        assert status == 200, out
        doc: dict[str, Any] = out["document"]
        return doc

    def at_head_office(self) -> dict[str, dict[str, Any]]:
        db = sqlite3.connect(f"file:{self.workdir / 'headoffice.db'}?mode=ro", uri=True)
        try:
            rows = db.execute(
                "SELECT txn_id, body FROM journal WHERE store = ? AND lane = ?",
                (LANE.store, LANE.lane),
            ).fetchall()
        finally:
            db.close()
        return {t: msgpack.unpackb(b, raw=False) for t, b in rows}

    def logs(self) -> str:
        return "\n".join(f"--- {c.name} ---\n{c.log_tail(20)}" for c in (self.ho, self.agent))

    def close(self) -> None:
        self.pos.close()
        for comp in (self.agent, self.ho):
            comp.stop(timeout=5.0)
        self.proxy.close()


@pytest.fixture
def lane(tmp_path: Path, broker: Broker) -> Iterator[Lane]:
    s = Lane(tmp_path, broker)
    try:
        yield s
    finally:
        s.close()


def wait(check: Callable[[], bool], what: str, s: Lane, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {timeout:g}s\n{s.logs()}", pytrace=False)
        time.sleep(0.05)


def start(comp: Component) -> None:
    comp.start()
    comp.wait_notify("READY=1", timeout=30)


def test_a_price_change_while_offline(lane: Lane) -> None:
    s = lane
    start(s.ho)
    s.ho.wait_notify("STATUS=subscribed", timeout=30)
    start(s.agent)
    # No catalog yet: nothing can be priced, so nothing is journaled.
    status, problem = s.sell(100)
    assert status == 503, problem
    assert problem["title"] == "No catalog yet"
    for dataset, text in MASTER.items():
        s.load(dataset, text)
    s.load("prices", prices(100))
    v1 = s.ho_version()
    wait(lambda: s.lane_version() == v1, "the first catalog", s)
    status, online = s.sell(100)
    assert status == 201, online

    s.proxy.cut()
    s.proxy.blackhole()
    v2 = s.load("prices", prices(150))  # head office changes the price: the store is offline
    assert v2 is not None
    assert v2 > v1
    time.sleep(1.5)
    assert s.lane_version() == v1
    status, offline = s.sell(100)  # still the old price, on the old version
    assert status == 201, offline
    status, problem = s.sell(150)  # the new one has not reached the store
    assert status == 422
    assert problem["field"] == "$.lines[0].unit_price"
    assert f"catalog version {v1}" in problem["detail"]

    s.proxy.resume()
    wait(lambda: s.lane_version() == v2, "the new price after reconnect", s)
    status, after = s.sell(150)  # no restart: the next document has the new price
    assert status == 201, after
    status, problem = s.sell(100)
    assert status == 422
    assert "the catalog's price is 150" in problem["detail"]

    expect = {online["txn_id"]: (100, v1), offline["txn_id"]: (100, v1), after["txn_id"]: (150, v2)}
    for txn_id, (price, version) in expect.items():
        doc = s.journaled(txn_id)
        assert (doc["lines"][0]["unit_price"], doc["catalog_version"]) == (price, version)
    # Head office keeps what the lane checked each document against.
    wait(lambda: expect.keys() <= s.at_head_office().keys(), "the documents at head office", s)
    kept = s.at_head_office()
    for txn_id, (price, version) in expect.items():
        assert (kept[txn_id]["lines"][0]["unit_price"], kept[txn_id]["catalog_version"]) == (
            price,
            version,
        )
