"""The local API's edge: what a request must be before a handler sees it, and the one place
that turns every refusal into `application/problem+json` (RFC 9457).

Input never gets a 5xx. At the edge, before any handler:

- Time: a client has `api.request_timeout_s` to send a whole request. The clock starts when it
  connects, or with the first byte after its previous answer, and covers the headers and the
  body; a client that is late is answered 408 (if it sent anything) and disconnected. aiohttp's
  server has no such timer: its `keepalive_timeout` only closes idle connections (3.14.5 also
  arms it at connect, so it would cover the headers of a first request only, and only at a
  default of 3630 s), and nothing bounds a body that trickles in. So `GuardedRequestHandler`
  keeps its own.
- Size: a header line over 8190 bytes or more than 128 headers is 431, a body over 256 KiB 413.
- Form: a body is JSON in UTF-8 (RFC 8259 section 8.1: any other charset is 415), nested at
  most `MAX_JSON_DEPTH` deep (checked on the text, without recursion, before json.loads), with
  no lone surrogate (json.loads accepts `"\\ud800"`; no UTF-8 encoder does), each refusal
  naming the field path.
- Card numbers: `problem()` passes everything it writes through protocol.pan.mask_text, and
  the middleware rebuilds any problem+json a handler made some other way through it, so a
  refusal never echoes a card number, whatever a message quoted.

`answer()` decides the HTTP status of every error, in one place.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import logging
import re
import socket
from collections.abc import Awaitable, Callable, Mapping
from decimal import Decimal
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, HttpProcessingError, LineTooLong

from agent.catalog.lookup import LookupRefused
from agent.journal import JournalConflict, JournalError, JournalFull
from agent.open_docs.sales import OpenDocError
from agent.transit import TransitError
from protocol import requests, screen
from protocol.errors import LanesyncError, ProtocolError
from protocol.messages import REPLY_FIELDS
from protocol.pan import is_pan_digits, mask_text
from protocol.runtime.httpserver import PROBLEM

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 256 * 1024
# Deep enough for any document (they nest 4 levels; protocol.messages refuses past 32 with its
# own reason), shallow enough that no recursive walk after the edge can run out of stack.
MAX_JSON_DEPTH = 64
MAX_HEADER_LINE = 8190  # aiohttp's defaults, stated so the 431 can say them
MAX_HEADERS = 128
DEFAULT_REQUEST_TIMEOUT_S = 10.0
IDLE_TIMEOUT_S = 75.0  # a keep-alive connection with no request in flight is closed after this
LINGER_S = 2.0  # after answering a request whose body was not read, drain it this long at most
# Connections waiting to be accepted: a burst of a few hundred clients is not refused at the
# socket (a Unix socket's full backlog fails a client's connect with EAGAIN).
BACKLOG = 1024
ACCEPTED_CHARSETS = ("utf-8", "ascii")  # codecs' names; ASCII is a subset of UTF-8

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# --- problem details --------------------------------------------------------------------------


class Problem(web.Response):
    """A problem+json answer made by `problem()`: masked, so the middleware lets it out."""


def _masked(value: Any, declared: Any = None, root: Any = None) -> Any:
    """`value` with card numbers masked, except where `declared` (a protocol.screen
    declaration) says a field holds something else that the rule would take for one: a
    millisecond time (`received.at` passes Luhn one time in ten), a GTIN, an SSCC."""
    exempt = declared if callable(declared) else None
    if isinstance(value, str):
        return value if exempt is not None and exempt(value, root) else mask_text(value)
    if isinstance(value, bool) or not isinstance(value, int):
        sub = declared if isinstance(declared, Mapping) else {}
        if isinstance(value, dict):
            return {mask_text(str(k)): _masked(v, sub.get(k), root) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [_masked(v, sub.get(screen.LIST), root) for v in value]
        return value
    if exempt is not None and exempt(value, root):
        return value
    return mask_text(str(value)) if is_pan_digits(str(abs(value))) else value


def problem(
    status: int,
    title: str,
    detail: str,
    field: str | None = None,
    *,
    declared: screen.Declared | None = None,
    **extra: Any,
) -> Problem:
    """The one place that builds problem+json; detail, field and extras never carry a PAN
    (extras named in `declared` are screened as protocol.screen screens a message)."""
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": mask_text(detail),
    }
    if field is not None:
        body["field"] = mask_text(field)
    for key, value in extra.items():
        body[key] = _masked(value, (declared or {}).get(key), extra)
    return Problem(status=status, text=json.dumps(body), content_type=PROBLEM)


def remask(resp: web.StreamResponse) -> web.StreamResponse:
    """A problem+json response a handler made without `problem()`, made again by it."""
    if isinstance(resp, Problem) or not isinstance(resp, web.Response):
        return resp
    if resp.content_type != PROBLEM or not isinstance(resp.body, bytes):
        return resp
    try:
        data = json.loads(resp.body)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return problem(resp.status, resp.reason, "the agent could not describe this refusal")
    data.pop("type", None)
    data.pop("status", None)
    title = str(data.pop("title", resp.reason))
    detail = str(data.pop("detail", ""))
    field = data.pop("field", None)
    # agent.transit's refusals carry head office's transit details and receive record, the
    # fields a Reply declares (protocol.messages.REPLY_FIELDS: times, GTINs, the SSCC).
    out = problem(
        resp.status,
        title,
        detail,
        None if field is None else str(field),
        declared=REPLY_FIELDS,
        **data,
    )
    for name, value in resp.headers.items():
        if name.lower() not in ("content-type", "content-length"):
            out.headers[name] = value
    return out


class EdgeError(LanesyncError):
    """A request refused at the edge itself (form, size, charset, path): the edge knows its
    status when it raises it, with the field or header at fault."""

    code = "edge"

    def __init__(self, status: int, title: str, detail: str, field: str | None = None) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail, self.field = status, title, detail, field


class BodyError(EdgeError):
    """A body that is not a JSON document the agent reads (counted as a refused document)."""


# The one table: a domain error's code -> the HTTP status and title the POS is answered with.
STATUS: dict[str, tuple[int, str]] = {
    "invalid": (422, "Invalid document"),  # ProtocolError: a document or request refused
    # agent.open_docs.sales.OpenDocError
    "not_found": (404, "Not Found"),
    "conflict": (409, "Conflict"),
    # agent.catalog.lookup.LookupRefused ("not_found" above)
    "invalid_parameter": (422, "Invalid parameter"),
    "no_catalog": (503, "No catalog yet"),
    "catalog_unreadable": (503, "Catalog unreadable"),
    "setting_unreadable": (503, "Setting unreadable"),
    # agent.journal: a document not confirmed
    "txn_conflict": (409, "Conflicting txn_id"),
    "journal_full": (503, "Journal full"),  # nothing lost: the disk budget is spent
    "journal": (503, "Journal unavailable"),  # the POS keeps the sale open and retries
}
# agent.transit.TransitError: head office's refusal codes (headoffice.transit.server) and the
# lane's own; a code not listed is a conflict.
TRANSIT_STATUS: dict[str, tuple[int, str]] = {
    requests.UNKNOWN: (404, "Not Found"),
    requests.NOT_YET_KNOWN: (404, "Not Found"),
    "no_session": (404, "Not Found"),  # the lane's: no receive open with this id
    requests.ALREADY_RECEIVED: (409, "Conflict"),
    requests.OTHER_STORE: (409, "Conflict"),
    requests.CANCELLED: (409, "Conflict"),
    requests.AMBIGUOUS: (409, "Conflict"),
    requests.BAD_REQUEST: (422, "Invalid request"),
    requests.EXPIRED: (503, "Head office unavailable"),
    "unreachable": (503, "Head office unavailable"),  # the lane's: no answer in time
    "unavailable": (503, "Head office unavailable"),
}


def transit_problem(exc: TransitError) -> dict[str, Any]:
    """A failed transit receive as problem details, for its answer and its scan event."""
    status, title = TRANSIT_STATUS.get(exc.code, (409, "Conflict"))
    return {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": exc.reason,
        "code": exc.code,
        **exc.extra,
    }


def answer(exc: BaseException) -> Problem:
    """The HTTP status and problem details of every error a request can meet."""
    if isinstance(exc, EdgeError):
        return problem(exc.status, exc.title, exc.detail, exc.field)
    if isinstance(exc, web.HTTPException):
        return problem(exc.status, exc.reason, exc.text or exc.reason)
    if isinstance(exc, LookupRefused):
        # A lookup names the catalog version it looked in (null: none could be read).
        status, title = STATUS[exc.code]
        return problem(status, title, exc.detail, exc.field, catalog_version=exc.version)
    if isinstance(exc, ProtocolError):
        return problem(*STATUS["invalid"], exc.reason, exc.field)
    if isinstance(exc, OpenDocError):
        return problem(*STATUS[exc.code], exc.reason, exc.field)
    if isinstance(exc, TransitError):
        # Head office's transit details and receive record are the fields a Reply declares
        # (protocol.messages.REPLY_FIELDS: times, GTINs, the SSCC).
        body = transit_problem(exc)
        for key in ("type", "title", "status", "detail"):
            body.pop(key)
        field = body.pop("field", None)
        status, title = TRANSIT_STATUS.get(exc.code, (409, "Conflict"))
        return problem(
            status,
            title,
            exc.reason,
            None if field is None else str(field),
            declared=REPLY_FIELDS,
            **body,
        )
    if isinstance(exc, JournalConflict):
        return problem(*STATUS["txn_conflict"], str(exc), "txn_id")
    if isinstance(exc, JournalFull):
        return problem(*STATUS["journal_full"], str(exc))
    if isinstance(exc, JournalError):
        return problem(*STATUS["journal"], str(exc))
    return problem(500, "Internal error", "a bug in the agent; see its log")


def http_error(exc: BaseException | None, message: str | None) -> Problem:
    """What aiohttp's parser refused (before any handler ran), as a problem."""
    text = (exc.message if isinstance(exc, HttpProcessingError) else None) or message or ""
    if isinstance(exc, LineTooLong) or (
        isinstance(exc, BadHttpMessage) and "too many headers" in text.lower()
    ):
        return problem(
            431,
            "Request Header Fields Too Large",
            f"a request line or header is over {MAX_HEADER_LINE} bytes, or there are more than "
            f"{MAX_HEADERS} headers: {text}",
        )
    return problem(400, "Bad Request", f"not an HTTP/1.1 request the agent reads: {text}")


