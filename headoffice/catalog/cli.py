"""`lanesync catalog load|show|diff|history`: head office's master data, by hand or by script.

Registered by lanesync/cli.py (`register(subparsers)`). Opens the database headoffice.toml
names, like the other head-office commands. Exit codes: 0 done (a load that changed nothing
is done too), 1 refused (the message names file, row and column; nothing changed), 2 could
not run.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from headoffice import config as ho_config
from headoffice.catalog import load as loader
from headoffice.catalog import versions
from headoffice.db import DatabaseError, describe, open_readonly, open_target, target
from headoffice.db.sql import Sql
from headoffice.projections import PROJECTIONS
from protocol import catalog as cat
from protocol.errors import LanesyncError
from protocol.money import fmt_money
from protocol.runtime.cli import print_table

DEFAULT_CONFIG = ho_config.DEFAULT_CONFIG  # LANESYNC_CONFIG, when set, replaces it


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("catalog", help="head office's master data: load, show, diff, history")
    p.add_argument("--config", default=DEFAULT_CONFIG, help=f"head-office TOML ({DEFAULT_CONFIG})")
    cmds = p.add_subparsers(dest="catalog_command", metavar="SUBCOMMAND", required=True)
    names = ", ".join(cat.DATASET_ORDER)
    # --config also after the subcommand (`lanesync catalog load items f.csv --config X`);
    # SUPPRESS leaves the value given before it (or the default) when it is not repeated.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=argparse.SUPPRESS, help="head-office TOML")

    ld = cmds.add_parser(
        "load", parents=[common], help="load a CSV or JSON Lines file as a new version"
    )
    ld.add_argument("dataset", help=f"one of {names}")
    ld.add_argument("file", type=Path, help="a .csv (header row) or .jsonl file")
    ld.add_argument("--upsert", action="store_true", help="add and change rows only, never remove")
    ld.add_argument("--json", action="store_true", help="machine-readable output")
    ld.set_defaults(handler=cmd_load)

    sh = cmds.add_parser("show", parents=[common], help="a dataset's current rows")
    sh.add_argument("dataset", help=f"one of {names}")
    sh.add_argument("--store", help="only the rows this store's lanes receive")
    sh.add_argument("--json", action="store_true", help="JSON Lines, one row a line")
    sh.set_defaults(handler=cmd_show)

    df = cmds.add_parser("diff", parents=[common], help="what changed from version A to version B")
    df.add_argument("a", type=int, help="from this version (0: nothing)")
    df.add_argument("b", type=int, help="to this version")
    df.add_argument("--store", help="only the changes this store's lanes receive")
    df.add_argument("--json", action="store_true", help="JSON Lines, one change a line")
    df.set_defaults(handler=cmd_diff)

    pr = cmds.add_parser(
        "prune",
        parents=[common],
        help="drop the history before a version (lanes older than it reload)",
    )
    which = pr.add_mutually_exclusive_group(required=True)
    which.add_argument("--keep", type=int, metavar="N", help="keep the last N versions")
    which.add_argument("--before", type=int, metavar="V", help="drop versions before V")
    pr.add_argument("--json", action="store_true", help="machine-readable output")
    pr.set_defaults(handler=cmd_prune)

    hi = cmds.add_parser(
        "history", parents=[common], help="every version: when, what, how many rows"
    )
    hi.add_argument("--json", action="store_true", help="machine-readable output")
    hi.set_defaults(handler=cmd_history)


def _fail(code: int, message: str) -> int:
    print(f"lanesync catalog: {message}", file=sys.stderr)
    return code


def cmd_load(args: argparse.Namespace) -> int:
    try:
        cfg = ho_config.load(args.config)
        store = open_target(
            target(cfg), projections=PROJECTIONS, max_epochs_per_lane=cfg.ingest.max_epochs_per_lane
        )
    except LanesyncError as exc:
        return _fail(2, str(exc))
    try:
        res = loader.load_file(store.sql, args.dataset, args.file, upsert=args.upsert)
    except loader.LoadError as exc:
        if args.json:
            print(json.dumps({"ok": False, **exc.as_dict()}))
        return _fail(1, str(exc))
    except LanesyncError as exc:
        return _fail(2, str(exc))
    finally:
        store.close()
    if args.json:
        print(json.dumps({"ok": True, **res.as_dict()}))
    elif res.version is None:
        print(f"{res.dataset}: no change ({res.rows} rows); no version made")
    else:
        print(
            f"{res.dataset}: version {res.version}: {res.added} added, {res.changed} changed, "
            f"{res.removed} removed; {res.rows} rows"
        )
    return 0


def _reader(args: argparse.Namespace) -> Sql:
    cfg = ho_config.load(args.config)
    db = open_readonly(target(cfg))
    if db is None:
        raise DatabaseError(f"{describe(target(cfg))}: no head-office database yet")
    try:
        db.fetchone("SELECT 1 FROM catalog_versions LIMIT 1")
    except Exception as exc:  # noqa: BLE001 - sqlite3 or psycopg: either says "no such table"
        db.close()
        raise DatabaseError(
            f"{describe(target(cfg))} has no catalog yet (schema 5): start head office or load "
            f"a dataset first ({exc.__class__.__name__})"
        ) from None
    return db


def _dump(row: dict[str, Any]) -> str:
    return json.dumps(row, ensure_ascii=False, separators=(",", ":"))


def cmd_show(args: argparse.Namespace) -> int:
    try:
        ds = cat.dataset(args.dataset)
        db = _reader(args)
    except LanesyncError as exc:
        return _fail(2, str(exc))
    try:
        scopes = None
        if args.store:
            scopes = versions.store_scopes(db, args.store, versions.latest_version(db))
        rows = versions.current_rows(db, ds.name, scopes)
        has_money = any(c.type == "money" for c in ds.columns)
        currency = _currency(db, args.store, scopes) if has_money and not args.json else None
    finally:
        db.close()
    if args.json:
        for row in rows:
            print(_dump(row))  # integer minor units, as loaded
        return 0
    from rich.table import Table  # noqa: PLC0415

    where = f" seen by store {args.store}" if args.store else ""
    table = Table(title=f"{ds.name}: {len(rows)} rows{where}")
    for col in ds.columns:
        table.add_column(col.name)
    for row in rows:
        table.add_row(
            *(
                fmt_money(row.get(c.name), currency)
                if c.type == "money"
                else _cell(row.get(c.name))
                for c in ds.columns
            )
        )
    print_table(table)  # off a terminal: tab-separated, never cut (SSCCs, times)
    return 0


def _currency(db: Sql, store: str | None, scopes: Sequence[str] | None) -> str | None:
    """The currency amounts are shown in: the store's (with --store), else the chain's
    Currency setting; None (amounts shown as minor units) when neither says."""
    if store:
        for row in versions.current_rows(db, "stores", scopes):
            if row.get("id") == store and row.get("currency"):
                return str(row["currency"])
    for row in versions.current_rows(db, "settings", scopes):
        if row.get("name") == "Currency" and row.get("scope") == "chain":
            return str(row["value"])
    return None


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return "|".join(map(str, value))
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def cmd_diff(args: argparse.Namespace) -> int:
    if args.a < 0 or args.b < args.a:
        return _fail(2, f"diff {args.a} {args.b}: needs 0 <= A <= B")
    try:
        db = _reader(args)
    except LanesyncError as exc:
        return _fail(2, str(exc))
    try:
        latest = versions.latest_version(db)
        if args.b > latest:
            return _fail(2, f"version {args.b} does not exist (latest is {latest})")
        oldest = versions.oldest_version(db)
        if 0 < args.a < oldest or args.b < oldest:
            return _fail(2, f"the history before version {oldest} was pruned")
        scopes = versions.store_scopes(db, args.store, args.b) if args.store else None
        changes = versions.decode(versions.net_changes(db, scopes, args.a, args.b))
    finally:
        db.close()
    for dataset, key, row in changes:
        if args.json:
            print(_dump({"dataset": dataset, "key": key, "row": row}))
        elif row is None:
            print(f"- {dataset} {key}")
        else:
            print(f"~ {dataset} {key} {_dump(row)}")
    if not args.json:
        print(f"{len(changes)} changes from version {args.a} to {args.b}")
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    n = args.keep if args.keep is not None else args.before
    if n < 1:
        return _fail(2, "--keep and --before take a number from 1")
    try:
        cfg = ho_config.load(args.config)
        store = open_target(
            target(cfg), projections=PROJECTIONS, max_epochs_per_lane=cfg.ingest.max_epochs_per_lane
        )
    except LanesyncError as exc:
        return _fail(2, str(exc))
    try:
        before = n
        if args.keep is not None:
            before = versions.latest_version(store.sql) - args.keep + 1
        res = versions.prune(store.sql, before)
    except LanesyncError as exc:
        return _fail(2, str(exc))
    finally:
        store.close()
    if args.json:
        print(json.dumps(res.as_dict()))
    elif res.versions == 0:
        print("nothing to prune")
    else:
        print(
            f"history before version {res.before} dropped: {res.versions} versions, "
            f"{res.rows} old rows, {res.hashes} scope hashes"
        )
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    try:
        db = _reader(args)
    except LanesyncError as exc:
        return _fail(2, str(exc))
    try:
        rows = versions.history(db)
    finally:
        db.close()
    if args.json:
        print(json.dumps(rows))
        return 0
    for r in rows:
        when = datetime.fromtimestamp(r["loaded_at"] / 1000, UTC).isoformat(timespec="seconds")
        mode = " (upsert)" if r["upsert"] else ""
        print(
            f"{r['version']:>6} {when} {r['dataset']:<10} +{r['added']} ~{r['changed']} "
            f"-{r['removed']}{mode} {r['source']}"
        )
    if not rows:
        print("no versions yet")
    return 0
