"""`lanesync bench catalog`: master data down, a new lane's initial load and a price change.

A real Mosquitto and head office (its own process, SQLite database) with `--items` items, one
chain price and the `stores` of `--lanes` lanes (four to a store) loaded through head office's
loader, the way `lanesync catalog load` does. Then:

- initial load: a real `lanesync agent` process for a new lane (empty catalog file) starts; the
  clock runs from its start until its catalog file holds head office's version (seconds,
  items/s), and its peak RSS (VmHWM) is the lane's memory while loading;
- propagation: `--lanes` lanes in this process (lanesync.fleet's in-memory journals under the
  agent's own Replicator, CatalogStore and CatalogSync; each with its own catalog file, seeded
  with a copy of the loaded one, so each holds the current version as a lane that ran for a
  while does) are connected; one price change is loaded at head office and the clock runs from
  submitting the load to the moment each lane's new version is committed (p50/p99/max).

Baseline in the same run, the catalog a user would write first: head office re-publishes the
whole catalog as one retained message per store on each change; every lane (same count, its own
MQTT connection and SQLite file) replaces its rows with the message's in one transaction. The
clock runs the same way, from submitting the change; the initial load baseline is one new lane
receiving and applying that message. `ratio` = baseline / lanesync for p99 and for the load.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import shutil
import socket
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiomqtt
import msgpack

from agent import config as agent_config
from agent.catalog.store import CatalogStore, Held
from agent.catalog.sync import CatalogSync
from agent.replicator import Replicator
from headoffice import config as ho_config
from headoffice.catalog import load as ho_load
from headoffice.catalog import versions as ho_versions
from headoffice.db import open_target, target
from headoffice.projections import PROJECTIONS
from lanesync import stack
from lanesync.bench.common import in_workdir, print_result
from lanesync.broker import MosquittoBroker
from lanesync.fleet import MemoryJournal, lane_ids
from protocol.identity import DEFAULT_PREFIX, LaneId

NODELAY = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)
PRICED_ITEM = "I0000000"
BASELINE_MAX_PACKET = 256 * 1024 * 1024
AIMS = {"initial_load_s": 5.0, "p99_s": 1.0, "lane_rss_mb": 60.0}  # issue 14's targets


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "catalog", help="master data down: new lane's initial load, a price change to every lane"
    )
    p.add_argument("--items", type=int, default=100_000, help="items in the catalog (100000)")
    p.add_argument("--lanes", type=int, default=200, help="lanes, four to a store (200)")
    p.add_argument(
        "--timeout-s", type=float, default=300.0, help="give up on a phase after this (300)"
    )
    p.add_argument("--workdir", help="keep the run's files here (default: a temporary directory)")
    p.add_argument("--json", action="store_true", help="print only the JSON result, one line")
    p.set_defaults(handler=cmd_catalog)


def cmd_catalog(args: argparse.Namespace) -> int:
    result = in_workdir(
        args.workdir,
        "catalog",
        lambda d: run(d, items=args.items, lanes=args.lanes, timeout=args.timeout_s),
    )
    print_result(result, args.json)
    return 0 if not result.get("errors") else 1


# --- head office's data -------------------------------------------------------------------


def write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def load(ho_toml: Path, dataset: str, path: Path) -> Any:
    """Load a file at head office exactly as `lanesync catalog load` does."""
    cfg = ho_config.load(ho_toml)
    store = open_target(target(cfg), projections=PROJECTIONS)
    try:
        return ho_load.load_file(store.sql, dataset, path)
    finally:
        store.close()


def whole_views(ho_toml: Path, stores: list[str]) -> dict[str, bytes]:
    """The baseline's payload: each store's whole current view as one msgpack message."""
    cfg = ho_config.load(ho_toml)
    store = open_target(target(cfg), projections=PROJECTIONS)
    try:
        out = {}
        for s in stores:
            view = ho_versions.view(store.sql, s)
            rows = [
                [ds, r]
                for ds, scope_rows in _rows_by_dataset(store.sql, view.scopes).items()
                for r in scope_rows
            ]
            out[s] = msgpack.packb(rows, use_bin_type=True)
        return out
    finally:
        store.close()


def _rows_by_dataset(sql: Any, scopes: tuple[str, ...]) -> dict[str, list[dict[str, Any]]]:
    from protocol import catalog as contract  # noqa: PLC0415

    return {name: ho_versions.current_rows(sql, name, scopes) for name in contract.DATASETS}


# --- the run --------------------------------------------------------------------------------


def run(workdir: Path, *, items: int, lanes: int, timeout: float) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    lane_list = lane_ids(lanes)
    stores = sorted({lane.store for lane in lane_list})
    # The baseline's whole catalog per store is one message of megabytes (8 MB for 100,000
    # items): Mosquitto itself sets no limit, lanesync's broker harness caps packets at 4 MiB.
    broker = MosquittoBroker(
        workdir / "broker", extra_config=[f"max_packet_size {BASELINE_MAX_PACKET}"]
    ).start()
    ho = stack.headoffice(workdir, broker.port)
    result: dict[str, Any] = {
        "bench": "catalog",
        "items": items,
        "lanes": lanes,
        "stores": len(stores),
        "errors": [],
    }
    try:
        ho.start()
        ho.wait_notify("STATUS=subscribed", timeout=60)
        ho_toml = workdir / "headoffice.toml"
        t = time.monotonic()
        load(ho_toml, "stores", write_csv(
            workdir / "stores.csv",
            ["id", "name", "timezone", "currency", "can_receive_stock", "active"],
            [[s, f"Store {s}", "UTC", "EUR", 1, 1] for s in stores],
        ))  # fmt: skip
        load(ho_toml, "items", write_csv(
            workdir / "items.csv",
            ["code", "description", "tax_code", "variant", "active"],
            [[f"I{i:07d}", f"Item number {i}", "STD", 0, 1] for i in range(items)],
        ))  # fmt: skip
        prices = workdir / "prices.csv"
        write_csv(prices, ["item", "valid_from", "price"], [[PRICED_ITEM, "2020-01-01", 100]])
        loaded = load(ho_toml, "prices", prices)
        result["ho_load_s"] = round(time.monotonic() - t, 2)
        result["version"] = loaded.version
        result["initial_load"] = initial_load(workdir, broker.port, stores[0], timeout)
        seed = Path(result["initial_load"].pop("catalog_file"))
        result["propagation"] = asyncio.run(
            propagation(workdir, broker.port, ho_toml, lane_list, seed, prices, timeout)
        )
        result["baseline"] = asyncio.run(
            baseline(workdir, broker.port, ho_toml, lane_list, prices, timeout)
        )
        result["ratio"] = _ratios(result)
        result["aims"] = _aims(result)
    except Exception as exc:  # noqa: BLE001 - reported in the JSON with head office's log
        result["errors"].append(f"{type(exc).__name__}: {exc}")
        result["headoffice_log"] = ho.log_tail(15)
    finally:
        with contextlib.suppress(Exception):
            ho.stop()
        broker.stop()
    return result


def _ratios(r: dict[str, Any]) -> dict[str, float | None]:
    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 1) if a and b else None

    return {
        "p99_baseline_over_lanesync": ratio(r["baseline"]["p99_s"], r["propagation"]["p99_s"]),
        "load_baseline_over_lanesync": ratio(
            r["baseline"]["initial_load_s"], r["initial_load"]["seconds"]
        ),
    }


def _aims(r: dict[str, Any]) -> dict[str, bool]:
    return {
        "initial_load_under_5s": r["initial_load"]["seconds"] < AIMS["initial_load_s"],
        "p99_under_1s": r["propagation"]["p99_s"] < AIMS["p99_s"],
        "lane_rss_under_60mb": r["initial_load"]["peak_rss_mb"] < AIMS["lane_rss_mb"],
    }


# --- a new lane's initial load (a real agent process) ----------------------------------------


def idle_rss(workdir: Path, port: int) -> float:
    """Peak RSS of an agent whose store head office does not list (so it loads nothing): what
    the agent takes before any catalog, to read the loading lane's figure against."""
    comp = stack.agent(workdir, LaneId("UNLISTED", "L1"), port)
    comp.start()
    try:
        comp.wait_notify("READY=1", timeout=60)
        time.sleep(1.0)
        return comp.peak_rss_mb()
    finally:
        comp.stop()


