"""A chain, end to end (issue 15.7): 2 stores x 2 lanes on Mosquitto, head office on PostgreSQL,
every lane trading only on master data loaded at head office.

Each lane's TOML holds identity, connection, paths and SSCC numbering, and `[catalog]
trade_without = false`: no tax, item or setting. The catalog is loaded with `lanesync catalog
load`; every lane sells, store S1 receives a purchase order and sends a parcel to S2 (its SSCC
from head office's lease), S2 receives one too and accepts the parcel. Then S2's link is cut
(a proxy in front of both its lanes goes silent), head office changes a price and the
`PriceOverride` setting, S1 trades on the new version at once while S2 trades on the old one,
and after the link is restored S2 trades on the new one with no restart.

Reconciled at the end: every document at head office exactly once; each document's
`catalog_version` the version its lane held when it was made; stock per location from
`lanesync stock --json` equal to what was sold, received and moved; and the extract's purchase
records, roll-up and postings equal to the documents, quantities and amounts in minor units.
"""

from __future__ import annotations

import json
import time
import tomllib
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from headoffice.catalog import load as loader
from headoffice.catalog import versions
from headoffice.db import open_target
from headoffice.extract import job
from headoffice.extract.config import ExtractConfig
from headoffice.projections import PROJECTIONS
from lanesync.democatalog import VALID_FROM, DemoCatalog
from protocol.identity import LaneId
from tests.e2e.chain_helpers import (
    call,
    chain_lane,
    ho_documents,
    ho_rows,
    lane_toml,
    lanesync_json,
    leased_epochs,
    make_transit,
    purchase_receive,
    receive_transit,
    sale,
    wait_drained,
)
from tests.e2e.e2e_cluster import Cluster
from tests.e2e.e2e_helpers import lane_status, read_lane_journal, wait_until
from tests.pgutil import Backend, pg_schema

A1, A2, B1, B2 = LaneId("S1", "L1"), LaneId("S1", "L2"), LaneId("S2", "L1"), LaneId("S2", "L2")
LANES = (A1, A2, B1, B2)
OFFLINE = (B1, B2)  # store S2's link is the one cut
PRICE_BEFORE, PRICE_AFTER = 1899, 1999  # P1000 (lanesync.samples' list price, then the change)
DAY_MS = 86_400_000


@pytest.fixture
def broker_kind() -> str:
    """Mosquitto only (tests/e2e's conftest runs its tests on three servers)."""
    return "mosquitto"


@dataclass(frozen=True, slots=True)
class Posted:
    """A document a lane confirmed, with the catalog version that lane held when it made it."""

    txn_id: str
    lane: LaneId
    kind: str
    version: int
    phase: str  # "online", "cut" (S2's link down) or "restored"
    doc: dict[str, Any]


class Chain:
    """The running chain and the ledger of what it did, to reconcile against."""

    def __init__(self, c: Cluster, ho: Backend) -> None:
        self.c = c
        self.ho = ho
        self.catalog = DemoCatalog(c.workdir, c.workdir / "headoffice.toml", LANES)
        self.posted: list[Posted] = []
        self.stock: Counter[tuple[str, str]] = Counter()  # (location, item) -> thousandths
        self.phase = "online"

    def held(self, lane: LaneId) -> int:
        return self.catalog.held(lane)

    def view_version(self, store: str) -> int:
        db = open_target(self.ho.target, projections=PROJECTIONS)
        try:
            return versions.view(db.sql, store).version
        finally:
            db.close()

    def wait_held(self, lanes: tuple[LaneId, ...], version: int) -> None:
        for lane in lanes:
            wait_until(
                lambda lane=lane: self.held(lane) == version,
                30,
                f"{lane} holding catalog version {version}",
                self.c.logs,
            )

    def load(self, dataset: str, text: str, *, upsert: bool = False) -> int:
        """Load a CSV at head office with the loader `lanesync catalog load` runs (in-process:
        no interpreter start per load); returns the new version."""
        path = self.c.workdir / "catalog" / f"{dataset}-{time.monotonic_ns()}.csv"
        path.write_text(text, encoding="utf-8")
        db = open_target(self.ho.target, projections=PROJECTIONS)
        try:
            version = loader.load_file(db.sql, dataset, path, upsert=upsert).version
        finally:
            db.close()
        assert version is not None, f"loading {dataset} made no new version"
        return version

    def post(self, lane: LaneId, doc: dict[str, Any]) -> Posted:
        version = self.held(lane)
        st, out = call(self.c.socket(lane), "POST", "/v1/documents", doc)
        assert st == 201, (lane, st, out)
        assert self.held(lane) == version, f"{lane} changed catalog version during a post"
        p = Posted(out["txn_id"], lane, doc["kind"], version, self.phase, doc)
        self.posted.append(p)
        sign = -1 if doc["kind"] == "sale" else 1
        for ln in doc["lines"]:
            self.stock[(lane.store, ln["item"])] += sign * int(ln["qty"].split(".")[0]) * 1000
        return p

    def refused(self, lane: LaneId, doc: dict[str, Any]) -> dict[str, Any]:
        st, problem = call(self.c.socket(lane), "POST", "/v1/documents", doc)
        assert st == 422, (lane, st, problem)
        assert isinstance(problem, dict)
        return problem

    def transit(self, src: LaneId, dst: LaneId, lines: list[tuple[str, int]]) -> None:
        version = self.held(src)
        txn_id, sscc = make_transit(self.c.socket(src), dst.store, lines)
        self.posted.append(
            Posted(txn_id, src, "transit_inventory", version, self.phase, {"sscc": sscc})
        )
        wait_until(
            lambda: bool(ho_rows(self.ho, "SELECT 1 FROM transit_inventory WHERE sscc = ?", sscc)),
            20,
            f"parcel {sscc} at head office",
            self.c.logs,
        )
        version = self.held(dst)
        accept = receive_transit(self.c.socket(dst), sscc)
        self.posted.append(Posted(accept, dst, "transit_inventory_accept", version, self.phase, {}))
        for item, qty in lines:
            self.stock[(src.store, item)] -= qty * 1000
            self.stock[(dst.store, item)] += qty * 1000


