"""tests/sync: recovery and proof of sync (issue 16 items 2, 4b, 7; issue 18 item 3).

The head-office suite's lane simulator and synchronous ingest (tests/headoffice/ho_helpers.py)
are shared from there, and the store tests run on SQLite and PostgreSQL alike (pgutil).
"""

from tests.pgutil import backend  # noqa: F401 - the fixture, parametrised over both backends
