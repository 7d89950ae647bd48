"""`lanesync import FILE`: apply a lane's exported backlog (USB stick) exactly once.

The file (protocol.exportfile, written by agent/export.py) is checked in this order, and
refused with the reason if any check fails: its format; the HMAC-SHA256 over its first line
with the store's key (`[import] key_dir/<store>.key`); the hash chain of its entries from its
`prev_hash`. Then it goes through the store's `apply_batch`, the very code path MQTT ingest
uses, in one transaction: entries head office already holds count as redelivered, a document
txn_id already applied is not applied again, an entry head office cannot apply is held at its
seq (as ingest holds it), and a later MQTT delivery of the same entries is dropped the same
way. If head office holds less than the file's start (a gap), nothing is
applied and the message says which seqs are missing. An epoch retired when its till box was
replaced (headoffice/retire.py) still imports, and stays retired: the lane's current epoch is
the new box's.

Safe while the head-office daemon runs: SQLite serialises the two writers and the primary keys
make a second apply impossible; the daemon's cached lane position is reloaded after the one
group that collides with the import (lanes resend it). On PostgreSQL the import locks the
lane's row like an ingest worker does, so it simply waits for (or is waited for by) the worker.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from headoffice.db import Database, Target, open_target
from headoffice.db.base import DatabaseError, check_batch
from headoffice.projections import PROJECTIONS
from protocol import exportfile
from protocol.chain import first_break
from protocol.errors import LanesyncError
from protocol.identity import LaneId
from protocol.messages import Entry, JournalBatch
from protocol.runtime import clock

MAX_BATCH = 1000


class ImportFailed(LanesyncError):
    """An export file that cannot be applied; nothing of it was applied."""


@dataclass(slots=True)
class ImportResult:
    file: str
    store: str
    lane: str
    epoch: int
    entries: int
    applied: int
    redelivered: int
    duplicate_txn: int
    hwm: int
    held: int = 0  # entries held at their seq (headoffice.db.base), as MQTT ingest holds them

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_store_key(key_dir: Path, store: str) -> bytes:
    path = key_dir / f"{store}.key"
    try:
        key = bytes.fromhex(path.read_text(encoding="ascii").strip())
    except FileNotFoundError:
        raise ImportFailed(
            f"{path}: no key for store {store}; put the key that store signs exports with "
            "there (hex, as in the store's [export] key_file)"
        ) from None
    except (OSError, ValueError) as exc:
        raise ImportFailed(f"{path}: not a usable hex key: {exc}") from None
    return key


def read(path: Path, key_dir: Path) -> tuple[LaneId, int, bytes, list[Entry]]:
    """Parse and verify a file (protocol.exportfile): signature first, then the hash chain.
    Applies nothing."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ImportFailed(f"{path}: cannot read: {exc}") from None
    try:
        f = exportfile.decode(raw, lambda lane: load_store_key(key_dir, lane.store))
    except exportfile.SignatureMismatch as exc:
        raise ImportFailed(f"{path}: {exc}. Nothing was applied") from None
    except exportfile.ExportFileError as exc:
        raise ImportFailed(f"{path}: {exc}") from None
    broken = first_break(f.prev_hash, f.entries)
    if broken is not None:
        raise ImportFailed(f"{path}: hash chain broken at seq {broken[0]}; nothing was applied")
    return f.lane, f.epoch, f.prev_hash, f.entries


def apply(path: Path, database: Target, key_dir: Path, now_ms: int | None = None) -> ImportResult:
    """Verify and apply one export file in one transaction (database: a SQLite file or a
    postgresql:// URL, headoffice.db.target)."""
    lane, epoch, prev, entries = read(path, key_dir)
    now_ms = clock.now_ms() if now_ms is None else now_ms
    res = ImportResult(str(path), lane.store, lane.lane, epoch, len(entries), 0, 0, 0, 0)
    store = open_target(database, projections=PROJECTIONS, accepts_retired=True)
    try:
        store.lock_lanes([(lane, epoch)])
        _apply_entries(store, res, path, lane, prev, entries, now_ms)
        store.commit()
    except BaseException:
        store.rollback()
        raise
    finally:
        store.close()
    return res


def _apply_entries(
    store: Database,
    res: ImportResult,
    path: Path,
    lane: LaneId,
    prev: bytes,
    entries: list[Entry],
    now_ms: int,
) -> None:
    epoch = res.epoch
    state = store.lane_state(lane, epoch)
    res.hwm = state.hwm if state else 0
    if entries and entries[0].seq > res.hwm + 1:
        raise ImportFailed(
            f"{path}: head office holds lane {lane} epoch {epoch} up to seq {res.hwm}, the "
            f"file starts at seq {entries[0].seq}: seqs {res.hwm + 1}..{entries[0].seq - 1} "
            "are missing. Import the earlier export first, or let the lane reconnect"
        )
    for i in range(0, len(entries), MAX_BATCH):
        chunk = entries[i : i + MAX_BATCH]
        link = prev if i == 0 else entries[i - 1].hash
        r = store.apply_batch(
            check_batch(JournalBatch(lane, epoch, link, chunk), store.projections), now_ms
        )
        if r.resend_from is not None or r.quarantined:
            raise ImportFailed(f"{path}: refused at seq {chunk[0].seq}: {r.reason}")
        res.applied += r.applied
        res.redelivered += r.redelivered
        res.duplicate_txn += r.duplicate_txn
        res.held += r.held
        res.hwm = r.hwm


__all__ = ["DatabaseError", "ImportFailed", "ImportResult", "apply", "read"]
