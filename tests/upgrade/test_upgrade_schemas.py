"""Every earlier schema opens, migrates and keeps working (issue 18: mixed-version fleets).

The fixtures are database files written by the code of earlier lanesync releases
(tests/upgrade/make_fixtures.py says how): a lane journal with 40 sales of which head office
acked 25, and head office's database holding those 25. Today's code must migrate both in place,
keep every entry and the hash chain, and then drain the unacked 15 so head office holds all 40
sales once and in order.
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from agent.journal import Journal
from agent.verify import verify
from headoffice.db import SqliteDatabase
from headoffice.db.postgres import PostgresDatabase
from headoffice.projections import PROJECTIONS
from lanesync import stack
from protocol.identity import LaneId
from protocol.runtime import migrations as schema
from tests.e2e.e2e_helpers import read_lane_journal, wait_until
from tests.pgutil import pg_connect, pg_schema

FIXTURES = Path(__file__).resolve().parent / "fixtures"
LANE = LaneId("S001", "L1")
SALES, ACKED = 40, 25
# (journal fixture, head-office fixture): what each release left on disk
RELEASES = {
    "1b65ecb": ("journal_v1_1b65ecb.db", "headoffice_v1_1b65ecb.db"),
    "71e821e": ("journal_v2_71e821e.db", "headoffice_v2_71e821e.db"),
    "32965ea": ("journal_v2_32965ea.db", "headoffice_v3_32965ea.db"),
    "cab7114": ("journal_v2_cab7114.db", "headoffice_v4_cab7114.db"),
    "2b3b336": ("journal_v2_2b3b336.db", "headoffice_v5_2b3b336.db"),
    "ce4f612": ("journal_v2_ce4f612.db", "headoffice_v6_ce4f612.db"),
    "0b8b90a": ("journal_v2_0b8b90a.db", "headoffice_v7_0b8b90a.db"),
}
JOURNAL_LATEST = max(schema.load(resources.files("agent.journal.schema").iterdir()))
HO_LATEST = max(schema.load(resources.files("headoffice.db.schema").iterdir()))
DOCUMENTS: list[dict[str, Any]] = json.loads((FIXTURES / "documents.json").read_text())


def user_version(path: Path) -> int:
    """PRAGMA user_version read from the file header (offset 60), so a fixture is never opened:
    opening a WAL database, even read-only, writes -shm and -wal files next to it."""
    return int.from_bytes(path.read_bytes()[60:64], "big")


def copy_fixture(name: str, to: Path) -> Path:
    shutil.copy(FIXTURES / name, to)
    return to


def epoch_of(journal_fixture: str, tmp_path: Path) -> int:
    report = verify(copy_fixture(journal_fixture, tmp_path / f"read-{journal_fixture}"))
    assert report.ok, report.problem
    assert report.epoch is not None
    return report.epoch


def ho_txn_ids(path: Path) -> list[str]:
    """The txn ids head office journaled for the lane, in seq order."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        rows = db.execute(
            "SELECT txn_id FROM journal WHERE store = ? AND lane = ? ORDER BY seq",
            (LANE.store, LANE.lane),
        ).fetchall()
    return [r[0] for r in rows]


def test_fixtures_cover_every_earlier_schema() -> None:
    """A new schema version needs a fixture of the one before it (regenerate with
    make_fixtures.py, adding the release that last wrote it)."""
    journals = {user_version(FIXTURES / j) for j, _ in RELEASES.values()}
    offices = {user_version(FIXTURES / h) for _, h in RELEASES.values()}
    assert journals >= set(range(1, JOURNAL_LATEST)), sorted(journals)
    assert offices >= set(range(1, HO_LATEST)), sorted(offices)


@pytest.mark.parametrize("release", sorted(RELEASES))
async def test_journal_migrates_and_keeps_its_backlog(tmp_path: Path, release: str) -> None:
    path = copy_fixture(RELEASES[release][0], tmp_path / "journal.db")
    before = verify(path)
    assert before.ok, before.problem
    async with Journal(path, LANE) as j:
        assert (j.epoch, j.last_seq, j.acked_seq) == (before.epoch, SALES, ACKED)
        assert j.backlog == SALES - ACKED
        kept = await j.read_from(1, SALES)
    assert [e.txn_id for e in kept] == [d["txn_id"] for d in DOCUMENTS]
    assert user_version(path) == JOURNAL_LATEST
    after = verify(path)
    assert after.ok, after.problem
    assert (after.epoch, after.acked_seq) == (before.epoch, ACKED)


@pytest.mark.parametrize("release", sorted(RELEASES))
def test_headoffice_database_migrates_and_keeps_what_it_applied(
    tmp_path: Path, release: str
) -> None:
    epoch = epoch_of(RELEASES[release][0], tmp_path)
    path = copy_fixture(RELEASES[release][1], tmp_path / "headoffice.db")
    store = SqliteDatabase(path, projections=PROJECTIONS)
    try:
        state = store.lane_state(LANE, epoch)
        assert state is not None
        assert state.hwm == ACKED
    finally:
        store.close()
    assert user_version(path) == HO_LATEST
    assert ho_txn_ids(path) == [d["txn_id"] for d in DOCUMENTS[:ACKED]]


