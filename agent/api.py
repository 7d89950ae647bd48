"""The local API a POS application uses: HTTP/JSON on a Unix socket, optionally loopback TCP.

A document is answered with `{seq, txn_id, epoch}` only after its journal entry is committed
(invariant 1). Errors are RFC 9457 `application/problem+json` naming the field at fault. The Unix
socket is protected by its file mode; the TCP listener requires `Authorization: Bearer TOKEN`.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import os
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from aiohttp import web

from agent.config import ApiConfig
from agent.journal import Journal, JournalConflict, JournalError
from agent.journal.journal import new_txn_id
from agent.replicator import Replicator
from protocol.documents import check_document
from protocol.errors import ProtocolError

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 256 * 1024
PROBLEM = "application/problem+json"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def problem(status: int, title: str, detail: str, field: str | None = None) -> web.Response:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
    }
    if field is not None:
        body["field"] = field
    return web.Response(status=status, text=json.dumps(body), content_type=PROBLEM)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number lanesync accepts")


def parse_json(text: str) -> Any:
    """JSON with fractional numbers kept as Decimal (then refused by field) and no NaN."""
    return json.loads(text, parse_float=Decimal, parse_constant=_refuse_constant)


class LocalApi:
    """Async context manager serving the local API while it is open."""

    def __init__(self, config: ApiConfig, journal: Journal, replicator: Replicator | None) -> None:
        self.config = config
        self.journal = journal
        self.replicator = replicator
        self.app = web.Application(
            client_max_size=MAX_REQUEST_BYTES, middlewares=[self._errors, self._auth]
        )
        self.app.router.add_post("/v1/documents", self.post_document)
        self.app.router.add_get("/v1/status", self.get_status)
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        self.tcp_port: int | None = None

    async def __aenter__(self) -> Self:
        await self._runner.setup()
        if self.config.socket:
            path = Path(self.config.socket)
            path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # a stale socket of a previous run
            await web.UnixSite(self._runner, str(path)).start()
            os.chmod(path, 0o660)
        if self.config.tcp:
            host, _, port = self.config.tcp.rpartition(":")
            site = web.TCPSite(self._runner, host.strip("[]"), int(port))
            await site.start()
            # aiohttp has no public accessor for the bound port (port 0 picks a free one).
            server = site._server
            sockets = getattr(server, "sockets", None) or []
            if sockets:
                self.tcp_port = int(sockets[0].getsockname()[1])
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._runner.cleanup()

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if isinstance(peer, tuple):  # TCP; a Unix socket peer is a str or empty
            token = self.config.token or ""
            got = request.headers.get("Authorization", "")
            if not token or not hmac.compare_digest(got.encode(), f"Bearer {token}".encode()):
                return problem(401, "Unauthorized", "send Authorization: Bearer <api.token>")
        return await handler(request)

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return problem(exc.status, exc.reason, exc.text or exc.reason)

    async def post_document(self, request: web.Request) -> web.Response:
        if request.content_type != "application/json":
            return problem(415, "Unsupported Media Type", "send the document as application/json")
        try:
            doc = parse_json(await request.text())
        except (ValueError, UnicodeDecodeError) as exc:
            return problem(400, "Malformed JSON", str(exc), "$")
        try:
            check_document(doc)
        except ProtocolError as exc:
            return problem(422, "Invalid document", exc.reason, exc.field)
        doc.setdefault("txn_id", new_txn_id())  # the journaled body names its own txn_id
        try:
            res = await self.journal.append(doc["kind"], doc, txn_id=doc["txn_id"])
        except JournalConflict as exc:
            return problem(409, "Conflicting txn_id", str(exc), "txn_id")
        except ProtocolError as exc:
            return problem(422, "Invalid document", exc.reason, exc.field)
        except JournalError as exc:
            # Not confirmed: the POS must keep the sale open and retry or fall back.
            return problem(503, "Journal unavailable", str(exc))
        out = {"seq": res.seq, "txn_id": res.txn_id, "epoch": res.epoch, "duplicate": res.duplicate}
        return web.json_response(out, status=200 if res.duplicate else 201)

    async def get_status(self, request: web.Request) -> web.Response:
        j = self.journal
        rep = self.replicator.stats if self.replicator else None
        return web.json_response(
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
            }
        )
