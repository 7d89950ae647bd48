"""Config errors (issue 18.4): LANESYNC_CONFIG selects the file, every fault of a file at once,
"did you mean", the file and how it was chosen in every error; a missing journal directory is
created or refused, and doctor says what the agent will do."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent import config as agent_config
from agent import doctor, journaldir
from headoffice import config as ho_config
from protocol.runtime.config import ConfigErrors
from tests.ops.agent_proc import LANESYNC, READY_LINE, agent, write_config
from tests.ops.ops_helpers import lane_config


def _lanesync(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k != "LANESYNC_CONFIG"} | (env or {})
    return subprocess.run(
        [sys.executable, LANESYNC, *args],
        capture_output=True,
        text=True,
        env=full,
        timeout=60,
        check=False,
    )


def test_lanesync_config_selects_the_file_and_an_explicit_config_wins(tmp_path: Path) -> None:
    bad = tmp_path / "from-env.toml"
    bad.write_text('store = "S1"\nlane = "L1"\n[replication]\nwindw = 4\n')
    res = _lanesync("journal", "verify", env={"LANESYNC_CONFIG": str(bad)})
    assert res.returncode == 2
    assert f"{bad}: replication.windw: unknown key; did you mean 'window'?" in res.stderr
    assert f"(config {bad} from LANESYNC_CONFIG; the default is /etc/lanesync/agent.toml)" in (
        res.stderr
    )
    other = tmp_path / "given.toml"
    res = _lanesync("journal", "verify", "--config", str(other), env={"LANESYNC_CONFIG": str(bad)})
    assert f"{other}: no such file (see /etc/lanesync/agent.example.toml" in res.stderr
    assert "from --config; the default is /etc/lanesync/agent.toml" in res.stderr
    assert str(bad) not in res.stderr


def test_without_either_the_default_is_read_and_said() -> None:
    if Path("/etc/lanesync/agent.toml").exists():
        pytest.skip("this machine has an /etc/lanesync/agent.toml")
    res = _lanesync("journal", "verify")
    assert res.returncode == 2
    assert "/etc/lanesync/agent.toml: no such file (see /etc/lanesync/agent.example.toml" in (
        res.stderr
    )
    assert (
        "(config /etc/lanesync/agent.toml: the default; set LANESYNC_CONFIG or --config to read "
        "another)" in res.stderr
    )


def test_every_fault_of_a_file_is_reported_at_once(tmp_path: Path) -> None:
    p = tmp_path / "agent.toml"
    p.write_text(
        'store = "S1"\nlane = "L1"\n'
        "[broker]\nport = 70000\nhots = 'x'\n"
        "[replication]\nbackoff_maxs = 3\nlinger_ms = -1\n"
        "[retention]\nlow_watermark_pct = 90\n"
        "[documents]\ncurrency = 'EUR'\n"
        "[replicaton]\n"
    )
    with pytest.raises(ConfigErrors) as info:
        agent_config.load(p)
    lines = str(info.value).splitlines()
    assert lines[:-1] == [
        f"{p}: documents.currency: the store's currency moved to head office: "
        + agent_config.MOVED["documents.currency"].split("head office: ", 1)[1],
        f"{p}: broker.port: must be an integer 1..65535, got 70000",
        f"{p}: broker.hots: unknown key; did you mean 'host'?",
        f"{p}: replication.linger_ms: must be an integer 0..10000, got -1",
        f"{p}: replication.backoff_maxs: unknown key; did you mean 'backoff_max_s'?",
        f"{p}: retention.low_watermark_pct: must be below retention.high_watermark_pct (90 >= 80)",
        f"{p}: replicaton: unknown key; did you mean 'replication'?",
    ]
    assert lines[-1] == f"(config {p} from --config; the default is /etc/lanesync/agent.toml)"


def test_head_office_reports_every_fault_too(tmp_path: Path) -> None:
    p = tmp_path / "headoffice.toml"
    p.write_text("[ingest]\ngroup_max_mesages = 3\n[enrol]\nlogin = 'pin'\n[log]\nlevel = 'loud'\n")
    with pytest.raises(ConfigErrors) as info:
        ho_config.load(p)
    assert info.value.problems == [
        f"{p}: ingest.group_max_mesages: unknown key; did you mean 'group_max_messages'?",
        f"{p}: enrol.login: must be one of cert, password, got 'pin'",
        f"{p}: log.level: must be one of DEBUG, INFO, WARNING, ERROR, got 'loud'",
    ]
    assert "the default is /etc/lanesync/headoffice.toml" in info.value.note


# --- the journal directory ---------------------------------------------------------------


def test_a_missing_journal_directory_is_created_when_its_parent_is_writable(
    tmp_path: Path,
) -> None:
    journal = tmp_path / "state" / "journal.db"
    cfg = lane_config(tmp_path, journal={"path": str(journal)})
    [check] = [c for c in doctor.check_disk(cfg) if c.name == "journal directory"]
    assert check.outcome == "warn"
    assert "the agent creates it (mode 0750)" in check.found
    config = write_config(tmp_path)
    config.write_text(config.read_text().replace(str(tmp_path / "journal.db"), str(journal)))
    with agent(config, log=("--log-level", "INFO")) as lane:
        lane.wait_for(lambda ln: READY_LINE in ln)
    assert journal.exists()
    assert (journal.parent.stat().st_mode & 0o777) == 0o750
    assert journaldir.plan(journal).action == "exists"


def test_a_journal_directory_that_cannot_be_made_is_refused_by_agent_and_doctor(
    tmp_path: Path,
) -> None:
    journal = tmp_path / "no" / "such" / "journal.db"
    cfg = lane_config(tmp_path, journal={"path": str(journal)})
    [check] = [c for c in doctor.check_disk(cfg) if c.name == "journal directory"]
    assert check.outcome == "fail"
    config = write_config(tmp_path)
    config.write_text(config.read_text().replace(str(tmp_path / "journal.db"), str(journal)))
    res = _lanesync("agent", "--config", str(config))
    assert res.returncode == 2
    said = f"journal.path: the directory {journal.parent} does not exist"
    assert said in res.stderr
    assert f"its parent {journal.parent.parent} does not exist either" in res.stderr
    assert f"'d {journal.parent} 0750 lanesync lanesync -'" in res.stderr
    assert "/usr/lib/tmpfiles.d/lanesync.conf" in res.stderr
    assert said in check.fix
    assert check.fix in res.stderr  # doctor says what the agent said
    assert not journal.parent.exists()


def test_lanesync_scanners_reads_lanesync_config_too(tmp_path: Path) -> None:
    chosen = tmp_path / "agent.toml"
    chosen.write_text('[[scanners]]\nname = "hand"\ntype = "evdev"\npath = "/dev/input/by-id/x"\n')
    res = _lanesync("scanners", "--json", env={"LANESYNC_CONFIG": str(chosen)})
    assert res.returncode == 0, res.stderr
    assert f'"config": "{chosen}"' in res.stdout
    assert '"hand"' in res.stdout


def test_doctor_lists_every_fault_of_a_config_file_under_its_check(tmp_path: Path) -> None:
    bad = tmp_path / "agent.toml"
    bad.write_text("[journal]\npath = 5\n[replicaton]\nwindow = 4\n")
    res = _lanesync("doctor", "--config", str(bad))
    assert res.returncode == 1
    lines = res.stdout.splitlines()
    first = next(i for i, ln in enumerate(lines) if ln.startswith("[FAIL] config: "))
    faults = lines[first + 1 : first + 4]
    assert faults[0].startswith(f"       {bad}: ")
    assert all(ln.startswith("       ") for ln in faults)
    text = "\n".join(faults) + lines[first]
    for fault in (
        "store: required key is missing",
        "journal.path: must be a string, got 5",
        "replicaton: unknown key; did you mean 'replication'?",
    ):
        assert fault in text
