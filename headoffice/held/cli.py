"""`lanesync held list|show ID|release ID|void ID --reason TEXT [--json]`: repair held entries.

An entry head office refused is held at its seq (invariant 9); the lane moved on past it. An
operator looks at it (`list`, `show`), and once the rule or the data is fixed `release`s it
(applied once, as if it had arrived in order) or `void`s it (closed, never applied, with who,
when and why on the row). Both are idempotent: doing it again changes nothing and exits 0.
Exit codes: 0 done (now or before), 1 refused (the reason is printed), 2 could not run.

Registered from lanesync/cli.py (`register(subparsers)`).
"""

from __future__ import annotations

import argparse
import getpass
import json
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg

from headoffice import config as ho_config
from headoffice.db import DatabaseError, describe, is_url, open_database, open_readonly, target
from headoffice.db.base import CARD_NUMBER_VOID_ONLY, HeldOutcome
from headoffice.held import ops
from headoffice.projections import PROJECTIONS
from protocol.errors import LanesyncError
from protocol.runtime import clock

DEFAULT_CONFIG = ho_config.DEFAULT_CONFIG  # as `lanesync headoffice`; LANESYNC_CONFIG replaces it
PROG = "lanesync held"
DATABASE_ERRORS = (sqlite3.Error, psycopg.Error)


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], default_config: str = DEFAULT_CONFIG
) -> None:
    p = sub.add_parser(
        "held", help="entries head office holds at their seq: list, show, release, void"
    )
    actions = p.add_subparsers(dest="held_action", metavar="ACTION", required=True)

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument(
            "--config", default=default_config, help=f"head-office TOML ({default_config})"
        )
        q.add_argument("--json", action="store_true", help="machine-readable output")

    q = actions.add_parser("list", help="held entries (open ones unless --state)")
    common(q)
    q.add_argument("--state", choices=(*ops.STATES, "all"), default="held")
    q.add_argument("--store", help="only this store")
    q.add_argument("--lane", help="only this lane (with or without --store)")
    q.add_argument("--code", help="only this code (card_number, invalid_body, txn_conflict, ...)")
    q.add_argument("--limit", type=int, default=200, help="at most this many (default 200)")
    q.set_defaults(handler=cmd_list)

    q = actions.add_parser("show", help="one held entry in full, its body decoded (masked)")
    common(q)
    q.add_argument("id", type=int)
    q.set_defaults(handler=cmd_show)

    q = actions.add_parser("release", help="apply held entries once, after the fix")
    common(q)
    q.add_argument("id", type=int, nargs="+")
    q.add_argument("--by", help="who releases (recorded; default: your user name)")
    q.add_argument("--note", default="released by an operator", help="why (recorded)")
    q.set_defaults(handler=cmd_release)

    q = actions.add_parser("void", help="close held entries without applying them")
    common(q)
    q.add_argument("id", type=int, nargs="+")
    q.add_argument("--reason", required=True, help="why (recorded on the entry)")
    q.add_argument("--by", help="who voids (recorded; default: your user name)")
    q.set_defaults(handler=cmd_void)


def _who(args: argparse.Namespace) -> str:
    if args.by:
        return str(args.by)
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name for this uid (a container)
        return "operator"


def _fail(code: int, message: str) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return code


def _read(args: argparse.Namespace) -> tuple[Any, int]:
    """(the read-only connection, 0) or (None, exit code) with the error printed."""
    try:
        cfg = ho_config.load(args.config)
        db = open_readonly(target(cfg))
    except LanesyncError as exc:
        return None, _fail(2, str(exc))
    if db is None:
        return None, _fail(2, f"{describe(target(cfg))}: no head-office database yet")
    return db, 0


def cmd_list(args: argparse.Namespace) -> int:
    db, rc = _read(args)
    if db is None:
        return rc
    try:
        recs = ops.list_held(
            db,
            state=None if args.state == "all" else args.state,
            store=args.store,
            lane=args.lane,
            code=args.code,
            limit=args.limit,
        )
    except (LanesyncError, *DATABASE_ERRORS) as exc:
        return _fail(2, str(exc))
    finally:
        db.close()
    if args.json:
        print(json.dumps([ops.as_dict(r) for r in recs]))
        return 0
    if not recs:
        print(f"no {'' if args.state == 'all' else args.state + ' '}entries")
        return 0
    # One line per entry and its reason whole on the next: a reason says what to fix, and
    # it stays greppable (a table cut it to the terminal's width).
    print(f"{len(recs)} {'' if args.state == 'all' else args.state + ' '}entries")
    for r in recs:
        print(
            f"{r.id:>6}  {r.store}/{r.lane} epoch {r.epoch} seq {r.seq}  {r.kind}  {r.code}  "
            f"{r.state}  held {ops.when(r.held_at)}"
        )
        print(f"        {r.reason}")
        if r.state != "held":
            print(f"        {r.state} {ops.when(r.closed_at)} by {r.closed_by}: {r.close_reason}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    db, rc = _read(args)
    if db is None:
        return rc
    try:
        rec = ops.get_held(db, args.id)
    except (LanesyncError, *DATABASE_ERRORS) as exc:
        return _fail(1 if isinstance(exc, ops.HeldError) else 2, str(exc))
    finally:
        db.close()
    out = ops.as_dict(rec, body=True)
    if args.json:
        print(json.dumps(out))
        return 0
    for key, value in out.items():
        if key != "body":
            print(f"{key:>20}: {value}")
    print(f"{'body':>20}: {json.dumps(out['body'], indent=2)}")
    if rec.state == "held" and rec.body is None:
        print(
            f"\nheld entry {rec.id} can only be voided: {CARD_NUMBER_VOID_ONLY.format(id=rec.id)}"
        )
    return 0


def cmd_release(args: argparse.Namespace) -> int:
    return _change(args, "release")


def cmd_void(args: argparse.Namespace) -> int:
    if not args.reason.strip():
        return _fail(2, "void: --reason must say why")
    return _change(args, "void")


def _change(args: argparse.Namespace, action: str) -> int:
    try:
        cfg = ho_config.load(args.config)
        where = target(cfg)
        if not is_url(where) and not Path(where).exists():
            return _fail(2, f"{describe(where)}: no head-office database yet")
        store = open_database(cfg, PROJECTIONS)
    except LanesyncError as exc:
        return _fail(2, str(exc))
    now = clock.now_ms()
    try:
        if action == "release":
            outcomes = store.release_held(args.id, _who(args), args.note, now)
        else:
            outcomes = store.void_held(args.id, _who(args), args.reason, now)
        store.commit()
    except (DatabaseError, *DATABASE_ERRORS) as exc:  # SQLite busy past its timeout, a lost link
        store.rollback()
        return _fail(2, f"nothing changed: {exc}")
    finally:
        store.close()
    return _report(args, outcomes)


def _report(args: argparse.Namespace, outcomes: Sequence[HeldOutcome]) -> int:
    if args.json:
        print(json.dumps([o.as_dict() for o in outcomes]))
    else:
        for o in outcomes:
            print(_sentence(o), file=sys.stderr if o.refused else sys.stdout)
    return 1 if any(o.refused for o in outcomes) else 0


def _sentence(o: HeldOutcome) -> str:
    if o.refused:
        return f"{PROG} {o.action}: {o.refused}"
    if not o.changed:
        return f"held entry {o.id} was {o.state} already; nothing changed"
    if o.action == "void":
        return f"held entry {o.id} voided"
    if o.applied:
        return f"held entry {o.id} released: applied once"
    return (
        f"held entry {o.id} released: its document was applied before (the same document "
        "from its store), so it is journaled as a duplicate"
    )
