"""The `sscc_lease` request: the next block of SSCC serial references for one lane.

Args `{count, epoch, max?}` (count 1..MAX_BLOCK serials; epoch the lane's journal epoch as
[high, low] 32-bit halves, kept for the record; max the highest serial the lane's SSCC scheme
can print) -> result `{first, last}`. Serials come from one chain-wide counter (the greatest
`last` in `sscc_leases`), so no two blocks ever overlap, whichever store, lane, epoch or box
asks: a lane whose journal was recreated, or a box replaced with an empty disk, asks again
and gets serials nobody has had.
The block is recorded (store, lane, epoch, first, last, request id, at) in the transaction of
ingest's group and the reply is sent only after that commits. A retried request (same
correlation id) gets the block it was given; a lane that gave up waiting and asks anew gets
a new block and the first one is simply never used (a gap, never a repeat).

Refusals (`ok: false`, `result.code`): `bad_request` (args that do not fit, `field` named),
`exhausted` (the block would pass `max`: the chain has used the lane's SSCC range up).
Concurrency: SQLite has one writer; PostgreSQL workers take a transaction-scoped advisory
lock before reading the counter, so two workers never hand out the same block.
"""

from __future__ import annotations

import logging
from typing import Any

from headoffice.db import Database
from headoffice.ingest import RequestHandler
from protocol.errors import LanesyncError
from protocol.messages import U63, Reply, Request
from protocol.requests import BAD_REQUEST, CODE_KEY, EXHAUSTED, OP_SSCC_LEASE

log = logging.getLogger(__name__)

MAX_BLOCK = 10_000
_LOCK_KEY = 0x5C_CC_1EA5E  # pg_advisory_xact_lock key of the serial counter


class LeaseArgs:
    """The checked args of one request."""

    def __init__(self, args: dict[str, Any]) -> None:
        unknown = set(args) - {"count", "epoch", "max"}
        if unknown:
            raise _Bad(sorted(unknown)[0], "unknown field")
        self.count = _int(args, "count", 1, MAX_BLOCK)
        self.epoch = _epoch(args)
        self.max = _int(args, "max", 1, U63) if "max" in args else U63


class _Bad(LanesyncError, ValueError):
    """A request argument out of its range; refused as `bad_request` naming the field."""

    code = BAD_REQUEST

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field


def _int(args: dict[str, Any], key: str, lo: int, hi: int) -> int:
    v = args.get(key)
    if type(v) is not int or not lo <= v <= hi:
        raise _Bad(key, f"must be an integer {lo}..{hi}")
    return v


def _epoch(args: dict[str, Any]) -> int:
    """The lane's epoch, sent as [high, low] 32-bit halves: request args are screened for card
    numbers and a 63-bit integer's 19 digits pass Luhn one time in ten."""
    v = args.get("epoch")
    if (
        type(v) is not list
        or len(v) != 2
        or any(type(h) is not int or not 0 <= h <= 0xFFFFFFFF for h in v)
        or v[0] > 0x7FFFFFFF
    ):
        raise _Bad("epoch", "must be [high, low]: the epoch's two 32-bit halves")
    return int(v[0]) << 32 | int(v[1])


def _refused(req: Request, code: str, reason: str, field: str | None = None) -> Reply:
    result: dict[str, Any] = {CODE_KEY: code}
    if field is not None:
        result["field"] = field
    return Reply(req.lane, req.corr, False, result, reason)


def lease(database: Database, req: Request, now_ms: int) -> Reply:
    try:
        args = LeaseArgs(req.args)
    except _Bad as exc:
        return _refused(req, BAD_REQUEST, str(exc), exc.field)
    sql = database.sql
    before = sql.fetchone(
        "SELECT first, last, store, lane FROM sscc_leases WHERE request_id = ?", (req.corr,)
    )
    if before is not None:
        if (before[2], before[3]) != (req.lane.store, req.lane.lane):
            return _refused(req, BAD_REQUEST, "request id already used by another lane", "corr")
        return Reply(req.lane, req.corr, True, {"first": int(before[0]), "last": int(before[1])})
    if sql.dialect == "postgres":
        sql.fetchone("SELECT pg_advisory_xact_lock(?)", (_LOCK_KEY,))
    top = sql.fetchone("SELECT max(last) FROM sscc_leases")
    first = (int(top[0]) if top and top[0] is not None else 0) + 1
    last = first + args.count - 1
    if last > args.max:
        log.error(
            "head office: SSCC serials exhausted for %s: next block %d..%d passes %d",
            req.lane,
            first,
            last,
            args.max,
        )
        return _refused(
            req,
            EXHAUSTED,
            f"the chain's SSCC serials are used up to {first - 1}; this lane's scheme ends at "
            f"{args.max} (a shorter sscc_lane_prefix or a new GS1 company prefix gives room)",
        )
    sql.execute(
        "INSERT INTO sscc_leases (first, last, store, lane, epoch, request_id, at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (first, last, req.lane.store, req.lane.lane, args.epoch, req.corr, now_ms),
    )
    log.info(
        "head office: SSCC serials %d..%d leased to %s (epoch %d)",
        first,
        last,
        req.lane,
        args.epoch,
    )
    return Reply(req.lane, req.corr, True, {"first": first, "last": last})


def leases(database: Database, lane_store: str | None = None) -> list[dict[str, Any]]:
    """Every block on record (for reports and tests), in serial order."""
    sql = database.sql
    cols = "first, last, store, lane, epoch, request_id, at"
    if lane_store is None:
        return sql.fetchdicts(f"SELECT {cols} FROM sscc_leases ORDER BY first")  # noqa: S608
    return sql.fetchdicts(
        f"SELECT {cols} FROM sscc_leases WHERE store = ? ORDER BY first",  # noqa: S608
        (lane_store,),
    )


def request_handlers() -> dict[str, RequestHandler]:
    return {OP_SSCC_LEASE: lease}
