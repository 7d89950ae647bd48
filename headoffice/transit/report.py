"""Open transits and stock per location, for `lanesync transits` and the status page.

Reads only; works on a read-only connection and on a database older than schema 3 (empty).
"""

from __future__ import annotations

import sqlite3
from typing import Any

from headoffice.transit.projection import IN_TRANSIT, fmt_milli


def _has_tables(db: sqlite3.Connection) -> bool:
    row = db.execute(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'transit_inventory'"
    ).fetchone()
    return bool(row[0])


def open_transits(db: sqlite3.Connection, limit: int = 500) -> list[dict[str, Any]]:
    """Parcels still on the road, oldest first, with their line and unit counts."""
    if not _has_tables(db):
        return []
    cur = db.execute(
        """
        SELECT t.transit_no, t.sscc, t.source_store, t.dest_store, t.status,
               t.created_store || '/' || t.created_lane AS created_where, t.created_at,
               t.by_type || ' ' || t.by_id AS travels_by,
               (SELECT count(*) FROM transit_inventory_lines l WHERE l.txn_id = t.txn_id) AS lines,
               t.txn_id
        FROM transit_inventory t WHERE t.status = 'in_transit'
        ORDER BY t.created_at LIMIT ?
        """,
        (limit,),
    )
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def stock_levels(db: sqlite3.Connection) -> list[dict[str, Any]]:
    """Stock per location and item (qty as a three-place decimal string)."""
    if not _has_tables(db):
        return []
    return [
        {"location": loc, "item": item, "qty": fmt_milli(int(q)), "in_transit": loc == IN_TRANSIT}
        for loc, item, q in db.execute("SELECT location, item, qty FROM stock ORDER BY 1, 2")
    ]
