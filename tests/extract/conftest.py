"""Fixtures for the extract suite: every test with a head office runs on SQLite and PostgreSQL
(the `backend` fixture of tests/pgutil.py; the postgres cases fail when it is unreachable)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.extract.extract_helpers import HeadOffice
from tests.pgutil import (
    Backend,
    backend,  # noqa: F401 - the fixture, parametrised over both backends
)


@pytest.fixture
def ho(backend: Backend, tmp_path: Path) -> Iterator[HeadOffice]:  # noqa: F811
    office = HeadOffice(backend.target, tmp_path)
    try:
        yield office
    finally:
        office.close()
