"""A PostgreSQL schema of its own for one test or benchmark run, dropped afterwards.

Head office's PostgreSQL backend works in the connection's `search_path`, so a run that gets a
fresh schema and a URL that selects it (`options=-csearch_path=<schema>`) shares the database
with every other run without seeing them. Used by the test suite (tests/pgutil.py) and the
benchmarks (`lanesync bench extract`, `lanesync bench fleet`).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg

Connect = Callable[[str], psycopg.Connection[tuple[Any, ...]]]


def _connect(url: str) -> psycopg.Connection[tuple[Any, ...]]:
    return psycopg.connect(url, autocommit=True)


def schema_url(pg_url: str, schema: str) -> str:
    """`pg_url` with its connections in `schema` (and named after it in pg_stat_activity)."""
    sep = "&" if "?" in pg_url else "?"
    return f"{pg_url}{sep}options=-csearch_path%3D{schema}&application_name={schema}"


@contextlib.contextmanager
def scratch_schema(pg_url: str, prefix: str, connect: Connect = _connect) -> Iterator[str]:
    """Create `<prefix>_<random>` in `pg_url`'s database; yield the URL that uses it; drop it.

    Connections a run left open are ended first, so they cannot keep the schema (or its locks)
    around; `connect` opens the admin connections in autocommit mode."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with connect(pg_url) as admin:
        admin.execute(f"CREATE SCHEMA {name}")
    try:
        yield schema_url(pg_url, name)
    finally:
        with connect(pg_url) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE pid <> pg_backend_pid() AND application_name = %s",
                (name,),
            )
            admin.execute("SET lock_timeout = '20s'")
            admin.execute(f"DROP SCHEMA {name} CASCADE")
