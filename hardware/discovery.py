"""Find scanners on this box: by stable /dev/*/by-id names, or by USB vendor:product.

Stable names survive replugs and port changes, which is why configs use them; vendor:product
matching covers scanners whose by-id name carries a serial number that differs per unit.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import evdev
from evdev import ecodes

from hardware.config import ScannerConfig

__all__ = ["PresentDevice", "list_evdev", "list_serial", "resolve_evdev"]

INPUT_BY_ID = Path("/dev/input/by-id")
INPUT_DIR = Path("/dev/input")
SERIAL_BY_ID = Path("/dev/serial/by-id")


@dataclass(frozen=True, slots=True)
class PresentDevice:
    """A device node present now; `state` says whether we could inspect it."""

    kind: str
    path: str
    node: str
    name: str
    vendor: int | None = None
    product: int | None = None
    state: str = "present"

    @property
    def usb_id(self) -> str:
        if self.vendor is None or self.product is None:
            return ""
        return f"{self.vendor:04x}:{self.product:04x}"

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["usb_id"] = self.usb_id
        return out


def _entries(directory: Path, pattern: str) -> list[Path]:
    try:
        return sorted(directory.glob(pattern))
    except OSError:
        return []


def _probe_evdev(path: Path) -> PresentDevice:
    node = os.path.realpath(path)
    try:
        device = evdev.InputDevice(node)
    except OSError as exc:
        state = "no permission" if exc.errno in (errno.EACCES, errno.EPERM) else f"error: {exc}"
        return PresentDevice("evdev", str(path), node, path.name, state=state)
    try:
        return PresentDevice(
            "evdev", str(path), node, device.name, device.info.vendor, device.info.product
        )
    finally:
        device.close()


def _types_keys(path: str) -> bool:
    """Only devices that can type Enter are wedge candidates (not mice or power buttons)."""
    try:
        device = evdev.InputDevice(path)
    except OSError:
        return False
    try:
        keys = device.capabilities().get(ecodes.EV_KEY, [])
        return ecodes.KEY_ENTER in keys
    finally:
        device.close()


def list_evdev(by_id: Path = INPUT_BY_ID, input_dir: Path = INPUT_DIR) -> list[PresentDevice]:
    """Keyboard-like input devices, by their by-id name where udev made one."""
    found: list[PresentDevice] = []
    seen: set[str] = set()
    candidates: Iterable[Path] = [
        *_entries(by_id, "*-event-kbd"),
        *_entries(by_id, "*-event-if*"),
        *_entries(input_dir, "event*"),
    ]
    for path in candidates:
        node = os.path.realpath(path)
        if node in seen:
            continue
        seen.add(node)
        if path.parent == input_dir and not _types_keys(node):
            continue
        found.append(_probe_evdev(path))
    return found


def list_serial(by_id: Path = SERIAL_BY_ID) -> list[PresentDevice]:
    """Serial ports by their by-id name, with USB ids from sysfs where pyserial finds them."""
    ids: dict[str, tuple[int | None, int | None]] = {}
    try:
        from serial.tools import list_ports  # noqa: PLC0415 - walks sysfs, only when listing

        for port in list_ports.comports():
            ids[os.path.realpath(port.device)] = (port.vid, port.pid)
    except OSError:
        pass
    out = []
    for path in _entries(by_id, "*"):
        node = os.path.realpath(path)
        vendor, product = ids.get(node, (None, None))
        state = "present" if os.access(node, os.R_OK | os.W_OK) else "no permission"
        if not os.path.exists(node):
            state = "dangling link"
        out.append(PresentDevice("serial", str(path), node, path.name, vendor, product, state))
    return out


def resolve_evdev(
    config: ScannerConfig, by_id: Path = INPUT_BY_ID, input_dir: Path = INPUT_DIR
) -> str | None:
    """The path to open for an evdev scanner now, or None if it is not plugged in."""
    if config.path is not None:
        return config.path if os.path.exists(config.path) else None
    for device in list_evdev(by_id, input_dir):
        if (device.vendor, device.product) == (config.vendor, config.product):
            return device.path
    return None
