"""The embedded store's ceiling (lanesync.bench.ceiling) inserts exactly the rows a run
committed, in the transactions asked for, and leaves each lane's position where the last of its
rows put it: a ceiling that inserted less, or other rows, would flatter or shame the run."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from headoffice.db import sqlite as sqlite_db
from lanesync.bench.ceiling import lane_ceiling, rows_ceiling
from protocol.identity import LaneId

LANES = [("S1", "L1"), ("S1", "L2"), ("S2", "L1")]


def _drained(path: Path, per_lane: int) -> list[tuple[str, str, int]]:
    """A head-office database whose journal interleaves three lanes' entries, as a many-lane
    drain commits them; returns (store, lane, seq) in commit order."""
    db = sqlite_db.connect(path)
    sqlite_db.migrate(db, "test database")
    order = []
    for store, lane in LANES:
        db.execute(
            "INSERT INTO lanes (store, lane, epoch, hwm, last_hash, first_seen, last_seen) "
            "VALUES (?, ?, 1, ?, x'00', 0, 0)",
            (store, lane, per_lane),
        )
    for seq in range(1, per_lane + 1):
        for store, lane in LANES:
            txn = f"{store}-{lane}-{seq}"
            db.execute(
                "INSERT INTO journal VALUES (?, ?, 1, ?, 'sale', ?, 0, x'90', x'01', 0, 1)",
                (store, lane, seq, txn),
            )
            db.execute(
                "INSERT INTO documents VALUES (?, ?, ?, 1, ?, 'sale', 0, NULL)",
                (txn, store, lane, seq),
            )
            order.append((store, lane, seq))
    db.close()
    return order


def _read(path: Path) -> tuple[list[tuple[str, str, int]], list[str], dict[tuple[str, str], int]]:
    db = sqlite3.connect(path)
    try:
        journal = [
            tuple(r) for r in db.execute("SELECT store, lane, seq FROM journal ORDER BY rowid")
        ]
        docs = sorted(r[0] for r in db.execute("SELECT txn_id FROM documents"))
        hwms = {(r[0], r[1]): r[2] for r in db.execute("SELECT store, lane, hwm FROM lanes")}
    finally:
        db.close()
    return journal, docs, hwms


def test_rows_ceiling_inserts_the_rows_after_the_mark_in_commit_order(tmp_path: Path) -> None:
    order = _drained(tmp_path / "ho.db", per_lane=10)
    after, count = 6, 17  # rows 7..23 of 30: lanes mixed, some lanes' rows split
    seconds = rows_ceiling(tmp_path / "ho.db", tmp_path / "c.db", after, count, txns=5)
    assert seconds > 0
    journal, docs, hwms = _read(tmp_path / "c.db")
    chosen = order[after : after + count]
    assert journal == chosen
    assert docs == sorted(f"{s}-{ln}-{q}" for s, ln, q in chosen)
    for store, lane in LANES:
        assert hwms[(store, lane)] == max(q for s, ln, q in chosen if (s, ln) == (store, lane))


def test_rows_ceiling_refuses_more_rows_than_the_run_committed(tmp_path: Path) -> None:
    _drained(tmp_path / "ho.db", per_lane=2)
    with pytest.raises(ValueError, match="holds 4 journal rows after rowid 2, not the 5"):
        rows_ceiling(tmp_path / "ho.db", tmp_path / "c.db", 2, 5, txns=1)
    with pytest.raises(ValueError, match="at least one row"):
        rows_ceiling(tmp_path / "ho.db", tmp_path / "c2.db", 2, 0, txns=1)


def test_lane_ceiling_inserts_one_lanes_rows_in_its_transactions(tmp_path: Path) -> None:
    _drained(tmp_path / "ho.db", per_lane=6)
    lane_ceiling(tmp_path / "ho.db", tmp_path / "c.db", LaneId("S1", "L2"), [(1, 4), (5, 6)])
    journal, docs, hwms = _read(tmp_path / "c.db")
    assert journal == [("S1", "L2", q) for q in range(1, 7)]
    assert docs == sorted(f"S1-L2-{q}" for q in range(1, 7))
    assert hwms == {("S1", "L2"): 6}
