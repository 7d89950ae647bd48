"""`lanesync agent` and `lanesync journal ...`: run a lane, inspect its journal.

`register` stays cheap and each handler imports what it alone uses (the daemon's stack for
`agent`, rich for `journal tail`), so a till's agent process loads no table renderer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime
from typing import Any

import msgpack

from agent import config as agent_config
from agent import techcli
from agent.journal.file import JournalFile
from agent.verify import verify
from protocol.errors import LanesyncError
from protocol.money import fmt_money
from protocol.runtime.cli import Exit, print_table

DEFAULT_CONFIG = agent_config.DEFAULT_CONFIG  # LANESYNC_CONFIG, when set, replaces it


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("agent", help="run the store agent for one lane")
    p.add_argument(
        "--config", default=DEFAULT_CONFIG, help=f"agent TOML (default {DEFAULT_CONFIG})"
    )
    p.set_defaults(handler=cmd_agent)

    j = sub.add_parser("journal", help="inspect a lane journal")
    jsub = j.add_subparsers(dest="journal_command", metavar="ACTION", required=True)
    for name, fn, text in (
        ("verify", cmd_verify, "check SQLite integrity and the hash chain"),
        ("tail", cmd_tail, "show the last entries"),
    ):
        jp = jsub.add_parser(name, help=text)
        where = jp.add_mutually_exclusive_group()
        where.add_argument("--config", default=DEFAULT_CONFIG, help="agent TOML naming the journal")
        where.add_argument("--path", help="journal file (instead of --config)")
        jp.add_argument("--json", action="store_true", help="machine-readable output")
        if name == "tail":
            jp.add_argument("-n", type=int, default=20, help="number of entries (default 20)")
        jp.set_defaults(handler=fn)
    techcli.register(sub, jsub, DEFAULT_CONFIG)  # status, doctor, journal export


def cmd_agent(args: argparse.Namespace) -> int:
    from agent import daemon, malloc  # noqa: PLC0415 - only this command runs the lane

    malloc.pin_mmap_threshold()  # before the first large buffer is freed (agent.malloc)
    malloc.limit_arenas()  # before the journal's threads start

    try:
        cfg = agent_config.load(args.config)
        asyncio.run(daemon.run(cfg))
    except LanesyncError as exc:
        print(f"lanesync agent: {exc}", file=sys.stderr)
        return Exit.CANNOT_RUN
    return Exit.OK


def _journal_path(args: argparse.Namespace) -> str:
    if args.path:
        return str(args.path)
    return str(agent_config.load(args.config).journal_path)


def cmd_verify(args: argparse.Namespace) -> int:
    try:
        path = _journal_path(args)
    except LanesyncError as exc:
        print(f"lanesync journal verify: {exc}", file=sys.stderr)
        return Exit.CANNOT_RUN
    rep = verify(path)
    if args.json:
        print(json.dumps(rep.as_dict()))
    elif rep.ok:
        print(
            f"OK {rep.path}: lane {rep.store}/{rep.lane} epoch {rep.epoch}, {rep.entries} entries "
            f"(seq {rep.first_seq}..{rep.last_seq}), acked to {rep.acked_seq}; chain and "
            "integrity verified"
        )
    else:
        print(f"FAILED {rep.path}: {rep.problem}", file=sys.stderr)
    return Exit.OK if rep.ok else Exit.PROBLEM


def cmd_tail(args: argparse.Namespace) -> int:
    try:
        db = JournalFile(_journal_path(args))
    except (LanesyncError, FileNotFoundError) as exc:
        print(f"lanesync journal tail: {exc}", file=sys.stderr)
        return Exit.CANNOT_RUN
    with db:
        acked, _ = db.acked()
        rows = db.latest(args.n)
    out: list[dict[str, Any]] = []
    for seq, kind, txn_id, ts, body, _hash in rows:
        doc = msgpack.unpackb(body, raw=False)
        out.append(
            {
                "seq": seq,
                "kind": kind,
                "txn_id": txn_id,
                "time": datetime.fromtimestamp(ts / 1000, UTC).isoformat(timespec="milliseconds"),
                "acked": seq <= acked,
                "register_no": doc.get("register_no"),
                "total": doc.get("total"),
                "currency": doc.get("currency"),
            }
        )
    if args.json:
        print(json.dumps(out))
        return Exit.OK
    from rich.table import Table  # noqa: PLC0415 - only this table needs rich

    table = Table("seq", "time (UTC)", "kind", "register", "total", "txn_id", "acked")
    for e in out:
        table.add_row(
            str(e["seq"]),
            e["time"],
            e["kind"],
            str(e["register_no"] or ""),
            fmt_money(e["total"], e["currency"]) if type(e["total"]) is int else "",
            e["txn_id"],
            "yes" if e["acked"] else "no",
        )
    print_table(table)  # off a terminal: tab-separated, txn ids and times never cut
    return Exit.OK
