"""A loopback TCP proxy that can fail like a WAN link: for fault tests and the demo.

A lane's real enemy is not a clean disconnect but a link that goes silent (no FIN, no RST) or
resets; only a proxy in the byte path can produce those on demand against a real broker.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import enum
import socket
import struct
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self, TypeVar

__all__ = ["ProxyMode", "ProxyThread", "TcpProxy"]

_T = TypeVar("_T")
_CHUNK = 65536
_LINGER_RST = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST, not FIN


class ProxyMode(enum.Enum):
    PASS = "pass"  # noqa: S105 - a mode name, not a password
    BLACKHOLE = "blackhole"
    CUT = "cut"


class _ConnectionOver(Exception):
    """Raised by a pump to end both directions of one proxied connection."""

    def __init__(self, reset: bool) -> None:
        super().__init__(reset)
        self.reset = reset


@dataclass(eq=False)
class _Conn:
    number: int
    client: socket.socket
    upstream: socket.socket | None = None
    task: asyncio.Task[None] | None = None
    # Once a byte has been dropped the stream has a hole: it can never be forwarded again.
    poisoned: bool = False
    reset: bool = False


def _close(sock: socket.socket | None, *, reset: bool) -> None:
    if sock is None or sock.fileno() < 0:
        return
    if reset:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
    sock.close()


class TcpProxy:
    """Forward `listen_host:port` to `upstream`, with modes switchable at run time.

    - `pass`: forward both ways.
    - `blackhole()`: keep every TCP connection open but drop all bytes both ways; accept new
      connections and never forward anything. No FIN, no RST: a dead WAN link. A connection
      that lost bytes stays black after `resume()` (its byte stream has a hole), so the client
      must notice by its own keepalive, as it would in the field.
    - `cut()`: reset (RST) every current connection and reset new ones on accept.
    - `resume()`: back to pass for new connections.

    Mode switches are plain methods: call them from the proxy's event loop (or use ProxyThread).
    """

    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        *,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
        name: str = "proxy",
    ) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.listen_host = listen_host
        self._listen_port = listen_port
        self.name = name
        self._mode = ProxyMode.PASS
        self._sock: socket.socket | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._accept_task: asyncio.Task[None] | None = None
        self._conns: set[_Conn] = set()
        self._count = 0
        self.bytes_up = 0  # client -> upstream, forwarded
        self.bytes_down = 0  # upstream -> client, forwarded
        self.bytes_dropped = 0
        self.connections_total = 0
        self.connections_refused = 0

    @property
    def port(self) -> int:
        """The listening port (the one chosen by the kernel when constructed with 0)."""
        if self._sock is None:
            raise RuntimeError("proxy is not started")
        port: int = self._sock.getsockname()[1]
        return port

    @property
    def mode(self) -> ProxyMode:
        return self._mode

    @property
    def connections_active(self) -> int:
        return len(self._conns)

    def blackhole(self) -> None:
        """Silently drop every byte from now on, on open and new connections alike."""
        self._mode = ProxyMode.BLACKHOLE

    def cut(self) -> None:
        """Reset all open connections and every new one until resume()."""
        self._mode = ProxyMode.CUT
        for conn in list(self._conns):
            conn.reset = True
            if conn.task is not None:
                conn.task.cancel()

    def resume(self) -> None:
        """Forward again (new connections; blackholed ones stay dead)."""
        self._mode = ProxyMode.PASS

    async def __aenter__(self) -> Self:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.listen_host, self._listen_port))
            sock.listen(128)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._tg = asyncio.TaskGroup()
        await self._tg.__aenter__()
        self._accept_task = self._tg.create_task(self._accept_loop(), name=f"{self.name}-accept")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._tg is not None
        if self._accept_task is not None:
            self._accept_task.cancel()
        for conn in list(self._conns):
            if conn.task is not None:
                conn.task.cancel()
        try:
            await self._tg.__aexit__(exc_type, exc, tb)
        finally:
            self._tg = None
            self._accept_task = None
            if self._sock is not None:
                self._sock.close()

    async def _accept_loop(self) -> None:
        assert self._sock is not None
        assert self._tg is not None
        loop = asyncio.get_running_loop()
        while True:
            client, _ = await loop.sock_accept(self._sock)
            client.setblocking(False)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._count += 1
            self.connections_total += 1
            if self._mode is ProxyMode.CUT:
                self.connections_refused += 1
                _close(client, reset=True)
                continue
            conn = _Conn(self._count, client)
            self._conns.add(conn)
            conn.task = self._tg.create_task(
                self._serve(conn), name=f"{self.name}-conn-{conn.number}"
            )

    async def _serve(self, conn: _Conn) -> None:
        loop = asyncio.get_running_loop()
        try:
            if self._mode is ProxyMode.BLACKHOLE:
                # A dead link: the upstream never hears of this connection.
                conn.poisoned = True
            else:
                up = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                up.setblocking(False)
                conn.upstream = up
                try:
                    await loop.sock_connect(up, (self.upstream_host, self.upstream_port))
                except OSError:
                    # Upstream down: the client sees the refusal as a reset, like a direct
                    # connect would.
                    conn.reset = True
                    return
                up.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(
                        self._pump(conn, upstream_bound=True),
                        name=f"{self.name}-conn-{conn.number}-up",
                    )
                    if conn.upstream is not None:
                        tg.create_task(
                            self._pump(conn, upstream_bound=False),
                            name=f"{self.name}-conn-{conn.number}-down",
                        )
            except* _ConnectionOver as group:
                conn.reset = conn.reset or any(
                    isinstance(e, _ConnectionOver) and e.reset for e in group.exceptions
                )
        finally:
            self._conns.discard(conn)
            _close(conn.client, reset=conn.reset)
            _close(conn.upstream, reset=conn.reset)

    async def _pump(self, conn: _Conn, *, upstream_bound: bool) -> None:
        loop = asyncio.get_running_loop()
        src = conn.client if upstream_bound else conn.upstream
        dst = conn.upstream if upstream_bound else conn.client
        assert src is not None
        while True:
            try:
                data = await loop.sock_recv(src, _CHUNK)
            except OSError:
                data = None  # reset by peer
            if not data:
                if conn.poisoned or self._mode is ProxyMode.BLACKHOLE:
                    # Over a dead link neither end hears of the other's close: each side only
                    # finds out through its own keepalive. Close just our side and let the
                    # other pump drain its peer until that peer gives up too.
                    conn.poisoned = True
                    _close(src, reset=False)
                    return
                raise _ConnectionOver(reset=data is None)
            if conn.poisoned or self._mode is not ProxyMode.PASS:
                conn.poisoned = True
                self.bytes_dropped += len(data)
                continue
            assert dst is not None
            try:
                await loop.sock_sendall(dst, data)
            except OSError:
                raise _ConnectionOver(reset=True) from None
            if upstream_bound:
                self.bytes_up += len(data)
            else:
                self.bytes_down += len(data)


class ProxyThread:
    """A TcpProxy on its own event loop in its own thread, for synchronous callers.

    Every control method is thread-safe and returns once the proxy has applied it.
    """

    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        *,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
        name: str = "proxy",
    ) -> None:
        self._proxy = TcpProxy(
            upstream_host,
            upstream_port,
            listen_host=listen_host,
            listen_port=listen_port,
            name=name,
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"lanesync-{name}", daemon=False)

    @property
    def proxy(self) -> TcpProxy:
        """The proxy itself; read its counters, but switch modes through this wrapper."""
        return self._proxy

    @property
    def port(self) -> int:
        return self._proxy.port

    def start(self, timeout: float = 10.0) -> Self:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("proxy thread did not start")
        if self._error is not None:
            self._thread.join()
            raise self._error
        return self

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # noqa: BLE001 - handed to the starting thread
            self._error = exc
        finally:
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with self._proxy:
            self._ready.set()
            await self._stop.wait()

    def _call(self, fn: Callable[[], _T]) -> _T:
        async def run() -> _T:
            return fn()

        return self._submit(run())

    def _submit(self, coro: Coroutine[Any, Any, _T]) -> _T:
        if self._loop is None or not self._thread.is_alive():
            coro.close()
            raise RuntimeError("proxy thread is not running")
        future: concurrent.futures.Future[_T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout=10.0)

    def blackhole(self) -> None:
        self._call(self._proxy.blackhole)

    def cut(self) -> None:
        self._call(self._proxy.cut)

    def resume(self) -> None:
        self._call(self._proxy.resume)

    def close(self, timeout: float = 10.0) -> None:
        """Stop the proxy (closing its connections) and join the thread."""
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread.ident is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise TimeoutError("proxy thread did not stop")

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
