"""Typed readers for TOML configuration tables, shared by agent and head office.

Each reader names the exact key at fault (`broker.port: must be an integer 1..65535, got 'x'`)
so a technician can fix a config file from the error alone. Pure: callers load the TOML.
"""

from __future__ import annotations

import builtins
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from protocol.errors import ConfigError


class Table:
    """One TOML table being read; remembers which keys were used to refuse unknown ones."""

    def __init__(self, data: Mapping[str, Any], path: builtins.str = "") -> None:
        if not isinstance(data, Mapping):
            raise ConfigError(f"{path or 'config'}: must be a table")
        self.data = data
        self.path = path
        self.used: set[str] = set()

    def _name(self, key: builtins.str) -> builtins.str:
        return f"{self.path}.{key}" if self.path else key

    def _get(self, key: builtins.str, default: Any) -> Any:
        self.used.add(key)
        if key not in self.data:
            if default is ...:
                raise ConfigError(f"{self._name(key)}: required key is missing")
            return default
        return self.data[key]

    def str(self, key: builtins.str, default: Any = ...) -> Any:
        v = self._get(key, default)
        if v is not default and not isinstance(v, str):
            raise ConfigError(f"{self._name(key)}: must be a string, got {v!r}")
        return v

    def int(self, key: builtins.str, default: Any = ..., lo: int = 0, hi: int = 1 << 62) -> Any:
        v = self._get(key, default)
        if v is default:
            return v
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise ConfigError(f"{self._name(key)}: must be an integer {lo}..{hi}, got {v!r}")
        return v

    def num(self, key: builtins.str, default: Any = ..., lo: float = 0.0, hi: float = 1e9) -> Any:
        """A duration or ratio (seconds may be fractional; money never comes through here)."""
        v = self._get(key, default)
        if v is default:
            return v
        if isinstance(v, bool) or not isinstance(v, int | float) or not lo <= v <= hi:
            raise ConfigError(f"{self._name(key)}: must be a number {lo:g}..{hi:g}, got {v!r}")
        return float(v)

    def bool(self, key: builtins.str, default: Any = ...) -> Any:
        v = self._get(key, default)
        if v is not default and not isinstance(v, bool):
            raise ConfigError(f"{self._name(key)}: must be true or false, got {v!r}")
        return v

    def table(self, key: builtins.str) -> Table:
        v = self._get(key, {})
        return Table(v, self._name(key))

    def array(self, key: builtins.str) -> list[Any]:
        v = self._get(key, [])
        if not isinstance(v, list):
            raise ConfigError(f"{self._name(key)}: must be an array")
        return v

    def done(self) -> None:
        """Refuse keys nobody asked for: a typo must not be silently ignored."""
        extra = sorted(set(self.data) - self.used)
        if extra:
            raise ConfigError(f"{self._name(extra[0])}: unknown key")


T = TypeVar("T")


def load_toml(path: str | Path, parse: Callable[[dict[str, Any]], T], example: str) -> T:
    """Read a TOML file and hand it to `parse`; every error names the file, then the key.

    The one piece of file reading here: agent, head office and the extract share it.
    """
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such file (see systemd/{example})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    try:
        return parse(data)
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from None
