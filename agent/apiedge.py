"""The local API's edge: what a request must be before a handler sees it, and the one place
that turns every refusal into `application/problem+json` (RFC 9457).

Input never gets a 5xx. At the edge, before any handler:

- Time: a client has `api.request_timeout_s` to send a whole request. The clock starts when it
  connects, or with the first byte after its previous answer, and covers the headers and the
  body; a client that is late is answered 408 (if it sent anything) and disconnected. The
  server (agent.httpserver, h11 over asyncio streams) keeps that clock and these limits.
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

import codecs
import json
import logging
import re
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from agent.catalog.lookup import LookupRefused
from agent.httpserver import HttpError, Limits, Request, Response, Router
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
MAX_HEADER_LINE = 8190  # aiohttp's defaults (the agent's server until issue 17.2), kept
MAX_HEADERS = 128
DEFAULT_REQUEST_TIMEOUT_S = 10.0
IDLE_TIMEOUT_S = 75.0  # a keep-alive connection with no request in flight is closed after this
LINGER_S = 2.0  # after answering a request whose body was not read, drain it this long at most
# Connections waiting to be accepted: a burst of a few hundred clients is not refused at the
# socket (a Unix socket's full backlog fails a client's connect with EAGAIN).
BACKLOG = 1024
ACCEPTED_CHARSETS = ("utf-8", "ascii")  # codecs' names; ASCII is a subset of UTF-8

LIMITS = Limits(
    request_timeout=DEFAULT_REQUEST_TIMEOUT_S,
    idle_timeout=IDLE_TIMEOUT_S,
    linger=LINGER_S,
    max_body=MAX_REQUEST_BYTES,
    max_header_line=MAX_HEADER_LINE,
    max_headers=MAX_HEADERS,
    backlog=BACKLOG,
)
PROBLEM_TYPE = f"{PROBLEM}; charset=utf-8"


# --- problem details --------------------------------------------------------------------------


class Problem(Response):
    """A problem+json answer made by `problem()`: masked, so the edge lets it out."""


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
    return Problem(status, json.dumps(body).encode(), PROBLEM_TYPE)


def remask(resp: Response) -> Response:
    """A problem+json response a handler made without `problem()`, made again by it."""
    if isinstance(resp, Problem) or resp.content_type != PROBLEM:
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
    for name, value in resp.headers:
        if name.lower() not in ("content-type", "content-length"):
            out.headers.append((name, value))
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
    if isinstance(exc, HttpError):
        out = problem(exc.status, exc.reason, exc.detail)
        out.headers.extend(exc.headers)
        return out
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


def refused(status: int, detail: str) -> Problem:
    """What the server itself refused (agent.httpserver, before any handler ran), as a
    problem: 400 malformed, 408 late, 413 too big a body, 431 too big a head."""
    if status == 431:
        return problem(
            431,
            "Request Header Fields Too Large",
            f"a request line or header is over {MAX_HEADER_LINE} bytes, or there are more than "
            f"{MAX_HEADERS} headers: {detail}",
        )
    if status == 408:
        return problem(408, "Request Timeout", f"{detail}; the connection is closed")
    if status == 413:
        return problem(413, "Content Too Large", detail)
    return problem(400, "Bad Request", detail)


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


def check_charset(request: Request) -> None:
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


async def read_json(request: Request, *, optional: bool = False) -> Any:
    """The request's JSON body; refuses anything else, naming the header or field at fault."""
    raw = request.body  # read by the server, within the request's deadline
    if optional and not raw:
        return {}
    if request.content_type != "application/json":
        raise EdgeError(
            415, "Unsupported Media Type", "send the body as application/json", "Content-Type"
        )
    check_charset(request)
    return decode_json(raw)


def check_path(request: Request) -> None:
    """A path segment that is not text (a lone surrogate from %ED%A0%80) names no resource."""
    for name, value in request.match_info.items():
        if _text_at_fault(value) is not None:
            raise EdgeError(404, "Not Found", f"{name} is not text", name)


# --- the edge itself -------------------------------------------------------------------------


class Edge:
    """The local API as agent.httpserver serves it: auth on the head, then the route, the
    path, the handler, and every error as problem+json."""

    def __init__(
        self,
        router: Router,
        authorize: Callable[[Request], Problem | None],
        on_refused_body: Callable[[Request, Exception], None],
    ) -> None:
        self.router = router
        self.authorize = authorize
        self.on_refused_body = on_refused_body

    def check_head(self, request: Request) -> Response | None:
        return self.authorize(request)

    def refused(self, status: int, detail: str) -> Response:
        return refused(status, detail)

    async def handle(self, request: Request) -> Response:
        try:
            handler = self.router.resolve(request)
            check_path(request)
            return remask(await handler(request))
        except BodyError as exc:
            self.on_refused_body(request, exc)
            return answer(exc)
        except ProtocolError as exc:
            self.on_refused_body(request, exc)  # the caller counts those refused at journaling
            return answer(exc)
        except (HttpError, EdgeError, OpenDocError, JournalError, LookupRefused) as exc:
            return answer(exc)
        except TransitError as exc:
            return answer(exc)
        except Exception as exc:
            log.exception("local API: %s %s failed", request.method, mask_text(request.path))
            return answer(exc)
