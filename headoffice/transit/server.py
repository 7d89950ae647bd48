"""`transit_lookup` and `transit_accept`: what head office answers a receiving lane.

Both run on the ingest writer thread (headoffice.ingest handlers), inside the transaction of the
group they arrived in; the reply is published only after that transaction is committed. So an
accept that was answered is durable, and one that was not committed was never answered.

- lookup {sscc | transit_no, [source_store], mode: "receive"}: the transit's details, or a
  refusal. Exact keys only: a lane can never list or search pending transits (fraud rule).
- accept {request_id, sscc | transit_no, [source_store], [staff], [deadline_ms]}: exactly once
  by a conditional UPDATE ... WHERE status = 'in_transit'. A successful request id is recorded,
  so a retry of the same request gets the original success back (`replayed: true`); another
  request for the same parcel gets `already_received` with where and when.

Refusals carry `result.code`:
  unknown          no such transit at head office
  not_yet_known    unknown, and some lane still has journal entries head office has not got
                   (the sending lane may be offline): try again later. Head office cannot tell
                   "never existed" from "not replicated yet", so it says which lanes lag.
  already_received with result.received {store, lane, by, at}
  other_store      meant for result.dest_store
  cancelled        with result.cancelled {at, by}
  ambiguous        a transit number used by several source stores: scan the SSCC or name one
  expired          the accept arrived after the lane's deadline (it queued at the broker while
                   head office was down): nothing done, the lane already told the POS it failed
  bad_request      an argument is missing or malformed
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any

from headoffice.db import Database
from headoffice.db.sql import Sql
from headoffice.ingest import RequestHandler
from headoffice.transit import projection as p
from protocol import requests as req_codes
from protocol.errors import LanesyncError
from protocol.messages import UUID_RE, Reply, Request

log = logging.getLogger(__name__)

SSCC_RE = re.compile(r"[0-9]{18}")
CODE_RE = re.compile(r"[A-Za-z0-9_.\-/]{1,32}")
STORE_RE = re.compile(r"[A-Za-z0-9_-]{1,32}")
# An accept older than its deadline by more than this is refused as expired. Generous, because
# lane and head-office clocks differ; the lane also heals a late accept (agent.transit).
EXPIRED_GRACE_MS = 30_000
_CRASH_AFTER_ACCEPT = os.environ.get("LANESYNC_FAULT_TRANSIT_CRASH_AFTER_ACCEPT") == "1"


class Refusal(LanesyncError):
    """A transit request refused with the contract's refusal `code`; `extra` goes in the reply."""

    def __init__(self, code: str, reason: str, **extra: Any) -> None:
        super().__init__(reason, code=code)
        self.reason, self.extra = reason, extra


def _key(args: dict[str, Any]) -> tuple[str | None, str | None, str | None]:
    sscc, no, source = args.get("sscc"), args.get("transit_no"), args.get("source_store")
    if sscc is not None and (type(sscc) is not str or not SSCC_RE.fullmatch(sscc)):
        raise Refusal(req_codes.BAD_REQUEST, "sscc must be 18 digits", field="sscc")
    if no is not None and (type(no) is not str or not CODE_RE.fullmatch(no)):
        raise Refusal(
            req_codes.BAD_REQUEST, "transit_no must be 1-32 letters or digits", field="transit_no"
        )
    if source is not None and (type(source) is not str or not STORE_RE.fullmatch(source)):
        raise Refusal(
            req_codes.BAD_REQUEST, "source_store must be a store id", field="source_store"
        )
    if sscc is None and no is None:
        raise Refusal(req_codes.BAD_REQUEST, "name the transit: sscc or transit_no", field="sscc")
    return sscc, no, source


def _lagging(db: Sql) -> list[str]:
    """Lanes that told head office they hold entries it has not applied yet."""
    return [
        f"{s}/{ln}"
        for s, ln in db.fetchall(
            "SELECT store, lane FROM lanes WHERE lane_last_seq > hwm "
            "UNION SELECT store, lane FROM lane_status WHERE backlog > 0 LIMIT 10"
        )
    ]


def resolve(db: Sql, args: dict[str, Any], store: str) -> dict[str, Any]:
    """The one transit the request names, checked for receiving at `store`; or a Refusal."""
    sscc, no, source = _key(args)
    found = p.find(db, sscc=sscc, transit_no=None if sscc else no, source_store=source)
    what = f"SSCC {sscc}" if sscc else f"transit number {no}"
    if not found:
        lag = _lagging(db)
        if lag:
            raise Refusal(
                req_codes.NOT_YET_KNOWN,
                f"{what} is not yet known at head office; lanes {', '.join(lag)} still have "
                "journal entries to send (the sending lane may be offline): try again later",
                lagging=lag,
            )
        raise Refusal(
            req_codes.UNKNOWN,
            f"{what} is not known at head office: check the number on the paperwork (if the "
            "parcel was sent moments ago, try again shortly)",
        )
    if len(found) > 1:
        mine = [t for t in found if t["dest_store"] == store]
        if len(mine) == 1:
            found = mine
        elif mine:
            raise Refusal(
                req_codes.AMBIGUOUS,
                f"{len(mine)} transits numbered {no} are meant for {store}: scan the SSCC or "
                "name the source store",
                sources=sorted({t["source_store"] for t in mine}),
            )
    t = found[0]
    if t["status"] == "cancelled":
        raise Refusal(
            req_codes.CANCELLED,
            f"transit {t['transit_no']} was cancelled and cannot be received",
            cancelled={"at": t["cancelled_at"], "by": t["cancelled_by"]},
        )
    if t["dest_store"] != store:
        raise Refusal(
            req_codes.OTHER_STORE,
            f"transit {t['transit_no']} is meant for store {t['dest_store']}, not {store}",
            dest_store=t["dest_store"],
        )
    if t["status"] == "received":
        raise Refusal(
            req_codes.ALREADY_RECEIVED,
            f"transit {t['transit_no']} was already received at {t['received_store']}/"
            f"{t['received_lane']}; it cannot be received a second time",
            received={
                "store": t["received_store"],
                "lane": t["received_lane"],
                "by": t["received_by"],
                "at": t["received_at"],
                "request_id": t["accept_request"],
            },
            transit=p.details(db, t),
        )
    return t


