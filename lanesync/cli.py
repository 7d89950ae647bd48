"""Entry point of the `lanesync` console script.

Each component registers its own subcommands (`register(subparsers)`), so this module stays a
dispatcher and agent/ and headoffice/ never import each other. Only the component of the
command being run is imported: `lanesync agent` on a till never loads head office, psycopg or
rich (73 MB and most of a second before any command ran, when this module imported them all);
`lanesync --help`, `lanesync help` and an unknown command import every component, to list them.

Every command ends the same way (protocol.runtime.cli): the exit-code table, Ctrl-C as 130,
and output cut by `| head` as 141 with no traceback. `lanesync` alone prints the commands and
exits 2, as a usage error; each command's --help has a description and examples
(lanesync.cmdhelp).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import textwrap
from collections.abc import Callable, Iterator, Sequence

from lanesync import __version__, cmdhelp
from protocol.runtime import logsetup
from protocol.runtime.cli import Exit, exit_codes_text, output_closed

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
_WIDTH = 78

OUTPUT_TEXT = """\
Output (every command):
  On a terminal, tables are drawn and a long cell folds onto the next line; it is never cut.
  Through a pipe or into a file, tables are tab-separated lines (a '# title' line, the
  header, one line a row), so SSCCs, txn ids and times stay whole for grep, cut and awk.
  Amounts are shown as money (9.98 EUR, 998 JPY, 9.980 KWD: the currency's ISO 4217 places).
  --json prints JSON for scripts, amounts as integer minor units beside their currency.
  Output cut short by its reader (`lanesync journal tail | head -1`) ends quietly, exit 141."""

TOPICS: dict[str, tuple[str, Callable[[], str]]] = {
    "exit-codes": ("what each exit code means, for every command", exit_codes_text),
    "output": ("tables on a terminal and through a pipe, money, --json", lambda: OUTPUT_TEXT),
}


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


def _footer() -> str:
    topics = "\n".join(f"  lanesync help {name:<11} {text}" for name, (text, _) in TOPICS.items())
    return (
        "Run 'lanesync help' for the commands by where they run,\n"
        "'lanesync COMMAND --help' for a command's options and examples.\n"
        f"{topics}\n\n{exit_codes_text()}"
    )


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lanesync",
        description="Store-and-forward sync for point-of-sale lanes and head office.",
        epilog=_footer(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
    for path, p, short in subcommands(parser):
        describe(p, path, short)
    return parser


def subcommands(
    parser: argparse.ArgumentParser, path: str = ""
) -> Iterator[tuple[str, argparse.ArgumentParser, str]]:
    """Every subcommand's parser below `parser`: ("held list", its parser, its short help).
    argparse has no public walk of its subparsers: this reads its _actions."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: str(a.help or "") for a in action._choices_actions}
            for name, p in action.choices.items():
                full = f"{path} {name}".strip()
                yield full, p, helps.get(name, "")
                yield from subcommands(p, full)


def _fill(text: str) -> str:
    """Wrap each paragraph as argparse's default formatter would (a raw formatter does not),
    keeping text that is already laid out (indented lines) as it is."""
    paragraphs = text.strip().split("\n\n")
    return "\n\n".join(
        p if "\n " in p else textwrap.fill(" ".join(p.split()), _WIDTH) for p in paragraphs
    )


def describe(p: argparse.ArgumentParser, path: str, short: str) -> None:
    """Give a subcommand's --help its description (the component's own, else lanesync.cmdhelp,
    else its one-line help) and an "Examples:" epilog, laid out as written."""
    text, examples = cmdhelp.HELP.get(path, ("", ()))
    raw = p.formatter_class is argparse.RawDescriptionHelpFormatter
    if p.description:
        description = p.description if raw else _fill(p.description)
    else:
        description = _fill(text or (short[:1].upper() + short[1:] + "." if short else ""))
    p.description = description or None
    epilog = (p.epilog if raw else _fill(p.epilog)) if p.epilog else ""
    if examples and "Example" not in epilog:
        shown = "\n".join(f"  {e}" for e in examples)
        epilog = f"{epilog}\n\nExamples:\n{shown}".strip()
    p.epilog = epilog or None
    p.formatter_class = argparse.RawDescriptionHelpFormatter


def command_list(parser: argparse.ArgumentParser) -> str:
    """What `lanesync` alone and `lanesync help` print: each command and its one line."""
    helps = {path: short for path, _, short in subcommands(parser) if " " not in path}
    width = max(map(len, helps)) + 2
    lines = [parser.format_usage().rstrip(), ""]
    listed: set[str] = set()
    for title, commands in cmdhelp.GROUPS:
        lines.append(f"{title}:")
        for name in commands:
            if name in helps:
                lines.append(f"  {name:<{width}}{helps[name]}")
                listed.add(name)
        lines.append("")
    rest = [name for name in helps if name not in listed]
    if rest:
        lines.append("Other:")
        lines += [f"  {name:<{width}}{helps[name]}" for name in rest]
        lines.append("")
    lines.append(_footer())
    return "\n".join(lines)


def cmd_help(words: list[str]) -> int:
    """`lanesync help [TOPIC | COMMAND [ACTION]]`, as `git help`."""
    if not words:
        print(command_list(build_parser()))
        return Exit.OK
    if words[0] in TOPICS:
        print(TOPICS[words[0]][1]())
        return Exit.OK
    parser = build_parser(words[0])
    found = {path: p for path, p, _ in subcommands(parser)}
    target = found.get(" ".join(words))
    if target is None:
        print(
            f"lanesync help: no command or topic {' '.join(words)!r}; topics: "
            f"{', '.join(TOPICS)}; commands: `lanesync help`",
            file=sys.stderr,
        )
        return Exit.CANNOT_RUN
    target.print_help()
    return Exit.OK


def run(words: list[str]) -> int:
    command = command_of(words)
    if command == "help":
        return cmd_help(words[words.index("help") + 1 :])
    if command is None and not {"-h", "--help", "--version"} & set(words):
        # A usage error, as git and systemctl treat it: the commands, not argparse's terse line.
        print(command_list(build_parser()), file=sys.stderr)
        return Exit.CANNOT_RUN
    parser = build_parser(command)
    args = parser.parse_args(words)
    # Redacts card numbers and credentials from every record (protocol.runtime.logsetup).
    logsetup.configure(str(args.log_level), str(args.log_format))
    handler: Handler = args.handler
    return handler(args)


def main(argv: Sequence[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else list(argv)
    try:
        try:
            code = run(words)
        except KeyboardInterrupt:
            code = Exit.INTERRUPTED
        except SystemExit:  # argparse's --help, --version and usage errors
            sys.stdout.flush()  # here, where a closed pipe is caught, not at interpreter exit
            raise
        sys.stdout.flush()
    except BrokenPipeError:
        return output_closed()
    return int(code)


if __name__ == "__main__":
    sys.exit(main())
