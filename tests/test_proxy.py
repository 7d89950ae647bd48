"""TcpProxy and ProxyThread: the link faults the fault tests rely on, shown on real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import aiomqtt
import pytest

from lanesync.broker import MosquittoBroker
from lanesync.proxy import ProxyMode, ProxyThread, TcpProxy

pytestmark = pytest.mark.timeout(30)

ProxyFactory = Callable[..., Awaitable[TcpProxy]]  # the `proxy` fixture in conftest

QUIET_S = 0.3  # "nothing arrives" windows: long against loopback latency, short for the suite


@contextlib.asynccontextmanager
async def listener() -> AsyncIterator[socket.socket]:
    """A bare upstream listening socket, so we can see exactly what the proxy forwards."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.setblocking(False)
    try:
        yield sock
    finally:
        sock.close()


async def accept(lsock: socket.socket, timeout: float = 2.0) -> socket.socket:
    async with asyncio.timeout(timeout):
        conn, _ = await asyncio.get_running_loop().sock_accept(lsock)
    conn.setblocking(False)
    return conn


async def recv(sock: socket.socket, timeout: float = 2.0) -> bytes:
    async with asyncio.timeout(timeout):
        return await asyncio.get_running_loop().sock_recv(sock, 65536)


async def send(sock: socket.socket, data: bytes) -> None:
    await asyncio.get_running_loop().sock_sendall(sock, data)


