"""Master data down, end to end: real broker (Mosquitto and NATS), head office and agent as their
own processes (lanesync.stack), head office on SQLite and on PostgreSQL.

Each test ends by comparing the lane's catalog file with head office's view of the store: the
same version, the same view hash (CATALOG.md), and only the store's own scope.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent import config as agent_config
from agent.catalog.view import CatalogView
from headoffice.catalog import load as loader
from headoffice.catalog import versions
from headoffice.db import open_target
from headoffice.projections import PROJECTIONS
from lanesync import stack
from lanesync.broker import Broker
from lanesync.proxy import ProxyThread
from lanesync.stack import Component
from protocol.identity import LaneId
from tests.pgutil import pg_schema

LANE = LaneId("S1", "L1")
# As tests/e2e: a dead link is noticed within seconds, reconnects back off to at most 0.5 s.
FAST_REPLICATION = {
    "ack_timeout_s": 1.0,
    "publish_timeout_s": 3.0,
    "backoff_initial_s": 0.05,
    "backoff_max_s": 0.5,
    "linger_ms": 5,
}


@pytest.fixture(params=["mosquitto", "nats"])
def broker_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.fixture(params=["sqlite", "postgres"])
def ho_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str | None]:
    """None: head office on a SQLite file in tmp_path; else a scratch PostgreSQL schema."""
    if request.param == "sqlite":
        yield None
    else:
        with pg_schema() as url:
            yield url


@dataclass
class Stack:
    workdir: Path
    broker: Broker
    ho_url: str | None
    ho: Component | None = None
    agent: Component | None = None
    proxy: ProxyThread | None = None

    @property
    def ho_target(self) -> str | Path:
        return self.ho_url or self.workdir / "headoffice.db"

    def start_ho(self) -> None:
        self.ho = stack.headoffice(self.workdir, self.broker.port, database_url=self.ho_url)
        self.ho.start()
        self.ho.wait_notify("STATUS=subscribed", timeout=30)

    def load(self, dataset: str, text: str) -> Any:
        path = self.workdir / f"{dataset}-{time.monotonic_ns()}.csv"
        path.write_text(text, encoding="utf-8")
        store = open_target(self.ho_target, projections=PROJECTIONS)
        try:
            return loader.load_file(store.sql, dataset, path)
        finally:
            store.close()

    def ho_view(self, store_id: str = LANE.store) -> versions.View:
        store = open_target(self.ho_target, projections=PROJECTIONS)
        try:
            return versions.view(store.sql, store_id)
        finally:
            store.close()

    def make_agent(self, *, via_proxy: bool = False, **catalog: Any) -> Component:
        port = self.broker.port
        if via_proxy:
            self.proxy = ProxyThread(self.broker.host, self.broker.port, name="wan").start()
            port = self.proxy.port
        comp = stack.agent(
            self.workdir, LANE, port, replication=FAST_REPLICATION, keepalive=2, catalog=catalog
        )
        # INFO: the catalog sync says in the log how it got each version (and what it resumed).
        comp = Component(comp.name, ["--log-level", "INFO", *comp.argv], comp.workdir)
        self.agent = comp
        return comp

    @property
    def catalog_path(self) -> Path:
        assert self.agent is not None
        return agent_config.load(self.workdir / f"{self.agent.name}.toml").catalog_path

    def lane_meta(self) -> dict[str, Any]:
        if not self.catalog_path.exists():
            return {}
        db = sqlite3.connect(f"file:{self.catalog_path}?mode=ro", uri=True)
        try:
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
            meta["staged"] = int(db.execute("SELECT count(*) FROM staged").fetchone()[0])
            return meta
        except sqlite3.OperationalError:
            return {}  # the agent is creating the file: no tables yet
        finally:
            db.close()

    def logs(self) -> str:
        return "\n".join(
            f"--- {c.name} ---\n{c.log_tail(20)}" for c in (self.ho, self.agent) if c is not None
        )

    def close(self) -> None:
        for comp in (self.agent, self.ho):
            if comp is not None:
                comp.stop(timeout=5.0)
        if self.proxy is not None:
            self.proxy.close()


@pytest.fixture
def lanestack(tmp_path: Path, broker: Broker, ho_url: str | None) -> Iterator[Stack]:
    s = Stack(tmp_path, broker, ho_url)
    try:
        yield s
    finally:
        s.close()


def wait(check: Callable[[], bool], what: str, s: Stack, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {timeout:g}s\n{s.logs()}", pytrace=False)
        time.sleep(0.02)


def assert_identical(s: Stack) -> None:
    """The lane holds head office's view of its store: version, rows and hash."""
    view = s.ho_view()
    meta = s.lane_meta()
    assert (int(meta["version"]), int(meta["rows"])) == (view.version, view.rows)
    assert bytes(meta["hash"]) == view.hash
    assert meta["staged"] == 0


