"""How every `lanesync` command ends and prints: one exit-code table, one error line, tables
that a pipe gets whole, and output cut by `head` ending quietly.

Scripts and monitoring tell "found a problem" from "could not even look" from "nothing answers"
the same way for every command, on a lane and at head office, in the manner of pg_isready and
`systemctl status` (README "Exit codes", `lanesync help exit-codes`).
"""

from __future__ import annotations

import os
import sys
from enum import IntEnum
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.table import Table


class Exit(IntEnum):
    """Every command's exit codes (EXIT_CODES says each one's meaning to people)."""

    OK = 0  # done; healthy
    PROBLEM = 1  # the command ran and found a problem, or refused what it was given
    CANNOT_RUN = 2  # usage or configuration error: it could not run (argparse's 2 too)
    NOT_ANSWERING = 3  # what it asks is not running or does not answer (the agent, head office)
    INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)
    OUTPUT_CLOSED = 141  # the reader of stdout went away (`| head`): 128 + SIGPIPE, as C tools


# (code, what it means, examples): README "Exit codes" and `lanesync help exit-codes`.
EXIT_CODES: tuple[tuple[Exit, str, str], ...] = (
    (Exit.OK, "done, or healthy", "status: the lane is healthy; import: applied (or already)"),
    (
        Exit.PROBLEM,
        "ran and found a problem, or refused what it was given",
        "doctor: a check failed; status: running with a problem; held release: refused",
    ),
    (
        Exit.CANNOT_RUN,
        "usage or configuration error: it could not run",
        "an unknown option, `lanesync` alone, a config file that is missing or wrong",
    ),
    (
        Exit.NOT_ANSWERING,
        "not running, or does not answer",
        "status: the agent is not running; headoffice status: no worker answers",
    ),
    (Exit.INTERRUPTED, "interrupted (Ctrl-C)", "128 + SIGINT, as a shell reports it"),
    (
        Exit.OUTPUT_CLOSED,
        "its reader went away (`| head`): output cut, quietly",
        "128 + SIGPIPE, as C tools; `set -o pipefail` sees it",
    ),
)


def exit_codes_text() -> str:
    """The table for people (`lanesync help exit-codes`, the top-level --help)."""
    lines = ["Exit codes (every command):"]
    for code, meaning, examples in EXIT_CODES:
        lines.append(f"  {int(code):>3}  {meaning}")
        lines.append(f"       e.g. {examples}")
    return "\n".join(lines)


def fail(command: str, exc: BaseException, code: Exit) -> int:
    """Say on stderr why `lanesync <command>` stopped, and return its exit code."""
    print(f"lanesync {command}: {exc}", file=sys.stderr)
    return int(code)


def output_closed() -> int:
    """After a BrokenPipeError on stdout: point stdout at /dev/null so that the interpreter's
    last flush at exit does not fail again (Python's docs, "Note on SIGPIPE"), and return
    Exit.OUTPUT_CLOSED."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (AttributeError, OSError, ValueError):
        pass  # stdout is not a file (a test's capture): nothing to flush at exit
    finally:
        os.close(devnull)
    return int(Exit.OUTPUT_CLOSED)


def is_terminal(stream: IO[str] | None = None) -> bool:
    stream = sys.stdout if stream is None else stream
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def print_table(table: Table, stream: IO[str] | None = None) -> None:
    """A rich table for people on a terminal, every cell folded rather than cut (an SSCC, a
    txn id or a time is never shown as "…"); through a pipe or into a file, tab-separated
    lines with nothing cut at any width (a "# title" line, the header, one line a row)."""
    stream = sys.stdout if stream is None else stream
    if is_terminal(stream):
        from rich.console import Console  # noqa: PLC0415 - only where a table is shown

        for column in table.columns:
            column.overflow = "fold"
        Console(file=stream).print(table)
        return
    for line in table_lines(table):
        print(line, file=stream)


def table_lines(table: Table) -> list[str]:
    """The table as tab-separated text: markup stripped, tabs and newlines in cells made
    spaces so each row stays one line."""
    cols = table.columns
    out = []
    if table.title:
        out.append(f"# {_plain(table.title)}")
    out.append("\t".join(_plain(c.header) for c in cols))
    cells = [list(c.cells) for c in cols]
    out.extend(
        "\t".join(_plain(col[i]) if i < len(col) else "" for col in cells)
        for i in range(table.row_count)
    )
    return out


def _plain(cell: Any) -> str:
    from rich.text import Text  # noqa: PLC0415

    if isinstance(cell, Text):
        text = cell.plain
    elif isinstance(cell, str):
        text = Text.from_markup(cell).plain
    else:
        text = str(cell)
    return text.replace("\t", " ").replace("\n", " ")
