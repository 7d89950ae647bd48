"""Run head-office tests against both store backends: SQLite files and a real PostgreSQL.

The `backend` fixture (imported by the conftest.py of tests/headoffice and tests/transit) is
parametrised over `sqlite` and `postgres`. The postgres case gets a fresh schema in database
`test` (LANESYNC_TEST_PG_URL, default postgresql://127.0.0.1:5432/test) per test, reached with
`options=-csearch_path=<schema>` in the URL, and drops it afterwards. When PostgreSQL is not
reachable the postgres cases FAIL with the reason: CI has one, and a skip would hide that half
the suite did not run.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from headoffice.config import HeadOfficeConfig, parse
from headoffice.db import Database, open_target
from headoffice.db.sql import to_pyformat
from headoffice.projections import PROJECTIONS
from lanesync.pgscratch import scratch_schema

PG_URL = os.environ.get("LANESYNC_TEST_PG_URL", "postgresql://127.0.0.1:5432/test")


def pg_connect(url: str = PG_URL) -> psycopg.Connection[tuple[Any, ...]]:
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {url} ({exc}). The postgres cases need it: start "
            "PostgreSQL with database `test` and trust auth on 127.0.0.1:5432, or point "
            "LANESYNC_TEST_PG_URL at one.",
            pytrace=False,
        )


def pg_schema() -> contextlib.AbstractContextManager[str]:
    """A fresh schema for one test (lanesync.pgscratch); yields a URL whose connections use
    it. Dropped after."""
    return scratch_schema(PG_URL, "lanesync_t", pg_connect)


@dataclass(frozen=True)
class Backend:
    """One head-office database for a test: `store()` opens it, `query()` reads what was
    committed through a separate connection (`?` placeholders on both)."""

    name: str
    target: Path | str  # SQLite file, or postgresql:// URL with the test's search_path

    @property
    def is_pg(self) -> bool:
        return self.name == "postgres"

    def store(self) -> Database:
        return open_target(self.target, projections=PROJECTIONS)

    def database_table(self) -> dict[str, str]:
        """The [database] table of a headoffice.toml for this backend."""
        return {"url": str(self.target)} if self.is_pg else {"path": str(self.target)}

    def config(self, **tables: Any) -> HeadOfficeConfig:
        return parse({"database": self.database_table(), **tables})

    def query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if self.is_pg:
            with psycopg.connect(str(self.target), autocommit=True) as conn:
                return conn.execute(to_pyformat(sql), args).fetchall()
        db = sqlite3.connect(self.target)
        try:
            return db.execute(sql, args).fetchall()
        finally:
            db.close()


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        yield Backend("sqlite", tmp_path / "ho.db")
        return
    with pg_schema() as url:
        yield Backend("postgres", url)
