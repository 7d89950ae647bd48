"""Head-office transit projection and request handlers on a real head-office store, SQLite and
PostgreSQL (the `backend` fixture); on PostgreSQL also two workers racing for one parcel."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from headoffice.db import Database, PostgresDatabase, open_readonly
from headoffice.ingest import Ingest
from headoffice.operations import request_handlers
from headoffice.projections import PROJECTIONS
from headoffice.transit import projection, report
from headoffice.transit import server as srv
from protocol import codec
from protocol.identity import Channel, Topics
from protocol.messages import Reply, Request
from tests.pgutil import Backend, pg_connect, pg_schema
from tests.transit.transit_helpers import SSCC1, SSCC2, Lane, stock, transit_doc

A1, B1, B2, C1 = Lane("A", "L1"), Lane("B", "L1"), Lane("B", "L2"), Lane("C", "L1")


@pytest.fixture
def store(backend: Backend) -> Iterator[Database]:
    s = backend.store()
    yield s
    s.close()


def rid() -> str:
    return str(uuid.uuid4())


def lookup(store: Database, lane: Lane, **args: object) -> Reply:
    return srv.lookup(store, lane.request("transit_lookup", mode="receive", **args), 1)


def accept(store: Database, lane: Lane, request_id: str, now: int = 5_000, **args: object) -> Reply:
    r = srv.accept(store, lane.request("transit_accept", request_id=request_id, **args), now)
    store.commit()
    return r


def test_create_moves_stock_out_of_source_into_transit(store: Database) -> None:
    A1.entries.clear()
    A1.journal(
        store,
        "stock_adjustment",
        {
            "kind": "stock_adjustment",
            "reason": "COUNT",
            "lines": [{"line_no": 1, "item": "P1000", "qty": "10.000"}],
        },
    )
    assert stock(store, "A", "P1000") == "10.000"
    txn = A1.journal(store, "transit_inventory", transit_doc())
    t = projection.by_txn(store.sql, txn)
    assert t is not None
    assert (t["status"], t["source_store"], t["dest_store"], t["sscc"]) == (
        "in_transit",
        "A",
        "B",
        SSCC1,
    )
    assert (t["created_store"], t["created_lane"], t["created_by"]) == ("A", "L1", "E7")
    assert stock(store, "A", "P1000") == "5.000"
    assert stock(store, "@transit", "P1000") == "5.000"
    assert stock(store, "@transit", "P2000") == "1.500"
    assert stock(store, "B", "P1000") == "0.000"
    assert [r["transit_no"] for r in report.open_transits(store.sql)] == ["T10001"]


def test_lookup_and_refusals(store: Database) -> None:
    A1.entries.clear()
    A1.journal(store, "transit_inventory", transit_doc())
    ok = lookup(store, B1, sscc=SSCC1)
    assert ok.ok, ok
    tr = ok.result["transit"]
    assert tr["transit_no"] == "T10001"
    assert tr["status"] == "in_transit"
    assert [(x["item"], x["qty"]) for x in tr["lines"]] == [("P1000", "5.000"), ("P2000", "1.500")]
    assert lookup(store, B1, transit_no="T10001").ok
    other = lookup(store, C1, sscc=SSCC1)
    assert not other.ok, other
    assert other.result["code"] == "other_store", other
    assert "meant for store B" in (other.error or "")
    unknown = lookup(store, B1, sscc=SSCC2)
    assert unknown.result["code"] == "unknown"
    assert "not known" in (unknown.error or "")
    bad = srv.lookup(store, B1.request("transit_lookup", sscc=SSCC1), 1)
    assert bad.result["code"] == "bad_request"  # no mode receive
    nothing = lookup(store, B1)
    assert nothing.result["code"] == "bad_request"
    assert lookup(store, B1, sscc="3570").result["code"] == "bad_request"


def test_not_yet_known_when_a_lane_lags(store: Database) -> None:
    store.note_hello(A1.lane, 99, 5, 1)  # A/L1 holds 5 entries head office has not got
    store.commit()
    r = lookup(store, B1, sscc=SSCC1)
    assert r.result["code"] == "not_yet_known", r
    assert "try again" in (r.error or "")
    assert "A/L1" in (r.error or "")
    a = accept(store, B1, rid(), sscc=SSCC1, source_store="A")
    assert a.result["code"] == "not_yet_known"


def test_accept_exactly_once_retry_and_link(store: Database) -> None:
    A1.entries.clear()
    B1.entries.clear()
    txn = A1.journal(store, "transit_inventory", transit_doc())
    first = rid()
    ok = accept(store, B1, first, sscc=SSCC1, source_store="A", staff="E9")
    assert ok.ok, ok
    assert ok.result["replayed"] is False, ok
    rec = ok.result["transit"]["received"]
    assert (rec["store"], rec["lane"], rec["by"], rec["at"]) == ("B", "L1", "E9", 5_000)
    assert stock(store, "@transit", "P1000") == "0.000"
    assert stock(store, "B", "P1000") == "5.000"
    assert stock(store, "A", "P1000") == "-5.000"
    # The same request again (the answer was lost): the original success, nothing moves again.
    again = accept(store, B1, first, 9_000, sscc=SSCC1, source_store="A")
    assert again.ok
    assert again.result["replayed"] is True
    assert again.result["transit"]["received"]["at"] == 5_000
    assert stock(store, "B", "P1000") == "5.000"
    # Another lane (same store) and another store: refused, with where and when.
    dup = accept(store, B2, rid(), sscc=SSCC1)
    assert not dup.ok
    assert dup.result["code"] == "already_received"
    assert dup.result["received"]["store"] == "B"
    assert dup.result["received"]["at"] == 5_000
    assert "already received at B/L1" in (dup.error or "")
    assert accept(store, C1, rid(), sscc=SSCC1).result["code"] == "other_store"
    assert lookup(store, B2, sscc=SSCC1).result["code"] == "already_received"
    assert report.open_transits(store.sql) == []
    # The accepting lane's own journaled record is linked, and does not move stock again.
    doc = {
        "kind": "transit_inventory_accept",
        "sscc": SSCC1,
        "transit_no": "T10001",
        "source_store": "A",
        "dest_store": "B",
        "currency": "EUR",
        "lines": [{"line_no": 1, "item": "P1000", "qty": "5.000"}],
    }
    B1.journal(store, "transit_inventory_accept", doc, txn_id=first)
    t = projection.by_txn(store.sql, txn)
    assert t is not None
    assert t["accept_txn_id"] == first
    assert stock(store, "B", "P1000") == "5.000"


def test_accept_document_without_head_office_acceptance_applies_once(store: Database) -> None:
    A1.entries.clear()
    B1.entries.clear()
    A1.journal(store, "transit_inventory", transit_doc(sscc=SSCC2, no="T10002"))
    doc = {
        "kind": "transit_inventory_accept",
        "sscc": SSCC2,
        "transit_no": "T10002",
        "source_store": "A",
        "dest_store": "B",
        "currency": "EUR",
    }
    B1.journal(store, "transit_inventory_accept", doc)
    assert stock(store, "B", "P1000") == "5.000"
    assert accept(store, B2, rid(), sscc=SSCC2).result["code"] == "already_received"


def test_cancel_returns_stock_and_refuses_receive(store: Database) -> None:
    A1.entries.clear()
    txn = A1.journal(store, "transit_inventory", transit_doc())
    store.sql.begin()
    assert projection.cancel(store.sql, txn, "HQ1", 42)
    store.commit()
    assert stock(store, "A", "P1000") == "0.000"
    assert stock(store, "@transit", "P1000") == "0.000"
    r = accept(store, B1, rid(), sscc=SSCC1)
    assert r.result["code"] == "cancelled"
    assert r.result["cancelled"]["by"] == "HQ1"


def test_expired_accept_does_nothing(store: Database) -> None:
    A1.entries.clear()
    A1.journal(store, "transit_inventory", transit_doc())
    r = accept(store, B1, rid(), 100_000, sscc=SSCC1, deadline_ms=1_000)
    assert r.result["code"] == "expired"
    assert lookup(store, B1, sscc=SSCC1).ok


def test_malformed_transit_document_is_held_not_fatal(store: Database) -> None:
    """A transit body head office cannot project is held at its seq (invariant 9), with the
    field at fault; the lane carries on. What only the database can tell (an SSCC already
    used by another transit) is counted: the document is applied, its projection is not."""
    A1.entries.clear()
    doc = {"kind": "transit_inventory", "register_no": "T1", "dest_store": "B", "lines": "x"}
    bad = A1.batch("transit_inventory", doc)
    res = store.apply_batch(bad, 1_700_000_000_000)
    store.commit()
    assert (res.applied, res.held, res.hwm) == (0, 1, 1)
    [(code, reason)] = store.sql.fetchall("SELECT code, reason FROM held")
    assert code == "invalid_body"
    assert reason.endswith(
        "head office cannot apply a transit_inventory: $.lines: must be a list, got str"
    )
    A1.journal(store, "transit_inventory", transit_doc())  # ingest carries on
    assert stock(store, "@transit", "P1000") == "5.000"
    # the same SSCC twice: the second is refused and counted, the first stands
    A1.journal(store, "transit_inventory", transit_doc(no="T10009"))
    assert [t["transit_no"] for t in projection.find(store.sql, sscc=SSCC1)] == ["T10001"]
    row = store.sql.fetchone("SELECT value FROM counters WHERE name = 'transit_projection_errors'")
    assert row == (1,)


def test_two_accepts_in_one_ingest_group_one_wins(backend: Backend) -> None:
    """Two lanes' accepts for the same parcel arriving together: one success, one refusal."""
    ing = Ingest(backend.config(), handlers=request_handlers())
    s = backend.store()
    ing.applier.database = s
    try:
        A1.entries.clear()
        A1.journal(s, "transit_inventory", transit_doc())
        topics = Topics()
        group = []
        for lane in (B1, B2, Lane("C", "L3")):
            req = lane.request("transit_accept", request_id=rid(), sscc=SSCC1)
            group.append((topics.topic(lane.lane, Channel.REQUEST), codec.encode(req)))
        out = ing.applier.apply_group(group)
        replies = [m for m in out if isinstance(m, Reply)]
        assert [r.ok for r in replies] == [True, False, False]
        assert [r.result.get("code") for r in replies[1:]] == ["already_received", "other_store"]
        assert stock(s, "B", "P1000") == "5.000"
    finally:
        s.close()
        ing.shutdown_threads()


