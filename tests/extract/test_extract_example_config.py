"""systemd/extract.example.toml documents every [extract] key and parses as it stands."""

from __future__ import annotations

import re
import tomllib
from decimal import Decimal
from pathlib import Path

from headoffice.extract import config as x_config

EXAMPLE = Path(__file__).resolve().parents[2] / "systemd" / "extract.example.toml"


def test_example_parses_and_shows_the_defaults() -> None:
    cfg = x_config.parse(tomllib.loads(EXAMPLE.read_text(encoding="utf-8")))
    assert cfg == x_config.ExtractConfig()


def test_example_with_its_optional_lines_parses() -> None:
    text = EXAMPLE.read_text(encoding="utf-8").replace("\n#> ", "\n")
    cfg = x_config.parse(tomllib.loads(text))
    assert cfg.return_types == {"DAMAGED": 0, "RETURN": 1}
    assert [b.store for b in cfg.pos_batches] == ["S1"]
    assert [t.rate for t in cfg.tax] == [Decimal("7.25")]


def test_example_names_every_key_the_parser_reads() -> None:
    text = EXAMPLE.read_text(encoding="utf-8").replace("\n#> ", "\n")
    shown = set(re.findall(r"^([a-z_]+) *=", text, flags=re.M))
    shown |= set(re.findall(r"^\[\[?extract\.([a-z_]+)\]", text, flags=re.M))
    source = Path(x_config.__file__).read_text(encoding="utf-8")
    read = set(re.findall(r'\.(?:str|int|num|bool|table|array)\("([a-z_]+)"', source))
    read |= {"exempt_tax_codes"}
    assert read - {"extract", "database"} <= shown
