"""The store registry is enforced (issue 14 item 4), driven through GroupApplier.apply_group (the
writer thread's work) with real chained batches, on SQLite and PostgreSQL.

Once the catalog's `stores` dataset holds a row, a batch from a store head office does not
know, or from a lane not listed when its store has lanes listed, is held entry by entry
(`unregistered`): acked past, never in the journal, documents or projections (so never in an
extract). Registering the store (a new catalog version) releases them once, in order. Before
any `stores` row, every store is accepted.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from headoffice.catalog import load
from headoffice.ingest import Ingest
from headoffice.ingest import applier as ingest_module
from headoffice.metrics import HoMetrics
from headoffice.statuspage import collect
from protocol import codec
from protocol.identity import Channel, LaneId
from protocol.messages import Ack, Hello, Status
from tests.headoffice.ho_helpers import LaneSim, journal_msg, sale_doc, topic, writer_ingest
from tests.pgutil import Backend

PAN = "4111111111111111"
S01 = LaneId("S01", "L1")  # the typo of the issue: the chain's stores are S001, S002
S001 = LaneId("S001", "L01")


@pytest.fixture(autouse=True)
def registry_read_every_group(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ingest reads the catalog's version at most every 100 ms; these tests change it between
    two groups a few milliseconds apart."""
    monkeypatch.setattr(ingest_module, "REGISTRY_REFRESH_S", 0.0)


CSV_HEADERS = {
    "stores": "id,name,timezone,currency,can_receive_stock,active",
    "lanes": "store,lane,active",
    "items": "code,description,tax_code,variant,active",
}


def csv_row(dataset: str, key: str) -> str:
    if dataset == "stores":
        return f"{key},Store {key},Europe/Amsterdam,EUR,1,1"
    if dataset == "lanes":
        return f"{key.replace('|', ',')},1"
    return f"{key},Item {key},A,0,1"


def catalog_load(backend: Backend, dataset: str, keys: Sequence[str]) -> int:
    """What `lanesync catalog load DATASET FILE` does: a new catalog version whose `dataset`
    holds exactly these rows (a full replacement). Returns the version."""
    path = Path(tempfile.mkdtemp()) / f"{dataset}.csv"
    path.write_text("\n".join([CSV_HEADERS[dataset], *(csv_row(dataset, k) for k in keys)]))
    store = backend.store()
    try:
        res = load.load_file(store.sql, dataset, path)
    finally:
        store.close()
        shutil.rmtree(path.parent)
    assert res.version is not None
    return res.version


def journal_seqs(backend: Backend, lane: LaneId) -> list[int]:
    return [
        r[0]
        for r in backend.query(
            "SELECT seq FROM journal WHERE store = ? AND lane = ? ORDER BY seq",
            (lane.store, lane.lane),
        )
    ]


def held(backend: Backend, lane: LaneId) -> list[tuple[Any, ...]]:
    return backend.query(
        "SELECT seq, code, reason, state, closed_by FROM held WHERE store = ? AND lane = ? "
        "ORDER BY seq",
        (lane.store, lane.lane),
    )


def test_before_any_stores_row_every_store_is_accepted(backend: Backend) -> None:
    catalog_load(backend, "items", ["P1"])  # a catalog, but no stores in it
    sim = LaneSim(S01)
    sim.add_many(3)
    with writer_ingest(backend) as ing:
        assert ing.applier.apply_group([journal_msg(sim, 1, 3)]) == [Ack(S01, sim.epoch, 3)]
        assert not ing.applier.registry.enforced
    assert journal_seqs(backend, S01) == [1, 2, 3]


