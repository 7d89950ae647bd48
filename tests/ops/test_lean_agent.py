"""Issue 17.2: `lanesync agent` imports only what a lane uses.

`lanesync.cli` imported every component before any command ran (707 modules, 73 MB): a till's
agent carried psycopg, head office and rich. Now only the command's own component is imported.
The check runs a real `lanesync agent` under `python -X importtime`, which names every module
the process imports, until it is READY and a moment beyond (its first reconnect attempts).
"""

from __future__ import annotations

import argparse
import importlib
import json
import random
import re
import time
from pathlib import Path

import pytest

from lanesync import cli
from protocol.screen import gs1_check_digit
from tests.ops.agent_proc import READY_LINE, agent, write_config

FORBIDDEN = ("headoffice", "psycopg", "psycopg_binary", "psycopg_pool", "rich")
# The agent serves its local API and /metrics with h11 (agent.httpserver); aiohttp's package
# imports its client half and builds verified SSL contexts at import: about 15 MB (issue 17.2).
FORBIDDEN_HTTP = ("aiohttp",)
# biip (GS1 parsing: 16 MB and 0.1 s at import) is for scans and transit labels; a lane with no
# [[scanners]] that has printed no label does not load it.
# evdev and pyserial (with ctypes, fcntl's wrappers, termios) are hardware's readers: imported
# only for a lane with [[scanners]] (agent.config, agent.daemon).
FORBIDDEN_WITHOUT_SCANNERS = ("biip", "evdev", "serial")
# prometheus_client is imported at the first scrape of `[metrics] listen` (agent.metrics), which
# this lane does not set; uuid6 is gone (agent.journal.journal makes its own UUIDv7s).
FORBIDDEN_LEAN = ("prometheus_client", "uuid6")
# Whole modules a lane has no use for at start (issue 17.2): importlib.metadata (1.5 MB: the
# version is read from the dist-info, protocol.runtime.version), the OpenAPI document (built
# on its first request), difflib (only for a "did you mean").
FORBIDDEN_MODULES = ("importlib.metadata", "agent.openapi", "difflib")
_IMPORTED = re.compile(r"^import time:\s+\d+ \|\s+\d+ \| ( *)(\S+)$")


def top_level_commands(parser: argparse.ArgumentParser) -> set[str]:
    # argparse has no public way to list a parser's subcommands: read its private _actions
    (sub,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return set(sub.choices)


def test_a_real_agent_never_imports_head_office_psycopg_or_rich(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    with agent(config, python_flags=("-X", "importtime"), log=("--log-level", "INFO")) as proc:
        proc.wait_for(lambda line: READY_LINE in line)
        time.sleep(0.5)  # past READY: the replicator's first attempts, the API serving
        assert proc.proc.poll() is None, proc.lines[-20:]
    imported = [m.group(2) for line in proc.lines if (m := _IMPORTED.match(line))]
    # The parse is real: the agent's own stack is in it.
    for needed in ("agent.daemon", "agent.replicator", "agent.api", "h11", "aiomqtt"):
        assert needed in imported, needed
    loaded = sorted({name for name in imported if name.split(".")[0] in FORBIDDEN})
    assert loaded == [], f"lanesync agent imported {loaded}"
    loaded = sorted({name for name in imported if name.split(".")[0] in FORBIDDEN_WITHOUT_SCANNERS})
    assert loaded == [], f"lanesync agent without scanners imported {loaded}"
    loaded = sorted({name for name in imported if name.split(".")[0] in FORBIDDEN_HTTP})
    assert loaded == [], f"lanesync agent imported {loaded}: its HTTP server is agent.httpserver"
    loaded = sorted({name for name in imported if name.split(".")[0] in FORBIDDEN_LEAN})
    assert loaded == [], f"lanesync agent without [metrics] listen imported {loaded}"
    loaded = sorted(set(imported) & set(FORBIDDEN_MODULES))
    assert loaded == [], f"lanesync agent imported {loaded} at start"


def test_the_gs1_check_digit_is_biips() -> None:
    """protocol.screen computes the GS1 check digit itself so the agent need not load biip."""
    from biip.checksums import gs1_standard_check_digit  # noqa: PLC0415

    rng = random.Random(17)
    for length in (7, 11, 12, 13, 17):
        for _ in range(300):
            payload = "".join(rng.choice("0123456789") for _ in range(length))
            assert gs1_check_digit(payload) == gs1_standard_check_digit(payload), payload


def test_each_component_registers_the_commands_cli_names_for_it() -> None:
    """lanesync.cli imports a command's component by this list; it must not drift."""
    everything: set[str] = set()
    for module, commands in cli.COMPONENTS:
        parser = argparse.ArgumentParser()
        sub = parser.add_subparsers(dest="command")
        importlib.import_module(module).register(sub)
        assert top_level_commands(parser) == set(commands), (
            f"{module} registers {sorted(top_level_commands(parser))}; "
            f"lanesync/cli.py COMPONENTS says {sorted(commands)}"
        )
        assert not everything & set(commands), f"{module}: a command registered twice"
        everything |= set(commands)
    assert top_level_commands(cli.build_parser()) == everything


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["agent", "--config", "x.toml"], "agent"),
        (["--log-level", "INFO", "--log-format", "json", "agent"], "agent"),
        (["--log-level=DEBUG", "journal", "tail"], "journal"),
        (["--version"], None),
        ([], None),
        (["-h"], None),
    ],
)
def test_the_command_is_found_past_global_options(argv: list[str], command: str | None) -> None:
    assert cli.command_of(argv) == command


def test_only_the_commands_component_is_registered() -> None:
    assert cli.components_for("agent") == ["agent.cli"]
    assert top_level_commands(cli.build_parser("status")) == {
        "agent",
        "journal",
        "status",
        "doctor",
    }
    # --help, a typo or a command missing from COMPONENTS: everything, so argparse lists all
    assert cli.components_for("agnet") == [module for module, _ in cli.COMPONENTS]
    assert cli.components_for(None) == [module for module, _ in cli.COMPONENTS]


def test_help_still_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for _, commands in cli.COMPONENTS:
        for command in commands:
            assert command in out


def test_bench_start_reports_the_agent_beside_its_libraries(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert cli.main(["bench", "start", "--runs", "1", "--json", "--workdir", str(tmp_path)]) == 0
    out = json.loads(capsys.readouterr().out)
    for side in (out["agent"], out["baseline_libraries_only"]):
        assert 0 < side["ready_s_median"] < 30
        assert 5 < side["peak_rss_mb_median"] < 1000
    assert out["ratio_ready"] == round(
        out["agent"]["ready_s_median"] / out["baseline_libraries_only"]["ready_s_median"], 2
    )
    assert set(out["agent_targets_met"]) == set(out["agent_targets"])
