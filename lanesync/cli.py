"""Entry point of the `lanesync` console script.

Each component registers its own subcommands (`register(subparsers)`), so this module stays a
dispatcher and agent/ and headoffice/ never import each other.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from agent import cli as agent_cli
from hardware import cli as hardware_cli
from headoffice import cli as headoffice_cli
from headoffice.extract import cli as extract_cli
from lanesync import __version__, bench, demo
from protocol import logsetup

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lanesync",
        description="Store-and-forward sync for point-of-sale lanes and head office.",
    )
    parser.add_argument("--version", action="version", version=f"lanesync {__version__}")
    parser.add_argument(
        "--log-level", default="WARNING", help="DEBUG, INFO, WARNING or ERROR (default WARNING)"
    )
    parser.add_argument(
        "--log-format",
        choices=("auto", "text", "json"),
        default="auto",
        help="json: one redacted JSON object a line; auto: json under systemd (default auto)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in (
        agent_cli.register,
        headoffice_cli.register,
        extract_cli.register,
        hardware_cli.register,
        demo.register,
        bench.register,
    ):
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Redacts card numbers and credentials from every record (protocol.logsetup).
    logsetup.configure(str(args.log_level), str(args.log_format))
    handler: Handler = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