def test_parcel_journaled_and_accepted_in_the_same_ingest_group(backend: Backend) -> None:
    """Ingest writes a group's batches together at commit; a request in the group must still
    see what the batches before it in that group projected (the store flushes first)."""
    ing = Ingest(backend.config(), handlers=request_handlers())
    s = backend.store()
    ing.applier.database = s
    try:
        A1.entries.clear()
        topics = Topics()
        batch = A1.batch("transit_inventory", transit_doc())
        req = B1.request("transit_accept", request_id=rid(), sscc=SSCC1)
        out = ing.applier.apply_group(
            [
                (topics.topic(A1.lane, Channel.JOURNAL), codec.encode(batch)),
                (topics.topic(B1.lane, Channel.REQUEST), codec.encode(req)),
            ]
        )
        [reply] = [m for m in out if isinstance(m, Reply)]
        assert reply.ok, reply
        assert ing.stats.entries_applied == 1
        assert stock(s, "B", "P1000") == "5.000"
        assert stock(s, "@transit", "P1000") == "0.000"
    finally:
        s.close()
        ing.shutdown_threads()


def test_cli_report_json_and_cancel(tmp_path: Path, store: Database, backend: Backend) -> None:
    A1.entries.clear()
    A1.journal(store, "transit_inventory", transit_doc())
    cfg = tmp_path / "ho.toml"
    [(key, value)] = backend.database_table().items()
    cfg.write_text(f'[database]\n{key} = "{value}"\n')
    run = [sys.executable, "-m", "lanesync.cli", "transits", "--config", str(cfg)]
    out = subprocess.run([*run, "--json", "--stock"], capture_output=True, text=True, check=True)
    data = json.loads(out.stdout)
    assert [t["sscc"] for t in data["open_transits"]] == [SSCC1]
    assert {"location": "@transit", "item": "P1000", "qty": "5.000", "in_transit": True} in data[
        "stock"
    ]
    subprocess.run([*run, "--cancel", SSCC1, "--by", "HQ1"], capture_output=True, check=True)
    db = open_readonly(backend.target)
    assert db is not None
    try:
        assert report.open_transits(db) == []
    finally:
        db.close()


