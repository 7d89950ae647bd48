"""`lanesync headoffice`: run head office."""

from __future__ import annotations

import argparse
import asyncio
import sys

from headoffice import config as ho_config
from headoffice import daemon, opscli
from headoffice.transit import cli as transit_cli
from protocol.errors import LanesyncError

DEFAULT_CONFIG = "/etc/lanesync/headoffice.toml"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("headoffice", help="run head office (ingest)")
    p.add_argument("--config", default=DEFAULT_CONFIG, help=f"TOML (default {DEFAULT_CONFIG})")
    opscli.add_daemon_options(p)  # --status-page HOST:PORT
    p.set_defaults(handler=cmd_headoffice)
    opscli.register(sub, DEFAULT_CONFIG)  # lanesync import FILE
    transit_cli.register(sub, DEFAULT_CONFIG)  # lanesync transits [--json] [--cancel ...]


def cmd_headoffice(args: argparse.Namespace) -> int:
    try:
        cfg = opscli.apply_daemon_options(ho_config.load(args.config), args)
        asyncio.run(daemon.run(cfg))
    except LanesyncError as exc:
        print(f"lanesync headoffice: {exc}", file=sys.stderr)
        return 2
    return 0
