"""Fixtures for the extract suite."""

from __future__ import annotations

from pathlib import Path

import pytest
from extract_helpers import HeadOffice


@pytest.fixture
def ho(tmp_path: Path) -> HeadOffice:
    return HeadOffice(tmp_path / "ho.db")
