"""Schema 5 on an existing head-office database: held rows and indexes kept, `unregistered`
allowed, lanes.catalog_version added (SQLite and PostgreSQL)."""

from __future__ import annotations

import sqlite3
from importlib import resources
from pathlib import Path

import psycopg
import pytest

from headoffice.db import PostgresDatabase, SqliteDatabase
from headoffice.projections import PROJECTIONS
from protocol.runtime import migrations as schema
from tests.pgutil import pg_connect, pg_schema

# The latest head-office schema version (this suite checks schema 5's migration, not that it
# is the last one).
LATEST = max(schema.load(resources.files("headoffice.db.schema").iterdir()))
HELD_ROW = (
    "INSERT INTO held (store, lane, epoch, seq, kind, txn_id, ts, hash, code, reason, body, "
    "body_masked, body_len, body_sha256, held_at) "
    "VALUES ('S1', 'L1', 1, {seq}, 'sale', 't{seq}', 1, {blob}, '{code}', 'why', {blob}, NULL, "
    "1, {blob}, 1)"
)


def test_sqlite_schema_4_database_migrates_with_its_held_rows(tmp_path: Path) -> None:
    path = tmp_path / "ho.db"
    db = sqlite3.connect(path, isolation_level=None)
    migrations = schema.load(resources.files("headoffice.db.schema").iterdir())
    for _, script in schema.plan(0, {v: s for v, s in migrations.items() if v <= 4}, "test"):
        db.executescript(script)
    db.execute(HELD_ROW.format(seq=1, code="apply_failed", blob="x'00'"))
    db.execute(HELD_ROW.format(seq=2, code="txn_conflict", blob="x'01'"))
    with pytest.raises(sqlite3.IntegrityError, match="CHECK"):  # schema 4 refuses the new code
        db.execute(HELD_ROW.format(seq=3, code="unregistered", blob="x'02'"))
    db.close()
    SqliteDatabase(path, projections=PROJECTIONS).close()
    db = sqlite3.connect(path, isolation_level=None)
    try:
        assert db.execute("PRAGMA user_version").fetchone()[0] == LATEST
        assert db.execute("SELECT seq, code FROM held ORDER BY id").fetchall() == [
            (1, "apply_failed"),
            (2, "txn_conflict"),
        ]
        db.execute(HELD_ROW.format(seq=3, code="unregistered", blob="x'02'"))
        with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
            db.execute(HELD_ROW.format(seq=4, code="whatever", blob="x'03'"))
        indexes = {r[1] for r in db.execute("PRAGMA index_list(held)")}
        assert {"held_open", "held_txn"} <= indexes
        assert any(r[1] == "catalog_version" for r in db.execute("PRAGMA table_info(lanes)"))
    finally:
        db.close()


def test_postgres_schema_4_database_migrates_with_its_held_rows() -> None:
    migrations = schema.load(resources.files("headoffice.db.schema_pg").iterdir())
    with pg_schema() as url:
        with pg_connect(url) as conn:
            conn.execute("CREATE TABLE schema_version (version BIGINT NOT NULL)")
            for v in range(1, 5):
                conn.execute(migrations[v])
            conn.execute("INSERT INTO schema_version VALUES (4)")
            conn.execute(HELD_ROW.format(seq=1, code="apply_failed", blob="'\\x00'::bytea"))
            with pytest.raises(psycopg.errors.CheckViolation):
                conn.execute(HELD_ROW.format(seq=3, code="unregistered", blob="'\\x02'::bytea"))
        PostgresDatabase(url, projections=PROJECTIONS).close()
        with pg_connect(url) as conn:
            assert conn.execute("SELECT version FROM schema_version").fetchall() == [
                (max(migrations),)  # PostgreSQL's own latest (9: ingest leases, not in SQLite)
            ]
            assert conn.execute("SELECT seq, code FROM held").fetchall() == [(1, "apply_failed")]
            conn.execute(HELD_ROW.format(seq=3, code="unregistered", blob="'\\x02'::bytea"))
            with pytest.raises(psycopg.errors.CheckViolation):
                conn.execute(HELD_ROW.format(seq=4, code="whatever", blob="'\\x03'::bytea"))
            names = {
                r[0]
                for r in conn.execute(
                    "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() "
                    "AND tablename = 'held'"
                )
            }
            assert {"held_open", "held_txn"} <= names
            cols = conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE "
                "table_schema = current_schema() AND table_name = 'lanes'"
            ).fetchall()
            assert ("catalog_version",) in cols
