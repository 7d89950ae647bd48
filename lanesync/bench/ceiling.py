"""The embedded store's ceiling: head office's own SQLite inserting rows a run committed, in
that run's transactions, and nothing else (no broker, no decoding, no checks).

Both the drain and the fleet benchmarks report their rate as a share of it (issue 17.1, 17.5).
The rows are read back from the run's head-office database before the clock starts; every
table holding rows by (store, lane, seq) is copied (journal, documents and any projection keyed
so), and each lane in a transaction has its position updated once at commit, as head office
does. The fresh file is opened and migrated as head office opens its own (WAL,
synchronous=FULL).
"""

from __future__ import annotations

import itertools
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from headoffice.db import sqlite as sqlite_db
from protocol.identity import LaneId

Row = tuple[Any, ...]
# One transaction: (INSERT statement, its rows) per table, and the (store, lane, epoch, hwm)
# positions it leaves.
Transaction = tuple[list[tuple[str, list[Row]]], list[tuple[str, str, int, int]]]


def _insert_sql(table: str, columns: list[str]) -> str:
    marks = ", ".join("?" * len(columns))
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"  # noqa: S608


def _keyed_tables(src: sqlite3.Connection) -> list[tuple[str, list[str]]]:
    """Tables holding rows by (store, lane, seq), the journal first; held entries are not
    part of a clean drain."""
    out = []
    for (name,) in src.execute("SELECT name FROM sqlite_schema WHERE type = 'table'"):
        cols = [r[1] for r in src.execute(f"PRAGMA table_info({name})")]
        if {"store", "lane", "seq"} <= set(cols) and name != "held":
            out.append((name, cols))
    return sorted(out, key=lambda t: t[0] != "journal")


def _lanes(src: sqlite3.Connection) -> tuple[list[str], list[Row]]:
    cols = [r[1] for r in src.execute("PRAGMA table_info(lanes)")]
    return cols, src.execute("SELECT * FROM lanes").fetchall()


def lane_ceiling(drained: Path, path: Path, lane: LaneId, txns: list[tuple[int, int]]) -> float:
    """Seconds to insert the rows the run committed for `lane`, in its transactions given as
    seq ranges (first, last)."""
    src = sqlite_db.connect(drained, readonly=True)
    try:
        tables = []
        for name, cols in _keyed_tables(src):
            rows = src.execute(
                f"SELECT * FROM {name} WHERE store = ? AND lane = ? ORDER BY seq",  # noqa: S608
                (lane.store, lane.lane),
            ).fetchall()
            tables.append((name, cols, rows))
        lane_cols, lane_rows = _lanes(src)
    finally:
        src.close()
    lane_rows = [r for r in lane_rows if (r[0], r[1]) == (lane.store, lane.lane)]
    epoch = lane_rows[0][2] if lane_rows else 0
    by_txn: list[Transaction] = []
    for first, last in txns:
        parts = []
        for name, cols, rows in tables:
            seq = cols.index("seq")
            chunk = [r for r in rows if first <= r[seq] <= last]
            if chunk:
                parts.append((_insert_sql(name, cols), chunk))
        by_txn.append((parts, [(lane.store, lane.lane, epoch, last)]))
    return _timed(path, lane_cols, lane_rows, by_txn)


def rows_ceiling(drained: Path, path: Path, after_rowid: int, count: int, txns: int) -> float:
    """Seconds to insert the `count` journal rows committed after journal rowid `after_rowid`
    (rowid order is commit order), with their rows in the other keyed tables, in `txns`
    transactions of equal size in commit order: a many-lane run, whose commits mix lanes."""
    if count < 1:
        raise ValueError("a ceiling needs at least one row to insert")
    src = sqlite_db.connect(drained, readonly=True)
    try:
        keys = src.execute(
            "SELECT rowid, store, lane, epoch, seq FROM journal WHERE rowid > ? "
            "ORDER BY rowid LIMIT ?",
            (after_rowid, count),
        ).fetchall()
        if len(keys) < count:
            raise ValueError(
                f"{drained} holds {len(keys)} journal rows after rowid {after_rowid}, "
                f"not the {count} to insert"
            )
        last_rowid = keys[-1][0] if keys else after_rowid
        tables: list[tuple[str, list[str], list[Row]]] = []
        for name, cols in _keyed_tables(src):
            # each row with the rowid of its journal row last, rows in commit order
            on = " AND ".join(
                f"j.{c} = t.{c}" for c in ("store", "lane", "epoch", "seq") if c in cols
            )
            rows = src.execute(
                f"SELECT t.*, j.rowid FROM {name} t JOIN journal j ON {on} "  # noqa: S608
                "WHERE j.rowid > ? AND j.rowid <= ? ORDER BY j.rowid",
                (after_rowid, last_rowid),
            ).fetchall()
            tables.append((name, cols, rows))
        lane_cols, lane_rows = _lanes(src)
    finally:
        src.close()
    txns = max(1, min(txns, count))
    bounds = [count * t // txns for t in range(txns + 1)]  # none empty: txns <= count
    by_txn: list[Transaction] = []
    cursors = [0] * len(tables)
    for lo, hi in itertools.pairwise(bounds):
        upto = keys[hi - 1][0]  # the last journal rowid of this transaction
        parts = []
        for t, (name, cols, rows) in enumerate(tables):
            start = end = cursors[t]
            while end < len(rows) and rows[end][-1] <= upto:
                end += 1
            cursors[t] = end
            if end > start:
                parts.append((_insert_sql(name, cols), [r[:-1] for r in rows[start:end]]))
        marks: dict[tuple[str, str, int], int] = {}
        for _, store, lane, epoch, seq in keys[lo:hi]:
            marks[(store, lane, epoch)] = max(seq, marks.get((store, lane, epoch), 0))
        by_txn.append((parts, [(*k, hwm) for k, hwm in marks.items()]))
    return _timed(path, lane_cols, lane_rows, by_txn)


def _timed(
    path: Path, lane_cols: list[str], lane_rows: Sequence[Row], by_txn: list[Transaction]
) -> float:
    """Seconds for the transactions alone, into a fresh head-office database at `path` whose
    lanes table is `lane_rows`."""
    db = sqlite_db.connect(path)
    try:
        sqlite_db.migrate(db, f"ceiling database {path}")
        db.executemany(_insert_sql("lanes", lane_cols), lane_rows)
        t0 = time.perf_counter()
        for parts, marks in by_txn:
            db.execute("BEGIN IMMEDIATE")
            for statement, chunk in parts:
                db.executemany(statement, chunk)
            db.executemany(
                "UPDATE lanes SET hwm = ?, last_seen = ? "
                "WHERE store = ? AND lane = ? AND epoch = ?",
                [(hwm, hwm, store, lane, epoch) for store, lane, epoch, hwm in marks],
            )
            db.execute("COMMIT")
        return time.perf_counter() - t0
    finally:
        db.close()