# --- the body -------------------------------------------------------------------------------


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number lanesync accepts")


def parse_json(text: str) -> Any:
    """JSON with fractional numbers kept as Decimal (then refused by field) and no NaN."""
    return json.loads(text, parse_float=Decimal, parse_constant=_refuse_constant)


# A JSON string (to its closing quote, or to the end of an unterminated one) or a bracket.
_DEPTH_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?|[\[\]{}]', re.DOTALL)
_PATH_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?|[\[\]{},:]', re.DOTALL)
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_KEY_SHOWN = 64


def _key(raw: str) -> str:
    try:
        key = json.loads(raw) if raw.endswith('"') and len(raw) > 1 else raw[1:]
    except ValueError:
        key = raw[1:-1]
    key = str(key)
    return key if len(key) <= _KEY_SHOWN else key[:_KEY_SHOWN] + "..."


def _path_at(text: str, end: int) -> str:
    """The JSON path of the container that opens at `end` (a slow walk, only on refusal)."""
    frames: list[list[Any]] = []  # [is_array, index or key]
    want_key = False
    for m in _PATH_TOKEN.finditer(text, 0, end):
        tok = m.group()
        c = tok[0]
        if c == '"':
            if want_key and frames:
                frames[-1][1] = _key(tok)
                want_key = False
        elif c in "[{":
            frames.append([c == "[", 0 if c == "[" else None])
            want_key = c == "{"
        elif c in "]}":
            if frames:
                frames.pop()
            want_key = False
        elif c == "," and frames:
            if frames[-1][0]:
                frames[-1][1] += 1
            else:
                want_key = True
    path = "$"
    for is_array, at in frames:
        path += f"[{at}]" if is_array else f".{at}"
    return path


