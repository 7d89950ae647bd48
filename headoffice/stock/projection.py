"""Stock moves of sales, returns and purchases, applied inside the ingest transaction.

Called by the store's flush (headoffice.db.base) for each newly applied document of
headoffice.stock.moves.STOCK_KINDS, on the writer thread, in the transaction that writes its
journal and documents rows: a document moves stock exactly when it is committed, and a
duplicate (a txn_id applied before) never reaches here, so the projection is idempotent with
ingest's dedupe. One stock table for every kind (transits and adjustments move it through
headoffice.transit.projection).

A returned line moves by the inventory effect of its return transaction type (seed 001: "if
a transaction type is used for returns that has no effect on inventory then inventory
balances are not updated"): the line's or document's `return_type`, else the
`ReturnTxnType` setting (lane > store > chain), read from the catalog at the version the
document was checked against (its `catalog_version`; the current one when it has none), and
that code's `txn_types` row's `inventory_effect` (increase +qty, decrease -qty, none 0). With
no return type anywhere (no catalog loaded) a return adds its quantity back, the seed's plain
case (a) and the extract's default. A return type the catalog does not list moves nothing and
is reported as a problem.
"""

from __future__ import annotations

import logging

from headoffice.db.sql import Sql
from headoffice.stock.moves import STOCK_KINDS, Move, StockDoc, Unreadable, read
from headoffice.transit.projection import move
from protocol import catalog as cat
from protocol.identity import LaneId
from protocol.messages import Entry

log = logging.getLogger(__name__)

EFFECTS = {"increase": 1, "decrease": -1, "none": 0}
DEFAULT_EFFECT = 1  # no return type anywhere: case (a) of the seed, the stock comes back
_LIVE_AT = "since_version <= ? AND (until_version IS NULL OR until_version > ?)"


def _row(db: Sql, dataset: str, key: str, version: int | None) -> dict[str, object] | None:
    ds = cat.dataset(dataset)
    if version is None:
        found = db.fetchone(
            "SELECT body FROM catalog_rows WHERE dataset = ? AND key = ? AND until_version IS NULL",
            (dataset, key),
        )
    else:
        found = db.fetchone(
            f"SELECT body FROM catalog_rows WHERE dataset = ? AND key = ? AND {_LIVE_AT}",  # noqa: S608
            (dataset, key, version, version),
        )
    return None if found is None else dict(cat.row_from_bytes(ds, bytes(found[0])))


def return_type_setting(db: Sql, lane: LaneId, version: int | None) -> str | None:
    """The lane's `ReturnTxnType`: lane > store > chain (CATALOG.md), None when unset."""
    for key in (
        f"lane|{lane.store}|{lane.lane}|ReturnTxnType",
        f"store|{lane.store}||ReturnTxnType",
        "chain|||ReturnTxnType",
    ):
        row = _row(db, "settings", key, version)
        if row is not None:
            return str(row["value"])
    return None


def effect_of(
    db: Sql, lane: LaneId, code: str | None, version: int | None
) -> tuple[int, str | None]:
    """(+1, -1 or 0, a problem or None) for a returned line of return type `code`."""
    code = code or return_type_setting(db, lane, version)
    if code is None:
        return DEFAULT_EFFECT, None
    row = _row(db, "txn_types", code, version)
    if row is None:
        at = "the current catalog" if version is None else f"catalog version {version}"
        return 0, f"return type {code!r} is not a txn_types row of {at}; stock not moved"
    return EFFECTS[str(row["inventory_effect"])], None


Deltas = dict[tuple[str, str], int]  # (location, item) -> thousandths, summed over a flush


def write(db: Sql, deltas: Deltas) -> None:
    """Apply a flush's summed moves: one statement for the group, in key order (two
    PostgreSQL workers then lock the rows they share in one order), zero sums skipped."""
    rows = [(loc, item, q) for (loc, item), q in sorted(deltas.items()) if q]
    if rows:
        # `stock.qty`, qualified: PostgreSQL calls a bare `qty` in DO UPDATE ambiguous.
        db.executemany(
            "INSERT INTO stock (location, item, qty) VALUES (?, ?, ?) "
            "ON CONFLICT (location, item) DO UPDATE SET qty = stock.qty + excluded.qty",
            rows,
        )
    deltas.clear()


def apply_entry(
    db: Sql, lane: LaneId, e: Entry, doc: StockDoc | Unreadable, deltas: Deltas | None = None
) -> str | None:
    """Move the stock of one newly applied document (into `deltas` when given, for `write`
    once per flush: a drain's sales then cost one statement, not one per line); returns a
    problem (logged) or None."""
    if isinstance(doc, Unreadable):
        unread = f"{e.kind} {e.txn_id} from {lane}: stock not moved: {doc.problem}"
        log.error("head office: %s", unread)
        return unread
    store = lane.store
    problem: str | None = None
    effects: dict[str | None, int] = {}  # by return type, for this document's returned lines
    for m in doc.moves:
        if isinstance(m, Move):  # returned: by its return type's inventory effect
            if m.return_type not in effects:
                effects[m.return_type], why = effect_of(
                    db, lane, m.return_type, doc.catalog_version
                )
                if why is not None:
                    problem = f"{e.kind} {e.txn_id} from {lane}: {why}"
                    log.error("head office: %s", problem)
            effect = effects[m.return_type]
            if not effect:
                continue
            item, milli = m.item, effect * m.milli
        else:  # (item, milli): sold, received or sent back, as it is
            item, milli = m
        if deltas is None:
            move(db, store, item, milli)
        else:
            key = (store, item)
            deltas[key] = deltas.get(key, 0) + milli
    return problem


class _StockRun:
    """One flush's stock moves, summed by (location, item) and written once (`write`)."""

    def __init__(self, sql: Sql) -> None:
        self.sql = sql
        self.deltas: Deltas = {}

    def apply(self, lane: LaneId, epoch: int, entry: Entry, doc: StockDoc | Unreadable) -> bool:
        return apply_entry(self.sql, lane, entry, doc, self.deltas) is not None

    def finish(self) -> None:
        write(self.sql, self.deltas)


class StockProjection:
    """Stock on hand from sales, returns and purchases (headoffice.db.projection)."""

    name = "stock"

    def check(
        self, lane: LaneId, epoch: int, entry: Entry, decoded: object
    ) -> StockDoc | Unreadable | None:
        if entry.kind not in STOCK_KINDS:
            return None
        if type(decoded) is not dict:
            return Unreadable(entry.kind, "$: not a msgpack map", None)
        return read(entry.kind, decoded)

    def start(self, sql: Sql) -> _StockRun:
        return _StockRun(sql)
