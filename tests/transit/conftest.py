"""Fixtures for the transit tests: the head-office store on SQLite and PostgreSQL (the
`backend` fixture from tests/pgutil.py) and the end-to-end `cluster` from tests/e2e (added to
sys.path here). Helpers are in transit_helpers.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "e2e"))

from e2e_cluster import cluster  # noqa: F401 - the fixture
from pgutil import backend  # noqa: F401 - the fixture, parametrised over both backends
