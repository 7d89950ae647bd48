"""The extract's database, SQLite or PostgreSQL, with the dialect differences said once here.

Every other extract module writes its SQL once, with `?` placeholders, through the
headoffice.db.sql facade. What really differs between the two backends is here:

- a journal row's position: SQLite's `rowid`, PostgreSQL's `id` identity column (`JOURNAL_ID`);
- the jobs that consumed a document as one string: group_concat / string_agg (`JOBS_OF`);
- bulk inserts of bookkeeping rows: executemany on SQLite, COPY on PostgreSQL (`insert_rows`);
- how far the journal may be walked (`horizon`): on PostgreSQL several ingest workers commit
  concurrently, so identity ids are not committed in id order;
- run serialisation across hosts (`try_run_lock`): a PostgreSQL advisory lock.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import psycopg

from headoffice.db import postgres, sqlite
from headoffice.db.base import DatabaseError
from headoffice.db.sql import PgSql, Sql, SqliteSql
from headoffice.extract.dialect import JOBS_OF, JOURNAL_ID

DB_ERRORS = (sqlite3.Error, psycopg.Error)
__all__ = [
    "DB_ERRORS",
    "JOBS_OF",
    "JOURNAL_ID",
    "horizon",
    "insert_rows",
    "open_sql",
    "try_run_lock",
]

# How long a run waits for ingest transactions in flight before it gives up (PostgreSQL).
HORIZON_LOCK_TIMEOUT = "30s"


def open_sql(where: Path | str, what: str) -> Sql:
    """A read/write connection to the head-office database, migrated to the current schema
    (the extract's tables are in it). `where` is a SQLite path or a postgresql:// URL."""
    if isinstance(where, str) and where.startswith(("postgresql://", "postgres://")):
        try:
            conn = postgres.connect(where)
        except psycopg.Error as exc:
            raise DatabaseError(f"cannot open {what}: {exc}") from exc
        try:
            postgres.migrate(conn, what)
        except psycopg.Error as exc:
            conn.close()
            raise DatabaseError(f"migrating {what}: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        return PgSql(conn)
    try:
        db = sqlite.connect(where)
    except sqlite3.Error as exc:
        raise DatabaseError(f"cannot open {what}: {exc}") from exc
    try:
        sqlite.migrate(db, what)
    except BaseException:
        db.close()
        raise
    return SqliteSql(db)


def insert_rows(db: Sql, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Insert many rows into an extract table inside the caller's transaction.

    On PostgreSQL one COPY: executemany costs a round trip of statement work per row (measured
    in headoffice/db/postgres.py: COPY 3-4x faster), and a run records up to three rows per
    document. Text COPY adapts Python values like parameters do (psycopg docs, "Using COPY TO
    and COPY FROM": "the Python values are adapted as they would be in normal querying").
    """
    cols = ", ".join(columns)
    if isinstance(db, PgSql):
        with db.conn.cursor() as cur, cur.copy(f"COPY {table} ({cols}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        return
    marks = ", ".join("?" * len(columns))
    db.executemany(f"INSERT INTO {table} ({cols}) VALUES ({marks})", rows)  # noqa: S608


def horizon(db: Sql) -> int:
    """The highest journal position below which every row is committed for good.

    SQLite has one writer at a time and hands out rowids in commit order, so that is simply the
    last rowid. PostgreSQL ingest workers draw identity ids when they insert and commit later,
    in any order: a cursor moved past id 200 while a worker still holds ids 100-199 uncommitted
    would skip those rows forever. LOCK ... IN SHARE MODE conflicts with the ROW EXCLUSIVE lock
    every INSERT and COPY takes before it draws an id (PostgreSQL docs, "Table-Level Locks"),
    so once it is granted no id is in flight; max(id) read under it is a safe horizon, and any
    later insert draws a larger id. Ingest waits only for this short transaction.
    """
    if db.dialect == "sqlite":
        row = db.fetchone("SELECT coalesce(max(rowid), 0) FROM journal")
        return int(row[0]) if row else 0
    db.begin()
    try:
        db.execute(f"SET LOCAL lock_timeout = '{HORIZON_LOCK_TIMEOUT}'")
        db.execute("LOCK TABLE journal IN SHARE MODE")
        row = db.fetchone("SELECT coalesce(max(id), 0) FROM journal")
        db.commit()
    except BaseException:
        db.rollback()
        raise
    return int(row[0]) if row else 0


def try_run_lock(db: Sql) -> bool:
    """Serialise runs over one PostgreSQL database, whichever host runs them.

    The lock file in output_dir only serialises runs on one host; two hosts sharing a
    PostgreSQL database would otherwise number their runs alike. The session-level advisory
    lock (per schema) goes away with the connection, even when the process dies. A SQLite file
    is only ever used from one host, where the lock file does the job.
    """
    if db.dialect == "sqlite":
        return True
    row = db.fetchone(
        "SELECT pg_try_advisory_lock(hashtext('lanesync-extract:' || current_schema()))"
    )
    return bool(row and row[0])
