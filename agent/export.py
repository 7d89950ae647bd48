"""`lanesync journal export`: the unacked backlog as a signed file for a USB stick.

When a store's link is down for longer than anyone wants to wait, a technician carries the
backlog to head office; `lanesync import FILE` there applies it exactly once, and the same
entries arriving later over MQTT are dropped as redeliveries (they carry the same
(store, lane, epoch, seq) and chain hashes). Exporting changes nothing in the journal: entries
leave the outbox only when head office acks them after the lane reconnects (invariant 2).

The file format (`lanesync-export/1`, HMAC-signed) is protocol.exportfile, which head office
reads with; this module reads the journal and writes the file.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from agent.journal.file import JournalFile
from protocol import exportfile
from protocol.chain import first_break, genesis
from protocol.errors import LanesyncError
from protocol.exportfile import MIN_KEY_BYTES
from protocol.identity import LaneId
from protocol.runtime.clock import now_ms


class ExportError(LanesyncError):
    """An export that cannot be written or read; the message says what is at fault."""


def load_key(path: Path) -> bytes:
    """A key file holds at least 32 random bytes as hex (`openssl rand -hex 32 > FILE`)."""
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        raise ExportError(
            f"{path}: no such key file; create one with `openssl rand -hex 32 > {path}` and "
            "give head office the same key for this store"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ExportError(f"{path}: cannot read the key file: {exc}") from None
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise ExportError(f"{path}: the key must be hex digits only") from None
    if len(key) < MIN_KEY_BYTES:
        raise ExportError(f"{path}: the key is {len(key)} bytes; at least {MIN_KEY_BYTES} needed")
    return key


@dataclass(slots=True)
class ExportResult:
    path: str
    store: str
    lane: str
    epoch: int
    first_seq: int | None
    last_seq: int | None
    entries: int
    bytes: int


def build(journal_path: Path, lane: LaneId, key: bytes) -> tuple[bytes, ExportResult]:
    """Read the unacked backlog read-only (agent running or not) and sign it."""
    try:
        db = JournalFile(journal_path)
    except FileNotFoundError as exc:
        raise ExportError(str(exc)) from None
    with db:
        meta = db.meta()
        if (meta.get("store"), meta.get("lane")) != (lane.store, lane.lane):
            raise ExportError(
                f"{journal_path} belongs to lane {meta.get('store')}/{meta.get('lane')}, not {lane}"
            )
        epoch = int(meta["epoch"])
        acked, _ = db.acked()
        entries = list(db.entries(acked))
        if acked == 0:
            prev = genesis(lane, epoch)
        else:
            held = db.entry_hash(acked)
            if held is None:
                raise ExportError(f"entry {acked} (the acked mark) is missing from {journal_path}")
            prev = held
    broken = first_break(prev, entries)
    if broken is not None:
        raise ExportError(
            f"hash chain broken at seq {broken[0]} in {journal_path}; run `lanesync journal "
            "verify` and call support before carrying this journal anywhere"
        )
    data = exportfile.encode(lane, epoch, acked, prev, entries, now_ms(), key)
    res = ExportResult(
        "",
        lane.store,
        lane.lane,
        epoch,
        entries[0].seq if entries else None,
        entries[-1].seq if entries else None,
        len(entries),
        len(data),
    )
    return data, res


def write(out: Path, data: bytes) -> None:
    """Write atomically and fsync: a USB stick pulled too early leaves no half file behind."""
    tmp = out.with_name(out.name + ".part")
    try:
        with tmp.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(out)
        fd = os.open(out.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ExportError(f"cannot write {out}: {exc}") from None


def export(journal_path: Path, lane: LaneId, key: bytes, out: Path) -> ExportResult:
    data, res = build(journal_path, lane, key)
    write(out, data)
    res.path = str(out)
    return res


def default_name(lane: LaneId, epoch: int | None = None) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return f"lanesync-{lane.store}-{lane.lane}-{stamp}.export"
