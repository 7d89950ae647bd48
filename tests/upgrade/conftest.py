"""Fixtures for the upgrade tests: the end-to-end `cluster` from tests/e2e (added to sys.path
here, as tests/transit does) and the head-office `backend` on SQLite and PostgreSQL."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "e2e"))

from e2e_cluster import cluster  # noqa: F401 - the fixture
from pgutil import backend  # noqa: F401 - the fixture, parametrised over both backends
