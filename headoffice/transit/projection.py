"""Transit tables and stock per location, built from journaled documents in the ingest transaction.

`apply_entry` is called by the store's apply_batch (headoffice.db.base, SQLite and
PostgreSQL alike) for the few kinds in PROJECTED_KINDS (only their bodies are decoded, so bulk
sale ingest is not slowed down), on the writer thread, inside the transaction that inserts the
journal rows: a transit exists at head office exactly when its document is committed there.
The SQL is written once for both backends through headoffice.db.sql.

Stock moves (thousandths of a unit, location `@transit` for parcels on the road):
- transit_inventory (create): source -qty, @transit +qty; the transit is `in_transit`.
- accept (`accept`, called by the transit_accept request handler): @transit -qty, dest +qty.
- transit_inventory_accept (the accepting lane's own journaled record): NO stock movement when it
  names the request head office already accepted (its txn_id is the request id); it is only
  linked (`accept_txn_id`). Should head office not hold that acceptance (a lane accepted while
  head office had lost it, e.g. restored from a backup), the document applies it, once.
- cancel (head-office CLI): @transit -qty, source +qty.
- stock_adjustment: the lane's store +qty.

Every body is checked by headoffice.transit.bodies before it gets here (a malformed one is held
at its seq and never reaches the projection), so nothing a store sends makes these statements
fail. What only the database can tell (an SSCC already used by another transit, an accept for a
parcel head office does not hold or that is received already) is logged and counted, never
raised: the document is applied, its projection is not.
Database errors are never swallowed (on PostgreSQL a failed statement aborts the transaction
anyway, so nothing here may rely on catching one).
"""

from __future__ import annotations

import logging
from decimal import Decimal, InvalidOperation
from typing import Any

from headoffice.db.projection import Unprojectable
from headoffice.db.sql import Sql
from headoffice.transit import bodies
from protocol.errors import LanesyncError
from protocol.identity import LaneId
from protocol.messages import Entry

log = logging.getLogger(__name__)

IN_TRANSIT = "@transit"  # not a valid store id (protocol.identity), so it never collides
PROJECTED_KINDS = frozenset({"transit_inventory", "transit_inventory_accept", "stock_adjustment"})
_COLS = (
    "txn_id, transit_no, sscc, status, source_store, dest_store, by_type, by_id, currency, "
    "created_store, created_lane, created_by, created_at, received_store, received_lane, "
    "received_by, received_at, accept_request, accept_txn_id, cancelled_at, cancelled_by"
)


class ProjectionError(LanesyncError, ValueError):
    """A document that cannot be projected; its reason is logged and counted."""

    code = "projection"


def milli(qty: object) -> int:
    """'1.250' -> 1250. Quantities are decimal strings with three places (invariant 5)."""
    if type(qty) is not str:
        raise ProjectionError(f"qty {qty!r} is not a decimal string")
    try:
        d = Decimal(qty) * 1000
    except InvalidOperation:
        raise ProjectionError(f"qty {qty!r} is not a decimal") from None
    if d != d.to_integral_value():
        raise ProjectionError(f"qty {qty!r} has more than three decimal places")
    return int(d)


def fmt_milli(n: int) -> str:
    sign = "-" if n < 0 else ""
    return f"{sign}{abs(n) // 1000}.{abs(n) % 1000:03d}"


def move(db: Sql, location: str, item: str, delta: int) -> None:
    # `stock.qty`, qualified: PostgreSQL calls a bare `qty` in DO UPDATE ambiguous.
    db.execute(
        "INSERT INTO stock (location, item, qty) VALUES (?, ?, ?) "
        "ON CONFLICT (location, item) DO UPDATE SET qty = stock.qty + excluded.qty",
        (location, item, delta),
    )


def stock(db: Sql, location: str, item: str) -> int:
    row = db.fetchone("SELECT qty FROM stock WHERE location = ? AND item = ?", (location, item))
    return int(row[0]) if row else 0


def lines(db: Sql, txn_id: str) -> list[tuple[str, int]]:
    return [
        (str(item), milli(qty))
        for item, qty in db.fetchall(
            "SELECT item, qty FROM transit_inventory_lines WHERE txn_id = ? ORDER BY line_no",
            (txn_id,),
        )
    ]


