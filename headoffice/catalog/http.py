"""`POST /api/catalog/{dataset}`: the ERP loads a dataset over HTTP, as `lanesync catalog load`.

Served on the status page's listener. The body is the file, CSV (`Content-Type: text/csv`) or
JSON Lines (`application/x-ndjson`, `application/jsonl`); `?upsert=1` adds and changes rows
without removing any. The caller shows the bearer token of `[catalog] api_token_file`
(`Authorization: Bearer ...`, compared in constant time); without it the answer is 401.

The same loader as the CLI (headoffice.catalog.load): the whole body is checked first and a
bad row refuses the load with `application/problem+json` (RFC 9457) naming file, row and
column (422), nothing changed. The load runs on a thread of its own with its own connection,
so the event loop (status page, publisher) never waits on it.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiohttp import web

from headoffice.catalog import load as loader
from headoffice.catalog.versions import LoadResult
from headoffice.config import CatalogConfig
from headoffice.db import Target, open_target
from headoffice.projections import PROJECTIONS
from protocol.errors import LanesyncError
from protocol.pan import mask_text
from protocol.runtime.httpserver import PROBLEM

log = logging.getLogger(__name__)


def problem(status: int, title: str, detail: str, **extra: Any) -> web.Response:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": mask_text(detail),
    }
    body.update({k: mask_text(v) if isinstance(v, str) else v for k, v in extra.items()})
    headers = {"WWW-Authenticate": 'Bearer realm="lanesync catalog"'} if status == 401 else None
    return web.Response(status=status, text=json.dumps(body), content_type=PROBLEM, headers=headers)


def _authorized(request: web.Request, token: str) -> bool:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given:
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


def _run_load(database: Target, parsed: loader.Parsed, upsert: bool, source: str) -> LoadResult:
    store = open_target(database, projections=PROJECTIONS)
    try:
        return loader.load_parsed(store.sql, parsed, upsert=upsert, source=source)
    finally:
        store.close()


def add_routes(app: web.Application, database: Target, config: CatalogConfig) -> None:
    """Add the endpoint to `app` (made with client_max_size >= config.max_upload_bytes)."""
    loads = ThreadPoolExecutor(max_workers=1, thread_name_prefix="catalog-http-load")

    async def shutdown(_: web.Application) -> None:
        await asyncio.get_running_loop().run_in_executor(None, loads.shutdown)

    app.on_cleanup.append(shutdown)

    async def post(request: web.Request) -> web.Response:
        if config.api_token is None:
            return problem(
                403,
                "Catalog endpoint off",
                "head office has no [catalog] api_token_file: the ERP endpoint is off",
            )
        if not _authorized(request, config.api_token):
            return problem(401, "Unauthorized", "send Authorization: Bearer <the catalog token>")
        dataset = request.match_info["dataset"]
        upsert = request.query.get("upsert", "0").lower() in ("1", "true", "yes")
        source = f"http:{request.remote or '?'}/{dataset}"
        try:
            fmt = loader.format_of_content_type(request.headers.get("Content-Type"))
            data = await request.read()
            parsed = await asyncio.to_thread(loader.parse, data, fmt, dataset, "request body")
        except web.HTTPRequestEntityTooLarge:
            return problem(
                413,
                "Too large",
                f"the body exceeds [catalog] max_upload_bytes ({config.max_upload_bytes})",
            )
        except loader.LoadError as exc:
            return problem(422, "Load refused", str(exc), **exc.as_dict())
        loop = asyncio.get_running_loop()
        try:
            res = await loop.run_in_executor(loads, _run_load, database, parsed, upsert, source)
        except LanesyncError as exc:
            log.error("catalog load over HTTP failed: %s", exc)
            return problem(503, "Load failed", str(exc))
        log.info("catalog load over HTTP from %s: %s", request.remote, res.as_dict())
        return web.json_response({"ok": True, **res.as_dict()})

    app.router.add_post("/api/catalog/{dataset}", post)
