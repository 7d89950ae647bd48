"""Fixtures for the card-number tests: the end-to-end helpers of tests/e2e and tests/api on
sys.path (imported, never copied), and a stack of real processes (pan_stack.py)."""

from __future__ import annotations

import sys
from pathlib import Path

_TESTS = Path(__file__).resolve().parent.parent
for _dir in ("e2e", "api"):
    if str(_TESTS / _dir) not in sys.path:
        sys.path.insert(0, str(_TESTS / _dir))
