"""`[[scanners]]` validation: good configs parse, every fault names its key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hardware.config import ScannerConfigError, load_scanners, parse_scanners


def test_good_config() -> None:
    configs = parse_scanners(
        [
            {"name": "lane", "type": "evdev", "path": "/dev/input/by-id/usb-X-event-kbd",
             "layout": "de", "terminator": "tab", "prefix": "$", "inter_key_timeout_ms": 50,
             "rcn_region": "DE"},
            {"name": "tower", "type": "evdev", "vendor": "05e0", "product": 0x1200},
            {"name": "dock", "type": "serial", "path": "/dev/serial/by-id/usb-Y-if00",
             "baudrate": 115200, "framing": "suffix", "suffix": "\u0004"},
        ]
    )  # fmt: skip
    lane, tower, dock = configs
    wedge = lane.wedge_config()
    assert (wedge.layout, wedge.terminator, wedge.prefix, wedge.inter_key_timeout) == (
        "de",
        "\t",
        "$",
        0.05,
    )
    assert lane.rcn_region == "de"
    assert (tower.vendor, tower.product, tower.describe()) == (0x05E0, 0x1200, "05e0:1200")
    assert dock.framing_spec().delimiter == b"\x04"


def entry(**kw: Any) -> dict[str, Any]:
    return {"name": "s", "type": "evdev", "path": "/dev/input/by-id/x", **kw}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            [entry(), entry(name="t", layout="xx")],
            "scanners[1].layout: unknown layout 'xx'; expected one of: de, us",
        ),
        ([{"type": "evdev"}], "scanners[0].name: required"),
        ([entry(), entry()], "scanners[1].name: duplicate scanner name 's'"),
        ([entry(type="usb")], "scanners[0].type: unknown type 'usb'"),
        ([entry(baudrate=9600)], "scanners[0].baudrate: only valid for the other type"),
        ([entry(colour="red")], "scanners[0].colour: unknown key"),
        ([entry(terminator="esc")], "scanners[0].terminator: unknown terminator 'esc'"),
        ([entry(terminator="suffix")], "scanners[0].suffix: required"),
        ([entry(inter_key_timeout_ms=0)], "scanners[0].inter_key_timeout_ms: expected an integer"),
        ([entry(inter_key_timeout_ms=True)], "scanners[0].inter_key_timeout_ms"),
        ([entry(path="relative")], "scanners[0].path: must be an absolute path"),
        (
            [entry(vendor="05e0", product="1200")],
            "scanners[0].path: give either path or vendor/product",
        ),
        ([{"name": "s", "type": "evdev", "vendor": "05e0"}], "scanners[0].product: required"),
        (
            [{"name": "s", "type": "evdev", "vendor": "zz", "product": "1"}],
            "scanners[0].vendor: 'zz' is not",
        ),
        (
            [{"name": "s", "type": "evdev", "vendor": 70000, "product": 1}],
            "scanners[0].vendor: USB id",
        ),
        ([{"name": "s", "type": "evdev"}], "scanners[0].path: required"),
        ([entry(rcn_region="xx")], "scanners[0].rcn_region: unknown region 'xx'"),
        ([{"name": "d", "type": "serial"}], "scanners[0].path: required"),
        (
            [{"name": "d", "type": "serial", "path": "/p", "baudrate": 1234}],
            "scanners[0].baudrate: unknown baudrate 1234",
        ),
        (
            [{"name": "d", "type": "serial", "path": "/p", "framing": "etx"}],
            "scanners[0].framing: unknown framing 'etx'",
        ),
        (
            [{"name": "d", "type": "serial", "path": "/p", "framing": "suffix"}],
            "scanners[0].suffix: required",
        ),
        (
            [{"name": "d", "type": "serial", "path": "/p", "layout": "us"}],
            "scanners[0].layout: only valid for the other type",
        ),
        (["nope"], "scanners[0]: expected a table"),
    ],
)
def test_errors_name_the_key(raw: list[Any], message: str) -> None:
    with pytest.raises(ScannerConfigError) as info:
        parse_scanners(raw)
    assert str(info.value).startswith(message)
    assert isinstance(info.value, ValueError)


def test_load_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    assert load_scanners(path) is None
    path.write_text('[[scanners]]\nname = "a"\ntype = "serial"\npath = "/dev/serial/by-id/a"\n')
    (config,) = load_scanners(path) or []
    assert config.name == "a"
    path.write_text("[[scanners]\n")
    with pytest.raises(ScannerConfigError, match="not valid TOML"):
        load_scanners(path)


def test_example_config_is_valid() -> None:
    example = Path(__file__).parents[2] / "systemd" / "scanners.example.toml"
    configs = load_scanners(example)
    assert configs is not None
    assert len(configs) >= 3
