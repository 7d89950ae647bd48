"""Reading held entries for people and metrics: listing, one entry in full, counts.

Read-only (headoffice.db.open_readonly); changing an entry is the store's work
(Database.release_held, Database.void_held). A body is shown decoded with card numbers masked, and
an entry held for a card number shows only the masked copy head office kept.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from headoffice.db.base import HELD_RECORD_COLUMNS, HeldRecord
from headoffice.db.sql import Sql
from protocol import pan
from protocol.codec import unpack
from protocol.errors import LanesyncError

STATES = ("held", "released", "voided")
MAX_SHOWN_DEPTH = 32  # deeper parts of a body are shown as "..." (a hostile body nests 990)


class HeldError(LanesyncError):
    """The held entries cannot be read (no such table yet, no such entry)."""

    code = "held"


def has_held_table(db: Sql) -> bool:
    if db.dialect == "postgres":
        row = db.fetchone("SELECT to_regclass('held') IS NOT NULL")
    else:
        row = db.fetchone(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'held'"
        )
    return bool(row and row[0])


def _require_table(db: Sql) -> None:
    if not has_held_table(db):
        raise HeldError(
            "this head-office database has no held entries table yet (schema older than 4); "
            "start head office once to migrate it"
        )


def list_held(
    db: Sql,
    *,
    state: str | None = "held",
    store: str | None = None,
    lane: str | None = None,
    code: str | None = None,
    limit: int = 200,
) -> list[HeldRecord]:
    """Held entries, oldest first (in lane order), filtered; `state` None: every state."""
    _require_table(db)
    where, args = [], []
    for column, value in (("state", state), ("store", store), ("lane", lane), ("code", code)):
        if value is not None:
            where.append(f"{column} = ?")
            args.append(value)
    cond = f"WHERE {' AND '.join(where)} " if where else ""
    rows = db.fetchall(
        f"SELECT {HELD_RECORD_COLUMNS} FROM held {cond}"  # noqa: S608 - constants only
        "ORDER BY store, lane, epoch, seq LIMIT ?",
        (*args, limit),
    )
    return [HeldRecord.of(r) for r in rows]


def get_held(db: Sql, held_id: int) -> HeldRecord:
    _require_table(db)
    row = db.fetchone(
        f"SELECT {HELD_RECORD_COLUMNS} FROM held WHERE id = ?",  # noqa: S608 - constants only
        (held_id,),
    )
    if row is None:
        raise HeldError(f"no held entry {held_id}")
    return HeldRecord.of(row)


def summary(db: Sql) -> dict[str, Any]:
    """Counts by state and by code of the open ones, and the release/void counters."""
    if not has_held_table(db):
        return {"by_state": {}, "open_by_code": {}, "released": 0, "voided": 0}
    by_state = {
        str(s): int(n) for s, n in db.fetchall("SELECT state, count(*) FROM held GROUP BY 1")
    }
    by_code = {
        str(c): int(n)
        for c, n in db.fetchall("SELECT code, count(*) FROM held WHERE state = 'held' GROUP BY 1")
    }
    counters = {
        str(k): int(v)
        for k, v in db.fetchall(
            "SELECT name, value FROM counters WHERE name IN ('entries_released', 'entries_voided')"
        )
    }
    return {
        "by_state": by_state,
        "open_by_code": by_code,
        "released": counters.get("entries_released", 0),
        "voided": counters.get("entries_voided", 0),
    }


def when(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


def as_dict(rec: HeldRecord, *, body: bool = False) -> dict[str, Any]:
    """A held entry for JSON output; with `body` its document decoded (card numbers masked)."""
    out: dict[str, Any] = {
        "id": rec.id,
        "store": rec.store,
        "lane": rec.lane,
        "epoch": rec.epoch,
        "seq": rec.seq,
        "kind": rec.kind,
        "txn_id": rec.txn_id,
        "ts": rec.ts,
        "code": rec.code,
        "reason": rec.reason,
        "state": rec.state,
        "held_at": rec.held_at,
        "held_at_utc": when(rec.held_at),
        "closed_at": rec.closed_at,
        "closed_at_utc": when(rec.closed_at),
        "closed_by": rec.closed_by,
        "close_reason": rec.close_reason,
        "releasable": rec.state == "held" and rec.body is not None,
    }
    if body:
        out |= {
            "hash": rec.hash.hex(),
            "body_len": rec.body_len,
            "body_sha256": rec.body_sha256.hex(),
            "body_is_masked_copy": rec.body is None,
            "body": shown_body(rec),
        }
    return out


def shown_body(rec: HeldRecord) -> Any:
    """The body decoded for a person: the masked copy of a card-number entry, card numbers
    masked in any other (the screen passed it, but a person's terminal is no place to
    find out otherwise). Bytes that are not msgpack are shown as hex."""
    raw = rec.body if rec.body is not None else rec.body_masked or b""
    try:
        value = _jsonable(unpack(raw), 0)
    except Exception:  # noqa: BLE001 - whatever the bytes are, show them
        return {"undecodable_hex": pan.mask_text(raw.hex())}
    return value


def _jsonable(v: Any, depth: int) -> Any:
    if depth >= MAX_SHOWN_DEPTH:
        return "..."
    if isinstance(v, dict):
        return {pan.mask_text(str(k)): _jsonable(x, depth + 1) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x, depth + 1) for x in v]
    if isinstance(v, bytes):
        return {"hex": pan.mask_text(v.hex())}
    if isinstance(v, str):
        return pan.mask_text(v)
    if isinstance(v, int) and not isinstance(v, bool):
        masked = pan.mask_text(str(v))
        return v if masked == str(v) else masked
    if v is None or isinstance(v, bool | float):
        return v
    return pan.mask_text(repr(v))
