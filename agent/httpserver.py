"""The agent's own HTTP/1.1 server: h11 (the sans-IO protocol library under httpcore and
uvicorn) over asyncio streams, for the local API and /metrics.

aiohttp served both until issue 17.2: its package imports its whole client half, whose
connector builds verified SSL contexts at import, about 15 MB of the agent's 48 MB before a
sale. h11 parses and frames (request line, headers, Content-Length and chunked bodies,
keep-alive, HTTP/1.0); this module only moves bytes and keeps the edge's limits:

- a deadline for each whole request (`request_timeout`): it starts when a client connects, or
  with the first byte after its previous answer, and covers the head and the body; a client
  that is late is answered 408 if it sent anything, and disconnected;
- a header line over `max_header_line` bytes, more than `max_headers` headers, or a head over
  h11's `max_incomplete_event_size` is 431; a body over `max_body` is 413;
- a connection idle between requests is closed after `idle_timeout`;
- after an answer that closes the connection with bytes of the request still unread, they are
  read and dropped for at most `linger` seconds, so the client reads the answer instead of a
  reset.

Every answer the server itself gives goes through the application's `refused()`, so the local
API answers them as problem+json.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import parse_qsl, unquote

import h11

log = logging.getLogger(__name__)

READ_CHUNK = 65536


class HttpError(Exception):
    """An answer with no handler behind it (no route, a method the route does not take)."""

    def __init__(
        self, status: int, reason: str, detail: str, headers: Iterable[tuple[str, str]] = ()
    ) -> None:
        super().__init__(detail)
        self.status, self.reason, self.detail = status, reason, detail
        self.headers = list(headers)


REASONS = {
    200: "OK",
    201: "Created",
    204: "No Content",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    409: "Conflict",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def reason_of(status: int) -> str:
    return REASONS.get(status, "Unknown")


def parse_media_type(raw: str | None) -> tuple[str, dict[str, str]]:
    """Content-Type as RFC 9110 section 8.3.1 writes it: `type/subtype *(; name=value)`, the
    name lowercased and a quoted value unquoted; no header is application/octet-stream (as
    RFC 9110 section 8.3 lets a recipient assume)."""
    if raw is None:
        return "application/octet-stream", {}
    media, *params = raw.split(";")
    out: dict[str, str] = {}
    for param in params:
        name, eq, value = param.partition("=")
        name = name.strip().lower()
        if not eq or not name:
            continue
        value = value.strip()
        if value.startswith('"'):
            value = value[1:]
            value = value[:-1] if value.endswith('"') else value
            value = value.replace('\\"', '"').replace("\\\\", "\\")
        out.setdefault(name, value)
    return media.strip().lower(), out


class Headers:
    """A request's headers by case-insensitive name (the first of repeated ones), as text."""

    __slots__ = ("_all", "_first")

    def __init__(self, raw: Iterable[tuple[bytes, bytes]]) -> None:
        # h11 lowercases names; a value is any bytes a client sent, kept by surrogateescape
        self._all = [(n.decode("ascii"), v.decode("utf-8", "surrogateescape")) for n, v in raw]
        self._first: dict[str, str] = {}
        for name, value in self._all:
            self._first.setdefault(name, value)

    def get(self, name: str, default: str | None = None) -> str | None:
        return self._first.get(name.lower(), default)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._first

    def __len__(self) -> int:
        return len(self._all)

    def items(self) -> list[tuple[str, str]]:
        return list(self._all)


@dataclass(slots=True)
class Request:
    method: str
    target: str  # as sent: path and query, percent-encoded
    headers: Headers
    peer: object  # getpeername(): a (host, port) tuple on TCP, a str on a Unix socket
    body: bytes = b""
    match_info: dict[str, str] = field(default_factory=dict)
    path: str = ""  # percent-decoded
    segments: list[str] = field(default_factory=list)  # each percent-decoded on its own
    query: dict[str, str] = field(default_factory=dict)  # the first value of each name

    def __post_init__(self) -> None:
        raw_path, _, raw_query = self.target.partition("?")
        # Bytes that are not UTF-8 stay as lone surrogates, which the edge refuses as no text.
        self.path = unquote(raw_path, errors="surrogateescape")
        self.segments = [unquote(s, errors="surrogateescape") for s in raw_path.split("/")[1:]]
        for name, value in parse_qsl(raw_query, keep_blank_values=True, errors="replace"):
            self.query.setdefault(name, value)

    @property
    def content_type(self) -> str:
        return parse_media_type(self.headers.get("content-type"))[0]

    @property
    def charset(self) -> str | None:
        return parse_media_type(self.headers.get("content-type"))[1].get("charset")

    @property
    def body_exists(self) -> bool:
        return bool(self.body)


