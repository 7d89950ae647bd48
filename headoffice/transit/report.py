"""Open transits, for `lanesync transits` and the status page (stock: headoffice.stock.report).

Reads only; works on a read-only connection and on a database older than schema 3 (empty),
on SQLite and PostgreSQL alike (headoffice.db.sql).
"""

from __future__ import annotations

from typing import Any

from headoffice.db.sql import Sql


def _has_tables(db: Sql) -> bool:
    if db.dialect == "postgres":
        # to_regclass resolves the name on the connection's search_path, NULL when absent.
        row = db.fetchone("SELECT to_regclass('transit_inventory') IS NOT NULL")
    else:
        row = db.fetchone(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'transit_inventory'"
        )
    return bool(row and row[0])


def open_transits(db: Sql, limit: int = 500) -> list[dict[str, Any]]:
    """Parcels still on the road, oldest first, with their line and unit counts."""
    if not _has_tables(db):
        return []
    return db.fetchdicts(
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
