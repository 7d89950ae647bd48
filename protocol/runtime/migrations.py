"""Schema migrations as data, and the one runner that applies them to every database.

Each database keeps `NNNN_name.sql` files in a package next to its storage code: the lane
journal (agent.journal.schema), the lane catalog file (agent.catalog.schema) and head office's
two backends (headoffice.db.schema, headoffice.db.schema_pg). `load` reads them, `plan`
says which to run (and refuses a database newer than this lanesync), and the `apply_*`
functions run them, one transaction per version:

- SQLite (`apply_sqlite`, and `apply_aiosqlite` for the journal's aiosqlite connection) keeps
  the version in `PRAGMA user_version` (the zigpy appdb habit);
- PostgreSQL (`apply_postgres`) keeps it in a `schema_version` table and takes an advisory
  lock per schema for each step, so workers starting together apply every version once.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sqlite3
from collections.abc import Iterable
from importlib import resources
from importlib.resources.abc import Traversable
from typing import TYPE_CHECKING, Any

from protocol.errors import LanesyncError

if TYPE_CHECKING:
    import aiosqlite
    import psycopg

log = logging.getLogger(__name__)

_NAME = re.compile(r"(\d{4})_[a-z0-9_]+\.sql")


class SchemaError(LanesyncError):
    """A database whose schema this version of lanesync cannot use."""

    code = "schema"


def load(files: Iterable[Traversable]) -> dict[int, str]:
    """Read `NNNN_*.sql` resources into {version: sql}."""
    out: dict[int, str] = {}
    for f in files:
        m = _NAME.fullmatch(f.name)
        if m:
            out[int(m.group(1))] = f.read_text(encoding="utf-8")
    if sorted(out) != list(range(1, len(out) + 1)):
        raise SchemaError(f"schema versions must run 1..N without gaps, got {sorted(out)}")
    return out


def load_package(package: str) -> dict[int, str]:
    """The migrations kept in `package` (e.g. "agent.journal.schema")."""
    return load(resources.files(package).iterdir())


def plan(current: int, migrations: dict[int, str], what: str) -> list[tuple[int, str]]:
    """SQLite scripts to bring a database at `current` up to date, each one transaction."""
    latest = max(migrations, default=0)
    if current > latest:
        raise SchemaError(
            f"{what} has schema version {current}, newer than this lanesync knows ({latest}); "
            "upgrade lanesync before opening it"
        )
    return [
        (v, f"BEGIN IMMEDIATE;\n{migrations[v]}\nPRAGMA user_version = {v};\nCOMMIT;\n")
        for v in sorted(migrations)
        if v > current
    ]


def _failed(
    error: type[LanesyncError], subject: str, version: int, exc: Exception
) -> LanesyncError:
    return error(f"migrating {subject} to schema {version}: {exc}")


def apply_sqlite(
    db: sqlite3.Connection,
    package: str,
    what: str,
    *,
    error: type[LanesyncError] = SchemaError,
    subject: str | None = None,
) -> None:
    """Bring a SQLite database up to date with `package`'s migrations.

    `what` names the database in the log and in a refusal of a newer schema; a step that fails
    is rolled back and raised as `error("migrating {subject} to schema N: ...")`, subject
    defaulting to `what`."""
    current = int(db.execute("PRAGMA user_version").fetchone()[0])
    for version, script in plan(current, load_package(package), what):
        try:
            db.executescript(script)
        except sqlite3.Error as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise _failed(error, subject or what, version, exc) from exc
        log.info("%s migrated to schema version %d", what, version)


async def apply_aiosqlite(
    db: aiosqlite.Connection,
    package: str,
    what: str,
    *,
    error: type[LanesyncError] = SchemaError,
    subject: str | None = None,
) -> None:
    """`apply_sqlite` on an aiosqlite connection (the journal's writer)."""
    row = await (await db.execute("PRAGMA user_version")).fetchone()
    current = int(row[0]) if row else 0
    for version, script in plan(current, load_package(package), what):
        try:
            await db.executescript(script)
        except sqlite3.Error as exc:
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):  # keep the cause, not this
                    await db.execute("ROLLBACK")
            raise _failed(error, subject or what, version, exc) from exc
        log.info("%s migrated to schema version %d", what, version)


def postgres_version(conn: psycopg.Connection[Any]) -> int:
    """The version in a PostgreSQL schema's `schema_version` table (0: no table yet)."""
    row = conn.execute(
        "SELECT CASE WHEN to_regclass('schema_version') IS NULL THEN 0 "
        "ELSE (SELECT coalesce(max(version), 0) FROM schema_version) END"
    ).fetchone()
    return int(row[0]) if row else 0


def apply_postgres(conn: psycopg.Connection[Any], package: str, what: str, lock: str) -> None:
    """Bring the connection's current PostgreSQL schema up to date with `package`.

    `conn` is in autocommit mode; each version runs in its own transaction under
    `pg_advisory_xact_lock(hashtext('{lock}:' || current_schema()))`, and the plan is read
    again under that lock, so concurrent workers apply each version exactly once."""
    from psycopg.pq import TransactionStatus  # noqa: PLC0415 (only the PostgreSQL side needs it)

    migrations = load_package(package)
    while True:
        conn.execute("BEGIN")
        try:
            conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext(%s::text || current_schema()))",
                (f"{lock}:",),
            )
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
            # plan() refuses a newer database; its scripts carry SQLite's BEGIN IMMEDIATE and
            # PRAGMA user_version, so only the version numbers are used and the bare SQL runs.
            pending = plan(postgres_version(conn), migrations, what)
            if not pending:
                conn.execute("COMMIT")
                return
            version = pending[0][0]
            conn.execute(migrations[version])  # no parameters: several statements may run
            conn.execute("DELETE FROM schema_version")
            conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (version,))
            conn.execute("COMMIT")
        except BaseException:
            if not conn.broken and conn.info.transaction_status != TransactionStatus.IDLE:
                conn.execute("ROLLBACK")
            raise
        log.info("%s migrated to schema version %d", what, version)
