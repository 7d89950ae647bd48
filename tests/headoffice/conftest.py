"""tests/headoffice: the store and ingest suites run against SQLite and PostgreSQL alike."""

from tests.pgutil import backend  # noqa: F401 - the fixture, parametrised over both backends
