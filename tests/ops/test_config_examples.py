"""The example configs document every key the code accepts (issue 18.4).

The accepted keys come from each parser itself (protocol.runtime.config.accepted_keys records
every key a parser asks for, per table), never from a list kept by hand here; a key counts as
documented when the example sets it or shows it commented out (`# key = ...`) in its table.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent import config as agent_config
from hardware import config as hw_config
from headoffice import config as ho_config
from headoffice.extract import config as x_config
from protocol.runtime.config import Table, accepted_keys

SYSTEMD = Path(__file__).resolve().parents[2] / "systemd"
_HEADER = re.compile(r"^\[\[?\s*([A-Za-z0-9_.]+)\s*\]\]?")
_KEY = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s*=")


def documented(text: str) -> dict[str, set[str]]:
    """Table path -> keys the example sets or shows commented out, and every table it names."""
    out: dict[str, set[str]] = {"": set()}
    section = ""
    for raw in text.splitlines():
        line = raw.strip().lstrip("#>").strip()  # "#> " marks optional examples
        if m := _HEADER.match(line):
            name = m.group(1)
            section = f"{name}[]" if line.startswith("[[") else name
            out.setdefault(section, set())
            parent, _, last = section.rpartition(".")
            out.setdefault(parent, set()).add(last.removesuffix("[]"))
        elif m := _KEY.match(line):
            out.setdefault(section, set()).add(m.group(1))
    return out


CASES: list[tuple[str, Callable[[Table], Any], Callable[[Path], Any]]] = [
    ("agent.example.toml", agent_config.read, agent_config.load),
    ("headoffice.example.toml", ho_config.read, ho_config.load),
    ("extract.example.toml", x_config.read, x_config.load),
]


@pytest.mark.parametrize(("example", "read", "load"), CASES)
def test_each_example_parses_and_documents_every_accepted_key(
    example: str, read: Callable[[Table], Any], load: Callable[[Path], Any]
) -> None:
    path = SYSTEMD / example
    load(path)  # parses without a single fault
    schema = accepted_keys(read, tomllib.loads(path.read_text()))
    shown = documented(path.read_text())
    missing = sorted(
        f"{table}.{key}" if table else key
        for table, keys in schema.items()
        for key in keys
        if key not in shown.get(table, set())
    )
    assert missing == [], f"{example} does not document: {missing}"
    assert sum(len(keys) for keys in schema.values()) > 20  # the schema was really read


def test_the_scanner_example_documents_every_scanner_key() -> None:
    text = (SYSTEMD / "scanners.example.toml").read_text()
    accepted = hw_config._EVDEV_KEYS | hw_config._SERIAL_KEYS  # the parser's own key sets
    # documented in its key table ("#   vendor, product   USB ids ...") or set in an entry
    table = re.compile(r"^#\s+((?:[a-z_]+, )*[a-z_]+)\s{2,}", re.M)
    listed = {k for m in table.finditer(text) for k in m.group(1).split(", ")}
    assert sorted(accepted - listed) == []
    raw = tomllib.loads((SYSTEMD / "scanners.example.toml").read_text())
    assert hw_config.parse_scanners(raw["scanners"])


def test_the_agent_example_names_each_moved_key_and_where_it_went() -> None:
    text = (SYSTEMD / "agent.example.toml").read_text()
    shown = documented(text)
    for name in agent_config.MOVED:
        table, _, key = name.partition(".")
        # shown as its table and key, commented out, with where the value lives now
        assert table in shown[""], name
        if key:
            assert key in shown[table], name
    assert "head office" in text


def test_documented_reads_commented_keys_and_arrays() -> None:
    shown = documented("[a]\nx = 1\n# y = 2\n# [[a.b]]\n# z = 3\n")
    assert shown["a"] == {"x", "y", "b"}
    assert shown["a.b[]"] == {"z"}
    assert "a" in shown[""]