def initial_load(workdir: Path, port: int, store: str, timeout: float) -> dict[str, Any]:
    lane = LaneId(store, "L1")
    comp = stack.agent(workdir, lane, port)
    cfg = agent_config.load(workdir / f"{comp.name}.toml")
    path = cfg.catalog_path
    started = time.monotonic()
    comp.start()
    try:
        comp.wait_notify("READY=1", timeout=60)
        ready = time.monotonic()
        version, rows, first_chunk = 0, 0, None
        deadline = started + timeout
        while version == 0:
            if time.monotonic() > deadline:
                raise TimeoutError(f"lane {lane} held no catalog after {timeout:g}s")
            time.sleep(0.01)
            version, rows, staging_since, applied_at = _held(path)
            first_chunk = first_chunk or staging_since
        loaded = time.monotonic()
        rss = comp.peak_rss_mb()
    finally:
        comp.stop()
    seconds = loaded - started
    return {
        "seconds": round(seconds, 2),  # from starting the agent process: the conservative one
        "startup_s": round(ready - started, 2),  # of which the process took to be READY
        # From the first chunk staged to the version committed (the lane's own clock, ms).
        "snapshot_s": None if first_chunk is None else round((applied_at - first_chunk) / 1000, 2),
        "rows": rows,
        "items_per_s": round(rows / seconds),
        "peak_rss_mb": round(rss, 1),
        "idle_agent_rss_mb": round(idle_rss(workdir, port), 1),
        "catalog_file": str(path),
    }


