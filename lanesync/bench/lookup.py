"""`lanesync bench lookup`: what a till's item lookup costs on the lane's catalog file.

A catalog of `--items` items (two GTINs and three prices each, as a chain with store and zone
prices has) is applied through the catalog store (agent.catalog.store), then random items are
looked up: in process (agent.catalog.lookup: one read transaction, the item, the store, its
prices and tax rates by key range) and over the local API's Unix socket (GET /v1/items/{code}).
The baseline, run alike on the same file: one primary-key read of the item row and nothing else.
`ratio` = lookup p50 / baseline p50 (what pricing and taxing an item adds, in such reads; the
median, since a shared machine's stalls swamp the means and tails).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import time
from pathlib import Path
from typing import Any

import aiohttp

from agent.api import LocalApi
from agent.catalog.lookup import Lookup
from agent.catalog.store import CatalogStore, decode_row
from agent.config import ApiConfig
from agent.journal import Journal
from lanesync.bench.common import in_workdir, print_result
from protocol import catalog as c
from protocol.identity import LaneId

LANE = LaneId("S1", "L1")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("lookup", help="item lookups on the lane's catalog vs a bare key read")
    p.add_argument("--items", type=int, default=20000, help="items in the catalog (20000)")
    p.add_argument("--lookups", type=int, default=5000, help="lookups per measure (5000)")
    p.add_argument("--json", action="store_true", help="print only the JSON result")
    p.add_argument("--workdir", help="keep files here instead of a temporary directory")
    p.add_argument("--seed", type=int, default=1, help="random seed for the codes looked up")
    p.set_defaults(handler=cmd_lookup)


def cmd_lookup(args: argparse.Namespace) -> int:
    result = in_workdir(args.workdir, "lookup", lambda d: run(d, args))
    print_result(result, args.json)
    return 0


def gtin13(n: int) -> str:
    body = f"20{n:010d}"
    total = sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(body))
    return body + str((10 - total % 10) % 10)


def catalog_rows(items: int) -> list[tuple[str, dict[str, Any]]]:
    rows: list[tuple[str, dict[str, Any]]] = [
        ("stores", {"id": "S1", "name": "Bench", "timezone": "UTC", "currency": "EUR",
                    "price_zone": "Z1", "can_receive_stock": True, "active": True}),
        ("tax_rates", {"code": "STD", "valid_from": "2020-01-01", "rate_bp": 2000}),
        ("tax_rates", {"code": "STD", "valid_from": "2025-01-01", "rate_bp": 2100}),
    ]  # fmt: skip
    for i in range(items):
        code = f"I{i:07d}"
        rows.append(("items", {"code": code, "gtins": [gtin13(2 * i), gtin13(2 * i + 1)],
                               "description": f"Item {i}", "tax_code": "STD", "variant": False,
                               "active": True}))  # fmt: skip
        rows.append(("prices", {"item": code, "valid_from": "2025-01-01", "price": 100 + i}))
        rows.append(("prices", {"item": code, "zone": "Z1", "valid_from": "2025-06-01",
                                "price": 90 + i}))  # fmt: skip
        rows.append(("prices", {"item": code, "store": "S1", "valid_from": "2026-01-01",
                                "price": 80 + i}))  # fmt: skip
    return rows


async def build(path: Path, items: int) -> float:
    rows = catalog_rows(items)
    changes = [(d, c.DATASETS[d].key_of(r), r) for d, r in rows]
    h = c.view_hash((c.DATASETS[d], r) for d, r in rows)
    t0 = time.perf_counter()
    async with CatalogStore(path, LANE.store) as store:
        await store.apply_delta(0, 1, changes, h, len(rows))
    return time.perf_counter() - t0


def _stats(lat: list[float]) -> dict[str, float]:
    lat = sorted(lat)
    return {
        "mean_us": round(1e6 * sum(lat) / len(lat), 1),
        "p50_us": round(1e6 * lat[len(lat) // 2], 1),
        "p99_us": round(1e6 * lat[min(len(lat) - 1, int(len(lat) * 0.99))], 1),
    }


def timed(fn: Any, codes: list[str]) -> dict[str, float]:
    lat = []
    for code in codes:
        t0 = time.perf_counter()
        fn(code)
        lat.append(time.perf_counter() - t0)
    return _stats(lat)


async def over_http(d: Path, path: Path, codes: list[str]) -> dict[str, float]:
    sock = d / "api.sock"
    async with (
        Journal(d / "journal.db", LANE) as journal,
        LocalApi(ApiConfig(socket=str(sock)), journal, None, catalog=path),
        aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(sock))) as s,
    ):
        lat = []
        for code in codes:
            t0 = time.perf_counter()
            async with s.get(f"http://lane/v1/items/{code}") as r:
                await r.read()
                if r.status != 200:
                    raise RuntimeError(f"GET /v1/items/{code}: {r.status}")
            lat.append(time.perf_counter() - t0)
    return _stats(lat)


def run(d: Path, args: argparse.Namespace) -> dict[str, Any]:
    path = d / "catalog.db"
    applied_s = asyncio.run(build(path, args.items))
    rng = random.Random(args.seed)
    codes = [f"I{rng.randrange(args.items):07d}" for _ in range(args.lookups)]
    gtins = [gtin13(2 * int(code[1:]) + 1) for code in codes]
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    sql = "SELECT body FROM rows WHERE dataset = 'items' AND key = ?"
    baseline = timed(lambda k: decode_row("items", db.execute(sql, (k,)).fetchone()[0]), codes)
    db.close()
    lookup = Lookup(path, LANE)
    try:
        by_code = timed(lookup.item, codes)
        by_gtin = timed(lookup.items_by_gtin, gtins)
    finally:
        lookup.close()
    http = asyncio.run(over_http(d, path, codes))
    return {
        "bench": "lookup",
        "items": args.items,
        "rows": 3 + 4 * args.items,
        "lookups": args.lookups,
        "catalog_applied_s": round(applied_s, 2),
        "baseline_key_read": baseline,
        "item_by_code": by_code,
        "item_by_gtin": by_gtin,
        "http_item_by_code": http,
        "ratio": {
            "by_code_p50_over_baseline": round(by_code["p50_us"] / baseline["p50_us"], 2),
            "by_gtin_p50_over_baseline": round(by_gtin["p50_us"] / baseline["p50_us"], 2),
        },
    }
