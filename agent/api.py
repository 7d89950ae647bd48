"""The local API a POS application uses: HTTP/JSON on a Unix socket, optionally loopback TCP.

A document is answered with `{seq, txn_id, epoch, duplicate}` only after its journal entry is
committed (invariant 1). Open sales and transits are kept in the journal database as they
change, so a restart resumes them. Scans stream to the POS as server-sent events. Errors are
RFC 9457 `application/problem+json` naming the field at fault. The Unix socket is protected by
its file mode; the TCP listener requires `Authorization: Bearer TOKEN`. The OpenAPI document
is served at /v1/openapi.json.

Master data for the till (items with today's price and tax, staff, customers, suppliers,
couriers, stores, transaction types, settings) is read from the lane's own catalog file
(agent.catalog.lookup), so it answers while head office is unreachable; each answer names the
catalog version it comes from. A scan of a GTIN carries the matching item on the event stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import json
import logging
import os
import socket
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from agent.apiedge import (
    LIMITS,
    Edge,
    Problem,
    problem,
    read_json,
    transit_problem,
)
from agent.catalog.lookup import (
    BY_KEY,
    DEFAULT_LIMIT,
    MAX_LIMIT,
    Lookup,
    bad_query,
)
from agent.config import AgentConfig, ApiConfig
from agent.documents.envelope import DocContext, validate
from agent.documents.rules import CatalogFile
from agent.httpserver import Request, Response, Router, Server, StreamResponse, json_response
from agent.journal import Journal, JournalError
from agent.metrics import AgentCounters
from agent.open_docs.sales import Completed, OpenSales, view
from agent.open_docs.service import DocumentService
from agent.open_docs.store import LaneStore, OpenRow
from agent.replicator import Replicator
from agent.transit import TransitEvent, TransitReceiver
from hardware.events import DeviceEvent, HardwareEvent, ScanEvent
from hardware.queue import ScanQueue
from protocol.catalog import CODE_RE
from protocol.pan import mask_text
from protocol.runtime.tasks import Tasks

log = logging.getLogger(__name__)

HEARTBEAT_S = 15.0
SUBSCRIBER_BACKLOG = 256


@dataclass(frozen=True, slots=True)
class ItemScan:
    """A scan of a GTIN with what the lane's catalog says of it (agent.catalog.lookup.scan)."""

    scan: ScanEvent
    lookup: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {**self.scan.to_json(), **self.lookup}


# transit: an SSCC scan's lookup result (agent.transit); ItemScan: a GTIN's item
HubEvent = HardwareEvent | TransitEvent | ItemScan


class ScanHub:
    """Fans scans out of the hardware ScanQueue to every SSE subscriber.

    A subscriber that does not keep up loses its oldest events (counted in `dropped`), never
    holds up the scanners or the other subscribers.
    """

    def __init__(
        self,
        queue: ScanQueue | None,
        counters: AgentCounters | None = None,
        *,
        on_sscc: Callable[[ScanEvent], None] | None = None,  # starts the transit receive
        describe: Callable[[str], dict[str, Any]] | None = None,  # a GTIN's catalog item
    ) -> None:
        self.queue = queue
        self.counters = counters or AgentCounters()
        self.subscribers: set[asyncio.Queue[HubEvent | None]] = set()
        self.on_sscc = on_sscc
        self.describe = describe
        self.delivered = 0
        self.dropped = 0

    def subscribe(self) -> asyncio.Queue[HubEvent | None]:
        q: asyncio.Queue[HubEvent | None] = asyncio.Queue(SUBSCRIBER_BACKLOG)
        self.subscribers.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[HubEvent | None]) -> None:
        self.subscribers.discard(q)

    def publish(self, event: HubEvent | None) -> None:
        if (isinstance(event, ScanEvent) and event.kind == "invalid") or (
            isinstance(event, DeviceEvent) and event.state in ("error", "overflow")
        ):
            self.counters.scan_errors += 1
        sent: HubEvent | None = event
        if (
            isinstance(event, ScanEvent)
            and event.gtin is not None
            and not event.is_sscc
            and self.describe is not None
        ):
            sent = ItemScan(event, self.describe(event.gtin))  # one lookup, every subscriber
        for q in list(self.subscribers):
            if q.full():
                q.get_nowait()
                self.dropped += 1
            q.put_nowait(sent)
        if event is not None:
            self.delivered += 1
        if isinstance(event, ScanEvent) and event.is_sscc and self.on_sscc is not None:
            self.on_sscc(event)

    async def run(self) -> None:
        if self.queue is None:
            return
        async for event in self.queue:
            self.publish(event)


