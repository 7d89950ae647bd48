"""protocol.runtime's shared pieces: clock, migration runner, HTTP listener, Services."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator

import aiohttp
import aiosqlite
import pytest
from aiohttp import web

from protocol.errors import ConfigError, LanesyncError
from protocol.runtime import clock, migrations
from protocol.runtime.cli import Exit, fail
from protocol.runtime.httpserver import HttpServer, check_listen
from protocol.runtime.services import Services


def test_now_ms_is_the_wall_clock_in_integer_ms() -> None:
    before = time.time()
    now = clock.now_ms()
    assert type(now) is int
    assert before * 1000 - 1 <= now <= time.time() * 1000 + 1


def test_clock_skew_halves_the_round_trip() -> None:
    assert clock.clock_skew_s(10_500, sent=10.0, received=10.2) == pytest.approx(0.4)
    assert clock.clock_skew_s(9_000, sent=10.0, received=10.0) == pytest.approx(-1.0)


JOURNAL = "agent.journal.schema"


def test_apply_sqlite_brings_a_database_up_to_date() -> None:
    db = sqlite3.connect(":memory:", isolation_level=None)
    latest = max(migrations.load_package(JOURNAL))
    migrations.apply_sqlite(db, JOURNAL, "test db")
    assert db.execute("PRAGMA user_version").fetchone()[0] == latest
    migrations.apply_sqlite(db, JOURNAL, "test db")  # nothing left to do
    db.execute(f"PRAGMA user_version = {latest + 1}")
    with pytest.raises(migrations.SchemaError, match="newer than this lanesync knows"):
        migrations.apply_sqlite(db, JOURNAL, "test db")


class _Broken(LanesyncError):
    pass


def test_apply_sqlite_raises_the_callers_error_and_rolls_back() -> None:
    db = sqlite3.connect(":memory:", isolation_level=None)
    db.execute("CREATE TABLE meta (x)")  # the journal's first script creates it
    with pytest.raises(_Broken, match="migrating journal x to schema 1: "):
        migrations.apply_sqlite(db, JOURNAL, "test db", error=_Broken, subject="journal x")
    assert not db.in_transaction
    assert db.execute("PRAGMA user_version").fetchone()[0] == 0


async def test_apply_aiosqlite() -> None:
    async with aiosqlite.connect(":memory:", isolation_level=None) as db:
        await migrations.apply_aiosqlite(db, JOURNAL, "test db")
        row = await (await db.execute("PRAGMA user_version")).fetchone()
        assert row is not None
        assert row[0] == max(migrations.load_package(JOURNAL))


def test_check_listen() -> None:
    assert check_listen("", "k", "127.0.0.1:1") is None
    assert check_listen("[::1]:80", "k", "127.0.0.1:1") == "[::1]:80"
    with pytest.raises(ConfigError, match=r"k: must be HOST:PORT like 127\.0\.0\.1:1, got 'x'"):
        check_listen("x", "k", "127.0.0.1:1")


async def _hello(_: web.Request) -> web.Response:
    return web.Response(text="hello")


def _app() -> web.Application:
    app = web.Application()
    app.router.add_get("/", _hello)
    return app


async def test_http_server_serves_on_a_picked_port() -> None:
    async with HttpServer(_app(), "127.0.0.1:0") as server, aiohttp.ClientSession() as http:
        assert server.port != 0
        async with http.get(f"http://127.0.0.1:{server.port}/") as resp:
            assert await resp.text() == "hello"


async def test_http_server_names_a_taken_port() -> None:
    async with HttpServer(_app(), "127.0.0.1:0") as first:
        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{first.port}"):
            async with HttpServer(_app(), f"127.0.0.1:{first.port}"):
                pass


async def test_services_stop_loops_before_leaving_contexts() -> None:
    seen: list[str] = []

    @contextlib.asynccontextmanager
    async def context(name: str) -> AsyncIterator[None]:
        yield
        seen.append(f"left {name}")

    async def loop() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            seen.append("loop stopped")

    async with Services("test") as services:
        await services.enter(context("first"))
        await services.serve(_app(), "127.0.0.1:0")
        await services.enter(context("second"))
        task = services.start(loop(), "loop")
        assert task.get_name() == "test: loop"
        await asyncio.sleep(0)
    assert task.cancelled()
    assert seen == ["loop stopped", "left second", "left first"]


async def test_services_stop_after_a_failed_start_leaves_contexts() -> None:
    services = await Services("test").__aenter__()
    await services.serve(_app(), "127.0.0.1:0")
    await services.stop()
    assert not services.tasks.running


def test_cli_fail_says_why_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    assert fail("import", LanesyncError("no such file"), Exit.CANNOT_RUN) == 2
    assert capsys.readouterr().err == "lanesync import: no such file\n"
    assert (Exit.OK, Exit.PROBLEM) == (0, 1)
