"""The agent's HTTP server itself (agent.httpserver, h11 over asyncio streams): keep-alive and
pipelining, chunked bodies, HEAD, 405 with Allow, HTTP/1.0, and a refusal over TCP that the
client reads instead of a reset. Real sockets, raw bytes."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

from agent.config import ApiConfig
from tests.api.api_helpers import http_request, running_api, sale

PROBLEM = "application/problem+json"


async def _answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One answer with a Content-Length body: (status, headers by lowercase name, body)."""
    status_line = await asyncio.wait_for(reader.readline(), 10)
    status = int(status_line.split()[1])
    headers: dict[str, str] = {}
    while (line := await reader.readline()) != b"\r\n":
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, body


async def test_pipelined_requests_are_answered_in_order_on_one_connection(tmp_path: Path) -> None:
    async with running_api(tmp_path) as (api, _c):
        reader, writer = await asyncio.open_unix_connection(str(api.config.socket))
        try:
            body = json.dumps(sale()).encode()
            ctype = {"Content-Type": "application/json"}
            writer.write(
                http_request("GET", "/v1/status")
                + http_request("POST", "/v1/documents", body, ctype)
                + http_request("GET", "/v1/nowhere")
                + http_request("GET", "/v1/status")
            )
            got = [await _answer(reader) for _ in range(4)]
        finally:
            writer.close()
        assert [status for status, _, _ in got] == [200, 201, 404, 200]
        assert json.loads(got[1][2])["seq"] == 1
        assert got[2][1]["content-type"].startswith(PROBLEM)
        assert json.loads(got[3][2])["last_seq"] == 1
        assert "date" in got[0][1]


async def test_a_chunked_body_head_and_405(tmp_path: Path) -> None:
    async with running_api(tmp_path) as (api, _c):
        reader, writer = await asyncio.open_unix_connection(str(api.config.socket))
        try:
            doc = json.dumps(sale()).encode()
            half = len(doc) // 2
            chunks = b"".join(
                f"{len(part):x}\r\n".encode() + part + b"\r\n" for part in (doc[:half], doc[half:])
            )
            writer.write(
                b"POST /v1/documents/check HTTP/1.1\r\nHost: lane\r\n"
                b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                + chunks
                + b"0\r\n\r\n"
            )
            status, _, body = await _answer(reader)
            assert status == 200, body
            assert json.loads(body)["valid"] is True
            writer.write(b"HEAD /v1/status HTTP/1.1\r\nHost: lane\r\n\r\n")
            status_line = await asyncio.wait_for(reader.readline(), 10)
            assert status_line.startswith(b"HTTP/1.1 200"), status_line
            headers = {}
            while (line := await reader.readline()) != b"\r\n":
                name, _, value = line.decode().partition(":")
                headers[name.strip().lower()] = value.strip()
            assert int(headers["content-length"]) > 0  # what a GET would carry, and no body:
            writer.write(http_request("PATCH", "/v1/documents"))
            status, headers, body = await _answer(reader)  # the next answer follows at once
            assert status == 405
            assert headers["allow"] == "POST"
            assert headers["content-type"].startswith(PROBLEM)
            assert json.loads(body)["status"] == 405
        finally:
            writer.close()


async def test_http_10_is_answered_and_closed(tmp_path: Path) -> None:
    async with running_api(tmp_path) as (api, _c):
        reader, writer = await asyncio.open_unix_connection(str(api.config.socket))
        try:
            writer.write(b"GET /v1/status HTTP/1.0\r\n\r\n")
            raw = await asyncio.wait_for(reader.read(), 10)  # to the end: the agent closes
        finally:
            writer.close()
        assert raw.startswith(b"HTTP/1.1 200 "), raw[:60]
        assert json.loads(raw.partition(b"\r\n\r\n")[2])["lane"] == "L1"


async def test_a_body_too_large_over_tcp_is_read_as_413_not_a_reset(tmp_path: Path) -> None:
    api_cfg = ApiConfig(socket=str(tmp_path / "api.sock"), tcp="127.0.0.1:0", token="s3cret")
    async with running_api(tmp_path, api=api_cfg) as (api, _c):
        assert api.tcp_port is not None
        body = b"[" + b"1," * 200_000 + b"1]"  # 400 KiB: over the 256 KiB limit
        head = http_request(
            "POST",
            "/v1/documents",
            body,
            {"Content-Type": "application/json", "Authorization": "Bearer s3cret"},
        )
        loop = asyncio.get_running_loop()
        for chunked in (False, True):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                await loop.sock_connect(sock, ("127.0.0.1", api.tcp_port))
                if chunked:
                    request = (
                        b"POST /v1/documents HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret"
                        b"\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                        + b"".join(b"10000\r\n" + b" " * 0x10000 + b"\r\n" for _ in range(6))
                        + b"0\r\n\r\n"
                    )
                else:
                    request = head
                await loop.sock_sendall(sock, request)
                said = b""
                async with asyncio.timeout(10):
                    while chunk := await loop.sock_recv(sock, 65536):
                        said += chunk
            finally:
                sock.close()
            assert said.startswith(b"HTTP/1.1 413 "), said[:80]
            head_part, _, answer = said.partition(b"\r\n\r\n")
            assert PROBLEM.encode() in head_part
            assert json.loads(answer)["status"] == 413


async def test_stopping_ends_an_open_event_stream_at_once(tmp_path: Path) -> None:
    """The agent stopping ends a POS's open /v1/scans stream and closes the connection
    (it does not wait for the stream's client, nor its keep-alive, to end)."""
    loop = asyncio.get_running_loop()
    async with running_api(tmp_path) as (api, _c):
        reader, writer = await asyncio.open_unix_connection(str(api.config.socket))
        writer.write(http_request("GET", "/v1/scans"))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 200 "), head
        assert b"text/event-stream" in head
        while not api.hub.subscribers:
            await asyncio.sleep(0.01)
        started = loop.time()
    took = loop.time() - started
    rest = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert took < 2.0, took
    assert rest.endswith(b"0\r\n\r\n"), rest[-40:]  # the stream ended whole (chunked)
    assert not api.hub.subscribers


async def test_expect_100_continue_is_answered_before_the_body(tmp_path: Path) -> None:
    """curl and .NET's HttpClient send `Expect: 100-continue` and wait for it before a body."""
    async with running_api(tmp_path) as (api, _c):
        reader, writer = await asyncio.open_unix_connection(str(api.config.socket))
        try:
            body = json.dumps(sale()).encode()
            writer.write(
                b"POST /v1/documents HTTP/1.1\r\nHost: lane\r\nContent-Type: application/json\r\n"
                b"Expect: 100-continue\r\n" + f"Content-Length: {len(body)}\r\n\r\n".encode()
            )
            interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert interim.startswith(b"HTTP/1.1 100 "), interim
            writer.write(body)
            status, _, out = await _answer(reader)
            assert status == 201, out
        finally:
            writer.close()
