"""Issue 18.4, the command line: documented exit codes, `lanesync` alone, every subcommand's
help, output piped to `head`, tables through a pipe, amounts as money. The command runs as a
real subprocess of the installed console script wherever the pipe or the exit code matters."""

from __future__ import annotations

import argparse
import asyncio
import io
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agent.journal import Journal
from lanesync import cli, cmdhelp
from protocol.money import fmt_money, minor_digits
from protocol.runtime.cli import EXIT_CODES, Exit, print_table
from tests.ops.ops_helpers import LANE

LANESYNC = str(Path(sys.executable).parent / "lanesync")
README = Path(__file__).resolve().parents[2] / "README.md"


def lanesync(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LANESYNC, *argv], capture_output=True, text=True, timeout=60, check=False
    )


def lane_toml(tmp_path: Path) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(
        f'store = "{LANE.store}"\nlane = "{LANE.lane}"\n'
        f'[journal]\npath = "{tmp_path / "journal.db"}"\n'
        f'[api]\nsocket = "{tmp_path / "api.sock"}"\n',
        encoding="utf-8",
    )
    return path


async def _journal(path: Path, n: int) -> None:
    async with Journal(path, LANE) as journal:
        for start in range(0, n, 500):  # concurrent appends share a commit: seconds, not minutes
            await asyncio.gather(
                *(
                    journal.append(
                        "sale",
                        {
                            "kind": "sale",
                            "register_no": f"T{i}",
                            "total": 998 + i,
                            "currency": "EUR",
                        },
                    )
                    for i in range(start, min(n, start + 500))
                )
            )


# --- exit codes ------------------------------------------------------------------------------


def test_the_exit_code_table_is_one_and_documented() -> None:
    codes = [int(code) for code, _, _ in EXIT_CODES]
    assert codes == sorted({int(c) for c in Exit}), "every Exit member has its line"
    assert (Exit.OK, Exit.PROBLEM, Exit.CANNOT_RUN, Exit.NOT_ANSWERING) == (0, 1, 2, 3)
    shown = lanesync("help", "exit-codes")
    assert shown.returncode == 0, shown.stderr
    readme = README.read_text(encoding="utf-8")
    section = readme[readme.index("### Exit codes") :]
    section = section[: section.index("\n#", 1)]
    for code, meaning, _ in EXIT_CODES:
        assert re.search(rf"^\s+{int(code)}\s+{re.escape(meaning)}$", shown.stdout, re.M), code
        assert f"| {int(code)} |" in section, f"README's exit-code table lacks {int(code)}"


