"""Schema migrations as data: one SQL file per version, applied in one transaction each.

Both sides keep `NNNN_name.sql` files next to their storage code and track the version in
`PRAGMA user_version` (the zigpy appdb habit). This module only plans; the caller executes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from importlib.resources.abc import Traversable

from protocol.errors import LanesyncError

_NAME = re.compile(r"(\d{4})_[a-z0-9_]+\.sql")


class SchemaError(LanesyncError):
    """A database whose schema this version of lanesync cannot use."""


def load(files: Iterable[Traversable]) -> dict[int, str]:
    """Read `NNNN_*.sql` resources into {version: sql}."""
    out: dict[int, str] = {}
    for f in files:
        m = _NAME.fullmatch(f.name)
        if m:
            out[int(m.group(1))] = f.read_text(encoding="utf-8")
    if sorted(out) != list(range(1, len(out) + 1)):
        raise SchemaError(f"schema versions must run 1..N without gaps, got {sorted(out)}")
    return out


def plan(current: int, migrations: dict[int, str], what: str) -> list[tuple[int, str]]:
    """Scripts to run to bring a database at `current` up to date, each one transaction."""
    latest = max(migrations, default=0)
    if current > latest:
        raise SchemaError(
            f"{what} has schema version {current}, newer than this lanesync knows ({latest}); "
            "upgrade lanesync before opening it"
        )
    return [
        (v, f"BEGIN IMMEDIATE;\n{migrations[v]}\nPRAGMA user_version = {v};\nCOMMIT;\n")
        for v in sorted(migrations)
        if v > current
    ]
