"""What only the PostgreSQL store has to get right: several workers over one database.

Two PostgresDatabase instances (two connections, two threads) apply interleaved batches of the
same lanes the way two ingest workers on one shared subscription do; migrations race at start;
a connection killed by the server (pg_terminate_backend) fails one group and the next works.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import threading
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import pytest

from headoffice import importer
from headoffice.config import parse
from headoffice.db import DatabaseError, PostgresDatabase
from headoffice.ingest import Ingest, IngestStats
from headoffice.metrics import HoMetrics
from headoffice.projections import PROJECTIONS
from headoffice.statuspage import collect, render_fragment
from protocol import codec, exportfile
from protocol.identity import Channel, LaneId, Topics
from protocol.messages import Ack, Status
from protocol.runtime import migrations as schema
from tests.headoffice.ho_helpers import LaneSim
from tests.pgutil import pg_connect, pg_schema

NOW = 1_700_000_000_000
LATEST = max(schema.load(resources.files("headoffice.db.schema_pg").iterdir()))


@pytest.fixture
def url() -> Iterator[str]:
    with pg_schema() as u:
        yield u


def query(url: str, sql: str, args: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    with pg_connect(url) as conn:
        return conn.execute(sql, args).fetchall()


def test_schema_version_and_migration_race(url: str) -> None:
    """Four workers starting at once: one applies each migration, all open the database."""
    stores: list[PostgresDatabase] = []
    errors: list[BaseException] = []
    go = threading.Barrier(4)

    def open_one() -> None:
        go.wait()
        try:
            stores.append(PostgresDatabase(url, projections=PROJECTIONS))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for s in stores:
        s.close()
    assert errors == []
    assert len(stores) == 4
    assert query(url, "SELECT version FROM schema_version") == [(LATEST,)]
    cols = query(
        url,
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name = 'journal' "
        "ORDER BY ordinal_position",
    )
    assert cols[0] == ("id", "bigint")  # stands in for SQLite's rowid (extract cursors)
    assert ("body", "bytea") in cols
    # reopening applies nothing
    PostgresDatabase(url, projections=PROJECTIONS).close()
    assert query(url, "SELECT version FROM schema_version") == [(LATEST,)]


def test_newer_schema_refused(url: str) -> None:
    PostgresDatabase(url, projections=PROJECTIONS).close()
    with pg_connect(url) as conn:
        conn.execute("UPDATE schema_version SET version = %s", (LATEST + 1,))
    with pytest.raises(Exception, match="newer than this lanesync knows"):
        PostgresDatabase(url, projections=PROJECTIONS)


def test_unreachable_database_is_a_store_error() -> None:
    with pytest.raises(
        DatabaseError, match=r"cannot open head-office database postgresql://u:\*\*\*@"
    ):
        PostgresDatabase("postgresql://u:secret@127.0.0.1:1/nowhere", projections=PROJECTIONS)


LANES = [LaneSim(LaneId("S001", f"L{n:02d}"), epoch=100 + n) for n in range(1, 5)]
ENTRIES = 120


def worker(
    url: str, seed: int, sims: list[LaneSim], stats: dict[str, int], errors: list[BaseException]
) -> None:
    """One ingest worker: groups of batches for random lanes, from around each lane's mark
    (redeliveries, overlaps, the next entries, and gaps), until every lane is complete."""
    rng = random.Random(seed)
    store = PostgresDatabase(url, projections=PROJECTIONS)
    try:
        while True:
            group = rng.sample(sims, rng.randint(1, len(sims)))
            store.lock_lanes(
                sorted(((s.lane, s.epoch) for s in group), key=lambda k: (k[0].lane, k[1]))
            )
            done = 0
            for sim in group:  # applied in random order: the locks were taken in a fixed one
                state = store.lane_state(sim.lane, sim.epoch)
                assert state is not None  # lock_lanes made the row
                if state.hwm == ENTRIES:
                    done += 1
                    continue
                first = max(1, state.hwm + 1 - rng.randint(0, 3))
                if rng.random() < 0.1:
                    first = state.hwm + 2  # a gap: nothing applied, resend asked
                first = min(first, ENTRIES)
                last = min(ENTRIES, first + rng.randint(0, 9))
                res = store.apply_batch(sim.batch(first, last), NOW)
                stats["applied"] += res.applied
                stats["gaps"] += res.resend_from is not None
            store.commit()
            if done == len(group) and all(
                (st := store.lane_state(s.lane, s.epoch)) is not None and st.hwm == ENTRIES
                for s in sims
            ):
                return
    except BaseException as exc:
        errors.append(exc)
        store.rollback()
    finally:
        store.close()


def test_two_workers_interleaved_batches_of_the_same_lanes(url: str) -> None:
    for sim in LANES:
        if not sim.entries:
            sim.add_many(ENTRIES)
    # migrate once, so the workers race on lanes, not on DDL
    PostgresDatabase(url, projections=PROJECTIONS).close()
    stats = [{"applied": 0, "gaps": 0}, {"applied": 0, "gaps": 0}]
    errors: list[BaseException] = []
    threads = [
        threading.Thread(target=worker, args=(url, seed, LANES, stats[seed], errors))
        for seed in (0, 1)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads), "a worker hung (deadlock?)"
    assert errors == []  # a deadlock would be a psycopg error turned DatabaseError
    assert stats[0]["applied"] + stats[1]["applied"] == ENTRIES * len(LANES)
    assert stats[0]["applied"] > 0
    assert stats[1]["applied"] > 0  # both workers really took part
    for sim in LANES:
        rows = query(
            url,
            "SELECT seq, txn_id, hash FROM journal WHERE store = %s AND lane = %s AND epoch = %s "
            "ORDER BY id",
            (sim.lane.store, sim.lane.lane, sim.epoch),
        )
        # every entry once, committed in seq order (id is the commit order)
        assert rows == [(e.seq, e.txn_id, e.hash) for e in sim.entries]
        assert query(
            url,
            "SELECT hwm, last_hash FROM lanes WHERE store = %s AND lane = %s AND epoch = %s",
            (sim.lane.store, sim.lane.lane, sim.epoch),
        ) == [(ENTRIES, sim.entries[-1].hash)]
    assert query(url, "SELECT count(*), count(DISTINCT txn_id) FROM documents") == [
        (ENTRIES * len(LANES), ENTRIES * len(LANES))
    ]
    counters = dict(query(url, "SELECT name, value FROM counters"))
    assert counters["entries_applied"] == ENTRIES * len(LANES)
    assert counters.get("gaps", 0) == stats[0]["gaps"] + stats[1]["gaps"]


def kill_backend(store: PostgresDatabase) -> None:
    pid = store.conn.info.backend_pid
    with pg_connect() as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)


def test_lost_connection_fails_one_group_and_the_next_works(url: str) -> None:
    sim = LaneSim()
    sim.add_many(9)
    topics = Topics()
    journal = topics.topic(sim.lane, Channel.JOURNAL)
    store = PostgresDatabase(url, projections=PROJECTIONS)
    ing = Ingest(parse({"database": {"url": url}}), database_factory=lambda: store)
    ing.applier.database = store
    try:
        assert ing.applier.apply_group([(journal, codec.encode(sim.batch(1, 3)))]) == [
            Ack(sim.lane, sim.epoch, 3)
        ]
        kill_backend(store)  # between groups: the next group's first statement fails
        with pytest.raises(DatabaseError, match="nothing acknowledged"):
            ing.applier.apply_group([(journal, codec.encode(sim.batch(4, 6)))])
        # the lane resends after its ack timeout; the store reconnected
        assert ing.applier.apply_group([(journal, codec.encode(sim.batch(4, 6)))]) == [
            Ack(sim.lane, sim.epoch, 6)
        ]
        # killed inside a group, after its writes, before COMMIT: nothing of it is kept
        store.lock_lanes([(sim.lane, sim.epoch)])
        assert store.apply_batch(sim.batch(7, 9), NOW).applied == 3
        kill_backend(store)
        with pytest.raises(DatabaseError, match="commit failed, nothing acknowledged"):
            store.commit()
        state = store.lane_state(sim.lane, sim.epoch)
        assert state is not None
        assert state.hwm == 6
        assert ing.applier.apply_group([(journal, codec.encode(sim.batch(7, 9)))]) == [
            Ack(sim.lane, sim.epoch, 9)
        ]
    finally:
        store.close()
        ing.shutdown_threads()
    assert query(url, "SELECT seq FROM journal ORDER BY id") == [(n,) for n in range(1, 10)]
    assert query(url, "SELECT value FROM counters WHERE name = 'entries_applied'") == [(9,)]


def test_ingest_never_scans_documents_or_journal(url: str) -> None:
    """Duplicate txn_ids are found by the unique index, never by a query the planner may turn
    into a sequential scan: with a fresh table and no statistics yet, a SELECT ... = ANY() read
    the whole table for every batch and a 1000-lane drain fell to 500 entries/s."""
    sims = [LaneSim(LaneId("S001", f"L{n}")) for n in range(4)]
    topics = Topics()
    store = PostgresDatabase(url, projections=PROJECTIONS)
    ing = Ingest(parse({"database": {"url": url}}), database_factory=lambda: store)
    ing.applier.database = store
    stats = (
        "SELECT relname, seq_scan FROM pg_stat_user_tables "
        "WHERE schemaname = current_schema() AND relname IN ('documents', 'journal') "
        "ORDER BY relname"
    )
    store.conn.execute("SELECT pg_stat_force_next_flush()")
    before = query(url, stats)  # migrations may scan (an empty table)
    try:
        for first in range(1, 301, 30):
            group = []
            for sim in sims:
                sim.add_many(30)
                group.append(
                    (
                        topics.topic(sim.lane, Channel.JOURNAL),
                        codec.encode(sim.batch(first, first + 29)),
                    )
                )
            ing.applier.apply_group(group)
        assert ing.stats.entries_applied == 1200
        store.conn.execute("SELECT pg_stat_force_next_flush()")
    finally:
        store.close()
        ing.shutdown_threads()
    assert query(url, stats) == before


def test_status_page_and_metrics_read_postgres(url: str) -> None:
    sim = LaneSim()
    sim.add_many(5)
    store = PostgresDatabase(url, projections=PROJECTIONS)
    try:
        store.note_hello(sim.lane, sim.epoch, 12, NOW)
        store.apply_batch(sim.batch(1, 5), NOW)
        store.save_status(Status(sim.lane, "online", "0.1.0", 7, NOW))
        store.quarantine("lanesync/v1/S001/L01/journal", sim.lane, "bad <b>", b"x", NOW)
        store.quarantine("lanesync/v1/S001/L01/journal", sim.lane, "bad <b>", b"x", NOW + 1)
        store.commit()
    finally:
        store.close()
    data = collect(url, now=NOW / 1000 + 1)
    assert "error" not in data
    [lane] = data["lanes"]
    assert (lane["store"], lane["lane"], lane["hwm"], lane["lag_entries"]) == ("S001", "L01", 5, 7)
    assert (lane["online"], lane["backlog"], lane["quarantined"]) == ("online", 7, 2)
    assert data["quarantine_total"] == 2
    assert json.dumps(data)  # plain data: PostgreSQL's numeric sum() came back as an int
    assert "bad &lt;b&gt;" in render_fragment(data)


async def test_metrics_read_postgres(url: str) -> None:
    sim = LaneSim()
    sim.add_many(3)
    store = PostgresDatabase(url, projections=PROJECTIONS)
    try:
        store.apply_batch(sim.batch(1, 3), NOW)
        store.commit()
    finally:
        store.close()
    text = (await HoMetrics(IngestStats(), url).render()).decode()
    assert 'lanesync_ho_lane_applied_seq{lane="L01",store="S001"} 3.0' in text


def test_status_page_names_an_unreachable_database() -> None:
    data = collect("postgresql://u:secret@127.0.0.1:1/nowhere")
    assert data["error"].startswith("cannot open postgresql://u:***@127.0.0.1:1/nowhere")
    assert "secret" not in data["error"]


def export_file(path: Path, sim: LaneSim, key: bytes) -> None:
    """A lane's signed backlog export (agent/export.py's format) of all of sim's entries."""
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    payload = {
        "format": exportfile.FORMAT,
        "store": sim.lane.store,
        "lane": sim.lane.lane,
        "epoch": sim.epoch,
        "prev_hash": b64(sim.prev_hash(1)),
        "entries": [[e.seq, e.kind, e.txn_id, e.ts, b64(e.body), b64(e.hash)] for e in sim.entries],
    }
    line = json.dumps(payload).encode()
    mac = hmac.new(key, line, hashlib.sha256).hexdigest()
    sig = {"alg": "HMAC-SHA256", "mac": mac, "key_id": exportfile.key_id(key)}
    path.write_bytes(line + b"\n" + json.dumps(sig).encode())


def test_import_into_postgres_is_exactly_once(url: str, tmp_path: Path) -> None:
    key = bytes(range(32))
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "S001.key").write_text(key.hex())
    sim = LaneSim()
    sim.add_many(25)
    export_file(tmp_path / "backlog.export", sim, key)
    first = importer.apply(tmp_path / "backlog.export", url, tmp_path / "keys", NOW)
    assert (first.applied, first.redelivered, first.hwm) == (25, 0, 25)
    again = importer.apply(tmp_path / "backlog.export", url, tmp_path / "keys", NOW)
    assert (again.applied, again.redelivered, again.hwm) == (0, 25, 25)
    assert query(url, "SELECT count(*), max(seq) FROM journal") == [(25, 25)]