@pytest.fixture
def ho_pg() -> Iterator[Backend]:
    """Head office's scratch PostgreSQL schema; asked for before `cluster`, so it is dropped
    after every process using it has stopped."""
    with pg_schema() as url:
        yield Backend("postgres", url)


def test_two_stores_trade_on_head_office_master_data_through_a_cut_link(
    ho_pg: Backend,
    cluster: Cluster,
) -> None:
    c, ho = cluster, ho_pg
    chain = Chain(c, ho)
    broker = c.start_broker(persistence=False)
    c.headoffice(database_url=str(ho.target))
    wan = c.proxy("S2-wan")
    for n, lane in enumerate(LANES, 1):
        port = wan.port if lane.store == "S2" else broker.port
        c.agents[lane] = chain_lane(c.workdir, lane, port, f"{n:02d}")
        c.start(c.agents[lane])

    # The lanes' TOML: identity, connection, paths and numbering; no master data at all.
    for lane in LANES:
        cfg = tomllib.loads(lane_toml(c.workdir, lane))
        assert set(cfg) == {"store", "lane", "journal", "broker", "replication", "api",
                            "catalog", "transit"}  # fmt: skip
        assert cfg["catalog"] == {"trade_without": False}
        assert set(cfg["transit"]) == {"gs1_company_prefix", "sscc_lane_prefix",
                                       "receive_timeout_s"}  # fmt: skip
    # Without head office's catalog a chain's lane refuses to trade.
    st, problem = call(c.socket(A1), "POST", "/v1/documents", sale([("P1000", 1, PRICE_BEFORE)]))
    assert (st, problem["title"]) == (503, "No catalog yet"), problem

    # --- head office loads the catalog --------------------------------------------------------
    # `lanesync catalog load`, as an operator runs it: stores, lanes, tax rates, items, prices
    # and customers (lanesync.democatalog's chain); then staff, a supplier and a setting.
    chain.catalog.load_initial()
    chain.load("staff", "id,name,store,active\nE7,Staff E7,,1\n")
    chain.load("suppliers", "code,name,active\nSUP1,Supplier 1,1\n")
    v1 = chain.load("settings", "scope,store,lane,name,value\nchain,,,PriceOverride,refused\n")
    assert chain.view_version("S1") == chain.view_version("S2") == v1
    chain.wait_held(LANES, v1)
    for lane in (A1, B1):  # both ends of the transit hold SSCC serials leased by head office
        epoch = read_lane_journal(c.journal(lane)).epoch
        wait_until(lambda lane=lane, e=epoch: e in leased_epochs(ho, lane), 20, f"{lane} lease")

    # --- every link up: sell on every lane, receive purchase orders, send a parcel ------------
    chain.post(A1, sale([("P1000", 2, PRICE_BEFORE), ("P2000", 1, 249)]))
    chain.post(A2, sale([("P3000", 3, 179)]))
    chain.post(B1, sale([("P1000", 1, PRICE_BEFORE), ("P6000", 4, 129)]))
    chain.post(B2, sale([("P5000", 1, 399)]))
    chain.post(A1, purchase_receive("PO-1001", [("P4000", 10, 1000), ("P1000", 6, 1200)]))
    chain.post(B1, purchase_receive("PO-2001", [("P5000", 6, 250)]))
    chain.transit(A1, B2, [("P4000", 3), ("P1000", 2)])
    # PriceOverride=refused: no till may sell below the catalog's price, even with a reason.
    override = sale([("P4000", 1, 999)], price_reason="damaged box")
    refusal = chain.refused(A2, override)
    assert refusal["field"] == "$.lines[0].unit_price"
    assert f"catalog version {v1}" in refusal["detail"]
    assert "(PriceOverride=refused)" in refusal["detail"]

    # --- S2's link goes silent; head office changes a price and a setting ---------------------
    wan.cut()
    wan.blackhole()
    chain.phase = "cut"
    for lane in OFFLINE:
        wait_until(
            lambda lane=lane: not lane_status(c.socket(lane))["connected"],
            20,
            f"{lane} offline",
            c.logs,
        )
    chain.load("prices", f"item,valid_from,price\nP1000,{VALID_FROM},{PRICE_AFTER}\n", upsert=True)
    v2 = chain.load("settings", "scope,store,lane,name,value\nchain,,,PriceOverride,reason\n")
    assert v2 > v1
    assert chain.view_version("S1") == chain.view_version("S2") == v2
    chain.wait_held((A1, A2), v2)

    # S1 trades on the new version at once, no restart: the new price, the new setting.
    chain.post(A1, sale([("P1000", 1, PRICE_AFTER)]))
    chain.post(A2, override)
    # S2, offline, keeps its last complete version: the old price, overrides still refused.
    assert [chain.held(lane) for lane in OFFLINE] == [v1, v1]
    chain.post(B1, sale([("P1000", 2, PRICE_BEFORE)]))
    chain.post(B2, sale([("P1000", 1, PRICE_BEFORE), ("P2000", 2, 249)]))
    assert f"catalog version {v1}" in chain.refused(B2, sale([("P1000", 1, PRICE_AFTER)]))["detail"]
    refusal = chain.refused(B1, override)
    assert refusal["field"] == "$.lines[0].unit_price"
    assert f"catalog version {v1}" in refusal["detail"]
    assert "(PriceOverride=refused)" in refusal["detail"]
    assert [chain.held(lane) for lane in OFFLINE] == [v1, v1]

    # --- the link is restored: S2 catches up and trades on the new version --------------------
    wan.resume()
    chain.phase = "restored"
    chain.wait_held(OFFLINE, v2)
    chain.post(B1, sale([("P1000", 1, PRICE_AFTER)]))
    chain.post(B2, override)
    assert (
        f"catalog version {v2}" in chain.refused(B1, sale([("P1000", 1, PRICE_BEFORE)]))["detail"]
    )

    for lane in LANES:
        wait_drained(ho, c.journal(lane), lane, c.logs)
    reconcile(c, chain, v1, v2)


