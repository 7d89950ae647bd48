"""Fixtures for the stock tests: a head office on SQLite and PostgreSQL (tests/pgutil.py's
`backend`), fed as ingest feeds it by tests/extract's HeadOffice (added to sys.path here)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "extract"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "e2e"))

from extract_helpers import HeadOffice
from pgutil import (
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
