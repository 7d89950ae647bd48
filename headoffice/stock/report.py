"""Stock per location and item at head office, for `lanesync stock` and `transits --stock`.

Reads only (a read-only connection, SQLite or PostgreSQL); an empty list on a database older
than schema 3. Quantities are three-place decimal strings (the table keeps thousandths).
"""

from __future__ import annotations

from typing import Any

from headoffice.db.sql import Sql
from headoffice.transit.projection import IN_TRANSIT, fmt_milli
from headoffice.transit.report import _has_tables


def levels(db: Sql, *, store: str | None = None, item: str | None = None) -> list[dict[str, Any]]:
    """Stock per (location, item), optionally of one location (`@transit` too) or item."""
    if not _has_tables(db):
        return []
    where, args = [], []
    if store is not None:
        where.append("location = ?")
        args.append(store)
    if item is not None:
        where.append("item = ?")
        args.append(item)
    cond = f" WHERE {' AND '.join(where)}" if where else ""
    return [
        {"location": loc, "item": it, "qty": fmt_milli(int(q)), "in_transit": loc == IN_TRANSIT}
        for loc, it, q in db.fetchall(
            f"SELECT location, item, qty FROM stock{cond} ORDER BY 1, 2",  # noqa: S608
            args,
        )
    ]