def reconcile(c: Cluster, chain: Chain, v1: int, v2: int) -> None:
    ho = chain.ho
    posted = {p.txn_id: p for p in chain.posted}
    assert len(posted) == len(chain.posted)

    # Every document at head office exactly once: what the lanes journaled, nothing more.
    held, seen = ho_documents(ho)
    journaled = {
        t: lane for lane in LANES for _s, t, _h in read_lane_journal(c.journal(lane)).entries
    }
    assert journaled.keys() == posted.keys()
    assert held.keys() == posted.keys()
    assert set(seen.values()) == {2}, {t: n for t, n in seen.items() if n != 2}
    for txn_id, p in posted.items():
        doc = held[txn_id]
        assert (doc.store, doc.lane, doc.kind) == (p.lane.store, p.lane.lane, p.kind), txn_id
        assert journaled[txn_id] == p.lane

    # Each document checked against the version its lane held then, and head office kept it.
    versions_seen = {
        t: (held[t].catalog_version, held[t].body.get("catalog_version")) for t in posted
    }
    assert versions_seen == {t: (p.version, p.version) for t, p in posted.items()}
    # The offline store's documents before the restore carry the old version, after it the new.
    expected = {("online", "S1"): v1, ("online", "S2"): v1, ("cut", "S1"): v2,
                ("cut", "S2"): v1, ("restored", "S2"): v2}  # fmt: skip
    assert [(p.phase, p.lane.store, p.version) for p in chain.posted] == [
        (p.phase, p.lane.store, expected[(p.phase, p.lane.store)]) for p in chain.posted
    ]
    assert Counter((p.phase, p.lane.store) for p in chain.posted if p.kind == "sale") == {
        ("online", "S1"): 2, ("online", "S2"): 2, ("cut", "S1"): 2, ("cut", "S2"): 2,
        ("restored", "S2"): 2,
    }  # fmt: skip
    for p in chain.posted:
        if p.kind == "sale":  # what head office holds is what the till sent, priced as checked
            body = held[p.txn_id].body
            assert [(x["item"], x["qty"], x["unit_price"], x["amount"], x["tax"])
                    for x in body["lines"]] == [
                (x["item"], x["qty"], x["unit_price"], x["amount"], x["tax"])
                for x in p.doc["lines"]
            ]  # fmt: skip
            assert body["total"] == p.doc["total"]
            assert body["currency"] == "EUR"

    # Stock per location, as an operator reads it, is what was sold, received and moved.
    report = lanesync_json("stock", "--config", str(c.workdir / "headoffice.toml"), "--json")
    levels = {(r["location"], r["item"]): r["qty"] for r in report["stock"] if r["qty"] != "0.000"}
    expected = {k: f"{v / 1000:.3f}" for k, v in chain.stock.items() if v}
    assert levels == expected

    # The extract agrees with the documents, in minor units.
    sales = [p for p in chain.posted if p.kind == "sale"]
    out = c.workdir / "extract"
    cfg = ExtractConfig(database_url=str(ho.target), output_dir=out, timezone="Europe/Dublin")
    rep = job.run(cfg, now_ms=int(time.time() * 1000) + 2 * DAY_MS)
    assert rep.run == 1, rep
    assert (rep.purchases, rep.rejects, rep.pending) == (len(sales), 0, {}), rep
    run_dir = out / "run-000001"
    purchases = {r["txn_id"]: r for r in read_jsonl(run_dir / "purchases.jsonl")}
    assert purchases.keys() == {p.txn_id for p in sales}
    for p in sales:
        r = purchases[p.txn_id]
        assert (r["store"], r["lane"], r["total"], r["tax"]) == (
            p.lane.store,
            p.lane.lane,
            p.doc["total"],
            sum(x["tax"] for x in p.doc["lines"]),
        )
        assert [(x["item"], x["qty"], x["unit_price"], x["amount"]) for x in r["lines"]] == [
            (x["item"], x["qty"], x["unit_price"], x["amount"]) for x in p.doc["lines"]
        ]
    # Roll-up: one consolidated sale per store and day, its lines the documents' merged by
    # item and price, its sources every sale of the store.
    rollups = {r["store"]: r for r in read_jsonl(run_dir / "rollup.jsonl")}
    assert rollups.keys() == {"S1", "S2"}
    for store, r in rollups.items():
        store_sales = [p for p in sales if p.lane.store == store]
        assert {s["txn_id"] for s in r["sources"]} == {p.txn_id for p in store_sales}
        assert r["total"] == sum(p.doc["total"] for p in store_sales)
        assert sum(x["amount"] for x in r["payments"]) == r["total"]
        assert merged(r["lines"]) == merged(x for p in store_sales for x in p.doc["lines"])
    # Postings: per sale its lines (stock out by line quantity), an invoice for the total and
    # the cash receipt; per store and item the stock they post is what head office counted sold.
    rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in read_jsonl(run_dir / "postings.jsonl"):
        rows[row["txn_id"]].append(row)
    assert rows.keys() == {p.txn_id for p in sales}
    posted_stock: Counter[tuple[str, str]] = Counter()
    for p in sales:
        by_type: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for row in rows[p.txn_id]:
            by_type[row["type"]].append(row)
        assert by_type.keys() == {"line", "invoice", "receipt"}
        assert [(x["item"], x["qty"], x["amount"], x["tax"]) for x in by_type["line"]] == [
            (x["item"], x["qty"], x["amount"], x["tax"]) for x in p.doc["lines"]
        ]
        assert [x["stock_qty"] for x in by_type["line"]] == [f"-{x['qty']}" for x in p.doc["lines"]]
        tax = sum(x["tax"] for x in p.doc["lines"])
        assert [(x["amount"], x["tax"], x["outstanding"]) for x in by_type["invoice"]] == [
            (p.doc["total"], tax, 0)
        ]
        assert [(x["tender"], x["amount"]) for x in by_type["receipt"]] == [
            ("cash", p.doc["total"])
        ]
        for x in by_type["line"]:
            posted_stock[(p.lane.store, x["item"])] += milli(x["stock_qty"])
    sold: Counter[tuple[str, str]] = Counter()
    for p in sales:
        for x in p.doc["lines"]:
            sold[(p.lane.store, x["item"])] -= milli(x["qty"])
    assert posted_stock == sold


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def milli(qty: str) -> int:
    """A three-place decimal quantity string in thousandths ("-2.000" is -2000)."""
    return round(Decimal(qty) * 1000)


def merged(lines: Iterable[dict[str, Any]]) -> dict[tuple[str, int, str], tuple[int, int, int]]:
    """Lines summed by (item, unit price, tax code): thousandths, amount, tax."""
    out: dict[tuple[str, int, str], tuple[int, int, int]] = {}
    for x in lines:
        key = (x["item"], x["unit_price"], x["tax_code"])
        q, a, t = out.get(key, (0, 0, 0))
        out[key] = (q + milli(x["qty"]), a + x["amount"], t + x["tax"])
    return out
