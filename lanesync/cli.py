"""Entry point of the `lanesync` console script.

Each component registers its own subcommands (`register(subparsers)`), so this module stays a
dispatcher and agent/ and headoffice/ never import each other. Only the component of the
command being run is imported: `lanesync agent` on a till never loads head office, psycopg or
rich (73 MB and most of a second before any command ran, when this module imported them all);
`lanesync --help` and an unknown command import every component, to list them all.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from lanesync import __version__
from protocol.runtime import logsetup

Handler = Callable[[argparse.Namespace], int]

# Each component's command-line module (it has `register(subparsers)`) and the top-level
# commands that register adds; tests/ops/test_lean_agent.py checks the two agree. A command
# missing here still works: it costs importing every component.
COMPONENTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("agent.cli", ("agent", "journal", "status", "doctor")),
    ("headoffice.cli", ("headoffice", "import", "transits", "stock")),
    ("headoffice.extract.cli", ("extract",)),
    ("headoffice.held.cli", ("held",)),
    ("headoffice.catalog.cli", ("catalog",)),
    ("hardware.cli", ("scanners",)),
    ("lanesync.demo", ("demo",)),
    ("lanesync.bench", ("bench",)),
)

_OPTIONS_WITH_VALUE = ("--log-level", "--log-format")


def command_of(argv: Sequence[str]) -> str | None:
    """The command `argv` names (its first word that is not a global option), if any."""
    words = iter(argv)
    for word in words:
        if word in _OPTIONS_WITH_VALUE:
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def components_for(command: str | None) -> list[str]:
    """The modules to import for `command`: its own, or all when it is none of theirs."""
    own = [module for module, commands in COMPONENTS if command in commands]
    return own or [module for module, _ in COMPONENTS]


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
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
    for module in components_for(command):
        importlib.import_module(module).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(command_of(words))
    args = parser.parse_args(words)
    # Redacts card numbers and credentials from every record (protocol.runtime.logsetup).
    logsetup.configure(str(args.log_level), str(args.log_format))
    handler: Handler = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
