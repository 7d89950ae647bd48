"""The two SQL spellings the extract's document reads need, apart from headoffice/extract/db.py
so that ingest's side (headoffice/extract/projection.py, imported by the store) can reach
documents.py without importing the store back."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # at run time this module imports nothing: the store imports it
    from headoffice.db.sql import Dialect

JOURNAL_ID: dict[Dialect, str] = {"sqlite": "rowid", "postgres": "id"}
JOBS_OF: dict[Dialect, str] = {
    "sqlite": "group_concat(d.job)",
    "postgres": "string_agg(d.job, ',')",
}
