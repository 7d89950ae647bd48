"""`lanesync extract run|record-posting`: the head-office extract job and the ERP's feedback."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from headoffice.extract import config as x_config
from headoffice.extract import job
from protocol.errors import LanesyncError

DEFAULT_CONFIG = x_config.DEFAULT_CONFIG  # LANESYNC_CONFIG, when set, replaces it


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("extract", help="head-office extract: purchases, roll-up, postings")
    xsub = p.add_subparsers(dest="extract", metavar="ACTION", required=True)
    r = xsub.add_parser("run", help="emit what is due: purchase records, roll-up, postings")
    r.add_argument("--config", default=DEFAULT_CONFIG, help=f"TOML (default {DEFAULT_CONFIG})")
    r.add_argument("--json", action="store_true", help="print only the JSON report")
    r.add_argument(
        "--as-of",
        help="run as if it were this ISO 8601 time (delay period and business-day close)",
    )
    r.add_argument("--no-deliver", action="store_true", help="write files only, no HTTP")
    r.set_defaults(handler=cmd_run)
    rp = xsub.add_parser(
        "record-posting",
        help="record that the ERP posted a sale (with corrections); needed by require_erp_posting",
    )
    rp.add_argument("--config", default=DEFAULT_CONFIG, help=f"TOML (default {DEFAULT_CONFIG})")
    rp.add_argument("--txn-id", help="the sale's txn_id")
    rp.add_argument("--erp-ref", help="the ERP's document number for the posting")
    rp.add_argument(
        "--corrections",
        help="JSON map of corrected fields (customer, lines, payments, total, business_day)",
    )
    rp.add_argument(
        "--file",
        help='JSON Lines, one {"txn_id", "erp_ref", "corrections"?} per line ("-" = stdin)',
    )
    rp.set_defaults(handler=cmd_record_posting)


def _now_ms(text: str | None) -> int | None:
    if text is None:
        return None
    t = datetime.fromisoformat(text)
    if t.tzinfo is None:
        raise LanesyncError(f"--as-of: needs a UTC offset, got {text!r}")
    return int(t.timestamp() * 1000)


@contextmanager
def _progress(enabled: bool) -> Iterator[job.Progress | None]:
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn  # noqa: PLC0415

    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), transient=True
    ) as bar:
        tasks: dict[str, Any] = {}

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total or None)
            bar.update(tasks[stage], completed=done, total=total or None)

        yield update


def cmd_run(args: argparse.Namespace) -> int:
    try:
        cfg = x_config.load(args.config)
        if not cfg.enabled:
            msg = {"enabled": False}
            print(json.dumps(msg) if args.json else "extract is disabled (extract.enabled)")
            return 0
        now = _now_ms(args.as_of)
        with _progress(not args.json and sys.stderr.isatty()) as progress:
            report = job.run(cfg, now_ms=now, progress=progress)
        delivered = failed = 0
        if cfg.delivery.url and not args.no_deliver:
            delivered, failed = asyncio.run(job.deliver_pending(cfg))
        out = report.as_json() | {"delivered": delivered, "delivery_failed": failed}
    except (LanesyncError, ValueError) as exc:
        print(f"lanesync extract run: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(out, sort_keys=True))
    else:
        _show(out)
    return 1 if out["rejects"] or failed else 0


def _show(out: dict[str, Any]) -> None:
    from rich.console import Console  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    t = Table(title=f"extract run {out['run'] or '(nothing due)'}")
    t.add_column("what")
    t.add_column("count", justify="right")
    for k in (
        "scanned",
        "purchases",
        "rollups",
        "rolled_sources",
        "postings",
        "rejects",
        "delivered",
        "delivery_failed",
    ):
        t.add_row(k, str(out[k]))
    for reason, n in out["pending"].items():
        t.add_row(f"pending: {reason}", str(n))
    console = Console()
    console.print(t)
    if out["dir"]:
        console.print(f"files: {out['dir']}")


def _read_items(args: argparse.Namespace) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    if args.file:
        stream = sys.stdin if args.file == "-" else open(args.file, encoding="utf-8")  # noqa: SIM115
        with stream:
            for n, line in enumerate(stream, 1):
                if line.strip():
                    try:
                        items.append(json.loads(line))
                    except json.JSONDecodeError as exc:
                        raise LanesyncError(f"{args.file}:{n}: not JSON: {exc}") from None
    elif args.txn_id and args.erp_ref:
        corr = json.loads(args.corrections) if args.corrections else None
        items.append({"txn_id": args.txn_id, "erp_ref": args.erp_ref, "corrections": corr})
    else:
        raise LanesyncError("give --txn-id and --erp-ref, or --file")
    for i, it in enumerate(items):
        _check_item(it, f"{args.file}:{i + 1}: " if args.file else "")
    return items


def _check_item(it: Any, where: str) -> None:
    if not isinstance(it, dict) or not isinstance(it.get("txn_id"), str):
        raise LanesyncError(f"{where}txn_id: required string")
    if not isinstance(it.get("erp_ref"), str) or not it["erp_ref"]:
        raise LanesyncError(f"{where}erp_ref: required string")
    corr = it.get("corrections")
    if corr is not None and not isinstance(corr, dict):
        raise LanesyncError(f"{where}corrections: must be a JSON object")


def cmd_record_posting(args: argparse.Namespace) -> int:
    try:
        cfg = x_config.load(args.config)
        items = _read_items(args)
        for it in items:
            warning = job.record_posting(cfg, it["txn_id"], it["erp_ref"], it.get("corrections"))
            if warning:
                print(f"lanesync extract record-posting: warning: {warning}", file=sys.stderr)
    except (LanesyncError, OSError, json.JSONDecodeError) as exc:
        print(f"lanesync extract record-posting: {exc}", file=sys.stderr)
        return 2
    print(f"recorded {len(items)} ERP posting(s)")
    return 0