def test_commands_exit_by_the_table(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.toml")
    # 2: usage and configuration errors, whichever command
    assert lanesync("status", "--bogus").returncode == Exit.CANNOT_RUN
    assert lanesync("status", "--config", missing).returncode == Exit.CANNOT_RUN
    assert lanesync("import", "x.export", "--config", missing).returncode == Exit.CANNOT_RUN
    assert lanesync("headoffice", "status", "--config", missing).returncode == Exit.CANNOT_RUN
    # 1: the doctor found a problem (the config it names is missing)
    doctor = lanesync("doctor", "--offline", "--config", missing)
    assert doctor.returncode == Exit.PROBLEM, doctor.stdout
    assert "[FAIL] config" in doctor.stdout
    # 3: the agent is not running (a journal is there, no live agent beside it)
    cfg = lane_toml(tmp_path)
    asyncio.run(_journal(tmp_path / "journal.db", 1))
    status = lanesync("status", "--config", str(cfg))
    assert status.returncode == Exit.NOT_ANSWERING, status.stdout + status.stderr
    assert "agent NOT RUNNING" in status.stdout
    # 0: done
    assert lanesync("journal", "verify", "--config", str(cfg)).returncode == Exit.OK


# --- lanesync alone, help --------------------------------------------------------------------


def test_lanesync_alone_lists_the_commands_and_exits_2() -> None:
    res = lanesync()
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    for _, commands in cli.COMPONENTS:
        for command in commands:
            assert re.search(rf"^  {command}\s+\S", res.stderr, re.M), command
    assert "lanesync help exit-codes" in res.stderr
    shown = lanesync("help")
    assert (shown.returncode, shown.stdout.strip()) == (0, res.stderr.strip())


def test_every_command_is_in_a_group_of_the_list() -> None:
    grouped = [c for _, commands in cmdhelp.GROUPS for c in commands]
    assert sorted(grouped) == sorted(c for _, commands in cli.COMPONENTS for c in commands)


def test_every_subcommand_has_a_description_and_an_example() -> None:
    paths = []
    for path, parser, _short in cli.subcommands(cli.build_parser()):
        paths.append(path)
        assert parser.description, f"lanesync {path} --help has no description"
        assert parser.epilog, f"lanesync {path} --help has no epilog"
        assert "Example" in parser.epilog, f"lanesync {path}: no example"
        assert parser.formatter_class is argparse.RawDescriptionHelpFormatter, path
        for line in parser.epilog.splitlines():
            if line.startswith("  lanesync "):
                words = line.split()[1:]
                assert words[: len(path.split())] == path.split(), (path, line)
    assert len(paths) > 40
    assert not set(cmdhelp.HELP) - set(paths), "cmdhelp names commands that do not exist"


def test_help_of_a_command_is_its_help() -> None:
    res = lanesync("help", "held", "list")
    assert res.returncode == 0
    assert res.stdout.startswith("usage: lanesync held list")
    assert "Examples:\n  lanesync held list" in res.stdout
    unknown = lanesync("help", "nosuch")
    assert unknown.returncode == 2
    assert "no command or topic 'nosuch'" in unknown.stderr


def test_the_agent_still_imports_only_its_component() -> None:
    code = (
        "import sys; from lanesync import cli; cli.build_parser('agent'); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('headoffice', 'psycopg', 'rich')))"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert res.stdout.strip() == "[]"


# --- pipes -----------------------------------------------------------------------------------


def test_output_cut_by_head_ends_quietly(tmp_path: Path) -> None:
    cfg = lane_toml(tmp_path)
    asyncio.run(_journal(tmp_path / "journal.db", 3000))  # ~200 kB: past a pipe's buffer
    proc = subprocess.Popen(
        [LANESYNC, "journal", "tail", "-n", "3000", "--config", str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()
    proc.stdout.close()  # as `head -1` does: the writer then meets a closed pipe
    _, err = proc.communicate(timeout=60)
    assert first.startswith(("# ", "seq")), first
    assert err == ""
    assert proc.returncode == Exit.OUTPUT_CLOSED

    shell = subprocess.run(
        f"set -o pipefail; {LANESYNC} journal tail -n 3000 --config {cfg} | head -1",
        shell=True,
        capture_output=True,
        text=True,
        executable="/bin/bash",
        timeout=60,
        check=False,
    )
    assert shell.stderr == ""
    assert shell.returncode == Exit.OUTPUT_CLOSED
    assert shell.stdout.count("\n") == 1


def test_a_table_through_a_pipe_is_whole_and_tab_separated(tmp_path: Path) -> None:
    cfg = lane_toml(tmp_path)
    asyncio.run(_journal(tmp_path / "journal.db", 3))
    res = lanesync("journal", "tail", "--config", str(cfg))
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    header = lines[0].split("\t")
    assert header == ["seq", "time (UTC)", "kind", "register", "total", "txn_id", "acked"]
    rows = [dict(zip(header, line.split("\t"), strict=True)) for line in lines[1:]]
    assert [r["total"] for r in rows] == ["9.98 EUR", "9.99 EUR", "10.00 EUR"]
    # the txn id and the time whole, as the journal holds them
    import json  # noqa: PLC0415

    full = json.loads(lanesync("journal", "tail", "--json", "--config", str(cfg)).stdout)
    assert [r["txn_id"] for r in rows] == [e["txn_id"] for e in full]
    assert [r["time (UTC)"] for r in rows] == [e["time"] for e in full]
    assert all(len(e["txn_id"]) >= 18 for e in full), full[0]["txn_id"]
    assert "…" not in res.stdout
    assert (full[0]["total"], full[0]["currency"]) == (998, "EUR")  # JSON: minor units


# --- money -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "currency", "shown"),
    [
        (998, "EUR", "9.98 EUR"),
        (-5, "EUR", "-0.05 EUR"),
        (0, "USD", "0.00 USD"),
        (998, "JPY", "998 JPY"),
        (-998, "KRW", "-998 KRW"),
        (9980, "KWD", "9.980 KWD"),
        (12345, "CLF", "1.2345 CLF"),
        (998, None, "998 minor units"),
        (998, "eur", "998 minor units"),
        (None, "EUR", ""),
    ],
)
def test_amounts_are_shown_as_money(amount: int | None, currency: str | None, shown: str) -> None:
    assert fmt_money(amount, currency) == shown


def test_minor_digits_follow_iso_4217() -> None:
    assert [minor_digits(c) for c in ("EUR", "GBP", "JPY", "KWD", "BHD", "CLF")] == [
        2, 2, 0, 3, 3, 4,
    ]  # fmt: skip


# --- tables ----------------------------------------------------------------------------------

SSCC = "376012345000000017"


def _sscc_table() -> Any:
    from rich.table import Table  # noqa: PLC0415

    table = Table(title="1 open transits")
    for col in ("sscc", "from", "shipped at", "lines"):
        table.add_column(col)
    table.add_row(SSCC, "[bold]S001[/bold]", "2026-03-01T06:00:00.123+00:00", "3")
    return table


def test_off_a_terminal_a_table_is_tab_separated_whatever_its_width(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "20")
    out = io.StringIO()
    print_table(_sscc_table(), out)
    assert out.getvalue().splitlines() == [
        "# 1 open transits",
        "sscc\tfrom\tshipped at\tlines",
        f"{SSCC}\tS001\t2026-03-01T06:00:00.123+00:00\t3",
    ]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_narrow_terminal_cells_fold_and_are_never_cut(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "40")
    out = _Terminal()
    print_table(_sscc_table(), out)
    text = out.getvalue()
    assert "…" not in text
    digits = "".join(re.findall(r"^│ *([0-9]+) *│", text, re.M))  # its first column, folded
    assert SSCC in digits, text