def _move_lines(db: Sql, txn_id: str, src: str, dst: str) -> None:
    for item, qty in lines(db, txn_id):
        move(db, src, item, -qty)
        move(db, dst, item, qty)


# --- reading --------------------------------------------------------------------------------


def by_txn(db: Sql, txn_id: str) -> dict[str, Any] | None:
    rows = db.fetchdicts(f"SELECT {_COLS} FROM transit_inventory WHERE txn_id = ?", (txn_id,))  # noqa: S608
    return rows[0] if rows else None


def find(
    db: Sql,
    *,
    sscc: str | None = None,
    transit_no: str | None = None,
    source_store: str | None = None,
) -> list[dict[str, Any]]:
    """Transits with exactly this SSCC or transit number (never a search: no patterns)."""
    where, args = [], []
    if sscc is not None:
        where.append("sscc = ?")
        args.append(sscc)
    if transit_no is not None:
        where.append("transit_no = ?")
        args.append(transit_no)
    if source_store is not None:
        where.append("source_store = ?")
        args.append(source_store)
    if sscc is None and transit_no is None:
        return []
    return db.fetchdicts(
        f"SELECT {_COLS} FROM transit_inventory WHERE {' AND '.join(where)} "  # noqa: S608
        "ORDER BY created_at LIMIT 20",
        args,
    )


def details(db: Sql, t: dict[str, Any]) -> dict[str, Any]:
    """What a lane gets to see of one transit (the receive screen)."""
    out: dict[str, Any] = {
        "txn_id": t["txn_id"],
        "transit_no": t["transit_no"],
        "sscc": t["sscc"],
        "status": t["status"],
        "source_store": t["source_store"],
        "dest_store": t["dest_store"],
        "by": {"type": t["by_type"], "id": t["by_id"]},
        "currency": t["currency"],
        "created": {
            "store": t["created_store"],
            "lane": t["created_lane"],
            "by": t["created_by"],
            "at": t["created_at"],
        },
        "lines": [
            {"line_no": n, "item": i, "description": d, "qty": q}
            for n, i, d, q in db.fetchall(
                "SELECT line_no, item, description, qty FROM transit_inventory_lines "
                "WHERE txn_id = ? ORDER BY line_no",
                (t["txn_id"],),
            )
        ],
        "received": None,
    }
    if t["status"] == "received":
        out["received"] = {
            "store": t["received_store"],
            "lane": t["received_lane"],
            "by": t["received_by"],
            "at": t["received_at"],
        }
    if t["status"] == "cancelled":
        out["cancelled"] = {"at": t["cancelled_at"], "by": t["cancelled_by"]}
    return out


# --- writing (inside the caller's transaction) ----------------------------------------------


def apply_entry(db: Sql, lane: LaneId, e: Entry, doc: bodies.Parsed) -> str | None:
    """Project one newly applied journal entry, its body already checked by `bodies.parse`;
    returns a problem (logged and counted) or None."""
    try:
        if isinstance(doc, bodies.Transit):
            _create(db, lane, e, doc)
        elif isinstance(doc, bodies.Accept):
            _accept_doc(db, lane, e, doc)
        else:
            for line in doc.lines:
                move(db, lane.store, line.item, line.milli)
    except ProjectionError as exc:
        problem = f"{e.kind} {e.txn_id} from {lane} not projected: {exc}"
        log.error("head office: %s", problem)
        return problem
    return None


def _create(db: Sql, lane: LaneId, e: Entry, doc: bodies.Transit) -> None:
    # ON CONFLICT DO NOTHING (both dialects) ignores a second txn_id or an SSCC already used.
    inserted = db.execute(
        "INSERT INTO transit_inventory (txn_id, transit_no, sscc, status, source_store, "
        "dest_store, by_type, by_id, currency, created_store, created_lane, created_by, "
        "created_at) VALUES (?, ?, ?, 'in_transit', ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT DO NOTHING",
        (
            e.txn_id,
            doc.transit_no,
            doc.sscc,
            doc.source_store,
            doc.dest_store,
            doc.by_type,
            doc.by_id,
            doc.currency,
            lane.store,
            lane.lane,
            doc.staff,
            e.ts,
        ),
    )
    if inserted != 1:
        raise ProjectionError(f"SSCC {doc.sscc} already belongs to another transit")
    for line in doc.lines:
        db.execute(
            "INSERT INTO transit_inventory_lines (txn_id, line_no, item, description, qty) "
            "VALUES (?, ?, ?, ?, ?)",
            (e.txn_id, line.line_no, line.item, line.description, fmt_milli(line.milli)),
        )
        move(db, doc.source_store, line.item, -line.milli)
        move(db, IN_TRANSIT, line.item, line.milli)


