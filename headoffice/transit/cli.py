"""`lanesync transits`: open transits at head office (and `cancel` one still on the road).

Registered from headoffice/cli.py; registers `lanesync stock` beside it (headoffice.stock.cli).
Exit codes: 0 done, 1 refused, 2 could not run. Reads and writes whichever database the
config names (SQLite file or `database.url`).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime

from headoffice import config as ho_config
from headoffice.config import HeadOfficeConfig
from headoffice.db import DatabaseError, describe, open_database, open_readonly, target
from headoffice.projections import PROJECTIONS
from headoffice.stock import cli as stock_cli
from headoffice.stock import report as stock_report
from headoffice.transit import projection, report
from protocol.errors import LanesyncError
from protocol.runtime import clock
from protocol.runtime.cli import print_table


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], default_config: str) -> None:
    p = sub.add_parser("transits", help="open transits at head office (report), or cancel one")
    p.add_argument("--config", default=default_config, help=f"head-office TOML ({default_config})")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--stock", action="store_true", help="also list stock per location")
    p.add_argument("--cancel", metavar="SSCC_OR_NO", help="cancel a transit still in transit")
    p.add_argument("--source-store", help="with --cancel by transit number: its source store")
    p.add_argument("--by", help="with --cancel: who cancels (recorded)")
    p.set_defaults(handler=cmd_transits)
    stock_cli.register(sub, default_config)  # lanesync stock: every kind, not only transits


def cmd_transits(args: argparse.Namespace) -> int:
    try:
        cfg = ho_config.load(args.config)
    except LanesyncError as exc:
        print(f"lanesync transits: {exc}", file=sys.stderr)
        return 2
    try:
        if args.cancel:
            return _cancel(cfg, args)
        db = open_readonly(target(cfg))
    except DatabaseError as exc:
        print(f"lanesync transits: {exc}", file=sys.stderr)
        return 2
    if db is None:
        where = describe(target(cfg))
        print(f"lanesync transits: {where}: no head-office database yet", file=sys.stderr)
        return 2
    try:
        out = {"open_transits": report.open_transits(db)}
        if args.stock:
            out["stock"] = stock_report.levels(db)
    finally:
        db.close()
    if args.json:
        print(json.dumps(out))
        return 0
    from rich.table import Table  # noqa: PLC0415

    table = Table(title=f"{len(out['open_transits'])} open transits")
    for col in ("transit", "SSCC", "from", "to", "created", "by", "lines"):
        table.add_column(col)
    for t in out["open_transits"]:
        when = datetime.fromtimestamp(t["created_at"] / 1000, UTC).isoformat(timespec="seconds")
        table.add_row(
            t["transit_no"],
            t["sscc"] or "",
            t["source_store"],
            t["dest_store"],
            f"{t['created_where']} {when}",
            t["travels_by"] or "",
            str(t["lines"]),
        )
    print_table(table)  # off a terminal: tab-separated, never cut (SSCCs, times)
    for s in out.get("stock", []):
        print(f"{s['location']:>12} {s['item']:<20} {s['qty']:>12}")
    return 0


def _cancel(cfg: HeadOfficeConfig, args: argparse.Namespace) -> int:
    store = open_database(cfg, PROJECTIONS)
    db = store.sql
    try:
        key = args.cancel
        found = projection.find(
            db,
            sscc=key if len(key) == 18 and key.isdigit() else None,
            transit_no=None if len(key) == 18 and key.isdigit() else key,
            source_store=args.source_store,
        )
        if len(found) != 1:
            print(f"lanesync transits: {len(found)} transits match {key!r}", file=sys.stderr)
            return 1
        db.begin()
        ok = projection.cancel(db, found[0]["txn_id"], args.by, clock.now_ms())
        if ok:
            store.commit()
    finally:
        store.close()  # rolls back what was not committed
    if not ok:
        print(f"lanesync transits: {key} is {found[0]['status']}, not in transit", file=sys.stderr)
        return 1
    print(json.dumps({"cancelled": found[0]["transit_no"], "sscc": found[0]["sscc"]}))
    return 0