def _held(path: Path) -> tuple[int, int, int | None, int]:
    """(version, rows, ms the staged snapshot began or None, ms the version was applied)."""
    if not path.exists():
        return 0, 0, None, 0
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
            t = db.execute("SELECT started FROM transfer").fetchone()
        finally:
            db.close()
    except sqlite3.Error:
        return 0, 0, None, 0
    return (
        int(meta.get("version", 0)),
        int(meta.get("rows", 0)),
        None if t is None else int(t[0]),
        int(meta.get("applied_at", 0)),
    )


# --- one price change to every lane -------------------------------------------------------------


def _pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s)) - 1))]


def _summary(lags: list[float], lanes: int) -> dict[str, Any]:
    return {
        "reached": len(lags),
        "of": lanes,
        "p50_s": round(_pct(lags, 50), 3) if lags else None,
        "p99_s": round(_pct(lags, 99), 3) if lags else None,
        "max_s": round(max(lags), 3) if lags else None,
    }


def _lane_config(workdir: Path, lane: LaneId, port: int) -> agent_config.AgentConfig:
    return agent_config.parse(
        {
            "store": lane.store,
            "lane": lane.lane,
            "journal": {"path": str(workdir / f"journal-{lane.store}-{lane.lane}.db")},
            "broker": {"port": port, "keepalive": 15, "topic_prefix": DEFAULT_PREFIX},
            "api": {"socket": str(workdir / f"api-{lane.store}-{lane.lane}.sock")},
        }
    )


async def propagation(
    workdir: Path,
    port: int,
    ho_toml: Path,
    lanes: list[LaneId],
    seed: Path,
    prices: Path,
    timeout: float,
) -> dict[str, Any]:
    fleet_dir = workdir / "fleet"
    fleet_dir.mkdir(exist_ok=True)
    visible: dict[LaneId, float] = {}
    target: list[int] = [1 << 62]
    async with contextlib.AsyncExitStack() as stack_:
        syncs: list[CatalogSync] = []
        for i, lane in enumerate(lanes):
            cfg = _lane_config(fleet_dir, lane, port)
            _seed_copy(seed, cfg.catalog_path, lane.store)
            store = await stack_.enter_async_context(CatalogStore(cfg.catalog_path, lane.store))
            store.on_version(_recorder(lane, visible, target))
            sync = await stack_.enter_async_context(CatalogSync(store, cfg.catalog))
            journal = MemoryJournal(lane, i + 1)
            await stack_.enter_async_context(Replicator(journal, cfg, sync))
            syncs.append(sync)
            await asyncio.sleep(0.005)  # lanes boot apart, as in the field
        held = syncs[0].version
        await _until(lambda: all(s.caught_up.is_set() and s.version == held for s in syncs),
                     timeout, "lanes caught up with the head")  # fmt: skip
        write_csv(prices, ["item", "valid_from", "price"], [[PRICED_ITEM, "2020-01-01", 101]])
        t0 = time.monotonic()
        res = await asyncio.to_thread(load, ho_toml, "prices", prices)
        loaded_s = time.monotonic() - t0
        target[0] = res.version
        await _until(lambda: len(visible) == len(lanes), timeout, "the change on every lane")
        lags = [t - t0 for t in visible.values()]
        stats = [s.stats for s in syncs]
    return {
        "version": res.version,
        "ho_load_s": round(loaded_s, 3),
        **_summary(lags, len(lanes)),
        "inline": sum(s.inline for s in stats),
        "deltas": sum(s.deltas for s in stats),
        "snapshots": sum(s.snapshots for s in stats),
    }


def _recorder(
    lane: LaneId, visible: dict[LaneId, float], target: list[int]
) -> Callable[[Held], None]:
    def record(held: Held) -> None:
        if held.version >= target[0] and lane not in visible:
            visible[lane] = time.monotonic()

    return record


def _seed_copy(seed: Path, path: Path, store: str) -> None:
    """A lane that already holds the current version: the loaded lane's file, made its own."""
    shutil.copyfile(seed, path)
    db = sqlite3.connect(path)
    try:
        db.execute("UPDATE meta SET value = ? WHERE key = 'store'", (store,))
        db.commit()
    finally:
        db.close()