def accept(
    db: Sql,
    txn_id: str,
    lane: LaneId,
    by: str | None,
    request_id: str,
    at_ms: int,
) -> bool:
    """Mark an in-transit parcel received by `lane` and move its stock: exactly once.

    The conditional UPDATE is the exactly-once: only the first caller finds `in_transit`. On
    PostgreSQL a second worker's UPDATE waits for the first one's row lock, then re-checks the
    WHERE on the committed row (READ COMMITTED) and changes nothing.
    """
    updated = db.execute(
        "UPDATE transit_inventory SET status = 'received', received_store = ?, "
        "received_lane = ?, received_by = ?, received_at = ?, accept_request = ? "
        "WHERE txn_id = ? AND status = 'in_transit' AND dest_store = ?",
        (lane.store, lane.lane, by, at_ms, request_id, txn_id, lane.store),
    )
    if updated != 1:
        return False
    t = by_txn(db, txn_id)
    assert t is not None
    _move_lines(db, txn_id, IN_TRANSIT, t["dest_store"])
    return True


def cancel(db: Sql, txn_id: str, by: str | None, at_ms: int) -> bool:
    """Cancel a parcel still in transit: its stock goes back to the source store."""
    updated = db.execute(
        "UPDATE transit_inventory SET status = 'cancelled', cancelled_at = ?, cancelled_by = ? "
        "WHERE txn_id = ? AND status = 'in_transit'",
        (at_ms, by, txn_id),
    )
    if updated != 1:
        return False
    t = by_txn(db, txn_id)
    assert t is not None
    _move_lines(db, txn_id, IN_TRANSIT, t["source_store"])
    return True


def _accept_doc(db: Sql, lane: LaneId, e: Entry, doc: bodies.Accept) -> None:
    # The normal case: the lane journals its record after head office accepted the request
    # whose id is this document's txn_id. Stock already moved; only record the link.
    linked = db.execute(
        "UPDATE transit_inventory SET accept_txn_id = ? WHERE accept_request = ?",
        (e.txn_id, e.txn_id),
    )
    if linked == 1:
        return
    found = find(db, sscc=doc.sscc, transit_no=doc.transit_no, source_store=doc.source_store)
    if len(found) != 1:
        raise ProjectionError(f"accept names a transit head office does not hold ({len(found)})")
    t = found[0]
    if accept(db, t["txn_id"], lane, doc.staff, e.txn_id, doc.received_at or e.ts):
        db.execute(
            "UPDATE transit_inventory SET accept_txn_id = ? WHERE txn_id = ?",
            (e.txn_id, t["txn_id"]),
        )
        log.warning("head office: transit %s accepted from %s's journal", t["transit_no"], lane)
        return
    raise ProjectionError(
        f"transit {t['transit_no']} is {t['status']} (received by {t['received_store']}/"
        f"{t['received_lane']}), not accepted by this document"
    )


class _TransitRun:
    def __init__(self, sql: Sql) -> None:
        self.sql = sql

    def apply(self, lane: LaneId, epoch: int, entry: Entry, doc: bodies.Parsed) -> bool:
        return apply_entry(self.sql, lane, entry, doc) is not None

    def finish(self) -> None:
        pass  # each document moved its stock as it was applied


class TransitProjection:
    """Transits between stores and stock adjustments (headoffice.db.projection): a body that
    breaks what they need (headoffice.transit.bodies) is held as invalid_body."""

    name = "transit"

    def check(
        self, lane: LaneId, epoch: int, entry: Entry, decoded: object
    ) -> bodies.Parsed | None:
        if entry.kind not in PROJECTED_KINDS:
            return None
        try:
            return bodies.parse(entry.kind, entry.body, lane.store)
        except Exception as exc:
            problem = str(exc) if isinstance(exc, bodies.BodyError) else repr(type(exc))
            raise Unprojectable(problem) from exc

    def start(self, sql: Sql) -> _TransitRun:
        return _TransitRun(sql)
