"""`lanesync headoffice lane retire S001/L1 --epoch E`: a till box was replaced.

A new box starts a new journal, so its lane speaks under a new epoch while head office still
holds the old box's. Retiring the old epoch (a `retired_epochs` row, schema 8) says so:

- the status page, `lanesync headoffice status` and /api/health show the lane's current epoch,
  the latest not retired, never the retired one (headoffice/statuspage.py), even after
  `lanesync import` of the old box's USB export applies its backlog (the import refreshes
  that epoch's last_seen, which alone used to make it current again);
- the old box switched on again by mistake is refused: its hellos and batches raise
  EpochRetired in the database (headoffice/db), so ingest quarantines them with a reason that
  names the retire, and acknowledges nothing;
- `lanesync import` of its export still applies its documents exactly once (the import opens
  the database with `accepts_retired`), through the same apply path as ever.

The epoch is the one the old box's `lanesync status` or the status page shows. An epoch head
office never heard of is refused (a mistyped number would otherwise retire nothing), unless
`--unseen` says the old box never reached head office (its export is still to be imported).
Retiring an epoch again changes nothing. On PostgreSQL the lane's rows are locked first, as an
ingest worker locks them, so a worker's transaction either ends before the retire or sees it.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from typing import Any

from headoffice import config as ho_config
from headoffice import db as ho_db
from headoffice.db import Target, open_target
from headoffice.db.sql import Sql
from headoffice.projections import PROJECTIONS
from protocol.errors import LanesyncError
from protocol.identity import LaneId
from protocol.runtime import clock
from protocol.runtime.cli import Exit, fail

EXAMPLE = "lanesync headoffice lane retire S001/L1 --epoch 3849575285460099843"


class RetireRefused(LanesyncError):
    """An epoch that cannot be retired as asked; nothing was changed."""

    code = "retire_refused"


@dataclass(slots=True)
class RetireResult:
    store: str
    lane: str
    epoch: int
    retired_at: int  # ms; the first retire's time when it was retired before
    already: bool  # it was retired before: nothing changed
    seen: bool  # head office holds entries or a hello of this epoch
    current: int | None  # the lane's current epoch now (None: no epoch left unretired)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_lane(text: str) -> LaneId:
    """`S001/L1` as a LaneId (each part checked like every lane id)."""
    store, sep, lane = text.partition("/")
    if not sep:
        raise RetireRefused(f"{text!r}: name the lane as STORE/LANE, e.g. S001/L1")
    return LaneId(store, lane)


def retire(
    database: Target,
    lane: LaneId,
    epoch: int,
    *,
    note: str,
    unseen: bool = False,
    now_ms: int | None = None,
) -> RetireResult:
    """Retire `epoch` of `lane` in one transaction (database: a SQLite file or a postgresql://
    URL, headoffice.db.target)."""
    now_ms = clock.now_ms() if now_ms is None else now_ms
    store = open_target(database, projections=PROJECTIONS)
    sql = store.sql
    try:
        sql.begin()
        done = _retire(sql, lane, epoch, note=note, unseen=unseen, now_ms=now_ms)
        sql.commit()
    except BaseException:
        sql.rollback()
        raise
    finally:
        store.close()
    return done


def _retire(
    sql: Sql, lane: LaneId, epoch: int, *, note: str, unseen: bool, now_ms: int
) -> RetireResult:
    lock = " FOR UPDATE" if sql.dialect == "postgres" else ""
    known = {
        int(e): int(seen)
        for e, seen in sql.fetchall(
            "SELECT epoch, last_seen FROM lanes WHERE store = ? AND lane = ? "  # noqa: S608
            f"ORDER BY store, lane, epoch{lock}",
            (lane.store, lane.lane),
        )
    }
    if epoch not in known and not unseen:
        listed = ", ".join(str(e) for e in sorted(known, key=known.__getitem__)) or "none"
        raise RetireRefused(
            f"head office has no epoch {epoch} of lane {lane} (its epochs, oldest first: "
            f"{listed}); check the number, or pass --unseen if the old box never reached "
            "head office"
        )
    inserted = sql.execute(
        "INSERT INTO retired_epochs (store, lane, epoch, retired_at, note) "
        "VALUES (?, ?, ?, ?, ?) ON CONFLICT (store, lane, epoch) DO NOTHING",
        (lane.store, lane.lane, epoch, now_ms, note),
    )
    retired = {
        int(e): int(at)
        for e, at in sql.fetchall(
            "SELECT epoch, retired_at FROM retired_epochs WHERE store = ? AND lane = ?",
            (lane.store, lane.lane),
        )
    }
    live = [e for e in known if e not in retired]
    current = max(live, key=lambda e: (known[e], e)) if live else None
    return RetireResult(
        lane.store, lane.lane, epoch, retired[epoch], not inserted, epoch in known, current
    )


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], default: str) -> None:
    """`lane retire` under `lanesync headoffice` (beside `store`)."""
    p = sub.add_parser(
        "lane",
        help="a lane's epochs: retire the old box's when a till box is replaced",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    cmds = p.add_subparsers(dest="lane_command", metavar="ACTION", required=True)
    r = cmds.add_parser(
        "retire",
        help="retire a replaced box's journal epoch: never shown as current, refused if it sends",
        description=(__doc__ or "").split("\n\n")[1] if __doc__ else None,
        epilog=f"Example: {EXAMPLE}  (the epoch from the old box's `lanesync status`)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    r.add_argument("lane", metavar="STORE/LANE", help="the lane, e.g. S001/L1")
    r.add_argument("--epoch", type=int, required=True, help="the old box's journal epoch")
    r.add_argument("--note", default="", help="who retires it and why (kept with the retire)")
    r.add_argument(
        "--unseen",
        action="store_true",
        help="retire an epoch head office never heard of (the old box never reached it)",
    )
    r.add_argument("--config", default=argparse.SUPPRESS, help=f"TOML (default {default})")
    r.add_argument("--json", action="store_true", help="print what was done as JSON")
    r.set_defaults(handler=cmd_lane_retire)


def cmd_lane_retire(args: argparse.Namespace) -> int:
    try:
        lane = parse_lane(args.lane)
        cfg = ho_config.load(args.config)
        done = retire(ho_db.target(cfg), lane, args.epoch, note=args.note, unseen=args.unseen)
    except RetireRefused as exc:
        return fail("headoffice lane retire", exc, Exit.PROBLEM)
    except (LanesyncError, ValueError, OSError) as exc:
        return fail("headoffice lane retire", exc, Exit.CANNOT_RUN)
    if args.json:
        print(json.dumps(done.as_dict()))
        return Exit.OK
    what = "was already retired" if done.already else "retired"
    current = "none yet (the new box has not spoken)" if done.current is None else done.current
    print(
        f"lane {done.store}/{done.lane} epoch {done.epoch} {what}; its current epoch: {current}. "
        "An export of the old box still imports with lanesync import"
    )
    return Exit.OK