def check_depth(text: str, limit: int = MAX_JSON_DEPTH) -> None:
    """Refuse JSON text nested deeper than `limit`, naming where, without recursing."""
    if text.count("[") + text.count("{") <= limit:
        return  # cannot nest deeper than it has brackets
    depth = 0
    for m in _DEPTH_TOKEN.finditer(text):
        c = m.group()[0]
        if c in "[{":
            depth += 1
            if depth > limit:
                raise BodyError(
                    422,
                    "Invalid document",
                    f"nested more than {limit} levels deep (character {m.start()})",
                    _path_at(text, m.start()),
                )
        elif c in "]}":
            depth -= 1


def _text_at_fault(value: str) -> str | None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"{ord(value[exc.start]):#06x}"
    return None


def check_unicode(doc: Any) -> None:
    """Refuse a lone surrogate in any key or string, naming its path (iteratively)."""
    stack: list[tuple[str, Any]] = [("$", doc)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            bad = _text_at_fault(value)
            if bad is not None:
                raise BodyError(
                    422,
                    "Invalid document",
                    f"a lone surrogate ({bad}) is not text; send real characters in UTF-8",
                    path,
                )
        elif isinstance(value, dict):
            for k, v in value.items():
                key = str(k)
                if _text_at_fault(key) is not None:
                    # named as protocol.screen names a bad key: the key itself is not text
                    stack.append((f"{path} (a map key)", key))
                    continue
                stack.append((f"{path}.{key}", v))
        elif isinstance(value, list):
            stack.extend((f"{path}[{i}]", v) for i, v in enumerate(value))


def check_charset(request: web.BaseRequest) -> None:
    charset = request.charset
    if charset is None:
        return
    try:
        name = codecs.lookup(charset).name
    except LookupError:
        name = None
    if name not in ACCEPTED_CHARSETS:
        raise EdgeError(
            415,
            "Unsupported Media Type",
            f"charset {charset!r} is not accepted: send JSON in UTF-8 (RFC 8259)",
            "Content-Type",
        )


def decode_json(raw: bytes) -> Any:
    """A request body's bytes as a document: UTF-8, depth, JSON, then surrogates."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BodyError(
            400, "Malformed JSON", f"not UTF-8 at byte {exc.start}: {exc.reason}", "$"
        ) from None
    check_depth(text)
    try:
        doc = parse_json(text)
    except (ValueError, RecursionError) as exc:
        raise BodyError(400, "Malformed JSON", str(exc), "$") from None
    if _SURROGATE_ESCAPE.search(text):
        check_unicode(doc)
    return doc


async def read_json(request: web.Request, *, optional: bool = False) -> Any:
    """The request's JSON body; refuses anything else, naming the header or field at fault."""
    raw = await request.read() if request.body_exists else b""  # read by the middleware
    if optional and not raw:
        return {}
    if request.content_type != "application/json":
        raise EdgeError(
            415, "Unsupported Media Type", "send the body as application/json", "Content-Type"
        )
    check_charset(request)
    return decode_json(raw)


def check_path(request: web.Request) -> None:
    """A path segment that is not text (a lone surrogate from %ED%A0%80) names no resource."""
    for name, value in request.match_info.items():
        if _text_at_fault(value) is not None:
            raise EdgeError(404, "Not Found", f"{name} is not text", name)


# --- time -----------------------------------------------------------------------------------


class GuardedRequestHandler(web.RequestHandler):
    """aiohttp's HTTP/1.1 protocol with a deadline for each request, and problem+json for
    what its parser refuses. The middleware tells it when a request's headers are in
    (`started`), its body is read (`body_read`) and it is answered (`finished`)."""

    def __init__(self, manager: web.Server, *, request_timeout: float, **kw: Any) -> None:
        super().__init__(manager, **kw)
        self.request_timeout = request_timeout
        self.deadline: float | None = None  # loop time by which the current request must be in
        self._timer: asyncio.TimerHandle | None = None
        self._busy = False  # a request's headers are in: its body is read, then it is handled
        self._handling = False  # ... and its body is read: bytes now are the next request's
        self._heard = False  # bytes arrived since the clock started
        self._next_early = False  # bytes of a next request arrived while one was handled

    def _arm(self) -> None:
        loop = asyncio.get_running_loop()
        self.deadline = loop.time() + self.request_timeout
        self._heard = False
        self._timer = loop.call_at(self.deadline, self._expired)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self.deadline = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._handling:
            self._next_early = True
        elif self._timer is None and not self._busy:
            self._arm()
        self._heard = True
        super().data_received(data)

    def started(self) -> None:
        self._busy = True
        self._next_early = False

    def body_read(self) -> None:
        self._disarm()
        self._handling = True

    def finished(self) -> None:
        self._busy = self._handling = False
        self._disarm()
        if self._next_early:
            self._arm()
            self._heard = True

    def _expired(self) -> None:
        self._timer = None
        if self._busy:
            return  # reading the body: the middleware answers 408 at the same deadline
        transport = self.transport
        if transport is not None and self._heard:
            with contextlib.suppress(Exception):
                transport.write(_raw_408())
        log.info("local API: closed a connection that sent no whole request in time")
        self.force_close()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """Every answer aiohttp itself gives (a request its parser refused) as problem+json."""
        if request.writer.output_size > 0:
            raise ConnectionError("the answer was started already; closing the connection")
        if status >= 500:
            log.error("local API: unexpected error", exc_info=exc)
            resp: web.Response = answer(exc or RuntimeError(message))
        else:
            log.info("local API: refused a malformed request: %s", mask_text(message or ""))
            resp = http_error(exc, message)
        resp.force_close()
        return resp


def _raw_408() -> bytes:
    body = problem(
        408, "Request Timeout", "the request was not sent in time; the connection is closed"
    ).text
    assert body is not None
    data = body.encode()
    head = (
        "HTTP/1.1 408 Request Timeout\r\n"
        f"Content-Type: {PROBLEM}\r\nContent-Length: {len(data)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + data


def request_timed_out() -> Problem:
    resp = problem(
        408, "Request Timeout", "the request body was not sent in time; the connection is closed"
    )
    resp.force_close()
    return resp


class GuardedSite(web.BaseSite):
    """A listening socket whose connections get a `GuardedRequestHandler` each."""

    __slots__ = ("_request_timeout", "_sock")

    def __init__(self, runner: web.BaseRunner, sock: socket.socket, request_timeout: float):
        super().__init__(runner)
        self._sock = sock
        self._request_timeout = request_timeout

    @property
    def name(self) -> str:
        return f"lanesync-api:{self._sock.getsockname()!r}"

    def _handler(self) -> GuardedRequestHandler:
        server = self._runner.server
        assert server is not None
        return GuardedRequestHandler(
            server,
            loop=asyncio.get_running_loop(),
            request_timeout=self._request_timeout,
            keepalive_timeout=IDLE_TIMEOUT_S,
            lingering_time=LINGER_S,
            max_line_size=MAX_HEADER_LINE,
            max_field_size=MAX_HEADER_LINE,
            max_headers=MAX_HEADERS,
            access_log=None,
        )

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        if self._sock.family == socket.AF_UNIX:
            self._server = await loop.create_unix_server(
                self._handler, sock=self._sock, backlog=BACKLOG
            )
        else:
            self._server = await loop.create_server(self._handler, sock=self._sock, backlog=BACKLOG)


def edge_middleware(
    authorize: Callable[[web.Request], Problem | None],
    on_refused_body: Callable[[web.Request, Exception], None],
) -> Any:
    """The outermost middleware: auth, the deadline, the body, the path, and every error."""

    @web.middleware
    async def edge(request: web.Request, handler: Handler) -> web.StreamResponse:
        guard = request.protocol if isinstance(request.protocol, GuardedRequestHandler) else None
        if guard is not None:
            guard.started()
        try:
            refused = authorize(request)
            if refused is not None:
                return refused
            if request.body_exists:
                deadline = guard.deadline if guard is not None else None
                try:
                    async with asyncio.timeout_at(deadline):
                        await request.read()  # kept by aiohttp for read_json; <= 256 KiB
                except TimeoutError:
                    return request_timed_out()
            if guard is not None:
                guard.body_read()
            check_path(request)
            return remask(await handler(request))
        except BodyError as exc:
            on_refused_body(request, exc)
            return answer(exc)
        except ProtocolError as exc:
            on_refused_body(request, exc)  # the caller counts those refused at journaling
            return answer(exc)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return answer(exc)
        except (EdgeError, OpenDocError, JournalError, LookupRefused, TransitError) as exc:
            return answer(exc)
        except Exception as exc:
            log.exception("local API: %s %s failed", request.method, mask_text(request.path))
            return answer(exc)
        finally:
            if guard is not None:
                guard.finished()

    return edge
