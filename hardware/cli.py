"""`lanesync scanners` and `lanesync scanners watch`: what a technician runs at the till.

The listing joins the configured scanners with the devices present now, so a missing, busy or
unconfigured scanner is obvious; `watch` runs the real readers and prints every scan and error.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import os
import sys
from pathlib import Path
from typing import Any

import serial
from rich.console import Console
from rich.table import Table

from hardware.config import ScannerConfig, ScannerConfigError, load_scanners
from hardware.discovery import (
    INPUT_BY_ID,
    INPUT_DIR,
    SERIAL_BY_ID,
    PresentDevice,
    list_evdev,
    list_serial,
    resolve_evdev,
)
from hardware.evdev_reader import open_grabbed
from hardware.events import DeviceEvent, HardwareEvent
from hardware.manager import ScannerManager
from hardware.queue import ScanQueue
from protocol.runtime.config import ENV

__all__ = ["collect_rows", "register"]

DEFAULT_CONFIG = Path("/etc/lanesync/agent.toml")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `scanners` (list) and `scanners watch` to the lanesync CLI."""
    parser = subparsers.add_parser(
        "scanners", help="list configured and present barcode scanners and their state"
    )
    _common_args(parser, None)
    parser.set_defaults(handler=cmd_list)
    actions = parser.add_subparsers(dest="scanners_action", metavar="ACTION")
    watch = actions.add_parser("watch", help="show live scans and errors until Ctrl-C")
    # SUPPRESS: otherwise the subparser's defaults would overwrite options given before `watch`.
    _common_args(watch, argparse.SUPPRESS)
    watch.add_argument(
        "--count", type=int, default=0, help="exit after this many scans (0: run until Ctrl-C)"
    )
    watch.set_defaults(handler=cmd_watch)


def _common_args(parser: argparse.ArgumentParser, default: Any) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        # $LANESYNC_CONFIG replaces the default, as for every command (--config wins).
        default=Path(os.environ.get(ENV) or DEFAULT_CONFIG) if default is None else default,
        help=f"agent config with [[scanners]] (default {DEFAULT_CONFIG})",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        default=False if default is None else default,
        help="machine-readable output",
    )


def _load(path: Path) -> list[ScannerConfig] | None:
    return load_scanners(path)


def _probe_open(config: ScannerConfig, path: str) -> str:
    """Try the exclusive open the agent would do; release it at once."""
    try:
        if config.type == "evdev":
            open_grabbed(path).close()
        else:
            serial.Serial(path, exclusive=True).close()
    except OSError as exc:
        if exc.errno == errno.EBUSY or "lock" in str(exc).lower():
            return "in use"
        if exc.errno in (errno.EACCES, errno.EPERM) or "Permission denied" in str(exc):
            return "no permission"
        return f"error: {exc}"
    return "ready"


def collect_rows(
    configs: list[ScannerConfig],
    *,
    input_by_id: Path = INPUT_BY_ID,
    input_dir: Path = INPUT_DIR,
    serial_by_id: Path = SERIAL_BY_ID,
    probe: bool = True,
) -> list[dict[str, Any]]:
    """One row per configured scanner, then one per present device nobody configured."""
    evdevs = list_evdev(input_by_id, input_dir)
    serials = list_serial(serial_by_id)
    claimed: set[str] = set()
    rows: list[dict[str, Any]] = []
    for config in configs:
        if config.type == "evdev":
            path = resolve_evdev(config, input_by_id, input_dir)
        else:
            path = config.path if config.path and os.path.exists(config.path) else None
        if path is None:
            state = "missing"
        else:
            claimed.add(os.path.realpath(path))
            state = _probe_open(config, path) if probe else "present"
        rows.append(
            {
                "name": config.name,
                "type": config.type,
                "configured": config.describe(),
                "path": path,
                "state": state,
                "usb_id": "",
                "description": "",
            }
        )
    present: list[PresentDevice] = [*evdevs, *serials]
    for device in present:
        if device.node in claimed:
            for row in rows:
                if row["path"] and os.path.realpath(row["path"]) == device.node:
                    row["usb_id"], row["description"] = device.usb_id, device.name
            continue
        rows.append(
            {
                "name": None,
                "type": device.kind,
                "configured": None,
                "path": device.path,
                "state": f"not configured ({device.state})",
                "usb_id": device.usb_id,
                "description": device.name,
            }
        )
    return rows


def cmd_list(args: argparse.Namespace) -> int:
    try:
        configs = _load(args.config)
    except ScannerConfigError as exc:
        print(f"lanesync scanners: {args.config}: {exc}", file=sys.stderr)
        return 2
    rows = collect_rows(configs or [])
    if args.json:
        print(json.dumps({"config": str(args.config), "scanners": rows}, indent=2))
        return 0
    console = Console()
    if configs is None:
        console.print(f"[yellow]{args.config} not found: listing present devices only[/]")
    table = Table(title="Scanners")
    for column in ("name", "type", "configured", "path", "usb id", "state", "description"):
        table.add_column(column)
    for row in rows:
        style = "green" if row["state"] == "ready" else "red" if row["name"] else "dim"
        table.add_row(
            row["name"] or "-",
            row["type"],
            row["configured"] or "-",
            row["path"] or "-",
            row["usb_id"] or "-",
            f"[{style}]{row['state']}[/]",
            row["description"] or "",
        )
    console.print(table)
    return 0


def _print_event(console: Console, event: HardwareEvent, as_json: bool) -> None:
    if as_json:
        print(json.dumps(event.to_json()), flush=True)
        return
    stamp = event.time.astimezone().strftime("%H:%M:%S.%f")[:-3]
    if isinstance(event, DeviceEvent):
        console.print(f"{stamp} [yellow]{event.source}[/] {event.state}: {event.detail}")
        return
    if event.kind == "invalid":
        console.print(f"{stamp} [red]{event.source} INVALID[/] {event.raw!r}: {event.error}")
        return
    flag = " [bold magenta]SSCC -> transit receive[/]" if event.is_sscc else ""
    sym = f" {event.symbology}" if event.symbology else ""
    console.print(f"{stamp} [green]{event.source}[/] {event.kind}{sym} {event.label}{flag}")


async def _watch(configs: list[ScannerConfig], as_json: bool, count: int) -> int:
    console = Console(highlight=False)
    queue = ScanQueue(1024)
    seen = 0
    async with ScannerManager(configs, queue) as manager:
        while True:
            event = await queue.get()
            _print_event(console, event, as_json)
            if not isinstance(event, DeviceEvent):
                seen += 1
                if count and seen >= count:
                    break
    if not as_json:
        table = Table(title="Counters")
        for column in ("name", "state", "scans", "invalid", "errors", "reconnects"):
            table.add_column(column)
        for s in manager.statuses():
            table.add_row(
                s.name, s.state, str(s.scans), str(s.invalid), str(s.errors), str(s.reconnects)
            )
        console.print(table)
        if queue.overflow:
            console.print(f"[red]queue overflow: {queue.overflow} events dropped[/]")
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    try:
        configs = _load(args.config)
    except ScannerConfigError as exc:
        print(f"lanesync scanners watch: {args.config}: {exc}", file=sys.stderr)
        return 2
    if not configs:
        print(
            f"lanesync scanners watch: no [[scanners]] configured in {args.config}",
            file=sys.stderr,
        )
        return 2
    return asyncio.run(_watch(configs, args.json, args.count))
