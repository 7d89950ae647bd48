"""Head-office storage: the replica of every lane journal, applied documents and quarantine.

Two backends behind one protocol (base.Database): SQLite, embedded and the default, and
PostgreSQL for several ingest workers over one database. `open_database` picks by configuration.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg

from headoffice.config import HeadOfficeConfig
from headoffice.db import postgres, sqlite
from headoffice.db.base import (
    DEFAULT_MAX_EPOCHS_PER_LANE,
    ApplyResult,
    Database,
    DatabaseError,
    EpochRefused,
    EpochRetired,
    LaneState,
)
from headoffice.db.postgres import PostgresDatabase
from headoffice.db.projection import Projections
from headoffice.db.sql import PgSql, Sql, SqliteSql
from headoffice.db.sqlite import SqliteDatabase

Target = str | Path  # a SQLite file, or a postgresql:// URL


def target(config: HeadOfficeConfig) -> Target:
    """Where this head office keeps its data: database.url when set, else database.path."""
    return config.database_url or config.database


def describe(where: Target) -> str:
    """For logs and messages: the path, or the URL without its password."""
    return postgres.redact(str(where)) if is_url(where) else str(where)


def is_url(where: Target) -> bool:
    return isinstance(where, str) and where.startswith(("postgresql://", "postgres://"))


def open_database(config: HeadOfficeConfig, projections: Projections) -> Database:
    """The writing database the configuration names (ingest, import), applying entries
    through `projections` (headoffice.projections.PROJECTIONS)."""
    return open_target(
        target(config),
        projections=projections,
        max_epochs_per_lane=config.ingest.max_epochs_per_lane,
    )


def open_target(
    where: Target,
    *,
    projections: Projections,
    max_epochs_per_lane: int = DEFAULT_MAX_EPOCHS_PER_LANE,
    accepts_retired: bool = False,
) -> Database:
    """The writing database at `where`; `accepts_retired` only for `lanesync import` (an old
    box's export still applies after its epoch was retired, headoffice/retire.py)."""
    if is_url(where):
        return PostgresDatabase(
            str(where),
            projections=projections,
            max_epochs_per_lane=max_epochs_per_lane,
            accepts_retired=accepts_retired,
        )
    return SqliteDatabase(
        where,
        projections=projections,
        max_epochs_per_lane=max_epochs_per_lane,
        accepts_retired=accepts_retired,
    )


_TRANSIENT = (
    sqlite3.OperationalError,
    psycopg.OperationalError,
    psycopg.InterfaceError,
    MemoryError,
)


def transient(exc: BaseException) -> bool:
    """A failure of the database or its connection (disk full, connection lost, deadlock,
    lock timeout), not of one message: applying the messages one by one would fail the same
    way and could hold an honest entry, so ingest fails the group and lanes resend."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        if isinstance(e, _TRANSIENT):
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False


def open_readonly(where: Target) -> Sql | None:
    """A read-only connection for status, metrics and reports; None when a SQLite file does not
    exist yet. The caller closes it."""
    if is_url(where):
        try:
            return PgSql(postgres.connect(str(where), readonly=True))
        except psycopg.Error as exc:
            raise DatabaseError(f"cannot open {postgres.redact(str(where))}: {exc}") from exc
    path = Path(where)
    if not path.exists():
        return None
    return SqliteSql(sqlite.connect(path, readonly=True))


__all__ = [
    "ApplyResult",
    "Database",
    "DatabaseError",
    "EpochRefused",
    "EpochRetired",
    "LaneState",
    "PostgresDatabase",
    "SqliteDatabase",
    "Target",
    "describe",
    "is_url",
    "open_database",
    "open_readonly",
    "open_target",
    "target",
    "transient",
]