def _refused(req: Request, r: Refusal) -> Reply:
    return Reply(req.lane, req.corr, False, {req_codes.CODE_KEY: r.code, **r.extra}, r.reason)


def lookup(database: Database, req: Request, now_ms: int) -> Reply:
    try:
        return _lookup(database, req)
    except Refusal as r:
        return _refused(req, r)


def _lookup(database: Database, req: Request) -> Reply:
    if req.args.get("mode") != "receive":
        raise Refusal(
            req_codes.BAD_REQUEST, "mode must be 'receive' (lanes do not search)", field="mode"
        )
    db = database.sql
    t = resolve(db, req.args, req.lane.store)
    return Reply(req.lane, req.corr, True, {"transit": p.details(db, t)})


def accept(database: Database, req: Request, now_ms: int) -> Reply:
    try:
        reply = _accept(database, req, now_ms)
    except Refusal as r:
        return _refused(req, r)
    if _CRASH_AFTER_ACCEPT and not reply.result.get("replayed"):
        # Fault injection for the end-to-end test: the accept is committed, then head office
        # dies as under kill -9 before the reply leaves.
        database.commit()
        log.critical("fault injection: exiting after committing accept %s", req.args)
        os._exit(137)
    return reply


def _accept(database: Database, req: Request, now_ms: int) -> Reply:
    db = database.sql
    rid = req.args.get("request_id")
    if type(rid) is not str or not UUID_RE.fullmatch(rid):
        raise Refusal(
            req_codes.BAD_REQUEST, "request_id must be a lowercase UUID", field="request_id"
        )
    staff = req.args.get("staff")
    if staff is not None and (type(staff) is not str or not CODE_RE.fullmatch(staff)):
        raise Refusal(req_codes.BAD_REQUEST, "staff must be an operator id", field="staff")
    done = db.fetchone(
        "SELECT store, lane, txn_id FROM transit_requests WHERE request_id = ?", (rid,)
    )
    if done is not None:
        if (done[0], done[1]) != (req.lane.store, req.lane.lane):
            raise Refusal(
                req_codes.BAD_REQUEST, "request_id was used by another lane", field="request_id"
            )
        t = p.by_txn(db, done[2])
        assert t is not None
        return Reply(req.lane, req.corr, True, {"transit": p.details(db, t), "replayed": True})
    deadline = req.args.get("deadline_ms")
    if type(deadline) is int and now_ms > deadline + EXPIRED_GRACE_MS:
        raise Refusal(
            req_codes.EXPIRED, "the accept arrived after the lane stopped waiting; nothing was done"
        )
    db.begin()
    t = resolve(db, req.args, req.lane.store)
    if not p.accept(db, t["txn_id"], req.lane, staff, rid, now_ms):
        # Another ingest worker (PostgreSQL) accepted it between our read and our conditional
        # UPDATE, which waited for its commit and then found the parcel no longer in transit.
        return _lost_race(db, req, rid, t)
    db.execute(
        "INSERT INTO transit_requests (request_id, store, lane, txn_id, at) VALUES (?, ?, ?, ?, ?)",
        (rid, req.lane.store, req.lane.lane, t["txn_id"], now_ms),
    )
    t = p.by_txn(db, t["txn_id"])
    assert t is not None
    log.info("transit %s received by %s (request %s)", t["transit_no"], req.lane, rid)
    return Reply(req.lane, req.corr, True, {"transit": p.details(db, t), "replayed": False})


def _lost_race(db: Sql, req: Request, rid: str, t: dict[str, Any]) -> Reply:
    """The answer when the conditional UPDATE found the parcel taken: if it was this very
    request (redelivered to another worker), the original success; else why not."""
    now = p.by_txn(db, t["txn_id"])
    assert now is not None
    if now["accept_request"] == rid and (now["received_store"], now["received_lane"]) == (
        req.lane.store,
        req.lane.lane,
    ):
        return Reply(req.lane, req.corr, True, {"transit": p.details(db, now), "replayed": True})
    resolve(db, {"sscc": now["sscc"], "transit_no": now["transit_no"]}, req.lane.store)
    raise Refusal(req_codes.ALREADY_RECEIVED, f"transit {now['transit_no']} was already received")


def request_handlers() -> dict[str, RequestHandler]:
    return {req_codes.OP_TRANSIT_LOOKUP: lookup, req_codes.OP_TRANSIT_ACCEPT: accept}
