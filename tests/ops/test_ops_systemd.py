"""The systemd units, sysusers and tmpfiles snippets (item 4)."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from agent import config as agent_config
from agent import opsconfig
from headoffice import config as ho_config
from headoffice import opsconfig as ho_opsconfig

SYSTEMD = Path(__file__).resolve().parents[2] / "systemd"
UNITS = [
    "lanesync-agent.service",
    "lanesync-headoffice.service",
    "lanesync-headoffice-worker@.service",
]


def _unit(name: str) -> dict[str, list[str]]:
    """Key -> every value it has in [Service] (systemd keys repeat)."""
    out: dict[str, list[str]] = {}
    section = ""
    for raw in (SYSTEMD / name).read_text().splitlines():
        line = raw.strip()
        if line.startswith("["):
            section = line
        elif line and not line.startswith("#") and section == "[Service]":
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


@pytest.mark.parametrize("name", UNITS)
def test_units_are_notify_with_watchdog_restart_and_hardening(name: str) -> None:
    s = _unit(name)
    assert s["Type"] == ["notify"]
    assert int(s["WatchdogSec"][0]) > 0
    assert s["Restart"] == ["always"]
    assert s["NoNewPrivileges"] == ["yes"]
    assert s["ProtectSystem"] == ["strict"]
    assert s["StateDirectory"] == ["lanesync"]
    assert s["User"] == ["lanesync"]
    assert s["DevicePolicy"] == ["closed"]
    assert "--log-format json" in s["ExecStart"][0]


def test_agent_reaches_only_input_and_serial_devices() -> None:
    s = _unit("lanesync-agent.service")
    allowed = {v.split()[0] for v in s["DeviceAllow"]}
    assert allowed == {"char-input", "char-ttyS", "char-ttyUSB", "char-ttyACM"}
    assert s["SupplementaryGroups"] == ["input dialout"]
    assert "PrivateDevices" not in s  # it would hide the scanners
    assert "DeviceAllow" not in _unit("lanesync-headoffice.service")


def test_worker_template_runs_worker_i_of_the_shared_config() -> None:
    s = _unit("lanesync-headoffice-worker@.service")
    assert s["ExecStart"][0].endswith("--config /etc/lanesync/headoffice.toml --worker %i")
    rest = {k: v for k, v in s.items() if k != "ExecStart"}
    single = _unit("lanesync-headoffice.service")
    assert rest == {k: v for k, v in single.items() if k != "ExecStart"}  # same hardening


def test_sysusers_and_tmpfiles() -> None:
    sysusers = (SYSTEMD / "lanesync.sysusers.conf").read_text().splitlines()
    entries = [ln.split() for ln in sysusers if ln.strip() and not ln.startswith("#")]
    assert entries[0][:2] == ["u", "lanesync"]
    assert ["m", "lanesync", "input"] in entries
    assert ["m", "lanesync", "dialout"] in entries
    tmpfiles = (SYSTEMD / "lanesync.tmpfiles.conf").read_text()
    assert "/var/lib/lanesync" in tmpfiles


@pytest.mark.parametrize("name", UNITS)
def test_systemd_analyze_verify(name: str, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian package `systemd`)")
    # verify checks that ExecStart's binary exists: point it at this checkout's console script.
    lanesync = Path(sys.executable).with_name("lanesync")
    unit = tmp_path / name
    unit.write_text((SYSTEMD / name).read_text().replace("/usr/bin/lanesync", str(lanesync)))
    res = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    problems = [ln for ln in (res.stderr + res.stdout).splitlines() if name in ln]
    assert res.returncode == 0, res.stderr + res.stdout
    assert not problems, res.stderr + res.stdout


def test_configparser_reads_the_units() -> None:
    for name in UNITS:
        cp = configparser.ConfigParser(strict=False, interpolation=None)
        cp.read_string((SYSTEMD / name).read_text())
        assert cp["Install"]["WantedBy"] == "multi-user.target"


def test_example_configs_document_every_ops_key() -> None:
    agent = tomllib.loads((SYSTEMD / "agent.example.toml").read_text())
    assert set(agent["retention"]) == set(opsconfig.RetentionConfig.__dataclass_fields__)
    assert set(agent["metrics"]) == set(opsconfig.MetricsConfig.__dataclass_fields__)
    assert set(agent["export"]) == set(opsconfig.ExportConfig.__dataclass_fields__)
    assert agent_config.load(SYSTEMD / "agent.example.toml").ops == opsconfig.OpsConfig()
    ho = tomllib.loads((SYSTEMD / "headoffice.example.toml").read_text())
    assert set(ho["status_page"]) == set(ho_opsconfig.StatusPageConfig.__dataclass_fields__)
    assert set(ho["metrics"]) == set(ho_opsconfig.HoMetricsConfig.__dataclass_fields__)
    assert set(ho["import"]) == {"key_dir"}
    assert ho_config.load(SYSTEMD / "headoffice.example.toml").ops == ho_opsconfig.HoOpsConfig()