class LocalApi:
    """Async context manager serving the local API while it is open."""

    def __init__(
        self,
        config: ApiConfig,
        journal: Journal,
        replicator: Replicator | None,
        *,
        agent: AgentConfig | None = None,
        scans: ScanQueue | None = None,
        counters: AgentCounters | None = None,
        catalog: str | Path | None = None,
    ) -> None:
        """`catalog`: the lane's catalog file (default `agent.catalog_path`)."""
        self.config = config
        self.counters = counters or AgentCounters()
        self.journal = journal
        self.replicator = replicator
        if catalog is None and agent is not None:
            catalog = agent.catalog_path
        # Documents are checked against the lane's catalog (agent.documents.rules).
        self.catalog_file = CatalogFile(catalog, journal.lane)
        if agent is not None:
            self.ctx = DocContext(
                journal.lane,
                agent.documents,
                agent.transit,
                catalog=self.catalog_file,
                trade_without=agent.catalog.trade_without,
            )
        else:
            self.ctx = DocContext(journal.lane, catalog=self.catalog_file)
        self.store = LaneStore(journal.path)
        self.service = DocumentService(self.ctx, journal, self.store)
        self.sales = OpenSales(self.ctx, self.store, self.service)
        if catalog is None and agent is not None:
            catalog = agent.catalog_path
        self.lookup = Lookup(catalog, journal.lane)
        # The hub starts a transit receive on an SSCC scan, and the receive reports on the hub.
        self.transit = TransitReceiver(
            self.ctx,
            replicator,
            self.service,
            self.store,
            lambda event: self.hub.publish(event),  # noqa: PLW0108 - the hub is made next
        )
        self.hub = ScanHub(
            scans, self.counters, on_sscc=self.transit.on_scan, describe=self.lookup.scan
        )
        self._closing = asyncio.Event()
        self._tasks = Tasks("local-api")
        r = self.router = Router()
        r.add("POST", "/v1/documents", self.post_document)
        r.add("POST", "/v1/documents/check", self.check_document)
        r.add("GET", "/v1/documents/{txn_id}", self.get_document)
        r.add("POST", "/v1/sales", self.open_sale)
        r.add("GET", "/v1/sales", self.list_sales)
        r.add("GET", "/v1/sales/{id}", self.get_sale)
        r.add("DELETE", "/v1/sales/{id}", self.cancel_sale)
        r.add("POST", "/v1/sales/{id}/lines", self.add_line)
        r.add("DELETE", "/v1/sales/{id}/lines/{line_no}", self.void_line)
        r.add("POST", "/v1/sales/{id}/mode", self.set_mode)
        r.add("POST", "/v1/sales/{id}/park", self.park)
        r.add("POST", "/v1/sales/{id}/resume", self.resume)
        r.add("PUT", "/v1/sales/{id}/transit", self.set_transit)
        r.add("POST", "/v1/sales/{id}/payments", self.add_payment)
        r.add("POST", "/v1/sales/{id}/complete", self.complete)
        r.add("GET", "/v1/scans", self.scans)
        # Transit receive (agent.transit): by exact SSCC or number only; no list, no search.
        r.add("POST", "/v1/transit/receive", self.transit_receive)
        r.add("POST", "/v1/transit/receive/{id}/accept", self.transit_accept)
        # Master data from the lane's catalog (agent.catalog.lookup): reads only, offline.
        r.add("GET", "/v1/catalog", self.get_catalog)
        r.add("GET", "/v1/items", self.list_items)
        r.add("GET", "/v1/items/{code}", self.get_item)
        for path, dataset in LISTS.items():
            r.add("GET", path, self._lister(dataset))
            r.add("GET", path + "/{key}", self._getter(dataset))
        r.add("GET", "/v1/settings", self.get_settings)
        r.add("GET", "/v1/settings/{name}", self.get_setting)
        r.add("GET", "/v1/status", self.get_status)
        r.add("GET", "/v1/openapi.json", self.get_openapi)
        self.edge = Edge(self.router, self._authorize, self._count_refusal)
        self._server: Server | None = None
        self.tcp_port: int | None = None

    async def __aenter__(self) -> Self:
        await self.store.__aenter__()
        try:
            open_numbers = await self.sales.recover()
            await self.service.start(open_numbers)
            if self.sales.rows:
                log.info("resumed %d open documents", len(self.sales.rows))
            await self._tasks.__aenter__()
            self._tasks.start(self.hub.run(), "scan-hub")
            await self._listen()
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def _listen(self) -> None:
        limits = dataclasses.replace(LIMITS, request_timeout=self.config.request_timeout_s)
        server = self._server = Server(self.edge, limits, shutdown_timeout=5.0)
        if self.config.socket:
            path = Path(self.config.socket)
            path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # a stale socket of a previous run
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.bind(str(path))
                os.chmod(path, 0o660)  # before anyone can connect
            except BaseException:
                sock.close()
                raise
            await server.listen(sock)
        if self.config.tcp:
            host, _, port = self.config.tcp.rpartition(":")
            host = host.strip("[]")
            sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((host, int(port)))
            except BaseException:
                sock.close()
                raise
            self.tcp_port = int(sock.getsockname()[1])  # port 0 picks a free one
            await server.listen(sock)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closing.set()
        await self.transit.close()
        self.hub.publish(None)  # ends every event stream, so the server can shut down
        try:
            if self._server is not None:
                await self._server.close()
        finally:
            await self._tasks.stop()
            if self.store._db is not None:
                with contextlib.suppress(JournalError):
                    await self.service.close()
            await self.store.__aexit__(None, None, None)
            self.lookup.close()
            self.catalog_file.close()

    # --- the edge (agent.apiedge) ----------------------------------------------------------

    def _authorize(self, request: Request) -> Problem | None:
        """The TCP listener needs the bearer token; the Unix socket is guarded by its mode."""
        if isinstance(request.peer, tuple):  # TCP; a Unix socket peer is a str or empty
            token = self.config.token or ""
            got = request.headers.get("Authorization") or ""
            sent = got.encode("utf-8", "surrogatepass")  # any bytes a client sent: no 500
            if not token or not hmac.compare_digest(sent, f"Bearer {token}".encode()):
                return problem(401, "Unauthorized", "send Authorization: Bearer <api.token>")
        return None

    def _count_refusal(self, request: Request, exc: Exception) -> None:
        """Count a body refused where it would have been journaled (a document, or an open
        sale's completion): `lanesync status` shows how many and the last reason. A refused
        check or lookup journals nothing and is not counted."""
        path = request.path
        if request.method == "POST" and (
            path == "/v1/documents"
            or (path.startswith("/v1/sales/") and path.endswith("/complete"))
        ):
            self.counters.refused_at_journaling(path, str(exc))

    # --- documents ------------------------------------------------------------------------

    async def post_document(self, request: Request) -> Response:
        res, final = await self.service.submit(await read_json(request))
        return json_response(_confirmation(res, final), status=200 if res.duplicate else 201)

    async def check_document(self, request: Request) -> Response:
        """Validate without journaling: what the agent would journal (numbers not allocated)."""
        doc = await read_json(request)
        return json_response({"valid": True, "document": validate(doc, self.ctx)})

    async def get_document(self, request: Request) -> Response:
        txn_id = request.match_info["txn_id"]
        found = await self.store.journaled(txn_id)
        if found is None:
            return problem(404, "Not Found", f"no journaled document {txn_id}", "txn_id")
        return json_response({"seq": found[0], "epoch": self.journal.epoch, "document": found[1]})

    # --- open sales and transits ----------------------------------------------------------

    async def open_sale(self, request: Request) -> Response:
        row = await self.sales.open(await read_json(request, optional=True))
        return json_response(view(row), status=201)

    async def list_sales(self, request: Request) -> Response:
        return json_response({"open": [view(r) for r in self.sales.rows.values()]})

    async def get_sale(self, request: Request) -> Response:
        return json_response(view(self.sales.get(request.match_info["id"])))

    async def cancel_sale(self, request: Request) -> Response:
        await self.sales.cancel(request.match_info["id"])
        return Response(204)

    async def add_line(self, request: Request) -> Response:
        row = await self.sales.add_line(request.match_info["id"], await read_json(request))
        return json_response(view(row), status=201)

    async def void_line(self, request: Request) -> Response:
        raw = request.match_info["line_no"]
        if not raw.isdigit() or len(raw) > 6:
            return problem(404, "Not Found", f"no line {raw!r}", "line_no")
        return json_response(view(await self.sales.void_line(request.match_info["id"], int(raw))))

    async def set_mode(self, request: Request) -> Response:
        row = await self.sales.set_mode(request.match_info["id"], await read_json(request))
        return json_response(view(row))

    async def park(self, request: Request) -> Response:
        return json_response(view(await self.sales.park(request.match_info["id"], True)))

    async def resume(self, request: Request) -> Response:
        return json_response(view(await self.sales.park(request.match_info["id"], False)))

    async def set_transit(self, request: Request) -> Response:
        row = await self.sales.set_transit(request.match_info["id"], await read_json(request))
        return json_response(view(row))

    async def add_payment(self, request: Request) -> Response:
        out = await self.sales.add_payment(request.match_info["id"], await read_json(request))
        return self._completed_or_view(out)

    async def complete(self, request: Request) -> Response:
        body = await read_json(request, optional=True)
        return self._completed_or_view(await self.sales.complete(request.match_info["id"], body))

    def _completed_or_view(self, out: OpenRow | Completed) -> Response:
        if isinstance(out, Completed):
            res = out.appended
            body = {**_confirmation(res, out.document), "completed": True, "document": out.document}
            return json_response(body, status=200 if res.duplicate else 201)
        return json_response({**view(out), "completed": False})

    # --- transit receive ------------------------------------------------------------------

    async def transit_receive(self, request: Request) -> Response:
        session = await self.transit.receive(await read_json(request, optional=True))
        if session is None:
            return Response(204)
        return json_response({"id": session.id, "transit": session.transit})

    async def transit_accept(self, request: Request) -> Response:
        body = await read_json(request, optional=True)
        answer, again = await self.transit.accept(request.match_info["id"], body)
        return json_response({**answer, "duplicate": again}, status=200 if again else 201)

    # --- master data (agent.catalog.lookup) -----------------------------------------------

    async def get_catalog(self, request: Request) -> Response:
        return json_response(self.lookup.catalog())

    async def get_item(self, request: Request) -> Response:
        return json_response(self.lookup.item(request.match_info["code"], _at(request)))

    async def list_items(self, request: Request) -> Response:
        """By GTIN (`?gtin=`, an exact lookup: 404 if unknown) or a page by code prefix."""
        at = _at(request)
        gtin = request.query.get("gtin")
        if gtin is not None:
            if "prefix" in request.query or "after" in request.query:
                raise bad_query("gtin", "a GTIN lookup takes no prefix or after")
            return json_response(self.lookup.items_by_gtin(gtin, at))
        prefix, after, limit = _page(request)
        return json_response(self.lookup.items(prefix, after, limit, at))

    def _lister(self, dataset: str) -> Callable[[Request], Any]:
        async def handler(request: Request) -> Response:
            if dataset == "stores" and "can_receive_stock" in request.query:
                if _flag(request, "can_receive_stock") is not True:
                    raise bad_query("can_receive_stock", "only can_receive_stock=1 is a selector")
                return json_response(self.lookup.receiving_stores())
            prefix, after, limit = _page(request)
            active = _flag(request, "active") is True
            return json_response(
                self.lookup.rows(dataset, prefix, after, limit, active_only=active)
            )

        return handler

    def _getter(self, dataset: str) -> Callable[[Request], Any]:
        async def handler(request: Request) -> Response:
            return json_response(self.lookup.one(dataset, request.match_info["key"]))

        return handler

    async def get_settings(self, request: Request) -> Response:
        return json_response(self.lookup.settings())

    async def get_setting(self, request: Request) -> Response:
        return json_response(self.lookup.setting(request.match_info["name"]))

    # --- scans, status, schema ------------------------------------------------------------

    async def scans(self, request: Request) -> Response:
        """Server-sent events: `event: scan` / `event: device`, data the event as JSON."""
        raw = request.query.get("limit", "0")
        if not raw.isdigit() or len(raw) > 6:
            return problem(422, "Invalid parameter", "must be a whole number", "limit")
        headers = [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache")]
        return StreamResponse(self._events(int(raw)), headers=headers)

    async def _events(self, limit: int) -> AsyncGenerator[bytes, None]:
        """The event stream's text: subscribed once its opening comment is written."""
        q = self.hub.subscribe()
        try:
            yield b": lanesync scans\n\n"
            sent = 0
            while not self._closing.is_set() and (limit == 0 or sent < limit):
                try:
                    event = await asyncio.wait_for(q.get(), HEARTBEAT_S)
                except TimeoutError:
                    yield b": keepalive\n\n"
                    continue
                if event is None:
                    break
                data = event.to_json()
                if isinstance(event, TransitEvent) and event.failure is not None:
                    data = {**event.data, **transit_problem(event.failure), "event": "transit"}
                if isinstance(event, TransitEvent) and isinstance(data.get("detail"), str):
                    data["detail"] = mask_text(data["detail"])  # a refusal: never a PAN
                sent += 1
                yield f"id: {sent}\nevent: {data['event']}\ndata: {json.dumps(data)}\n\n".encode()
        finally:
            self.hub.unsubscribe(q)

    async def get_status(self, request: Request) -> Response:
        j = self.journal
        rep = self.replicator.stats if self.replicator else None
        return json_response(
            {
                "store": j.lane.store,
                "lane": j.lane.lane,
                "epoch": j.epoch,
                "last_seq": j.last_seq,
                "acked_seq": j.acked_seq,
                "backlog": j.backlog,
                "connected": bool(rep and rep.connected),
                "reconnects": rep.reconnects if rep else 0,
                "last_error": rep.last_error if rep else None,
                "open_documents": len(self.sales.rows),
                "refused_documents": self.service.refused,
                "duplicate_documents": self.service.duplicates,
                "scans_delivered": self.hub.delivered,
                "scans_dropped": self.hub.dropped,
                "scan_queue_overflow": self.hub.queue.overflow if self.hub.queue else 0,
            }
        )

    async def get_openapi(self, request: Request) -> Response:
        # 0.9 MB of dicts a till never asks for: built on the first request (issue 17.2)
        from agent.openapi import openapi_document  # noqa: PLC0415

        return json_response(openapi_document())


# The datasets served by key and as pages, by path (items have their own handlers).
LISTS = {
    "/v1/staff": "staff",
    "/v1/customers": "customers",
    "/v1/suppliers": "suppliers",
    "/v1/couriers": "couriers",
    "/v1/stores": "stores",
    "/v1/txn-types": "txn_types",
}
assert set(LISTS.values()) | {"items"} == set(BY_KEY)


def _at(request: Request) -> datetime | None:
    """`?at=`: the moment prices and tax rates are read for (RFC 3339 with offset; now)."""
    raw = request.query.get("at")
    if raw is None:
        return None
    try:
        at = datetime.fromisoformat(raw) if len(raw) <= 40 else None
    except ValueError:
        at = None
    if at is None or at.tzinfo is None:
        raise bad_query("at", "must be a date-time with its offset, e.g. 2026-07-01T09:30:00+02:00")
    if not 1970 <= at.year <= 9998:  # any time zone's local date of it stays a real date
        raise bad_query("at", "must be a date-time between the years 1970 and 9998")
    return at


def _page(request: Request) -> tuple[str, str | None, int]:
    """`prefix`, `after` (a key: the `next` of the previous page) and `limit` of a page."""
    q = request.query
    prefix = q.get("prefix", "")
    if prefix and not CODE_RE.fullmatch(prefix):
        raise bad_query("prefix", "must be 1-32 characters of A-Z a-z 0-9 _ . -")
    after = q.get("after")
    if after is not None and not (0 < len(after) <= 128 and after.isprintable()):
        raise bad_query("after", "must be the `next` of the previous page")
    raw = q.get("limit")
    if raw is None:
        return prefix, after, DEFAULT_LIMIT
    if not (raw.isascii() and raw.isdigit() and 1 <= len(raw) <= 4 and 1 <= int(raw) <= MAX_LIMIT):
        raise bad_query("limit", f"must be a whole number 1..{MAX_LIMIT}")
    return prefix, after, int(raw)


def _flag(request: Request, name: str) -> bool | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    if raw in ("1", "true"):
        return True
    if raw in ("0", "false"):
        return False
    raise bad_query(name, "must be 1 or 0")


def _confirmation(res: Any, doc: dict[str, Any]) -> dict[str, Any]:
    out = {"seq": res.seq, "txn_id": res.txn_id, "epoch": res.epoch, "duplicate": res.duplicate}
    if isinstance(doc.get("register_no"), str):
        out["register_no"] = doc["register_no"]
    if doc.get("kind") == "transit_inventory" and "sscc" in doc:
        out["sscc"] = doc["sscc"]
        out["label"] = doc.get("label")
    return out