async def _until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} within {timeout:g}s")
        await asyncio.sleep(0.01)


# --- the baseline: the whole catalog, one retained message per store ------------------------


class WholeCatalogLane:
    """The lane a user writes first: subscribe the store's whole catalog, replace every row."""

    def __init__(self, lane: LaneId, port: int, path: Path, topic: str) -> None:
        self.lane, self.port, self.path, self.topic = lane, port, path, topic
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS rows (dataset TEXT, key INTEGER, body BLOB,"
            " PRIMARY KEY (dataset, key))"
        )
        self.applied: list[float] = []

    async def run(self, ready: asyncio.Event) -> None:
        async with aiomqtt.Client(
            "127.0.0.1",
            self.port,
            identifier=f"baseline-{self.lane.store}-{self.lane.lane}",
            socket_options=NODELAY,
            max_queued_incoming_messages=4,
            timeout=60,
        ) as client:
            await client.subscribe(self.topic, qos=1)
            ready.set()
            async for m in client.messages:
                payload = bytes(m.payload)
                await asyncio.to_thread(self._replace, payload)
                self.applied.append(time.monotonic())

    def _replace(self, payload: bytes) -> None:
        rows = msgpack.unpackb(payload, raw=False)
        self.db.execute("BEGIN IMMEDIATE")
        self.db.execute("DELETE FROM rows")
        self.db.executemany(
            "INSERT INTO rows (dataset, key, body) VALUES (?, ?, ?)",
            ((ds, i, msgpack.packb(r)) for i, (ds, r) in enumerate(rows)),
        )
        self.db.execute("COMMIT")


async def baseline(
    workdir: Path,
    port: int,
    ho_toml: Path,
    lanes: list[LaneId],
    prices: Path,
    timeout: float,
) -> dict[str, Any]:
    base_dir = workdir / "baseline"
    base_dir.mkdir(exist_ok=True)
    stores = sorted({lane.store for lane in lanes})
    topic = f"{DEFAULT_PREFIX}/{{}}/bench-whole-catalog"
    async with aiomqtt.Client(
        "127.0.0.1",
        port,
        identifier="baseline-publisher",
        socket_options=NODELAY,
        timeout=timeout,  # a whole catalog per store is megabytes: publishing one takes a while
    ) as pub:
        # The catalog as it stands, retained per store, before the lanes connect.
        t = time.monotonic()
        views = await asyncio.to_thread(whole_views, ho_toml, stores)
        for s in stores:
            await pub.publish(topic.format(s), views[s], qos=1, retain=True)
        publish_all_s = time.monotonic() - t
        size = len(views[stores[0]])
        # A new lane's initial load: connect, receive the store's message, replace its rows.
        first = WholeCatalogLane(lanes[0], port, base_dir / "new-lane.db", topic.format(stores[0]))
        t = time.monotonic()
        async with asyncio.TaskGroup() as tg:
            ready = asyncio.Event()
            task = tg.create_task(first.run(ready))
            await _until(lambda: bool(first.applied), timeout, "baseline initial load")
            task.cancel()
        initial_s = first.applied[0] - t
        first.db.close()
        fleet = [
            WholeCatalogLane(lane, port, base_dir / f"{lane.store}-{lane.lane}.db",
                             topic.format(lane.store))
            for lane in lanes
        ]  # fmt: skip
        try:
            async with asyncio.TaskGroup() as tg:
                tasks = []
                for lane in fleet:
                    ready = asyncio.Event()
                    tasks.append(tg.create_task(lane.run(ready)))
                    await ready.wait()
                await _until(lambda: all(lane.applied for lane in fleet), timeout,
                             "baseline lanes holding the catalog")  # fmt: skip
                write_csv(
                    prices, ["item", "valid_from", "price"], [[PRICED_ITEM, "2020-01-01", 102]]
                )
                t0 = time.monotonic()
                await asyncio.to_thread(load, ho_toml, "prices", prices)
                views = await asyncio.to_thread(whole_views, ho_toml, stores)
                for s in stores:
                    await pub.publish(topic.format(s), views[s], qos=1, retain=True)
                await _until(lambda: all(len(lane.applied) >= 2 for lane in fleet), timeout,
                             "the baseline change on every lane")  # fmt: skip
                for task in tasks:
                    task.cancel()
        finally:
            for lane in fleet:
                lane.db.close()
        lags = [lane.applied[1] - t0 for lane in fleet]
    return {
        "message_bytes": size,
        "publish_all_stores_s": round(publish_all_s, 2),
        "initial_load_s": round(initial_s, 2),
        **_summary(lags, len(lanes)),
    }
