"""`lanesync import FILE` and the status page option of `lanesync headoffice`.

Registered from headoffice/cli.py. `import` exits (protocol.runtime.cli.Exit) OK when the file
is applied (or was already applied: a second import changes nothing), PROBLEM when it was
refused, CANNOT_RUN when it could not run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from headoffice import config as ho_config
from headoffice import db as ho_db
from headoffice import importer
from headoffice.config import HeadOfficeConfig
from headoffice.opsconfig import LISTEN_EXAMPLE
from protocol.errors import LanesyncError
from protocol.runtime.cli import Exit, fail
from protocol.runtime.httpserver import check_listen


def add_daemon_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--status-page",
        metavar="HOST:PORT",
        help="serve the status page here (overrides [status_page] listen)",
    )


def apply_daemon_options(cfg: HeadOfficeConfig, args: argparse.Namespace) -> HeadOfficeConfig:
    listen = getattr(args, "status_page", None)
    if not listen:
        return cfg
    page = dataclasses.replace(
        cfg.ops.status_page, listen=check_listen(listen, "--status-page", LISTEN_EXAMPLE)
    )
    return dataclasses.replace(cfg, ops=dataclasses.replace(cfg.ops, status_page=page))


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], default_config: str) -> None:
    p = sub.add_parser("import", help="apply a lane's exported backlog file at head office")
    p.add_argument("file", help="the .export file from `lanesync journal export`")
    p.add_argument("--config", default=default_config, help=f"head-office TOML ({default_config})")
    p.add_argument("--key-dir", help="directory of <store>.key files (overrides [import] key_dir)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_import)


def cmd_import(args: argparse.Namespace) -> int:
    try:
        cfg = ho_config.load(args.config)
    except LanesyncError as exc:
        return fail("import", exc, Exit.CANNOT_RUN)
    key_dir = Path(args.key_dir) if args.key_dir else cfg.ops.import_.key_dir
    try:
        res = importer.apply(Path(args.file), ho_db.target(cfg), key_dir)
    except LanesyncError as exc:
        return fail("import", exc, Exit.PROBLEM)
    if args.json:
        print(json.dumps(res.as_dict()))
    else:
        print(
            f"imported {res.file}: lane {res.store}/{res.lane} epoch {res.epoch}, {res.entries} "
            f"entries: {res.applied} applied, {res.redelivered} already held, "
            f"{res.duplicate_txn} duplicate documents, {res.held} held; head office now holds up "
            f"to seq {res.hwm}"
        )
    return Exit.OK