async def test_an_unregistered_store_is_held_and_applied_once_in_order_when_registered(
    backend: Backend,
) -> None:
    catalog_load(backend, "stores", ["S001", "S002"])
    typo, honest = LaneSim(S01), LaneSim(S001)
    typo.add_many(4)
    typo.add(sale_doc(5, note=f"card {PAN}"))
    typo.add_many(3)
    honest.add_many(2)
    with writer_ingest(backend) as ing:
        out = ing.applier.apply_group([journal_msg(typo, 1, 3), journal_msg(honest, 1, 2)])
        # acked past: the lane's outbox drains, nothing it confirmed is dropped
        assert sorted((a.lane.store, a.hwm) for a in out if isinstance(a, Ack)) == [
            ("S001", 2),
            ("S01", 3),
        ]
        assert ing.applier.apply_group([journal_msg(typo, 4, 6)]) == [Ack(S01, typo.epoch, 6)]
        assert ing.stats.entries_unregistered == 5  # seq 5 is held for its card number
        assert ing.stats.registry_stores == 2
        text = (await HoMetrics(ing.stats, backend.target).render()).decode()
        assert "lanesync_ho_registry_stores 2.0" in text
        assert "lanesync_ho_entries_unregistered_total 5.0" in text
        assert 'lanesync_ho_held_open_entries{code="unregistered"} 5.0' in text
        # never in the journal, documents or projections, so never in an extract
        assert journal_seqs(backend, S01) == []
        assert backend.query("SELECT count(*) FROM documents WHERE store = 'S01'") == [(0,)]
        rows = held(backend, S01)
        assert [(r[0], r[1], r[3]) for r in rows] == [
            (1, "unregistered", "held"),
            (2, "unregistered", "held"),
            (3, "unregistered", "held"),
            (4, "unregistered", "held"),
            (5, "card_number", "held"),
            (6, "unregistered", "held"),
        ]
        assert {r[2] for r in rows if r[1] == "unregistered"} == {"unregistered store S01"}
        # the status page lists them with the reason
        page = collect(backend.target)
        assert {h["reason"] for h in page["held_recent"] if h["store"] == "S01"} >= {
            "unregistered store S01"
        }
        assert [s["held"] for s in page["stores"] if s["store"] == "S01"] == [6]

        # registered: the lane's next batch finds its earlier entries applied first, in order
        version = catalog_load(backend, "stores", ["S001", "S002", "S01"])
        assert ing.applier.apply_group([journal_msg(typo, 7, 8)]) == [Ack(S01, typo.epoch, 8)]
        assert ing.stats.entries_released == 5
        # a redelivery of everything changes nothing
        assert ing.applier.apply_group([journal_msg(typo, 1, 8)]) == [Ack(S01, typo.epoch, 8)]
        assert ing.applier.apply_group([]) == []
    assert journal_seqs(backend, S01) == [1, 2, 3, 4, 6, 7, 8]
    order = "id" if backend.is_pg else "rowid"  # the order rows were written in
    written = backend.query(f"SELECT seq FROM journal WHERE store = 'S01' ORDER BY {order}")
    assert [r[0] for r in written] == [1, 2, 3, 4, 6, 7, 8]
    ho = backend.query(
        "SELECT seq, txn_id, hash, body FROM journal WHERE store = 'S01' ORDER BY seq"
    )
    lane = [(e.seq, e.txn_id, e.hash, e.body) for e in typo.entries if e.seq != 5]
    assert [(s, t, bytes(h), bytes(b)) for s, t, h, b in ho] == lane
    assert backend.query("SELECT count(*) FROM documents WHERE store = 'S01'") == [(7,)]
    rows = held(backend, S01)
    released = [r for r in rows if r[3] == "released"]
    assert [r[0] for r in released] == [1, 2, 3, 4, 6]
    assert {r[4] for r in released} == {"store registry"}
    assert [(r[0], r[1], r[3]) for r in rows if r[3] == "held"] == [(5, "card_number", "held")]
    [(note,)] = backend.query(
        "SELECT DISTINCT close_reason FROM held WHERE state = 'released' AND store = 'S01'"
    )
    assert note == f"store S01 registered in catalog version {version}"
    assert journal_seqs(backend, S001) == [1, 2]