async def connect(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return sock


async def assert_silent(sock: socket.socket) -> None:
    """No data, no FIN (b''), no RST (ConnectionResetError) within QUIET_S."""
    with pytest.raises(TimeoutError):
        await recv(sock, QUIET_S)


# -- raw TCP ---------------------------------------------------------------------------------


async def test_pass_forwards_both_ways_and_counts() -> None:
    async with listener() as lsock, TcpProxy("127.0.0.1", lsock.getsockname()[1]) as proxy:
        assert proxy.port != 0
        with await connect(proxy.port) as client, await accept(lsock) as upstream:
            await send(client, b"hello")
            assert await recv(upstream) == b"hello"
            await send(upstream, b"world!")
            assert await recv(client) == b"world!"
            assert (proxy.bytes_up, proxy.bytes_down) == (5, 6)
            assert proxy.connections_total == proxy.connections_active == 1
            # A clean close from upstream arrives as a clean close (FIN), not a reset.
            upstream.close()
            assert await recv(client) == b""
        await asyncio.sleep(0.05)
        assert proxy.connections_active == 0


async def test_blackhole_is_silent_both_ways_without_fin_or_rst() -> None:
    async with listener() as lsock, TcpProxy("127.0.0.1", lsock.getsockname()[1]) as proxy:
        with await connect(proxy.port) as client, await accept(lsock) as upstream:
            proxy.blackhole()
            assert proxy.mode is ProxyMode.BLACKHOLE
            await send(client, b"into the void")
            await assert_silent(upstream)
            await send(upstream, b"nor back")
            await assert_silent(client)
            # The far end giving up is not seen either: no FIN reaches the client.
            upstream.close()
            await assert_silent(client)
            # New connections are accepted but never reach upstream.
            with await connect(proxy.port) as late:
                await send(late, b"anyone?")
                with pytest.raises(TimeoutError):
                    await accept(lsock, QUIET_S)
                await assert_silent(late)
            assert proxy.bytes_dropped >= len(b"into the voidnor backanyone?")
            assert proxy.bytes_up == proxy.bytes_down == 0
            # After resume a connection with a hole in its stream stays dead ...
            proxy.resume()
            await send(client, b"still there?")
            await assert_silent(client)
            # ... while a new one forwards.
            with await connect(proxy.port) as fresh, await accept(lsock) as up2:
                await send(fresh, b"ok")
                assert await recv(up2) == b"ok"


async def test_cut_resets_open_and_new_connections() -> None:
    async with listener() as lsock, TcpProxy("127.0.0.1", lsock.getsockname()[1]) as proxy:
        with await connect(proxy.port) as client, await accept(lsock) as upstream:
            proxy.cut()
            with pytest.raises(ConnectionResetError):
                await recv(client)
            with pytest.raises(ConnectionResetError):
                await recv(upstream)
        with await connect(proxy.port) as refused, pytest.raises(ConnectionResetError):
            await recv(refused)
        assert proxy.connections_refused == 1
        proxy.resume()
        with await connect(proxy.port) as client, await accept(lsock) as upstream:
            await send(client, b"back")
            assert await recv(upstream) == b"back"


async def test_upstream_down_resets_client() -> None:
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        dead_port = placeholder.getsockname()[1]  # bound, not listening: refuses
        async with TcpProxy("127.0.0.1", dead_port) as proxy:
            with await connect(proxy.port) as client, pytest.raises(ConnectionResetError):
                await recv(client)


async def test_exit_closes_connections_and_listener() -> None:
    async with listener() as lsock:
        proxy = TcpProxy("127.0.0.1", lsock.getsockname()[1])
        async with proxy:
            port = proxy.port
            client = await connect(port)
            upstream = await accept(lsock)
        with client, upstream:
            assert await recv(client) == b""
            assert await recv(upstream) == b""
        with pytest.raises(ConnectionRefusedError):
            await connect(port)


def test_proxy_thread_controls_from_sync_code() -> None:
    with socket.create_server(("127.0.0.1", 0)) as lsock:
        lsock.settimeout(2)
        with ProxyThread("127.0.0.1", lsock.getsockname()[1], name="t-proxy") as pt:
            assert any(t.name == "lanesync-t-proxy" for t in threading.enumerate())
            with socket.create_connection(("127.0.0.1", pt.port), timeout=2) as client:
                upstream, _ = lsock.accept()
                with upstream:
                    client.sendall(b"ping")
                    assert upstream.recv(10) == b"ping"
                    pt.blackhole()
                    client.sendall(b"lost")
                    upstream.settimeout(QUIET_S)
                    with pytest.raises(TimeoutError):
                        upstream.recv(10)
                    pt.cut()
                    with pytest.raises(ConnectionResetError):
                        client.recv(10)
            pt.resume()
            assert pt.proxy.mode is ProxyMode.PASS
            with socket.create_connection(("127.0.0.1", pt.port), timeout=2) as client:
                upstream, _ = lsock.accept()
                with upstream:
                    client.sendall(b"again")
                    assert upstream.recv(10) == b"again"
        assert not any(t.name == "lanesync-t-proxy" for t in threading.enumerate())
        with pytest.raises(RuntimeError):
            pt.cut()


# -- MQTT through the proxy against the real broker -----------------------------------------


def mqtt(port: int, *, timeout: float = 5.0, keepalive: int = 60) -> aiomqtt.Client:
    return aiomqtt.Client("127.0.0.1", port, timeout=timeout, keepalive=keepalive)


async def next_message(client: aiomqtt.Client, timeout: float = 3.0) -> aiomqtt.Message:
    async with asyncio.timeout(timeout):
        return await anext(client.messages)


async def test_mqtt_pubsub_through_proxy(broker: MosquittoBroker, proxy: ProxyFactory) -> None:
    p = await proxy(broker)
    async with mqtt(p.port) as sub, mqtt(p.port) as pub:
        await sub.subscribe("t/pass", qos=1)
        await pub.publish("t/pass", b"sale-1", qos=1)
        msg = await next_message(sub)
        assert msg.payload == b"sale-1"
    assert p.connections_total == 2
    assert p.bytes_up > 0
    assert p.bytes_down > 0


async def test_mqtt_blackhole_stalls_publish_without_disconnect_then_resume(
    broker: MosquittoBroker, proxy: ProxyFactory
) -> None:
    p = await proxy(broker)
    async with mqtt(p.port) as lane:
        p.blackhole()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(1.0):
                await lane.publish("t/bh", b"sale-2", qos=1)
        # No disconnect either: the message iterator just waits.
        with pytest.raises(TimeoutError):
            await next_message(lane, QUIET_S)
        assert p.connections_active == 1
        p.resume()
        async with mqtt(p.port) as fresh:
            await fresh.subscribe("t/bh2", qos=1)
            await fresh.publish("t/bh2", b"after", qos=1)
            assert (await next_message(fresh)).payload == b"after"


async def test_mqtt_keepalive_detects_blackhole(
    broker: MosquittoBroker, proxy: ProxyFactory
) -> None:
    """A silent link is found only by the client's own keepalive (PINGREQ without PINGRESP)."""
    p = await proxy(broker)
    async with mqtt(p.port, keepalive=1) as lane:
        p.blackhole()
        started = time.monotonic()
        with pytest.raises(aiomqtt.MqttError):
            await next_message(lane, 6.0)
        assert time.monotonic() - started >= 0.5


async def test_mqtt_cut_disconnects_client_promptly(
    broker: MosquittoBroker, proxy: ProxyFactory
) -> None:
    p = await proxy(broker)
    async with mqtt(p.port) as lane:
        p.cut()
        started = time.monotonic()
        with pytest.raises(aiomqtt.MqttError):
            await next_message(lane, 2.0)
        assert time.monotonic() - started < 2.0
    # Reset on accept. aiomqtt reports a connection lost before CONNACK only at its timeout.
    with pytest.raises(aiomqtt.MqttError):
        async with mqtt(p.port, timeout=0.5):
            pass
    p.resume()
    async with mqtt(p.port) as lane:
        await lane.publish("t/cut", b"x", qos=1)
