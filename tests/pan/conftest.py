"""Fixtures for the card-number tests: the end-to-end helpers of tests/e2e and tests/api
(imported as packages, never copied), and a stack of real processes (pan_stack.py)."""

from __future__ import annotations
