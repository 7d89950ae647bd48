"""`lanesync scanners` and `lanesync scanners watch`, called through register()."""

from __future__ import annotations

import argparse
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from hardware import cli
from hardware.config import parse_scanners


def build() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lanesync")
    sub = parser.add_subparsers(dest="command", required=True)
    cli.register(sub)
    return parser


def run(argv: list[str]) -> int:
    args = build().parse_args(argv)
    return int(args.handler(args))


@pytest.fixture
def pty_port(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    master, slave = os.openpty()
    link = tmp_path / "usb-Test_Scanner-if00"
    link.symlink_to(os.ttyname(slave))
    os.close(slave)
    yield master, link
    os.close(master)


def write_config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(body)
    return path


def test_options_before_and_after_watch() -> None:
    args = build().parse_args(["scanners", "--json", "--config", "/a.toml", "watch"])
    assert (args.json, args.config, args.handler) == (True, Path("/a.toml"), cli.cmd_watch)
    args = build().parse_args(["scanners", "watch", "--config", "/b.toml", "--count", "2"])
    assert (args.json, args.config, args.count) == (False, Path("/b.toml"), 2)
    args = build().parse_args(["scanners"])
    assert (args.config, args.handler) == (cli.DEFAULT_CONFIG, cli.cmd_list)


def test_collect_rows_configured_missing_and_unconfigured(
    tmp_path: Path, pty_port: tuple[int, Path]
) -> None:
    _, link = pty_port
    configs = parse_scanners(
        [
            {"name": "dock", "type": "serial", "path": str(link)},
            {"name": "gone", "type": "serial", "path": str(tmp_path / "nope")},
            {"name": "wedge", "type": "evdev", "vendor": "05e0", "product": "1200"},
        ]
    )
    rows = cli.collect_rows(
        configs, input_by_id=tmp_path / "none", input_dir=tmp_path / "none", serial_by_id=tmp_path
    )
    by_name = {r["name"]: r for r in rows}
    assert by_name["dock"]["state"] == "ready"
    assert by_name["gone"]["state"] == "missing"
    assert by_name["wedge"]["state"] == "missing"
    assert len(rows) == 3  # the pty link is claimed by "dock", not listed again

    unconfigured = cli.collect_rows([], serial_by_id=tmp_path, input_by_id=tmp_path / "none")
    assert [r["path"] for r in unconfigured if r["type"] == "serial"] == [str(link)]
    assert unconfigured[-1]["state"].startswith("not configured")


def test_list_json_and_bad_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "absent.toml"
    assert run(["scanners", "--config", str(missing), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["config"] == str(missing)
    assert isinstance(out["scanners"], list)

    bad = write_config(
        tmp_path, '[[scanners]]\nname = "x"\ntype = "evdev"\npath = "/p"\nlayout = "xx"\n'
    )
    assert run(["scanners", "--config", str(bad)]) == 2
    assert "scanners[0].layout: unknown layout 'xx'" in capsys.readouterr().err
    assert run(["scanners", "watch", "--config", str(missing)]) == 2
    assert "no [[scanners]] configured" in capsys.readouterr().err


def test_list_table_for_people(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], pty_port: tuple[int, Path]
) -> None:
    _, link = pty_port
    cfg = write_config(tmp_path, f'[[scanners]]\nname = "dock"\ntype = "serial"\npath = "{link}"\n')
    assert run(["scanners", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "dock" in out
    assert "ready" in out


def test_watch_prints_scans(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], pty_port: tuple[int, Path]
) -> None:
    master, link = pty_port
    cfg = write_config(tmp_path, f'[[scanners]]\nname = "dock"\ntype = "serial"\npath = "{link}"\n')
    stop = threading.Event()

    def scanner() -> None:  # keeps scanning until watch has read enough, like a person would
        while not stop.wait(0.1):
            os.write(master, b"00340123450000000017\r4006381333932\r")

    thread = threading.Thread(target=scanner)
    thread.start()
    try:
        assert run(["scanners", "watch", "--config", str(cfg), "--json", "--count", "2"]) == 0
    finally:
        stop.set()
        thread.join()
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    scans = [line for line in lines if line["event"] == "scan"]
    assert scans[0]["kind"] == "sscc"
    assert scans[0]["is_sscc"] is True
    assert scans[1]["kind"] == "invalid"
    assert "Invalid GTIN check digit" in scans[1]["error"]
    assert any(line["event"] == "device" and line["state"] == "connected" for line in lines)
