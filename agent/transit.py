"""Receiving a transit parcel on a lane: ask head office, accept exactly once, journal it.

The seed's Transit Receive Prompt Screen: an SSCC scan (or a keyed transit number) looks the
parcel up at head office (`transit_lookup`, mode receive); the POS shows it and the cashier
accepts (`transit_accept`). Transits live at head office only, so both need it reachable.

- Nothing entered (OK on an empty prompt): nothing happens (204).
- Lanes never list or search pending transits (fraud rule): head office answers exact keys only.
- Each lookup opens a receive session whose id (a UUIDv7) is the accept request id AND the
  txn_id of the `transit_inventory_accept` document the lane journals. So a retried accept
  (the answer was lost, head office crashed after its commit) gets head office's original
  success back and journals the same document once; the POS is answered only once it is
  durable. That document does not move stock at head office a second time: it is linked.
- Head office unreachable or silent: the accept fails within `transit.receive_timeout_s` with a
  clear error and nothing is journaled. If head office did commit it, retrying the same session
  completes it; a new scan at this lane finds it "already received here" and journals the
  missing record (heal), so nothing stays half done.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agent.documents.envelope import DocContext
from agent.documents.sscc import check_sscc
from agent.journal.journal import new_txn_id
from agent.open_docs.service import DocumentService
from agent.open_docs.store import LaneStore
from agent.replicator import Replicator, RequestTimeout
from hardware.events import ScanEvent
from protocol import requests, screen
from protocol.errors import LanesyncError, ProtocolError
from protocol.messages import REQUEST_FIELDS
from protocol.runtime.clock import now_ms

log = logging.getLogger(__name__)

MAX_SESSIONS = 256
SESSION_TTL_S = 4 * 3600.0


class TransitError(LanesyncError):
    """A receive that did not happen: head office's refusal code (headoffice.transit.server)
    or the lane's own (unreachable, no_session), the reason for the POS, and what head office
    sent with it; agent.apiedge decides the HTTP status."""

    code = "refused"

    def __init__(self, code: str, reason: str, **extra: Any) -> None:
        super().__init__(reason, code=code)
        self.reason, self.extra = reason, extra


@dataclass(frozen=True, slots=True)
class TransitEvent:
    """Pushed on the event stream (`event: transit`) when an SSCC scan was looked up;
    `failure` is why the lookup failed (agent.api adds its problem details to the event)."""

    data: dict[str, Any]
    failure: TransitError | None = None

    def to_json(self) -> dict[str, Any]:
        return {**self.data, "event": "transit"}


@dataclass(slots=True)
class Session:
    id: str
    transit: dict[str, Any]
    opened: float = field(default_factory=time.monotonic)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    accepted: dict[str, Any] | None = None


def normalise_sscc(raw: str) -> str:
    s = "".join(raw.split())
    if s.startswith("(00)"):
        s = s[4:]
    elif len(s) == 20 and s.startswith("00"):
        s = s[2:]
    return check_sscc(s, "$.sscc")


class TransitReceiver:
    def __init__(
        self,
        ctx: DocContext,
        replicator: Replicator | None,
        service: DocumentService,
        store: LaneStore,
        publish: Callable[[TransitEvent], None],
    ) -> None:
        self.ctx = ctx
        self.lane = ctx.lane
        self.timeout = ctx.transit.receive_timeout_s
        self.replicator = replicator
        self.service = service
        self.store = store
        self.publish = publish
        self.sessions: OrderedDict[str, Session] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)

    # --- talking to head office -----------------------------------------------------------

    async def _ask(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        if self.replicator is None:
            raise TransitError("unreachable", "head office is unreachable (no replicator)")
        try:
            reply = await self.replicator.request(op, args, self.timeout)
        except RequestTimeout as exc:
            raise TransitError(
                "unreachable",
                f"head office did not answer within {self.timeout:g}s ({exc}); the transit was "
                "NOT received and nothing was recorded: try again",
            ) from None
        if not reply.ok:
            extra = dict(reply.result)
            code = str(extra.pop("code", "refused"))
            raise TransitError(code, reply.error or code, **extra)
        return reply.result

    # --- the flow -------------------------------------------------------------------------

    async def receive(self, req: Any) -> Session | None:
        """Look a transit up for receiving; None when nothing was entered."""
        if type(req) is not dict:
            raise ProtocolError("send {sscc} or {transit_no}", "$")
        screen.check(dict.fromkeys(req), "$")  # the keys, before a refusal names one
        unknown = set(req) - {"sscc", "transit_no", "source_store"}
        if unknown:
            raise ProtocolError(
                "unknown key (lanes cannot search transits)", f"$.{sorted(unknown)[0]}"
            )
        args: dict[str, Any] = {"mode": "receive"}
        for key in ("sscc", "transit_no", "source_store"):
            v = req.get(key)
            if v is None:
                continue
            if type(v) is not str:
                raise ProtocolError("must be a string", f"$.{key}")
            if v.strip():
                args[key] = v.strip()
        if "sscc" not in args and "transit_no" not in args:
            return None  # OK pressed on an empty prompt: the screen closes, nothing happens
        if "sscc" in args:
            args["sscc"] = normalise_sscc(args["sscc"])
        # What the cashier keyed goes to head office: screened as the request will be (no card
        # number; refused by field, never quoted) before it is sent.
        screen.check(args, "$", REQUEST_FIELDS)
        try:
            result = await self._ask(requests.OP_TRANSIT_LOOKUP, args)
        except TransitError as exc:
            await self._heal(exc)
            raise
        session = Session(new_txn_id(), result["transit"])
        self._remember(session)
        return session

    def _remember(self, session: Session) -> None:
        now = time.monotonic()
        while self.sessions and (
            len(self.sessions) >= MAX_SESSIONS
            or now - next(iter(self.sessions.values())).opened > SESSION_TTL_S
        ):
            self.sessions.popitem(last=False)
        self.sessions[session.id] = session

    async def accept(self, session_id: str, req: Any) -> tuple[dict[str, Any], bool]:
        """Accept at head office, then journal; returns (answer, already answered before)."""
        session = self.sessions.get(session_id)
        if session is None:
            raise TransitError(  # never the id sent: it came in a URL and may be anything
                "no_session",
                "no receive in progress with this id: scan or key the transit again",
                field="id",
            )
        if req is None:
            req = {}
        screen.check(req, "$")
        if type(req) is not dict or set(req) - {"staff"}:
            raise ProtocolError("only {staff} may be sent with an accept", "$")
        staff = req.get("staff")
        if staff is not None and type(staff) is not str:
            raise ProtocolError("must be a string", "$.staff")
        async with session.lock:
            if session.accepted is not None:
                return session.accepted, True
            t = session.transit
            args: dict[str, Any] = {
                "request_id": session.id,
                "source_store": t["source_store"],
                "deadline_ms": now_ms() + int(self.timeout * 1000),
            }
            if t.get("sscc"):
                args["sscc"] = t["sscc"]
            else:
                args["transit_no"] = t["transit_no"]
            if staff:
                args["staff"] = staff
            result = await self._ask(requests.OP_TRANSIT_ACCEPT, args)
            answer = await self._journal(session.id, result["transit"], staff)
            answer["replayed"] = bool(result.get("replayed"))
            session.accepted = answer
            return answer, False

    async def _journal(self, txn_id: str, t: dict[str, Any], staff: str | None) -> dict[str, Any]:
        """Journal the lane's transit_inventory_accept record (durable before the POS hears)."""
        received = t.get("received") or {}
        with self.ctx.rules() as r:  # the store's own currency, from head office's catalog
            currency = r.settings["Currency"] or t.get("currency") or "XXX"
        doc: dict[str, Any] = {
            "kind": "transit_inventory_accept",
            "txn_id": txn_id,
            "currency": currency,
            "staff": staff if staff is not None else received.get("by"),
            "transit_no": t["transit_no"],
            "source_store": t["source_store"],
            "dest_store": t["dest_store"],
            "lines": [
                {
                    "line_no": line["line_no"],
                    "item": line["item"],
                    "qty": line["qty"],
                    **({"description": line["description"]} if line.get("description") else {}),
                }
                for line in t["lines"]
            ],
            "ext": {"transit_txn_id": t["txn_id"], "received_at": received.get("at")},
        }
        if t.get("sscc"):
            doc["sscc"] = t["sscc"]
        res, final = await self.service.submit(doc)
        return {
            "accepted": True,
            "id": txn_id,
            "transit": t,
            "received": received,
            "seq": res.seq,
            "txn_id": res.txn_id,
            "epoch": res.epoch,
            "register_no": final.get("register_no"),
        }

    async def _heal(self, exc: TransitError) -> None:
        """Head office holds this lane's acceptance but the lane never journaled it (the answer
        was lost and the POS gave up): record it now, under the same request id."""
        rec = exc.extra.get("received")
        t = exc.extra.get("transit")
        if exc.code != "already_received" or type(rec) is not dict or type(t) is not dict:
            return
        rid = rec.get("request_id")
        if (rec.get("store"), rec.get("lane")) != (self.lane.store, self.lane.lane):
            return
        if type(rid) is not str or await self.store.journaled(rid) is not None:
            return
        await self._journal(rid, t, None)
        exc.reason += "; it was received on this lane and is now recorded here"
        exc.extra["recorded_now"] = True
        log.warning("transit %s: recorded a receipt head office held for this lane", rid)

    # --- SSCC scans -----------------------------------------------------------------------

    def on_scan(self, event: ScanEvent) -> None:
        """An SSCC scan starts the receive flow; the result goes to the POS as `event: transit`."""
        if not event.is_sscc or not event.sscc:
            return
        task = asyncio.get_running_loop().create_task(
            self._scan_lookup(event.sscc), name=f"transit-scan {event.sscc}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _scan_lookup(self, sscc: str) -> None:
        try:
            session = await self.receive({"sscc": sscc})
        except TransitError as exc:
            self.publish(TransitEvent({"ok": False, "sscc": sscc}, exc))
            return
        except ProtocolError as exc:
            self.publish(
                TransitEvent({"ok": False, "sscc": sscc, "code": "bad_request", "detail": str(exc)})
            )
            return
        if session is not None:
            self.publish(
                TransitEvent(
                    {"ok": True, "sscc": sscc, "id": session.id, "transit": session.transit}
                )
            )
