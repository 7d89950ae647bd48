"""Shared by the tests/api suites: an agent's local API on a Unix socket, and a client for it."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import socket
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from agent.api import LocalApi
from agent.catalog.view import CatalogView
from agent.config import AgentConfig, ApiConfig, catalog_path
from agent.documents.envelope import DocContext
from agent.journal import Journal
from agent.numbering import TransitConfig
from hardware.queue import ScanQueue
from protocol.identity import LaneId
from tests.rules.lane_catalog import standard

LANE = LaneId("S1", "L1")
TRANSIT = TransitConfig(gs1_company_prefix="5703538", sscc_lane_prefix="01")
_VIEWS: dict[frozenset[tuple[str, str]], CatalogView] = {}


def catalog_view(settings: dict[str, str] | None = None) -> CatalogView:
    """A lane catalog file of tests/rules/lane_catalog.standard() (tax rates with the VAT_STD
    change of 2024-07-01: documents before it keep 19 %), with `settings` (chain scope) on
    top; one file per set of settings for the whole run (documents only read it)."""
    key = frozenset((settings or {}).items())
    if key not in _VIEWS:
        path = Path(tempfile.mkdtemp(prefix="lanesync-catalog-")) / "catalog.db"
        cat = standard(path, LANE, publish=False)
        for name, value in (settings or {}).items():
            cat.setting(name, value)
        cat.publish()
        _VIEWS[key] = cat.view()
    return _VIEWS[key]


def context(*, settings: dict[str, str] | None = None, **kw: Any) -> DocContext:
    base: dict[str, Any] = {"lane": LANE, "transit": TRANSIT, "catalog": catalog_view(settings)}
    base.update(kw)
    return DocContext(**base)


def agent_config(tmp: Path, **kw: Any) -> AgentConfig:
    base: dict[str, Any] = {
        "lane": LANE,
        "journal_path": tmp / "journal.db",
        "api": ApiConfig(socket=str(tmp / "api.sock")),
        "transit": TRANSIT,
    }
    base.update(kw)
    return AgentConfig(**base)


class Client:
    """JSON over the agent's Unix socket; returns (status, body, content type)."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any, str]:
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": "application/json"} if data is not None else {}
        async with self.session.request(
            method, f"http://lane{path}", data=data, headers=headers
        ) as r:
            text = await r.text()
            return r.status, (json.loads(text) if text else None), r.content_type


@contextlib.asynccontextmanager
async def running_api(
    tmp: Path,
    *,
    scans: ScanQueue | None = None,
    settings: dict[str, str] | None = None,
    standard_catalog: bool = True,
    **kw: Any,
) -> AsyncIterator[tuple[LocalApi, Client]]:
    """The local API over a journal in `tmp`, checking documents against the lane's catalog
    file: the standard one (tests/rules/lane_catalog.py) unless the test wrote its own first,
    or none with `standard_catalog=False` (a lane that never reached head office)."""
    cfg = agent_config(tmp, **kw)
    path = catalog_path(cfg.journal_path, cfg.catalog)
    if standard_catalog and not path.exists():
        cat = standard(path, cfg.lane, publish=False)
        for name, value in (settings or {}).items():
            cat.setting(name, value)
        cat.publish()
    async with (
        Journal(cfg.journal_path, cfg.lane) as journal,
        LocalApi(cfg.api, journal, None, agent=cfg, scans=scans) as api,
        aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(cfg.api.socket))) as s,
    ):
        yield api, Client(s)


def sale(**kw: Any) -> dict[str, Any]:
    """A cash sale of two lines at 2024-08-01 rates (VAT_STD 20 %, VAT_RED 7 %)."""
    doc: dict[str, Any] = {
        "kind": "sale",
        "business_day": "2024-08-01",
        "time": "2024-08-01T10:00:00+02:00",
        "currency": "EUR",
        "customer": None,
        "lines": [
            {
                "item": "P1000",
                "qty": "2.000",
                "unit_price": 1899,
                "tax_code": "VAT_STD",
                "amount": 3798,
                "tax": 633,
            },
            {
                "item": "P3000",
                "qty": "1.000",
                "unit_price": 179,
                "tax_code": "VAT_RED",
                "amount": 179,
                "tax": 12,
            },
        ],
        "payments": [{"tender": "cash", "amount": 4000}],
        "total": 3977,
        "change": 23,
    }
    doc.update(kw)
    return doc


# --- a real API in a thread of its own, for synchronous clients (hypothesis, schemathesis) ------


@contextlib.contextmanager
def api_in_thread(tmp: Path, **kw: Any) -> Iterator[LocalApi]:
    """`running_api` on its own event loop in a thread; yields the API once it listens."""
    ready = threading.Event()
    box: list[Any] = []
    failed: list[BaseException] = []

    async def serve() -> None:
        try:
            async with running_api(tmp, **kw) as (api, _client):
                done = asyncio.Event()
                box.extend([api, asyncio.get_running_loop(), done])
                ready.set()
                await done.wait()
        except BaseException as exc:
            failed.append(exc)
            ready.set()
            raise

    thread = threading.Thread(target=lambda: asyncio.run(serve()), name="api-under-test")
    thread.start()
    assert ready.wait(20), "the API did not start"
    if failed:
        thread.join(5)
        raise failed[0]
    api, loop, done = box
    try:
        yield api
    finally:
        loop.call_soon_threadsafe(done.set)
        thread.join(20)
        assert not thread.is_alive(), "the API did not stop"


@dataclass(frozen=True, slots=True)
class RawAnswer:
    status: int
    content_type: str
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def raw_request(
    socket_path: str | Path,
    parts: Sequence[bytes],
    *,
    pause_s: float = 0.0,
    timeout: float = 10.0,
) -> RawAnswer | None:
    """Send `parts` (any bytes: this is for broken requests) over the API socket, `pause_s`
    apart, then read one answer; None when the agent closed without answering."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(socket_path))
        for i, part in enumerate(parts):
            if i and pause_s:
                time.sleep(pause_s)
            try:
                sock.sendall(part)
            except (BrokenPipeError, ConnectionResetError):
                break  # the agent gave up on us: read what it said
        resp = http.client.HTTPResponse(sock)
        try:
            resp.begin()
        except (http.client.RemoteDisconnected, ConnectionResetError):
            return None
        body = resp.read()
        return RawAnswer(resp.status, resp.getheader("Content-Type", ""), body)
    finally:
        sock.close()


def http_request(
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
) -> bytes:
    """The bytes of one HTTP/1.1 request (Host and Content-Length filled in)."""
    lines = [f"{method} {path} HTTP/1.1", "Host: lane"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogatepass") + body