class Response:
    """A whole answer: status, headers and body bytes."""

    def __init__(
        self,
        status: int = 200,
        body: bytes = b"",
        content_type: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        self.status = status
        self.body = body
        self.headers: list[tuple[str, str]] = list(headers)
        if content_type is not None:
            self.headers.append(("Content-Type", content_type))
        self.close = False  # close the connection after this answer

    @property
    def reason(self) -> str:
        return reason_of(self.status)

    @property
    def content_type(self) -> str:
        for name, value in self.headers:
            if name.lower() == "content-type":
                return parse_media_type(value)[0]
        return "application/octet-stream"

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


def json_response(data: object, status: int = 200) -> Response:
    """`data` as JSON text in UTF-8 (json.dumps' defaults, as aiohttp's json_response)."""
    return Response(status, json.dumps(data).encode(), "application/json; charset=utf-8")


class StreamResponse(Response):
    """An answer whose body is written as `chunks` yields it (chunked transfer coding)."""

    def __init__(
        self,
        chunks: AsyncGenerator[bytes, None],
        status: int = 200,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        super().__init__(status, b"", None, headers)
        self.chunks = chunks


Handler = Callable[[Request], Awaitable[Response]]


class Router:
    """Method and path to a handler; `{name}` matches one whole path segment."""

    def __init__(self) -> None:
        self._routes: list[tuple[str, list[str], Handler]] = []

    def add(self, method: str, pattern: str, handler: Handler) -> None:
        self._routes.append((method, pattern.split("/")[1:], handler))

    def resolve(self, request: Request) -> Handler:
        """The handler of `request`, with `request.match_info` filled; HttpError 404 / 405."""
        allowed: list[str] = []
        for method, parts, handler in self._routes:
            found = _match(parts, request.segments)
            if found is None:
                continue
            if method == request.method or (method == "GET" and request.method == "HEAD"):
                request.match_info = found
                return handler
            allowed.append(method)
        if allowed:
            raise HttpError(
                405,
                "Method Not Allowed",
                f"{request.method} is not allowed here; use {', '.join(sorted(set(allowed)))}",
                [("Allow", ",".join(sorted(set(allowed))))],
            )
        raise HttpError(404, "Not Found", "Not Found")


def _match(parts: list[str], segments: list[str]) -> dict[str, str] | None:
    if len(parts) != len(segments):
        return None
    found: dict[str, str] = {}
    for part, seg in zip(parts, segments, strict=True):
        if part.startswith("{") and part.endswith("}"):
            if not seg:
                return None
            found[part[1:-1]] = seg
        elif part != seg:
            return None
    return found


class Application(Protocol):
    def check_head(self, request: Request) -> Response | None:
        """An answer for a request whose head is in, before its body is read (authorization);
        None to go on."""

    async def handle(self, request: Request) -> Response:
        """The answer to a whole request."""

    def refused(self, status: int, detail: str) -> Response:
        """What the server itself answers: 400, 408, 413 or 431, with why."""


class _Refused(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


@dataclass(frozen=True, slots=True)
class Limits:
    request_timeout: float = 10.0
    idle_timeout: float = 75.0
    linger: float = 2.0
    max_body: int = 256 * 1024
    max_header_line: int = 8190
    max_headers: int = 128
    backlog: int = 1024


_date_cache: tuple[int, str] = (0, "")


def _http_date() -> str:
    """RFC 9110 section 5.6.7's IMF-fixdate of now (computed once a second)."""
    global _date_cache  # noqa: PLW0603 - a cache of one value
    now = int(time.time())
    if _date_cache[0] != now:
        t = time.gmtime(now)
        day = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")[t.tm_wday]
        month = ("Jan", "Feb", "Mar", "Apr", "May", "Jun",
                 "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")[t.tm_mon - 1]  # fmt: skip
        text = (
            f"{day}, {t.tm_mday:02d} {month} {t.tm_year} "
            f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT"
        )
        _date_cache = (now, text)
    return _date_cache[1]


class _Connection:
    """One client connection: requests read under their deadline, answered in turn."""

    def __init__(
        self,
        app: Application,
        limits: Limits,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        stopping: asyncio.Event,
    ) -> None:
        self.app, self.limits = app, limits
        self.stopping = stopping  # the server is closing: no request after the current one
        self.reader, self.writer = reader, writer
        # h11 refuses a head (request line and headers) over this with a 431 hint.
        self.max_head = limits.max_header_line * 4
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=self.max_head)
        self.heard = False  # bytes arrived since the request's clock started
        self.busy = False  # a request is being handled or answered: not idle
        self.unread = False  # bytes of the current request may still be unread

    async def _receive(self) -> None:
        data = await self.reader.read(READ_CHUNK)
        if data:
            self.heard = True
        self.h11.receive_data(data)  # b"": the client closed its side

    async def _event(self) -> h11.Event | type[h11.PAUSED]:
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                await self._receive()
                continue
            return event  # type: ignore[return-value]

    async def _read_request(self) -> Request | None:
        """The next request's head, checked against the limits; None when the client closed."""
        event = await self._event()
        if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
            return None
        if not isinstance(event, h11.Request):
            raise _Refused(400, f"not an HTTP/1.1 request the agent reads: {event!r}")
        self.unread = True
        if event.http_version not in (b"1.0", b"1.1"):
            version = event.http_version.decode()
            raise _Refused(400, f"not an HTTP/1.1 request the agent reads: HTTP/{version}")
        lim = self.limits
        if len(event.target) > lim.max_header_line:
            raise _Refused(431, f"the request line is over {lim.max_header_line} bytes")
        if len(event.headers) > lim.max_headers:
            raise _Refused(431, f"there are more than {lim.max_headers} headers")
        for name, value in event.headers:
            if len(name) + len(value) + 2 > lim.max_header_line:
                raise _Refused(
                    431, f"a header line is over {lim.max_header_line} bytes: {name.decode()}"
                )
        peer = self.writer.get_extra_info("peername")
        return Request(
            event.method.decode("ascii"), event.target.decode("ascii"), Headers(event.headers), peer
        )

    async def _read_body(self, request: Request) -> None:
        size = request.headers.get("content-length")
        if size is not None and size.isdigit() and int(size) > self.limits.max_body:
            raise _Refused(413, f"a request body is at most {self.limits.max_body} bytes")
        if self.h11.they_are_waiting_for_100_continue:  # `Expect: 100-continue` (curl, .NET)
            self.writer.write(
                self.h11.send(h11.InformationalResponse(status_code=100, headers=[])) or b""
            )
        parts: list[bytes] = []
        got = 0
        while True:
            event = await self._event()
            if isinstance(event, h11.Data):
                got += len(event.data)
                if got > self.limits.max_body:
                    raise _Refused(413, f"a request body is at most {self.limits.max_body} bytes")
                parts.append(event.data)
            elif isinstance(event, h11.EndOfMessage):
                break
            else:  # the client closed half way
                raise ConnectionResetError("the client closed before its body was sent")
        self.unread = False
        request.body = b"".join(parts)

    async def _send(self, request: Request | None, resp: Response) -> None:
        headers = [("Date", _http_date()), *resp.headers]
        if resp.close:
            headers.append(("Connection", "close"))
        head_only = request is not None and request.method == "HEAD"
        streaming = isinstance(resp, StreamResponse)
        if not streaming and resp.status not in (204, 304) and resp.status >= 200:
            headers.append(("Content-Length", str(len(resp.body))))
        w = self.writer
        w.write(self.h11.send(h11.Response(status_code=resp.status, headers=headers,
                                           reason=resp.reason.encode())))  # fmt: skip
        if isinstance(resp, StreamResponse):
            try:
                if not head_only:
                    async for chunk in resp.chunks:
                        w.write(self.h11.send(h11.Data(data=chunk)) or b"")
                        await w.drain()
            finally:
                await resp.chunks.aclose()
        elif resp.body and not head_only:
            w.write(self.h11.send(h11.Data(data=resp.body)) or b"")
        w.write(self.h11.send(h11.EndOfMessage()) or b"")
        await w.drain()

    async def _refuse(self, request: Request | None, status: int, detail: str) -> None:
        """Answer what the server refused, then close (lingering over unread bytes)."""
        resp = self.app.refused(status, detail)
        resp.close = True
        if self.h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            with contextlib.suppress(h11.LocalProtocolError):
                await self._send(request, resp)
                return
        # h11 is in its error state (a malformed request): it writes no more, we do
        await self._write_raw(resp)

    async def _write_raw(self, resp: Response) -> None:
        """An answer written without h11 (it refuses to write once the client broke the
        protocol): the status line, the headers, Content-Length, the body; then we close."""
        lines = [f"HTTP/1.1 {resp.status} {resp.reason}", f"Date: {_http_date()}"]
        lines += [f"{k}: {v}" for k, v in resp.headers]
        lines += [f"Content-Length: {len(resp.body)}", "Connection: close"]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + resp.body)
        await self.writer.drain()

    async def _linger(self) -> None:
        """Before closing after a refusal: read and drop what the client still sends, for
        `linger` seconds at most, so the close does not reset the connection under the
        answer (a socket closed with bytes unread resets it: TCP sends RST, and a Unix
        socket's peer reads ECONNRESET). On a Unix socket, shutting our reading side first
        makes the client's further sends fail at once (EPIPE), so it stops and reads; our
        end of file after the answer tells a client reading to the end that it has it all."""
        sock = self.writer.get_extra_info("socket")
        if sock is not None and sock.family == socket.AF_UNIX:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RD)
        if self.writer.can_write_eof():
            with contextlib.suppress(OSError):
                self.writer.write_eof()  # the answer is whole: the client reads its end, closes
        with contextlib.suppress(TimeoutError, OSError):
            async with asyncio.timeout(self.limits.linger):
                while await self.reader.read(READ_CHUNK):
                    pass

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.limits.request_timeout  # the clock starts at connect
        try:
            while True:
                request: Request | None = None
                try:
                    async with asyncio.timeout_at(deadline):
                        request = await self._read_request()
                        if request is None:
                            return
                        self.busy = True
                        early = self.app.check_head(request)
                        if early is not None:
                            early.close = True  # the body stays unread
                            await self._send(request, early)
                            await self._linger()
                            return
                        await self._read_body(request)
                except TimeoutError:
                    if self.heard:
                        await self._refuse(request, 408, "the request was not sent in time")
                        await self._linger()
                    log.info("local API: closed a connection that sent no whole request in time")
                    return
                except h11.RemoteProtocolError as exc:
                    status = 431 if exc.error_status_hint == 431 else 400
                    log.info("local API: refused a malformed request: %s", exc)
                    if status == 431:
                        detail = f"the request's head is over {self.max_head} bytes"
                    else:
                        detail = f"not an HTTP/1.1 request the agent reads: {exc}"
                    await self._refuse(request, status, detail)
                    await self._linger()
                    return
                except _Refused as exc:
                    log.info("local API: refused a request: %s", exc.detail)
                    await self._refuse(request, exc.status, exc.detail)
                    await self._linger()
                    return
                resp = await self.app.handle(request)
                await self._send(request, resp)
                self.busy = False
                if self.stopping.is_set():
                    return
                if self.h11.our_state is not h11.DONE or self.h11.their_state is not h11.DONE:
                    if self.unread:
                        await self._linger()
                    return
                self.h11.start_next_cycle()
                if not self.h11.trailing_data[0]:
                    # idle between requests: the next one's clock starts with its first byte
                    try:
                        async with asyncio.timeout(self.limits.idle_timeout):
                            await self._receive()
                    except TimeoutError:
                        return
                self.heard = True
                deadline = loop.time() + self.limits.request_timeout
        except (ConnectionError, OSError, h11.LocalProtocolError):
            return  # the client went away (or an answer could not be written)
        finally:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()


