"""Fixtures for the transit tests: the head-office store on SQLite and PostgreSQL (the
`backend` fixture from tests/pgutil.py) and the end-to-end `cluster` from
tests/e2e. Helpers are in transit_helpers.py.
"""

from __future__ import annotations

from tests.e2e.e2e_cluster import cluster  # noqa: F401 - the fixture
from tests.pgutil import backend  # noqa: F401 - the fixture, parametrised over both backends