def accept_blocked(first: PostgresDatabase, second: PostgresDatabase, req: Request) -> Reply:
    """`second` answers `req` while `first` holds an uncommitted accept of the same parcel;
    returns its answer once `first` committed. Proves `second` really waited on the row."""
    out: list[Reply] = []
    worker = threading.Thread(target=lambda: out.append(srv.accept(second, req, 6_000)))
    pid = second.conn.info.backend_pid
    worker.start()
    try:
        with pg_connect() as admin:
            deadline = time.monotonic() + 20
            while admin.execute(
                "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)
            ).fetchone() != ("Lock",):
                assert time.monotonic() < deadline, "the second worker never waited on the row"
                time.sleep(0.01)
        first.commit()
    finally:
        worker.join(30)
    second.commit()
    [reply] = out
    return reply


def test_two_postgres_workers_accept_a_parcel_once() -> None:
    """Two ingest workers (two connections) get accepts for the same parcel at the same time:
    the conditional UPDATE of the second waits for the first's commit and changes nothing."""
    with pg_schema() as url:
        w1, w2 = (
            PostgresDatabase(url, projections=PROJECTIONS),
            PostgresDatabase(url, projections=PROJECTIONS),
        )
        try:
            A1.entries.clear()
            A1.journal(w1, "transit_inventory", transit_doc())
            A1.journal(w1, "transit_inventory", transit_doc(sscc=SSCC2, no="T10002"))
            # another lane's accept for the same parcel: already received, with where
            ok = srv.accept(w1, B1.request("transit_accept", request_id=rid(), sscc=SSCC1), 5_000)
            assert ok.ok, ok
            other = B2.request("transit_accept", request_id=rid(), sscc=SSCC1)
            late = accept_blocked(w1, w2, other)
            assert not late.ok
            assert late.result["code"] == "already_received", late
            assert late.result["received"]["lane"] == "L1"
            # the same request redelivered to the other worker: the original success
            same = rid()
            ok = srv.accept(w1, B1.request("transit_accept", request_id=same, sscc=SSCC2), 5_000)
            assert ok.ok, ok
            again = accept_blocked(
                w1, w2, B1.request("transit_accept", request_id=same, sscc=SSCC2)
            )
            assert again.ok, again
            assert again.result["replayed"] is True
            assert stock(w2, "B", "P1000") == "10.000"  # 5 per parcel, each moved once
            assert stock(w2, "@transit", "P1000") == "0.000"
        finally:
            w1.close()
            w2.close()
