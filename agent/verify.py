"""Offline checks of a journal file: SQLite integrity and the hash chain (invariant 8).

Reads the file through agent.journal.file.JournalFile (read-only, stdlib sqlite3), so it works
while the agent runs (WAL) and when it is stopped, without touching the agent's writer.
"""

from __future__ import annotations

import sqlite3
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from agent.journal.file import JournalFile
from protocol.chain import entry_hash, genesis
from protocol.identity import LaneId


@dataclass(slots=True)
class VerifyReport:
    path: str
    ok: bool
    store: str | None = None
    lane: str | None = None
    epoch: int | None = None
    entries: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    acked_seq: int | None = None
    integrity: str = "not checked"
    problem: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def verify(path: str | Path) -> VerifyReport:
    rep = VerifyReport(str(path), ok=False)
    try:
        db = JournalFile(path)
    except (FileNotFoundError, sqlite3.Error) as exc:
        rep.problem = str(exc)
        return rep
    try:
        rep.integrity = db.integrity()
        if rep.integrity != "ok":
            rep.problem = f"SQLite integrity check failed: {rep.integrity}"
            return rep
        meta = db.meta()
        rep.store, rep.lane, rep.epoch = meta.get("store"), meta.get("lane"), int(meta["epoch"])
        if rep.store is None or rep.lane is None:
            rep.ok = True  # a journal never opened by an agent holds no entries
            return rep
        rep.acked_seq, _ = db.acked()
        rows = db.entries()
        prev: bytes | None = None
        expected_seq: int | None = None
        for seq, kind, txn_id, ts, body, got in rows:
            if prev is None:
                rep.first_seq = seq
                # Pruned journals (retention) start later: trust the first kept entry's hash.
                prev = genesis(LaneId(rep.store, rep.lane), rep.epoch) if seq == 1 else got
                expected_seq = seq
                if seq != 1:
                    rep.entries += 1
                    rep.last_seq = expected_seq = seq
                    expected_seq += 1
                    continue
            if seq != expected_seq:
                rep.problem = f"seq {expected_seq} is missing (next entry is {seq})"
                return rep
            want = entry_hash(prev, seq, kind, txn_id, ts, body)
            if want != got:
                rep.problem = (
                    f"hash chain broken at seq {seq} (txn {txn_id}): the entry or one before "
                    "it was altered"
                )
                return rep
            prev = want
            rep.entries += 1
            rep.last_seq = seq
            expected_seq = seq + 1
        rep.ok = True
        return rep
    except sqlite3.Error as exc:
        rep.problem = f"cannot read journal: {exc}"
        return rep
    finally:
        db.close()
