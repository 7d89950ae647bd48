"""`lanesync bench extract`: journal entries rolled up and posted per second.

N realistic sale documents (some refunds) from 4 stores x 2 lanes are applied to a real
head-office database through its store (SqliteDatabase, or PostgresDatabase with `--backend
postgres` in a scratch schema that is dropped afterwards), as ingest would, which also writes
the extract's projection (schema 6: headers, lines, payments as rows). Timed: the extract's
engine reading the projection, rolling up and posting; the same engine reading and decoding the
bodies instead (the path before the projection), which must give the same plan; and a full
`extract run` (also purchase records, files written and fsynced, bookkeeping committed).
On PostgreSQL the loaded tables are analyzed first, as autovacuum would have done.

Baseline, in the same run over the same rows and on the same backend: a plain SQL GROUP BY
(business day, store, customer, kind, item, price, tax code) summing qty, amount and tax over a
flat line table holding the same lines. It rolls up lines and nothing else: no payments,
postings or records.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg

from headoffice.catalog import load as catalog_load
from headoffice.db import Target, describe, open_target
from headoffice.extract import db as xdb
from headoffice.extract import job, plugin, projection
from headoffice.extract.config import ExtractConfig
from headoffice.extract.documents import read_rows
from headoffice.projections import PROJECTIONS
from lanesync import samples
from lanesync.bench.common import in_workdir, print_result
from lanesync.pgscratch import scratch_schema
from protocol.chain import entry_hash, genesis
from protocol.documents import encode_body
from protocol.identity import LaneId
from protocol.messages import Entry, JournalBatch

DAY0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
DEFAULT_PG_URL = "postgresql://127.0.0.1:5432/test"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("extract", help="extract roll-up + postings vs a SQL GROUP BY baseline")
    p.add_argument("--entries", type=int, default=200_000, help="journal entries (200000)")
    p.add_argument("--json", action="store_true", help="print only the JSON result")
    p.add_argument("--workdir", help="keep files here instead of a temporary directory")
    p.add_argument("--seed", type=int, default=1, help="random seed for the documents")
    p.add_argument(
        "--backend",
        choices=("sqlite", "postgres"),
        default="sqlite",
        help="head-office database to run on (sqlite)",
    )
    p.add_argument(
        "--pg-url",
        default=os.environ.get("LANESYNC_TEST_PG_URL", DEFAULT_PG_URL),
        help=f"with --backend postgres: database to make a scratch schema in ({DEFAULT_PG_URL})",
    )
    p.set_defaults(handler=cmd_extract)


def cmd_extract(args: argparse.Namespace) -> int:
    if args.entries < 1:
        print("lanesync bench extract: --entries must be at least 1", file=sys.stderr)
        return 2
    pg_url = args.pg_url if args.backend == "postgres" else None
    try:
        result = in_workdir(
            args.workdir,
            "extract",
            lambda d: run(d, args.entries, args.seed, quiet=args.json, pg_url=pg_url),
        )
    except psycopg.Error as exc:
        print(f"lanesync bench extract: --pg-url: {exc}", file=sys.stderr)
        return 2
    print_result(result, args.json)
    return 0


def _say(quiet: bool, text: str) -> None:
    if not quiet:
        print(text, file=sys.stderr, flush=True)


def documents(n: int, seed: int) -> list[tuple[LaneId, dict[str, Any]]]:
    rng = random.Random(seed)
    lanes = [LaneId(f"S{s}", f"L{ln}") for s in range(1, 5) for ln in range(1, 3)]
    out = []
    for i in range(n):
        lane = lanes[i % len(lanes)]
        doc = samples.sale(rng, lane.store, lane.lane, i // len(lanes) + 1)
        doc["business_day"] = f"2026-01-{1 + (i * 7) // n:02d}"
        if rng.random() < 0.1:
            doc["kind"] = "sale_refund"
            doc["return_type"] = "RETURN"
        out.append((lane, doc))
    return out


# The catalog's return transaction type the refunds name (CATALOG.md txn_types), loaded through
# the real loader before the documents: without it stock's projection logged an ERROR for every
# refund (20,000 lines at 200,000 entries) and moved no stock, which no head office in use does.
TXN_TYPES = "code,name,inventory_effect\nSALE,Sale,decrease\nRETURN,Return to stock,increase\n"


def load(where: Target, docs: list[tuple[LaneId, dict[str, Any]]], workdir: Path) -> None:
    """Apply the documents through the store as chained batches, one epoch per lane, with the
    extract projection on (off by default in head office: headoffice/extract/projection.py),
    after loading the catalog's return type (TXN_TYPES)."""
    store = open_target(where, projections=PROJECTIONS)
    was, projection.ENABLED = projection.ENABLED, True
    try:
        types = workdir / "txn_types.csv"
        types.write_text(TXN_TYPES, encoding="utf-8")
        catalog_load.load_file(store.sql, "txn_types", types)
        per_lane: dict[LaneId, list[Entry]] = {}
        for i, (lane, doc) in enumerate(docs):
            entries = per_lane.setdefault(lane, [])
            seq = len(entries) + 1
            prev = entries[-1].hash if entries else genesis(lane, 1)
            body = encode_body(doc)
            txn = str(uuid.UUID(int=random.Random(i).getrandbits(128), version=4))
            ts = DAY0 + i
            entries.append(
                Entry(
                    seq,
                    doc["kind"],
                    txn,
                    ts,
                    body,
                    entry_hash(prev, seq, doc["kind"], txn, ts, body),
                )
            )
        for lane, entries in per_lane.items():
            for k in range(0, len(entries), 5000):
                prev = genesis(lane, 1) if k == 0 else entries[k - 1].hash
                store.apply_batch(JournalBatch(lane, 1, prev, entries[k : k + 5000]), DAY0)
                store.commit()
    finally:
        projection.ENABLED = was
        store.close()
    if isinstance(where, str):
        analyze(where)


