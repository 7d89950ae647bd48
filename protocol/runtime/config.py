"""Reading TOML configuration files, one mechanism for agent, head office and the extract.

A technician fixes a config file from the error alone, so:
- every fault in a file is reported at once, not the first only: a typed reader that refuses a
  value records the fault and carries on with the default (`Problems`), and a check that
  raises ConfigError stops only its own part of the file (`Table.guard`);
- each fault names the file, the key (`replication.backoff_max_s`) and what is wrong; a key
  nobody asked for is refused with the nearest key the parser did ask for ("did you mean");
- every error says which file was read and why: `--config`, `LANESYNC_CONFIG`, or the default
  path (`resolve`), as the pg tools say which service file or PGSERVICE they used.

The keys a parser asks for are recorded per table (`Problems.schema`): the example configs are
checked against that schema, so a key the code accepts cannot go undocumented.
"""

from __future__ import annotations

import builtins
import os
import re
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from protocol.errors import ConfigError, ProtocolError

ENV = "LANESYNC_CONFIG"
# Where the package installs the documented examples (packaging/debian/rules: conffiles).
EXAMPLES_DIR = "/etc/lanesync"
DOCS = "/usr/share/doc/lanesync/README.md"


class DefaultConfig(str):
    """A command's built-in `--config` default: LANESYNC_CONFIG, when set, replaces it.

    argparse hands a string default through unchanged, so a CLI that declares its default as
    `DefaultConfig("/etc/lanesync/agent.toml")` needs no other change: `load` tells it from a
    path given on the command line, which always wins."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class ConfigSource:
    """The file a config was read from and how it was chosen."""

    path: Path
    how: str  # "from --config", "from LANESYNC_CONFIG" or "default"
    default: str  # the built-in default path, named in every error
    # The file's TOML as read: a reload compares it key by key with the new one.
    data: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def note(self) -> str:
        if self.how == "default":
            return f"(config {self.path}: the default; set {ENV} or --config to read another)"
        return f"(config {self.path} {self.how}; the default is {self.default})"


def resolve(path: str | Path | ConfigSource, default: str) -> ConfigSource:
    """Which file to read: an explicit path, else $LANESYNC_CONFIG, else the default."""
    if isinstance(path, ConfigSource):
        return path
    if isinstance(path, DefaultConfig):
        env = os.environ.get(ENV, "")
        if env:
            return ConfigSource(Path(env), f"from {ENV}", default)
        return ConfigSource(Path(path), "default", default)
    return ConfigSource(Path(path), "from --config", default)


class ConfigErrors(ConfigError):
    """Every fault found in one configuration; `problems` holds one line per fault."""

    def __init__(self, problems: list[builtins.str], note: builtins.str = "") -> None:
        self.problems = list(problems)
        self.note = note
        lines = [*self.problems, note] if note else self.problems
        super().__init__("\n".join(lines))


class Refused(ConfigError):
    """A fault already recorded that leaves its part of the file unreadable (a required key
    missing): `Table.guard` stops that part without recording it twice."""


def suggest(key: builtins.str, known: Iterable[builtins.str]) -> builtins.str:
    """The "did you mean 'x'?" for the known key nearest a mistyped one, or ""."""
    import difflib  # noqa: PLC0415 - only for a mistyped key (a lane's start does not need it)

    close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


_INDEX = re.compile(r"\[\d+\]")


class Problems:
    """The faults of one file, in the order found, and the keys its parser asked for."""

    def __init__(self) -> None:
        self.items: list[str] = []
        # table path (array indexes as "[]") -> keys the parser asked for there
        self.schema: dict[str, set[str]] = {}
        # full key names refused with a message of their own (a key that moved elsewhere):
        # not reported again as unknown
        self.refused: set[str] = set()

    def add(self, message: str) -> None:
        for line in message.splitlines() or [message]:
            if line not in self.items:
                self.items.append(line)


T = TypeVar("T")


class Table:
    """One TOML table being read; remembers which keys were asked for to refuse unknown ones.

    A refused value is recorded in `problems` (shared by every table of one file) and the
    reader returns the default, so the rest of the file is still checked; a required key that
    is missing raises `Refused` after recording it."""

    def __init__(
        self, data: Any, path: builtins.str = "", problems: Problems | None = None
    ) -> None:
        self.problems = problems if problems is not None else Problems()
        if not isinstance(data, Mapping):
            self.problems.add(f"{path or 'config'}: must be a table")
            data = {}
        self.data: Mapping[str, Any] = data
        self.path = path
        self.used: set[str] = set()
        self._asked = self.problems.schema.setdefault(_INDEX.sub("[]", path), set())

    def _name(self, key: builtins.str) -> builtins.str:
        return f"{self.path}.{key}" if self.path else key

    def problem(self, key: builtins.str | None, message: builtins.str) -> None:
        """Record a fault of `key` (None: of this table) found by a check of the caller's."""
        where = (self.path or "config") if key is None else self._name(key)
        self.problems.add(f"{where}: {message}")

    def _get(self, key: builtins.str, default: Any) -> Any:
        self.used.add(key)
        self._asked.add(key)
        if key not in self.data:
            if default is ...:
                self.problem(key, "required key is missing")
                raise Refused(f"{self._name(key)}: required key is missing")
            return default
        return self.data[key]

    def _bad(self, key: builtins.str, message: builtins.str, default: Any) -> Any:
        self.problem(key, message)
        if default is ...:
            raise Refused(f"{self._name(key)}: {message}")
        return default

    def str(self, key: builtins.str, default: Any = ...) -> Any:
        v = self._get(key, default)
        if v is not default and not isinstance(v, str):
            return self._bad(key, f"must be a string, got {v!r}", default)
        return v

    def int(self, key: builtins.str, default: Any = ..., lo: int = 0, hi: int = 1 << 62) -> Any:
        v = self._get(key, default)
        if v is default:
            return v
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            return self._bad(key, f"must be an integer {lo}..{hi}, got {v!r}", default)
        return v

    def num(self, key: builtins.str, default: Any = ..., lo: float = 0.0, hi: float = 1e9) -> Any:
        """A duration or ratio (seconds may be fractional; money never comes through here)."""
        v = self._get(key, default)
        if v is default:
            return v
        if isinstance(v, bool) or not isinstance(v, int | float) or not lo <= v <= hi:
            return self._bad(key, f"must be a number {lo:g}..{hi:g}, got {v!r}", default)
        return float(v)

    def bool(self, key: builtins.str, default: Any = ...) -> Any:
        v = self._get(key, default)
        if v is not default and not isinstance(v, bool):
            return self._bad(key, f"must be true or false, got {v!r}", default)
        return v

    def choice(self, key: builtins.str, default: Any, choices: tuple[builtins.str, ...]) -> Any:
        """A string that must be one of `choices`."""
        v = self.str(key, default)
        if v is not default and v not in choices:
            return self._bad(key, f"must be one of {', '.join(choices)}, got {v!r}", default)
        return v

    def table(self, key: builtins.str) -> Table:
        v = self._get(key, {})
        return Table(v, self._name(key), self.problems)

    def array(self, key: builtins.str) -> list[Any]:
        v = self._get(key, [])
        if not isinstance(v, list):
            return list(self._bad(key, "must be an array", []))
        return v

    def item(self, key: builtins.str, index: builtins.int, value: Any) -> Table:
        """Entry `index` of the array of tables `key` (`extract.tax[0]`)."""
        return Table(value, f"{self._name(key)}[{index}]", self.problems)

    def done(self) -> None:
        """Refuse keys nobody asked for: a typo must not be silently ignored."""
        for key in sorted(set(self.data) - self.used):
            if self._name(key) in self.problems.refused:
                continue
            self.problem(key, f"unknown key{suggest(key, self.used)}")

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Run a part of the parse; a ConfigError there is recorded and only that part stops."""
        try:
            yield
        except Refused:
            pass
        except (ConfigError, ProtocolError) as exc:
            self.problems.add(str(exc))

    def guarded(self, read: Callable[[], T], fallback: T) -> T:
        """`read()`, or `fallback` when it raised a ConfigError (recorded)."""
        try:
            return read()
        except Refused:
            return fallback
        except (ConfigError, ProtocolError) as exc:
            self.problems.add(str(exc))
            return fallback

    def finish(self) -> None:
        """Raise every fault recorded so far as one ConfigErrors."""
        if self.problems.items:
            raise ConfigErrors(self.problems.items)


def parse_all(data: Any, build: Callable[[Table], T]) -> T:
    """`build(root)` over the whole file, then every fault it recorded raised at once."""
    root = Table(data)
    try:
        result = build(root)
    except Refused:
        result = None
    except (ConfigError, ProtocolError) as exc:
        root.problems.add(str(exc))
        result = None
    root.finish()
    assert result is not None  # no fault recorded: build returned
    return result


def accepted_keys(read: Callable[[Table], Any], data: Any) -> dict[str, set[str]]:
    """The keys `read` (a parser's pass over the root table) asks for, per table path
    ("" the top level, "extract.tax[]" an array of tables): the parser's own schema."""
    root = Table(data)
    with root.guard():
        read(root)
    return {path: set(keys) for path, keys in root.problems.schema.items()}


def read_toml(source: ConfigSource, example: str) -> ConfigSource:
    """`source` with the file's TOML; an error names the file, why it was read and the
    installed example."""
    p = source.path
    try:
        return replace(source, data=tomllib.loads(p.read_text(encoding="utf-8")))
    except FileNotFoundError:
        problem = f"{p}: no such file (see {EXAMPLES_DIR}/{example} and {DOCS})"
    except (OSError, UnicodeDecodeError) as exc:
        problem = f"{p}: cannot read: {exc}"
    except tomllib.TOMLDecodeError as exc:
        problem = f"{p}: not valid TOML: {exc}"
    raise ConfigErrors([problem], source.note())


def load_toml(
    path: str | Path | ConfigSource,
    parse: Callable[[dict[str, Any]], T],
    example: str,
    default: str = "",
) -> tuple[T, ConfigSource]:
    """Read a TOML file and hand it to `parse`; every fault is reported, each line naming the
    file, then the key, and the last line saying which file was read and why."""
    source = resolve(path, default or f"{EXAMPLES_DIR}/{example.replace('.example', '')}")
    source = read_toml(source, example)
    try:
        return parse(dict(source.data)), source
    except ConfigErrors as exc:
        raise ConfigErrors([f"{source.path}: {p}" for p in exc.problems], source.note()) from None
    except ConfigError as exc:
        raise ConfigErrors([f"{source.path}: {exc}"], source.note()) from None


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def parse_log_level(root: Table) -> str | None:
    """`[log] level`: the daemon's log level, applied at start and again on every reload
    (SIGHUP); unset, the command line's --log-level stays."""
    t = root.table("log")
    level = t.str("level", None)
    t.done()
    if level is not None and level.upper() not in LOG_LEVELS:
        t.problem("level", f"must be one of {', '.join(LOG_LEVELS)}, got {level!r}")
        return None
    return None if level is None else level.upper()