class Server:
    """Serves `app` on listening sockets until closed; `close()` lets answers in flight end
    (for `shutdown_timeout` seconds at most) and drops idle keep-alive connections."""

    def __init__(self, app: Application, limits: Limits, shutdown_timeout: float = 5.0) -> None:
        self.app, self.limits, self.shutdown_timeout = app, limits, shutdown_timeout
        self._servers: list[asyncio.Server] = []
        self._conns: dict[asyncio.Task[None], _Connection] = {}
        self._stopping = asyncio.Event()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        conn = _Connection(self.app, self.limits, reader, writer, self._stopping)
        self._conns[task] = conn
        try:
            await conn.serve()
        except asyncio.CancelledError:
            # close() ends idle connections; nothing awaits this task, and Python 3.11's
            # start_server logs a cancelled connection task as an error.
            pass
        except Exception:
            log.exception("local API: a connection failed")
        finally:
            self._conns.pop(task, None)

    async def listen(self, sock: socket.socket) -> None:
        """Serve on `sock`, bound already (a Unix socket or TCP)."""
        if sock.family == socket.AF_UNIX:
            server = await asyncio.start_unix_server(
                self._client, sock=sock, backlog=self.limits.backlog
            )
        else:
            server = await asyncio.start_server(
                self._client, sock=sock, backlog=self.limits.backlog
            )
        self._servers.append(server)

    async def close(self) -> None:
        self._stopping.set()
        for server in self._servers:
            server.close()
        for task, conn in list(self._conns.items()):
            if not conn.busy:
                task.cancel()
        pending = list(self._conns)
        if pending:
            _, late = await asyncio.wait(pending, timeout=self.shutdown_timeout)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late, timeout=1.0)
        for server in self._servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        self._servers.clear()
