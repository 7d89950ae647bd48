"""`lanesync stock [--store S] [--item I] [--json]`: head office's stock per location.

Every kind moves it (headoffice.stock.projection, headoffice.transit.projection): sales,
returns by their return type's inventory effect, purchase receives, supplier returns,
adjustments and transits (location `@transit` while a parcel is on the road). Exit codes: 0
done, 2 could not run. Registered beside `lanesync transits` (headoffice.transit.cli).
"""

from __future__ import annotations

import argparse
import json
import sys

from headoffice import config as ho_config
from headoffice.db import DatabaseError, describe, open_readonly, target
from headoffice.stock import report
from protocol.errors import LanesyncError
from protocol.runtime.cli import print_table


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], default_config: str) -> None:
    p = sub.add_parser("stock", help="stock per location and item at head office")
    p.add_argument("--config", default=default_config, help=f"head-office TOML ({default_config})")
    p.add_argument("--store", help="only this location (a store id, or @transit)")
    p.add_argument("--item", help="only this item code")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_stock)


def cmd_stock(args: argparse.Namespace) -> int:
    try:
        cfg = ho_config.load(args.config)
        db = open_readonly(target(cfg))
    except (LanesyncError, DatabaseError) as exc:
        print(f"lanesync stock: {exc}", file=sys.stderr)
        return 2
    if db is None:
        print(
            f"lanesync stock: {describe(target(cfg))}: no head-office database yet", file=sys.stderr
        )
        return 2
    try:
        rows = report.levels(db, store=args.store, item=args.item)
    finally:
        db.close()
    if args.json:
        print(json.dumps({"stock": rows}))
        return 0
    from rich.table import Table  # noqa: PLC0415

    table = Table(title=f"stock: {len(rows)} location/item rows")
    table.add_column("location")
    table.add_column("item")
    table.add_column("qty", justify="right")
    for r in rows:
        table.add_row(r["location"], r["item"], r["qty"])
    print_table(table)  # off a terminal: tab-separated, never cut (SSCCs, times)
    return 0
