"""`POST /api/catalog/{dataset}` on the status page's listener: the ERP's load, over real HTTP,
into SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest

from headoffice.catalog import versions
from headoffice.config import CatalogConfig, parse, read_token
from headoffice.db import open_readonly
from headoffice.statuspage import status_app
from protocol.errors import ConfigError
from protocol.runtime.httpserver import HttpServer
from tests import pgutil
from tests.pgutil import Backend

backend = pgutil.backend  # the fixture, parametrised over SQLite and PostgreSQL
TOKEN = "c0ffee" * 8
PRICES = "item,valid_from,price\nA1,2026-01-01,100\nA2,2026-01-01,200\n"


def history(b: Backend) -> list[dict[str, object]]:
    db = open_readonly(b.target)
    assert db is not None
    try:
        return versions.history(db)
    finally:
        db.close()


async def test_the_erp_loads_with_its_token_and_a_bad_row_names_row_and_column(
    backend: Backend,
) -> None:
    backend.store().close()  # the database as head office's ingest leaves it (migrated)
    app = status_app(backend.target, catalog=CatalogConfig(api_token=TOKEN, max_upload_bytes=4096))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with HttpServer(app, "127.0.0.1:0") as server, aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{server.port}/api/catalog"
        # no token, a wrong token: 401 and nothing loaded
        for headers in ({}, {"Authorization": "Bearer " + "x" * 48}, {"Authorization": TOKEN}):
            async with http.post(f"{url}/prices", data=PRICES, headers=headers) as r:
                assert r.status == 401
                assert r.headers["WWW-Authenticate"].startswith("Bearer")
                assert r.content_type == "application/problem+json"
        assert history(backend) == []
        csv = {**auth, "Content-Type": "text/csv"}
        async with http.post(f"{url}/prices", data=PRICES, headers=csv) as r:
            assert r.status == 200, await r.text()
            body = await r.json()
        assert (body["ok"], body["version"], body["added"]) == (True, 1, 2)
        # JSON Lines, upsert: one row changed, none removed
        line = json.dumps({"item": "A2", "valid_from": "2026-01-01", "price": 250})
        jsonl = {**auth, "Content-Type": "application/x-ndjson"}
        async with http.post(f"{url}/prices?upsert=1", data=line + "\n", headers=jsonl) as r:
            body = await r.json()
        assert (body["version"], body["changed"], body["removed"], body["rows"]) == (2, 1, 0, 2)
        # a bad row: 422 naming row and column, nothing changed
        bad = PRICES + "A3,2026-01-01,9.98\n"
        async with http.post(f"{url}/prices", data=bad, headers=csv) as r:
            assert r.status == 422
            assert r.content_type == "application/problem+json"
            p = await r.json()
        assert (p["file"], p["row"], p["column"]) == ("request body", 3, "price")
        assert "row 3, column price" in p["detail"]
        assert [h["version"] for h in history(backend)] == [1, 2]
        # a Content-Type it does not read, an unknown dataset, a body over the limit
        async with http.post(f"{url}/prices", data=PRICES, headers={**auth}) as r:
            assert r.status == 422
            assert "Content-Type" in (await r.json())["detail"]
        async with http.post(f"{url}/prizes", data=PRICES, headers=csv) as r:
            assert r.status == 422
            assert "did you mean prices" in (await r.json())["detail"]
        async with http.post(f"{url}/prices", data=PRICES * 200, headers=csv) as r:
            assert r.status == 413
        assert [h["version"] for h in history(backend)] == [1, 2]


async def test_without_a_token_file_the_endpoint_is_off(tmp_path: Path) -> None:
    app = status_app(tmp_path / "ho.db", catalog=CatalogConfig())
    async with HttpServer(app, "127.0.0.1:0") as server, aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{server.port}/api/catalog/prices"
        async with http.post(url, data=PRICES, headers={"Authorization": "Bearer x"}) as r:
            assert r.status == 403
            assert "api_token_file" in (await r.json())["detail"]


def test_the_token_file_is_read_at_start_and_must_be_a_real_token(tmp_path: Path) -> None:
    good = tmp_path / "token"
    good.write_text(TOKEN + "\n", encoding="utf-8")
    assert read_token(str(good)) == TOKEN
    cfg = parse({"catalog": {"api_token_file": str(good), "poll_ms": 50}})
    assert (cfg.catalog.api_token, cfg.catalog.poll_ms) == (TOKEN, 50)
    assert TOKEN not in repr(cfg.catalog)
    short = tmp_path / "short"
    short.write_text("abc\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="at least 24"):
        parse({"catalog": {"api_token_file": str(short)}})
    with pytest.raises(ConfigError, match="cannot read"):
        parse({"catalog": {"api_token_file": str(tmp_path / "missing")}})
    with pytest.raises(ConfigError, match=r"catalog\.pol"):
        parse({"catalog": {"pol_ms": 5}})
