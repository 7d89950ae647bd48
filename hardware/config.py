"""Validate the `[[scanners]]` array of agent.toml into `ScannerConfig`s.

Every error names the exact key at fault (`scanners[1].layout: ...`) because the person reading
it is a technician editing a TOML file on a store box, not a developer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from hardware.framing import FRAMINGS, FramingMode, FramingSpec
from hardware.keymaps import LAYOUTS
from hardware.wedge import WedgeConfig
from protocol.runtime.config import suggest

__all__ = ["ScannerConfig", "ScannerConfigError", "load_scanners", "parse_scanners"]

ScannerType = Literal["evdev", "serial"]
TERMINATORS = {"enter": "\n", "tab": "\t"}
BAUDRATES = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600)
_COMMON_KEYS = {"name", "type", "path", "rcn_region"}
_EVDEV_KEYS = _COMMON_KEYS | {
    "vendor", "product", "layout", "terminator", "prefix", "suffix", "inter_key_timeout_ms",
}  # fmt: skip
_SERIAL_KEYS = _COMMON_KEYS | {"baudrate", "framing", "suffix"}


class ScannerConfigError(ValueError):
    """A `[[scanners]]` entry is wrong; the message starts with `scanners[i].key:`."""


@dataclass(frozen=True, slots=True)
class ScannerConfig:
    """One configured scanner; `path` is a stable by-id name, or vendor/product for evdev."""

    name: str
    type: ScannerType
    path: str | None = None
    vendor: int | None = None
    product: int | None = None
    layout: str = "us"
    terminator: str = "enter"
    prefix: str = ""
    suffix: str = ""
    inter_key_timeout_ms: int = 200
    baudrate: int = 9600
    framing: FramingMode = "cr"
    rcn_region: str | None = None

    def wedge_config(self) -> WedgeConfig:
        end = TERMINATORS.get(self.terminator, self.suffix)
        return WedgeConfig(
            layout=self.layout,
            terminator=end,
            prefix=self.prefix,
            inter_key_timeout=self.inter_key_timeout_ms / 1000,
        )

    def framing_spec(self) -> FramingSpec:
        return FramingSpec(mode=self.framing, suffix=self.suffix.encode())

    def describe(self) -> str:
        """How the device is matched, for listings."""
        if self.path:
            return self.path
        return f"{self.vendor or 0:04x}:{self.product or 0:04x}"


def _choice_error(
    where: str, what: str, value: object, choices: Iterable[object]
) -> ScannerConfigError:
    listed = ", ".join(str(c) for c in choices)
    return ScannerConfigError(f"{where}: unknown {what} {value!r}; expected one of: {listed}")


def _hex_id(where: str, value: object) -> int:
    if isinstance(value, bool):
        raise ScannerConfigError(f'{where}: expected a USB id like "05e0" or 0x05e0, got {value!r}')
    if isinstance(value, int):
        number = value
    elif isinstance(value, str):
        try:
            number = int(value.removeprefix("0x"), 16)
        except ValueError:
            raise ScannerConfigError(
                f'{where}: {value!r} is not a hexadecimal USB id like "05e0"'
            ) from None
    else:
        raise ScannerConfigError(f'{where}: expected a USB id like "05e0", got {value!r}')
    if not 0 <= number <= 0xFFFF:
        raise ScannerConfigError(f"{where}: USB id {value!r} out of range 0000-ffff")
    return number


def _str(entry: Mapping[str, Any], where: str, key: str, default: str | None = None) -> str:
    value = entry.get(key, default)
    if not isinstance(value, str):
        raise ScannerConfigError(f"{where}.{key}: expected a string, got {value!r}")
    return value


def _parse_one(index: int, entry: object, seen: set[str]) -> ScannerConfig:
    where = f"scanners[{index}]"
    if not isinstance(entry, Mapping):
        raise ScannerConfigError(f"{where}: expected a table, got {type(entry).__name__}")
    if "name" not in entry:
        raise ScannerConfigError(f"{where}.name: required")
    name = _str(entry, where, "name").strip()
    if not name:
        raise ScannerConfigError(f"{where}.name: must not be empty")
    if name in seen:
        raise ScannerConfigError(f"{where}.name: duplicate scanner name {name!r}")
    if "type" not in entry:
        raise ScannerConfigError(f"{where}.type: required; expected one of: evdev, serial")
    kind = entry["type"]
    if kind not in ("evdev", "serial"):
        raise ScannerConfigError(
            f"{where}.type: unknown type {kind!r}; expected one of: evdev, serial"
        )
    allowed = _EVDEV_KEYS if kind == "evdev" else _SERIAL_KEYS
    for key in entry:
        if key not in allowed:
            other = _SERIAL_KEYS if kind == "evdev" else _EVDEV_KEYS
            if key in other:
                listed = ", ".join(sorted(allowed))
                raise ScannerConfigError(
                    f"{where}.{key}: only valid for the other type, not for type {kind!r}; "
                    f"expected one of: {listed}"
                )
            raise ScannerConfigError(f"{where}.{key}: unknown key{suggest(key, allowed)}")
    fields: dict[str, Any] = {"name": name, "type": kind}
    if "path" in entry:
        path = _str(entry, where, "path")
        if not Path(path).is_absolute():
            raise ScannerConfigError(f"{where}.path: must be an absolute path, got {path!r}")
        fields["path"] = path
    if "rcn_region" in entry:
        region = _str(entry, where, "rcn_region").lower()
        from biip.rcn import RcnRegion  # noqa: PLC0415 - biip (16 MB) only with scanners

        regions = sorted(r.value for r in RcnRegion)
        if region not in regions:
            raise _choice_error(f"{where}.rcn_region", "region", region, regions)
        fields["rcn_region"] = region
    if "prefix" in entry:
        fields["prefix"] = _str(entry, where, "prefix")
    if "suffix" in entry:
        fields["suffix"] = _str(entry, where, "suffix")
    if kind == "evdev":
        _parse_evdev(entry, where, fields)
    else:
        _parse_serial(entry, where, fields)
    return ScannerConfig(**fields)


def _parse_evdev(entry: Mapping[str, Any], where: str, fields: dict[str, Any]) -> None:
    has_ids = "vendor" in entry or "product" in entry
    if "path" in fields and has_ids:
        raise ScannerConfigError(f"{where}.path: give either path or vendor/product, not both")
    if not has_ids and "path" not in fields:
        raise ScannerConfigError(
            f"{where}.path: required (a /dev/input/by-id path) unless vendor and product are set"
        )
    if has_ids:
        for key in ("vendor", "product"):
            if key not in entry:
                raise ScannerConfigError(f"{where}.{key}: required together with the other USB id")
            fields[key] = _hex_id(f"{where}.{key}", entry[key])
    if "layout" in entry:
        layout = entry["layout"]
        if layout not in LAYOUTS:
            known = ", ".join(sorted(LAYOUTS))
            raise ScannerConfigError(
                f"{where}.layout: unknown layout {layout!r}; expected one of: {known}"
            )
        fields["layout"] = layout
    terminator = _str(entry, where, "terminator", "enter")
    choices = [*TERMINATORS, "suffix"]
    if terminator not in choices:
        raise _choice_error(f"{where}.terminator", "terminator", terminator, choices)
    fields["terminator"] = terminator
    if terminator == "suffix" and not fields.get("suffix"):
        raise ScannerConfigError(
            f'{where}.suffix: required and non-empty when terminator = "suffix"'
        )
    if "inter_key_timeout_ms" in entry:
        timeout = entry["inter_key_timeout_ms"]
        if isinstance(timeout, bool) or not isinstance(timeout, int) or not 1 <= timeout <= 10_000:
            raise ScannerConfigError(
                f"{where}.inter_key_timeout_ms: expected an integer 1-10000, got {timeout!r}"
            )
        fields["inter_key_timeout_ms"] = timeout


def _parse_serial(entry: Mapping[str, Any], where: str, fields: dict[str, Any]) -> None:
    if "path" not in fields:
        raise ScannerConfigError(f"{where}.path: required (a /dev/serial/by-id path)")
    if "baudrate" in entry:
        baud = entry["baudrate"]
        if isinstance(baud, bool) or baud not in BAUDRATES:
            raise _choice_error(f"{where}.baudrate", "baudrate", baud, BAUDRATES)
        fields["baudrate"] = baud
    framing = _str(entry, where, "framing", "cr")
    if framing not in FRAMINGS:
        raise _choice_error(f"{where}.framing", "framing", framing, FRAMINGS)
    fields["framing"] = framing
    if framing == "suffix" and not fields.get("suffix"):
        raise ScannerConfigError(f'{where}.suffix: required and non-empty when framing = "suffix"')


def parse_scanners(raw: list[dict[str, Any]]) -> list[ScannerConfig]:
    """Validate the parsed `[[scanners]]` array; raise `ScannerConfigError` naming the first
    fault of every entry at fault (one line each)."""
    if not isinstance(raw, list):
        raise ScannerConfigError(f"scanners: expected an array of tables, got {type(raw).__name__}")
    seen: set[str] = set()
    out: list[ScannerConfig] = []
    faults: list[str] = []
    for index, entry in enumerate(raw):
        try:
            config = _parse_one(index, entry, seen)
        except ScannerConfigError as exc:
            faults.append(str(exc))
            continue
        seen.add(config.name)
        out.append(config)
    if faults:
        raise ScannerConfigError("\n".join(faults))
    return out


def load_scanners(path: Path) -> list[ScannerConfig] | None:
    """Read `[[scanners]]` from a TOML file; None when the file does not exist."""
    import tomllib  # noqa: PLC0415 - only the CLI reads files

    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        return None
    except tomllib.TOMLDecodeError as exc:
        raise ScannerConfigError(f"{path}: not valid TOML: {exc}") from exc
    return parse_scanners(data.get("scanners", []))