def test_a_registered_store_that_sends_nothing_more_is_released_without_a_batch(
    backend: Backend,
) -> None:
    catalog_load(backend, "stores", ["S001"])
    typo = LaneSim(S01)
    typo.add_many(3)
    with writer_ingest(backend) as ing:
        ing.applier.apply_group([journal_msg(typo, 1, 3)])
        assert journal_seqs(backend, S01) == []
        assert (
            ing.applier.wake_after() == ingest_module.REGISTRY_POLL_S
        )  # ingest polls the registry
        catalog_load(backend, "stores", ["S001", "S01"])
        assert ing.applier.apply_group([]) == []  # what the apply loop runs when it wakes up idle
        assert ing.stats.entries_released == 3
        assert ing.applier.unregistered == set()
    assert journal_seqs(backend, S01) == [1, 2, 3]


def test_a_lane_not_listed_is_held_when_its_store_lists_lanes(backend: Backend) -> None:
    catalog_load(backend, "stores", ["S001", "S002"])
    catalog_load(backend, "lanes", ["S001|L01", "S001|L02"])
    listed, unlisted, other = (
        LaneSim(S001),
        LaneSim(LaneId("S001", "L9")),
        LaneSim(LaneId("S002", "L77")),
    )
    for sim in (listed, unlisted, other):
        sim.add_many(2)
    with writer_ingest(backend) as ing:
        out = ing.applier.apply_group(
            [journal_msg(listed, 1, 2), journal_msg(unlisted, 1, 2), journal_msg(other, 1, 2)]
        )
        assert sorted((str(a.lane), a.hwm) for a in out if isinstance(a, Ack)) == [
            ("S001/L01", 2),
            ("S001/L9", 2),
            ("S002/L77", 2),
        ]
        assert journal_seqs(backend, unlisted.lane) == []
        assert {r[2] for r in held(backend, unlisted.lane)} == {"unregistered lane S001/L9"}
        assert journal_seqs(backend, listed.lane) == [1, 2]
        assert journal_seqs(backend, other.lane) == [1, 2]  # S002 lists no lanes: any lane
        catalog_load(backend, "lanes", ["S001|L01", "S001|L02", "S001|L9"])
        ing.applier.apply_group([])
    assert journal_seqs(backend, unlisted.lane) == [1, 2]
    [(note,)] = backend.query("SELECT DISTINCT close_reason FROM held WHERE state = 'released'")
    assert note.startswith("lane S001/L9 registered in catalog version ")


def test_a_store_removed_from_the_registry_is_held_again(backend: Backend) -> None:
    catalog_load(backend, "stores", ["S001", "S01"])
    sim = LaneSim(S01)
    sim.add_many(4)
    with writer_ingest(backend) as ing:
        ing.applier.apply_group([journal_msg(sim, 1, 2)])
        catalog_load(backend, "stores", ["S001"])
        assert ing.applier.apply_group([journal_msg(sim, 3, 4)]) == [Ack(S01, sim.epoch, 4)]
    assert journal_seqs(backend, S01) == [1, 2]
    assert [r[0] for r in held(backend, S01)] == [3, 4]


def test_a_worker_that_restarts_finds_the_held_lanes_in_the_database(backend: Backend) -> None:
    catalog_load(backend, "stores", ["S001"])
    sim = LaneSim(S01)
    sim.add_many(2)
    with writer_ingest(backend) as ing:
        ing.applier.apply_group([journal_msg(sim, 1, 2)])
    catalog_load(backend, "stores", ["S001", "S01"])
    with writer_ingest(backend) as fresh:  # another process: knows nothing in memory
        fresh.applier.apply_group([])
        assert fresh.stats.entries_released == 2
    assert journal_seqs(backend, S01) == [1, 2]