def analyze(url: str) -> None:
    """PostgreSQL statistics for the tables the extract reads, as autovacuum keeps them on a
    database in use (and as the baseline's table gets them). Without this the engine ran on
    whatever autovacuum had or had not analyzed since the load a moment before, so the plan,
    and the figure, depended on the timing."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "ANALYZE journal, extract_docs, extract_lines, extract_payments, extract_done, "
            "extract_erp_postings"
        )


def baseline(where: Target, docs: list[tuple[LaneId, dict[str, Any]]]) -> tuple[float, int]:
    db = xdb.open_sql(where, describe(where))
    try:
        db.execute(
            "CREATE TABLE bench_lines (business_day TEXT, store TEXT, customer TEXT, kind TEXT, "
            "item TEXT, unit_price BIGINT, tax_code TEXT, qty BIGINT, amount BIGINT, "
            "tax BIGINT)"
        )
        db.begin()
        xdb.insert_rows(
            db,
            "bench_lines",
            (
                "business_day",
                "store",
                "customer",
                "kind",
                "item",
                "unit_price",
                "tax_code",
                "qty",
                "amount",
                "tax",
            ),
            [
                (
                    d["business_day"],
                    lane.store,
                    d["customer"] or "",
                    d["kind"],
                    ln["item"],
                    ln["unit_price"],
                    ln["tax_code"],
                    int(ln["qty"].replace(".", "")),
                    ln["amount"],
                    ln["tax"],
                )
                for lane, d in docs
                for ln in d["lines"]
            ],
        )
        db.commit()
        if db.dialect == "postgres":
            db.execute("ANALYZE bench_lines")
        t0 = time.perf_counter()
        rows = db.fetchall(
            "SELECT business_day, store, customer, kind, item, unit_price, tax_code, sum(qty), "
            "sum(amount), sum(tax) FROM bench_lines GROUP BY business_day, store, customer, "
            "kind, item, unit_price, tax_code"
        )
        return time.perf_counter() - t0, len(rows)
    finally:
        db.close()


def _engine(cfg: ExtractConfig, now: int, *, projected: bool) -> tuple[float, plugin.Plan]:
    """Seconds for the extract's engine to read every row and compute roll-up and postings."""
    db = job.open_db(cfg)
    try:
        t0 = time.perf_counter()
        rows = read_rows(db, 0, projected=projected)
        plan = job.compute(rows, cfg, now_ms=now, cursors={}, erp={}, next_tc=1)
        return time.perf_counter() - t0, plan
    finally:
        db.close()


def run(
    workdir: Path, n: int, seed: int, *, quiet: bool, pg_url: str | None = None
) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    scratch = scratch_schema(pg_url, "lanesync_xbench") if pg_url else contextlib.nullcontext(None)
    with scratch as url:
        return _run(workdir, url, n, seed, quiet=quiet)


def _run(workdir: Path, url: str | None, n: int, seed: int, *, quiet: bool) -> dict[str, Any]:
    where: Target = url or workdir / "headoffice.db"
    _say(quiet, f"applying {n} sale documents to a head-office database ({describe(where)}) ...")
    docs = documents(n, seed)
    load(where, docs, workdir)
    full_cfg = ExtractConfig(
        database=workdir / "headoffice.db", database_url=url, output_dir=workdir / "extract"
    )
    cfg = replace(full_cfg, purchases_enabled=False)
    now = DAY0 + 30 * 86_400_000
    _say(quiet, "engine: read the projection, roll up, post; then the same from bodies ...")
    engine_s, plan = _engine(cfg, now, projected=True)
    bodies_s, bodies_plan = _engine(cfg, now, projected=False)
    if bodies_plan != plan:
        raise RuntimeError("the projection and the bodies gave different plans")
    rollups, posting_rows = (
        len([r for r in plan.rollups if r["consolidated_no"]]),
        len(plan.postings),
    )
    del plan, bodies_plan  # millions of posting rows each: not kept through the full run
    _say(quiet, "full run: purchases too, files written, bookkeeping committed ...")
    t0 = time.perf_counter()
    report = job.run(full_cfg, now_ms=now)
    full_s = time.perf_counter() - t0
    _say(quiet, "baseline: SQL GROUP BY over the same lines ...")
    base_s, groups = baseline(where, docs)
    rate = n / engine_s
    base_rate = n / base_s
    engine = "PostgreSQL" if url else "SQLite"
    return {
        "bench": "extract",
        "backend": "postgres" if url else "sqlite",
        "entries": n,
        "entries_per_s": round(rate),
        "baseline_per_s": round(base_rate),
        "ratio": round(rate / base_rate, 3),
        "targets": {"entries_per_s_at_least": 150_000, "ratio_at_least": 0.5},
        "engine_s": round(engine_s, 3),
        "bodies_per_s": round(n / bodies_s),
        "ratio_vs_bodies": round(bodies_s / engine_s, 2),
        "bodies": "the same engine reading and decoding every journal body (the path before "
        "the projection, and today's for documents without one), same run, same plan",
        "rollups": rollups,
        "postings": posting_rows,
        "full_run_s": round(full_s, 3),
        "full_run_entries_per_s": round(n / full_s),
        "full_run_purchases": report.purchases,
        "full_run_rejects": report.rejects,
        "baseline_s": round(base_s, 3),
        "baseline_groups": groups,
        "baseline": f"{engine} SELECT ... GROUP BY business_day, store, customer, kind, item, "
        "unit_price, tax_code with sum(qty, amount, tax) over a flat table of the same lines "
        "(lines only: no payments, postings, records or files)",
    }
