"""`lanesync status`, `lanesync doctor` and `lanesync journal export`: the technician's tools.

Registered from agent/cli.py (so `lanesync agent` imports this module: doctor and export are
imported by their own command only); each prints plain text for people and `--json` for scripts.
Exit codes (protocol.runtime.cli.Exit, the table every command uses): OK healthy / done,
PROBLEM a problem was found, CANNOT_RUN the command could not run (config), and for `status`
NOT_ANSWERING when the agent is not running (as `systemctl status` exits 3).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from agent import config as agent_config
from agent import status as lane_status
from protocol.errors import LanesyncError
from protocol.runtime.cli import Exit, fail


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    jsub: argparse._SubParsersAction[argparse.ArgumentParser],
    default_config: str,
) -> None:
    s = sub.add_parser("status", help="this lane's health (works with the agent stopped)")
    s.add_argument("--config", default=default_config, help=f"agent TOML ({default_config})")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(handler=cmd_status)

    d = sub.add_parser("doctor", help="check config, certificates, broker, clock, devices, disk")
    d.add_argument("--config", default=default_config, help=f"agent TOML ({default_config})")
    d.add_argument("--json", action="store_true", help="machine-readable output")
    d.add_argument("--offline", action="store_true", help="skip the broker and clock checks")
    d.add_argument("--timeout", type=float, default=5.0, help="network timeout, s (default 5)")
    d.set_defaults(handler=cmd_doctor)

    e = jsub.add_parser("export", help="write the unacked backlog to a signed file (USB stick)")
    e.add_argument("--config", default=default_config, help=f"agent TOML ({default_config})")
    e.add_argument(
        "--out", required=True, help="file or directory to write (e.g. the USB stick's mount)"
    )
    e.add_argument("--json", action="store_true", help="machine-readable output")
    e.set_defaults(handler=cmd_export)


def cmd_status(args: argparse.Namespace) -> int:
    try:
        cfg = agent_config.load(args.config)
    except LanesyncError as exc:
        return fail("status", exc, Exit.CANNOT_RUN)
    rep = lane_status.collect(cfg)
    if args.json:
        print(json.dumps(rep.as_dict()))
    else:
        print(lane_status.render(rep))
    if not rep.running:
        return Exit.NOT_ANSWERING  # as `systemctl status` of a stopped unit: 3
    return Exit.PROBLEM if rep.problems else Exit.OK


def cmd_doctor(args: argparse.Namespace) -> int:
    from agent import doctor  # noqa: PLC0415 - `lanesync agent` registers this, never runs it

    checks = doctor.run(args.config, network=not args.offline, timeout=args.timeout)
    if args.json:
        print(json.dumps([c.as_dict() for c in checks]))
    else:
        print(doctor.render(checks))
    return Exit.PROBLEM if any(c.outcome == "fail" for c in checks) else Exit.OK


def cmd_export(args: argparse.Namespace) -> int:
    from agent import export as lane_export  # noqa: PLC0415 - as doctor, above

    try:
        cfg = agent_config.load(args.config)
        key_file = cfg.ops.export.key_file
        if key_file is None:
            raise lane_export.ExportError(
                f"{args.config}: [export] key_file is not set; ask head office for this "
                "store's export key"
            )
        key = lane_export.load_key(key_file)
        out = Path(args.out)
        if out.is_dir():
            out = out / lane_export.default_name(cfg.lane)
        res = lane_export.export(cfg.journal_path, cfg.lane, key, out)
    except LanesyncError as exc:
        return fail("journal export", exc, Exit.CANNOT_RUN)
    if args.json:
        print(json.dumps(dataclasses.asdict(res)))
    elif res.entries == 0:
        print(f"nothing to export: head office has acknowledged everything; wrote {res.path}")
    else:
        print(
            f"wrote {res.path}: lane {res.store}/{res.lane} epoch {res.epoch}, {res.entries} "
            f"unacked entries (seq {res.first_seq}..{res.last_seq}), {res.bytes} bytes. At head "
            f"office run: lanesync import {Path(res.path).name}"
        )
    return Exit.OK