def test_ingest_sees_registry_changes_cheaply(backend: Backend) -> None:
    """The rows are read again only when the catalog's version moves."""
    catalog_load(backend, "stores", ["S001"])
    with writer_ingest(backend) as ing:
        ing.applier.apply_group([])
        first = ing.applier.registry.version
        ing.applier.apply_group([])
        assert ing.applier.registry.version == first
        assert ing.applier.registry.stores == frozenset({"S001"})
        catalog_load(backend, "items", ["P1"])  # another dataset: the registry stays
        ing.applier.apply_group([])
        assert (ing.applier.registry.version, ing.applier.registry.seen) == (
            first,
            (first or 0) + 1,
        )
        assert ing.applier.registry.stores == frozenset({"S001"})
        second = catalog_load(backend, "stores", ["S001", "S002"])
        ing.applier.apply_group([])
        assert (ing.applier.registry.version, ing.applier.registry.seen) == (second, second)
        assert ing.applier.registry.stores == frozenset({"S001", "S002"})
        assert isinstance(ing, Ingest)


# --- what lanes say of the catalog version they hold (lanes.catalog_version) -------------------


def catalog_versions(backend: Backend) -> list[tuple[Any, ...]]:
    return backend.query(
        "SELECT store, lane, epoch, catalog_version FROM lanes ORDER BY store, lane, epoch"
    )


def test_hello_and_status_store_the_catalog_version_a_lane_holds(backend: Backend) -> None:
    other = LaneId("S001", "L02")
    with writer_ingest(backend) as ing:
        ing.applier.apply_group(
            [(topic(S001, Channel.HELLO), codec.encode(Hello(S001, 7, 0, 1, "1", 0, 3)))]
        )
        ing.applier.apply_group(
            [(topic(other, Channel.HELLO), codec.encode(Hello(other, 9, 0, 1, "1", 0)))]
        )
        assert catalog_versions(backend) == [("S001", "L01", 7, 3), ("S001", "L02", 9, 0)]
        # a newer journal epoch of the same till: the version is the till's, on every row
        ing.applier.apply_group(
            [(topic(S001, Channel.HELLO), codec.encode(Hello(S001, 8, 0, 1, "1", 0, 4)))]
        )
        assert catalog_versions(backend) == [
            ("S001", "L01", 7, 4),
            ("S001", "L01", 8, 4),
            ("S001", "L02", 9, 0),
        ]
        # an online status says what it holds now
        status = Status(S001, "online", "1", 0, 1, 6)
        ing.applier.apply_group([(topic(S001, Channel.STATUS), codec.encode(status))])
        assert [r[3] for r in catalog_versions(backend)] == [6, 6, 0]
        # the last will (offline), written at connect, never moves it back
        will = Status(S001, "offline", "1", 0, 2, 4)
        ing.applier.apply_group([(topic(S001, Channel.STATUS), codec.encode(will))])
        assert [r[3] for r in catalog_versions(backend)] == [6, 6, 0]
        # hello and status in one group: the last one said wins
        ing.applier.apply_group(
            [
                (topic(other, Channel.HELLO), codec.encode(Hello(other, 9, 0, 1, "1", 0, 2))),
                (topic(other, Channel.STATUS), codec.encode(Status(other, "online", "1", 0, 3, 5))),
            ]
        )
    assert catalog_versions(backend) == [
        ("S001", "L01", 7, 6),
        ("S001", "L01", 8, 6),
        ("S001", "L02", 9, 5),
    ]


def test_a_failed_group_stores_no_catalog_version(backend: Backend) -> None:
    store = backend.store()
    try:
        store.note_hello(S001, 7, 0, 1, catalog=3)
        store.commit()
        store.note_hello(S001, 7, 0, 2, catalog=9)
        store.rollback()
        store.note_hello(S001, 7, 0, 3)
        store.commit()
    finally:
        store.close()
    assert catalog_versions(backend) == [("S001", "L01", 7, 3)]


