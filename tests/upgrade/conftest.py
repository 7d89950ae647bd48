"""Fixtures for the upgrade tests: the end-to-end `cluster` from tests/e2e and the head-office
`backend` on SQLite and PostgreSQL."""

from __future__ import annotations

from tests.e2e.e2e_cluster import cluster  # noqa: F401 - the fixture
from tests.pgutil import backend  # noqa: F401 - the fixture, parametrised over both backends
