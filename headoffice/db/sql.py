"""One small connection facade over sqlite3 and psycopg, so shared SQL is written once.

The transit projection, the transit request handlers and the read-only reports run on either
head-office backend. They write plain SQL with `?` placeholders that both databases accept
(`INSERT ... ON CONFLICT (...) DO UPDATE SET x = excluded.x` is valid in both); the psycopg
side translates `?` to `%s` (and a literal `%` to `%%`). Where the dialects really differ the
caller asks `sql.dialect` and says so at that spot.

Transactions are explicit on both: the SQLite connection runs with isolation_level=None and the
psycopg one with autocommit=True, and `begin()` issues BEGIN (BEGIN IMMEDIATE on SQLite, so
the writer lock is taken up front and a busy database fails early, not at COMMIT).
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Literal, Protocol

import psycopg
from psycopg.pq import TransactionStatus

Dialect = Literal["sqlite", "postgres"]
Row = tuple[Any, ...]


class Sql(Protocol):
    """What shared head-office SQL code may do with a connection."""

    dialect: Dialect

    @property
    def in_transaction(self) -> bool: ...

    def begin(self) -> None:
        """Start a write transaction unless one is open."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; returns the number of rows it changed."""

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None: ...

    def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None: ...

    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]: ...

    def fetchdicts(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Rows as {column name: value}."""

    def iterate(self, sql: str, params: Sequence[Any] = ()) -> Iterator[Row]:
        """Rows one at a time, for big reads (the extract) that should not build a list."""

    def commit(self) -> None: ...

    def rollback(self) -> None: ...

    def close(self) -> None: ...


class SqliteSql:
    """The facade over a sqlite3 connection opened with isolation_level=None."""

    dialect: Dialect = "sqlite"

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    @property
    def in_transaction(self) -> bool:
        return self.db.in_transaction

    def begin(self) -> None:
        if not self.db.in_transaction:
            self.db.execute("BEGIN IMMEDIATE")

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self.db.execute(sql, params).rowcount

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self.db.executemany(sql, rows)

    def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        row: Row | None = self.db.execute(sql, params).fetchone()
        return row

    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self.db.execute(sql, params).fetchall()

    def fetchdicts(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        cur = self.db.execute(sql, params)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    def iterate(self, sql: str, params: Sequence[Any] = ()) -> Iterator[Row]:
        return iter(self.db.execute(sql, params))

    def commit(self) -> None:
        if self.db.in_transaction:
            self.db.execute("COMMIT")

    def rollback(self) -> None:
        if self.db.in_transaction:
            self.db.execute("ROLLBACK")

    def close(self) -> None:
        self.db.close()


@functools.lru_cache(maxsize=256)
def to_pyformat(sql: str) -> str:
    """`?` placeholders to psycopg's `%s`. Shared SQL never has a `?` inside a literal."""
    return sql.replace("%", "%%").replace("?", "%s")


class PgSql:
    """The facade over a psycopg connection opened with autocommit=True."""

    dialect: Dialect = "postgres"

    def __init__(self, conn: psycopg.Connection[Row]) -> None:
        self.conn = conn

    @property
    def in_transaction(self) -> bool:
        return self.conn.info.transaction_status != TransactionStatus.IDLE

    def begin(self) -> None:
        if not self.in_transaction:
            self.conn.execute("BEGIN")

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self.conn.execute(to_pyformat(sql), params).rowcount

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        with self.conn.cursor() as cur:
            cur.executemany(to_pyformat(sql), rows)

    def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        return self.conn.execute(to_pyformat(sql), params).fetchone()

    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self.conn.execute(to_pyformat(sql), params).fetchall()

    def fetchdicts(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        cur = self.conn.execute(to_pyformat(sql), params)
        names = [d.name for d in cur.description or ()]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    def iterate(self, sql: str, params: Sequence[Any] = ()) -> Iterator[Row]:
        # A client-side cursor: libpq holds the result, rows become Python tuples as they go.
        return iter(self.conn.execute(to_pyformat(sql), params))

    def commit(self) -> None:
        if self.in_transaction:
            self.conn.execute("COMMIT")

    def rollback(self) -> None:
        if self.in_transaction and not self.conn.broken:
            self.conn.execute("ROLLBACK")

    def close(self) -> None:
        self.conn.close()