def test_a_registered_store_s_entries_meet_today_s_rules_when_released(backend: Backend) -> None:
    """Held for the registry first, an entry another rule refuses stays held after the
    registration, with that rule's code and reason (released never means unchecked)."""
    catalog_load(backend, "stores", ["S001"])
    sim = LaneSim(S01)
    sim.add()
    bad = {"kind": "stock_adjustment", "lines": [{"item": "P1", "qty": "Infinity"}]}
    sim.add(bad, kind="stock_adjustment")
    sim.add()
    with writer_ingest(backend) as ing:
        ing.applier.apply_group([journal_msg(sim, 1, 3)])
        assert [r[1] for r in held(backend, S01)] == ["unregistered"] * 3
        catalog_load(backend, "stores", ["S001", "S01"])
        ing.applier.apply_group([])
        assert ing.stats.entries_released == 2
        assert ing.applier.unregistered == set()
    rows = held(backend, S01)
    assert [(r[0], r[1], r[3]) for r in rows] == [
        (1, "unregistered", "released"),
        (2, "invalid_body", "held"),
        (3, "unregistered", "released"),
    ]
    assert "head office cannot apply a stock_adjustment" in rows[1][2]
    assert journal_seqs(backend, S01) == [1, 3]


def test_an_operator_cannot_release_what_the_registry_still_refuses(backend: Backend) -> None:
    catalog_load(backend, "stores", ["S001"])
    sim = LaneSim(S01)
    sim.add_many(2)
    with writer_ingest(backend) as ing:
        ing.applier.apply_group([journal_msg(sim, 1, 2)])
    ids = [r[0] for r in backend.query("SELECT id FROM held ORDER BY seq")]
    store = backend.store()
    try:
        outcomes = store.release_held(ids, "ops", "try", 1)
        store.commit()
    finally:
        store.close()
    assert [(o.state, o.changed, o.code) for o in outcomes] == [("held", False, "unregistered")] * 2
    assert outcomes[0].refused is not None
    assert "still refused: unregistered store S01" in outcomes[0].refused
    assert "released by themselves" in outcomes[0].refused
    assert journal_seqs(backend, S01) == []


def test_a_long_backlog_is_released_a_chunk_at_a_time_in_order(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A typo store may have sent for days: a registration releases its entries a chunk per
    transaction, and the lane's new entries wait behind them, held, released next in order."""
    monkeypatch.setattr(ingest_module, "RELEASE_CHUNK", 3)
    catalog_load(backend, "stores", ["S001"])
    sim = LaneSim(S01)
    sim.add_many(10)
    with writer_ingest(backend) as ing:
        ing.applier.apply_group([journal_msg(sim, 1, 4), journal_msg(sim, 5, 8)])
        catalog_load(backend, "stores", ["S001", "S01"])
        # the lane's next batch: 3 released first, the batch held behind the 5 still held;
        # after the group the rest go, a chunk per transaction, the batch last
        assert ing.applier.apply_group([journal_msg(sim, 9, 10)]) == [Ack(S01, sim.epoch, 10)]
        rows = held(backend, S01)
        assert [(r[0], r[3]) for r in rows] == [(n, "released") for n in range(1, 11)]
        assert {r[2] for r in rows if r[0] >= 9} == {
            "S01/L1 waits behind its entries held for the store registry while they are "
            "released (in order)"
        }
        assert ing.applier.unregistered == set()
        assert ing.stats.entries_released == 10
    order = "id" if backend.is_pg else "rowid"
    written = backend.query(f"SELECT seq FROM journal WHERE store = 'S01' ORDER BY {order}")
    assert [r[0] for r in written] == list(range(1, 11))


def test_idle_release_stops_at_its_time_budget_and_goes_on_next_time(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ingest_module, "RELEASE_CHUNK", 3)
    monkeypatch.setattr(ingest_module, "RELEASE_IDLE_BUDGET_S", 0.0)
    catalog_load(backend, "stores", ["S001"])
    sim = LaneSim(S01)
    sim.add_many(7)
    with writer_ingest(backend) as ing:
        ing.applier.apply_group([journal_msg(sim, 1, 7)])
        catalog_load(backend, "stores", ["S001", "S01"])
        released = []
        for _ in range(4):
            ing.applier.apply_group([])
            released.append(len(journal_seqs(backend, S01)))
        assert released == [3, 6, 7, 7]
        assert ing.applier.unregistered == set()