STORES = (
    "id,name,timezone,currency,price_zone,can_receive_stock,active\n"
    "S1,High St,Europe/Berlin,EUR,NORTH,1,1\n"
    "S2,Mall,Europe/Berlin,EUR,,0,1\n"
)


def items_csv(n: int) -> str:
    return "code,description,tax_code,variant,active\n" + "".join(
        f"I{i:06d},Item {i},STD,0,1\n" for i in range(n)
    )


def prices_csv(chain: int, s1: int, s2: int, zone: int) -> str:
    return (
        "item,store,zone,valid_from,price\n"
        f"I000001,,,2020-01-01,{chain}\n"
        f"I000001,S1,,2020-01-01,{s1}\n"
        f"I000001,S2,,2020-01-01,{s2}\n"
        f"I000002,,NORTH,2020-01-01,{zone}\n"
    )


def lane_price(s: Stack, item: str) -> int | None:
    from datetime import UTC, datetime  # noqa: PLC0415

    with CatalogView(s.catalog_path, LANE) as v:
        p = v.price(item, datetime.now(UTC))
    return None if p is None else p.price


def test_a_new_lane_loads_its_stores_view(lanestack: Stack) -> None:
    s = lanestack
    s.start_ho()
    s.load("stores", STORES)
    s.load("items", items_csv(1500))
    s.load("prices", prices_csv(100, 90, 80, 70))
    s.make_agent().start()
    wait(lambda: int(s.lane_meta().get("version", 0)) == s.ho_view().version, "load", s)
    assert_identical(s)
    # Its own price and its zone's, never S2's (head office's scopes, as the ACL grants them).
    assert lane_price(s, "I000001") == 90
    assert lane_price(s, "I000002") == 70
    db = sqlite3.connect(f"file:{s.catalog_path}?mode=ro", uri=True)
    try:
        keys = [k for (k,) in db.execute("SELECT key FROM rows WHERE dataset = 'prices'")]
    finally:
        db.close()
    assert sorted(keys) == [
        "I000001|S1||2020-01-01",
        "I000001|||2020-01-01",
        "I000002||NORTH|2020-01-01",
    ]


def test_a_change_made_while_the_store_is_offline_arrives_after_reconnect(
    lanestack: Stack,
) -> None:
    s = lanestack
    s.start_ho()
    s.load("stores", STORES)
    s.load("items", items_csv(300))
    s.load("prices", prices_csv(100, 90, 80, 70))
    agent = s.make_agent(via_proxy=True)
    agent.start()
    agent.wait_notify("READY=1", timeout=30)
    wait(lambda: int(s.lane_meta().get("version", 0)) == s.ho_view().version, "load", s)
    before = int(s.lane_meta()["version"])
    assert s.proxy is not None
    s.proxy.cut()
    s.proxy.blackhole()
    res = s.load("prices", prices_csv(100, 95, 80, 70))  # S1's own price changes
    assert res.version is not None
    time.sleep(2.0)
    meta = s.lane_meta()
    assert int(meta["version"]) == before  # offline: the last complete version stays
    assert int(meta.get("head_version", 0)) == before  # and nothing newer reached it
    assert lane_price(s, "I000001") == 90
    s.proxy.resume()
    wait(lambda: int(s.lane_meta().get("version", 0)) == s.ho_view().version, "the change", s)
    assert_identical(s)
    assert lane_price(s, "I000001") == 95


def test_a_kill_9_mid_snapshot_resumes_and_ends_identical(lanestack: Stack) -> None:
    s = lanestack
    s.start_ho()
    s.load("stores", STORES)
    s.load("items", items_csv(6000))
    # Small chunks, one at a time: the snapshot takes long enough to be killed half way.
    agent = s.make_agent(chunk_rows=20, window=1)
    agent.start()
    wait(lambda: s.lane_meta().get("staged", 0) >= 10, "staged chunks", s)
    agent.kill()
    meta = s.lane_meta()
    staged = meta["staged"]
    assert int(meta.get("version", 0)) == 0  # nothing half visible
    assert 10 <= staged < 301
    agent.start()
    wait(lambda: int(s.lane_meta().get("version", 0)) == s.ho_view().version, "resume", s, 60)
    assert_identical(s)
    log = agent.log_path.read_text(encoding="utf-8", errors="replace")
    assert f"resuming the snapshot of version {s.ho_view().version}: {staged} of 301" in log