@pytest.mark.parametrize("release", sorted(RELEASES))
def test_upgraded_lane_drains_its_backlog_to_upgraded_head_office(
    cluster: Any, release: str
) -> None:
    """Both sides upgraded in place (head office first, then the lane, as README says): the 15
    sales the old lane journaled but head office never acked arrive once, after the 25 it had."""
    journal_fixture, ho_fixture = RELEASES[release]
    copy_fixture(ho_fixture, cluster.ho_db)
    copy_fixture(journal_fixture, stack.journal_path(cluster.workdir, LANE))
    cluster.start_broker()
    cluster.headoffice()
    cluster.agent(LANE)
    cluster.wait_drained(LANE)
    assert ho_txn_ids(cluster.ho_db) == [d["txn_id"] for d in DOCUMENTS]
    with sqlite3.connect(f"file:{cluster.ho_db}?mode=ro", uri=True) as db:
        applied = db.execute("SELECT count(*) FROM documents WHERE kind = 'sale'").fetchone()[0]
        held = db.execute("SELECT count(*) FROM held").fetchone()[0]
    assert (applied, held) == (SALES, 0)


# --- PostgreSQL: dumps of schemas written by earlier releases ------------------------------

PG_RELEASES = {  # commit: (journal fixture, dump of head office's schema)
    "4660787": ("journal_for_pg_v3_4660787.db", "headoffice_pg_v3_4660787.sql"),
    "cab7114": ("journal_for_pg_v4_cab7114.db", "headoffice_pg_v4_cab7114.sql"),
    "2b3b336": ("journal_for_pg_v5_2b3b336.db", "headoffice_pg_v5_2b3b336.sql"),
    "ce4f612": ("journal_for_pg_v6_ce4f612.db", "headoffice_pg_v6_ce4f612.sql"),
    "0b8b90a": ("journal_for_pg_v7_0b8b90a.db", "headoffice_pg_v7_0b8b90a.sql"),
    "0f508a1": ("journal_for_pg_v8_0f508a1.db", "headoffice_pg_v8_0f508a1.sql"),
}
PG_LATEST = max(schema.load(resources.files("headoffice.db.schema_pg").iterdir()))
DUMPED_AS = "lanesync_fixture"  # the schema name inside the dumps (make_fixtures.PG_SCHEMA)


def restore_dump(dump: str, url: str) -> None:
    """Load a plain pg_dump into the test's own schema (the URL's search_path): psql
    meta-commands dropped, the dumped schema's name replaced by the test's."""
    target = url.split("search_path%3D", 1)[1].split("&", 1)[0]
    lines = [ln for ln in (FIXTURES / dump).read_text().splitlines() if not ln.startswith("\\")]
    sql = "\n".join(lines).replace(f"CREATE SCHEMA {DUMPED_AS};", "")
    with pg_connect() as db:
        db.execute(sql.replace(f"{DUMPED_AS}.", f"{target}.").encode())


def pg_txn_ids(url: str) -> list[str]:
    with pg_connect(url) as db:
        rows = db.execute(
            "SELECT txn_id FROM journal WHERE store = %s AND lane = %s ORDER BY seq",
            (LANE.store, LANE.lane),
        ).fetchall()
    return [r[0] for r in rows]


def dumped_version(dump: str) -> int:
    """The version in the dump's schema_version row (what that release had migrated to)."""
    found = re.findall(
        rf"INSERT INTO {DUMPED_AS}\.schema_version VALUES \((\d+)\);", (FIXTURES / dump).read_text()
    )
    assert len(found) == 1, f"{dump}: no single schema_version row"
    return int(found[0])


def test_pg_fixtures_cover_every_earlier_schema() -> None:
    """PostgreSQL support started at schema 3 (schema_pg/ 0001-0003 shipped together)."""
    versions = {dumped_version(dump) for _, dump in PG_RELEASES.values()}
    assert versions >= set(range(3, PG_LATEST)), sorted(versions)


@pytest.mark.parametrize("release", sorted(PG_RELEASES))
def test_pg_database_migrates_and_drains_the_upgraded_lane(cluster: Any, release: str) -> None:
    journal_fixture, dump = PG_RELEASES[release]
    with pg_schema() as url:
        restore_dump(dump, url)
        epoch = epoch_of(journal_fixture, cluster.workdir)
        store = PostgresDatabase(url, projections=PROJECTIONS)
        try:
            store.lock_lanes([(LANE, epoch)])
            state = store.lane_state(LANE, epoch)
            assert state is not None
            assert state.hwm == ACKED
            store.rollback()
        finally:
            store.close()
        assert pg_txn_ids(url) == [d["txn_id"] for d in DOCUMENTS[:ACKED]]
        copy_fixture(journal_fixture, stack.journal_path(cluster.workdir, LANE))
        broker = cluster.start_broker()
        cluster.ho = stack.headoffice(cluster.workdir, broker.port, database_url=url)
        cluster.start(cluster.ho)
        cluster.agent(LANE)
        wait_until(
            lambda: pg_txn_ids(url) == [d["txn_id"] for d in DOCUMENTS],
            30,
            "head office on PostgreSQL holds all 40 sales",
            lambda: f"has {len(pg_txn_ids(url))}\n{cluster.logs()}",
        )
        wait_until(
            lambda: read_lane_journal(cluster.journal(LANE)).acked_seq == SALES,
            30,
            "the lane's outbox acked to seq 40",
            cluster.logs,
        )
        with pg_connect(url) as db:
            applied = db.execute("SELECT count(*) FROM documents WHERE kind = 'sale'").fetchone()
            held = db.execute("SELECT count(*) FROM held").fetchone()
            version = db.execute("SELECT max(version) FROM schema_version").fetchone()
        assert (applied, held, version) == ((SALES,), (0,), (PG_LATEST,))
        cluster.close()  # before the schema is dropped
