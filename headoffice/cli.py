"""`lanesync headoffice`: run head office."""

from __future__ import annotations

import argparse
import asyncio
import sys

from headoffice import config as ho_config
from headoffice import daemon
from protocol.errors import LanesyncError

DEFAULT_CONFIG = "/etc/lanesync/headoffice.toml"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("headoffice", help="run head office (ingest)")
    p.add_argument("--config", default=DEFAULT_CONFIG, help=f"TOML (default {DEFAULT_CONFIG})")
    p.set_defaults(handler=cmd_headoffice)


def cmd_headoffice(args: argparse.Namespace) -> int:
    try:
        cfg = ho_config.load(args.config)
        asyncio.run(daemon.run(cfg))
    except LanesyncError as exc:
        print(f"lanesync headoffice: {exc}", file=sys.stderr)
        return 2
    return 0
