"""Compare what a lane confirmed with what head office holds: lost, duplicated, order kept.

Reads the lane's journal file and the head-office database read-only. Used by the demo, the
benchmarks and the end-to-end tests, so they all judge "exactly once" the same way.
"""

from __future__ import annotations

import sqlite3
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from agent.journal.file import JournalFile
from protocol.identity import LaneId


@dataclass(frozen=True, slots=True)
class LaneReport:
    lane: str
    confirmed: int  # entries in the lane's journal (every document the lane confirmed)
    at_head_office: int  # documents head office applied for the lane
    lost: int  # confirmed but not applied at head office
    duplicated: int  # applied more than once
    order_kept: bool  # head office's copy has seqs 1..n in the lane's txn order

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _ro(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def reconcile(journal_file: Path, ho_db: Path, lane: LaneId) -> LaneReport:
    with JournalFile(journal_file) as j:
        epoch = int(j.meta()["epoch"])
        lane_txns = [e.txn_id for e in j.entries()]
    with _ro(ho_db) as h:
        ho_rows = h.execute(
            "SELECT seq, txn_id FROM journal WHERE store = ? AND lane = ? AND epoch = ? "
            "ORDER BY seq",
            (lane.store, lane.lane, epoch),
        ).fetchall()
        applied = [
            r[0]
            for r in h.execute(
                "SELECT txn_id FROM documents WHERE store = ? AND lane = ?", (lane.store, lane.lane)
            )
        ]
        applied_twice = int(
            h.execute(
                "SELECT count(*) FROM (SELECT txn_id FROM journal WHERE applied = 1 "
                "AND store = ? AND lane = ? GROUP BY txn_id HAVING count(*) > 1)",
                (lane.store, lane.lane),
            ).fetchone()[0]
        )
    held = set(applied)
    order_kept = [s for s, _ in ho_rows] == list(range(1, len(ho_rows) + 1)) and [
        t for _, t in ho_rows
    ] == lane_txns[: len(ho_rows)]
    return LaneReport(
        lane=str(lane),
        confirmed=len(lane_txns),
        at_head_office=len(held),
        lost=len(set(lane_txns) - held),
        duplicated=len(applied) - len(held) + applied_twice,
        order_kept=order_kept,
    )
