"""One extract run: select what is due, write the files, record what was emitted, then publish.

Order of a run, and why a crash anywhere emits nothing twice and misses nothing:
1. compute every record from documents no job has consumed yet (pure, nothing written);
2. write the files into `run-NNNNNN.tmp/` and fsync them;
3. in ONE transaction record each consumed document, the purchase records, the TC counter,
   the job cursors and the run row;
4. rename the directory to `run-NNNNNN/`.
A crash before 3 leaves only a `.tmp` directory that the next run replaces (same records, same
ids, same bytes); a crash between 3 and 4 is finished by the next run (rename). Runs are
serialised by a lock file in the output directory (and, on PostgreSQL, an advisory lock).

The same code runs on SQLite and PostgreSQL (headoffice/extract/db.py holds the few dialect
differences); for the same journal both give byte-identical files.
"""

from __future__ import annotations

import fcntl
import gc
import json
import multiprocessing as mp
import shutil
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from headoffice.db import describe
from headoffice.db.base import DatabaseError
from headoffice.db.sql import Sql
from headoffice.extract import db as xdb
from headoffice.extract import output, postings, purchases, rollup
from headoffice.extract.config import ExtractConfig
from headoffice.extract.documents import DocumentError, Row, done_jobs, read_rows, to_doc
from headoffice.extract.plugin import Context, ErpPosting, ExtractJob, Plan, RowDoc, Tally
from protocol.errors import LanesyncError
from protocol.runtime import clock

# Every extract job, in the order each row is offered to them (purchases first: with ERP
# corrections it decodes its own document, the others share one).
JOBS: tuple[ExtractJob[Any], ...] = (purchases.JOB, rollup.JOB, postings.JOB)
Progress = Callable[[str, int, int], None]
FailPoint = Callable[[str], None]


class ExtractError(LanesyncError):
    """An extract run that could not complete; nothing of it was recorded."""

    code = "extract"


@dataclass(frozen=True)
class RunReport:
    run: int | None
    dir: str | None
    scanned: int
    purchases: int
    rollups: int
    rolled_sources: int
    postings: int
    rejects: int
    pending: dict[str, int]
    recovered: list[int]
    delivered: int = 0
    delivery_failed: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "run": self.run,
            "dir": self.dir,
            "scanned": self.scanned,
            "purchases": self.purchases,
            "rollups": self.rollups,
            "rolled_sources": self.rolled_sources,
            "postings": self.postings,
            "rejects": self.rejects,
            "pending": dict(sorted(self.pending.items())),
            "recovered_runs": self.recovered,
            "delivered": self.delivered,
            "delivery_failed": self.delivery_failed,
        }


def day_closed_before(cfg: ExtractConfig, now_ms: int) -> str:
    """Business days before this date (in the configured time zone) are closed."""
    local = datetime.fromtimestamp(now_ms / 1000, UTC).astimezone(ZoneInfo(cfg.timezone))
    return (local - timedelta(hours=cfg.day_close_grace_hours)).date().isoformat()


def compute(
    rows: Iterable[Row],
    cfg: ExtractConfig,
    *,
    now_ms: int,
    cursors: dict[str, int],
    erp: dict[str, ErpPosting],
    next_tc: int,
    progress: Callable[[int], None] | None = None,
    workers: int = 1,
) -> Plan:
    """The records due now from rows no job has consumed; pure apart from reading `rows`.

    The cyclic GC is paused meanwhile: the run allocates millions of small acyclic objects and
    the collector's passes over them cost more than the work itself.

    With `workers` > 1 the rows are split into consecutive ranges and all but the first are
    computed in forked child processes (Linux; the rows are read first, children never touch
    the database). Every range gives a `_Part` and `_finish` combines them in row order, so the
    plan is the same as a single pass. Off by default: on the 2-vCPU bench machine shipping the
    children's posting rows back cost as much as it saved (see lanesync/bench/extract.py).
    """
    paused = gc.isenabled()
    gc.disable()
    try:
        todo = rows if isinstance(rows, list) else list(rows)
        n = _workers(len(todo), workers)
        cutoff = day_closed_before(cfg, now_ms) if cfg.schedule == "business_day" else None
        st = _State(Context(cfg, now_ms, erp, cutoff), cursors)
        parts = _parallel(todo, st, n, progress) if n > 1 else [_part(todo, st, progress)]
        if progress is not None:
            progress(len(todo))
        plan = _finish(parts, st, next_tc)
        if plan is None:  # some lane journal's rows were out of seq order: roll up doc by doc
            whole = _State(Context(cfg, now_ms, erp, cutoff, keep_docs=True), cursors)
            plan = _finish([_part(todo, whole)], whole, next_tc)
            assert plan is not None
        return plan
    finally:
        if paused:
            gc.enable()


def _workers(n_rows: int, wanted: int) -> int:
    if wanted <= 1 or n_rows < 2 or "fork" not in mp.get_all_start_methods():
        return 1
    if threading.active_count() > 1:
        return 1  # forking a threaded process is unsafe
    return min(wanted, n_rows)


@dataclass
class _State:
    """What every worker needs to know; inherited by forked children."""

    ctx: Context
    cursors: dict[str, int]

    def jobs(self) -> list[ExtractJob[Any]]:
        """The configured jobs, in `JOBS` order."""
        return [j for j in JOBS if j.enabled(self.ctx.cfg)]


@dataclass
class _Part:
    """What one consecutive range of rows gives; `_finish` combines parts in row order."""

    scanned: int = 0
    last_rowid: int = 0
    tally: Tally = field(default_factory=Tally)
    accs: dict[str, Any] = field(default_factory=dict)  # job name -> its accumulator


def _parallel(
    rows: list[Row], st: _State, n: int, progress: Callable[[int], None] | None
) -> list[_Part]:
    """Rows split into `n` consecutive ranges; ranges 2..n computed by forked children.

    The children inherit the rows and never touch the database; a child that fails has its
    range computed here instead (a DocumentError never fails a child: it is a reject).
    """
    ctx = mp.get_context("fork")
    size = -(-len(rows) // n)
    chunks = [rows[i : i + size] for i in range(0, len(rows), size)]
    kids = []
    for chunk in chunks[1:]:
        recv, send = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_child, args=(chunk, st, send), daemon=True)
        proc.start()
        send.close()
        kids.append((proc, recv, chunk))
    parts = [_part(chunks[0], st, progress)]
    for proc, recv, chunk in kids:
        got: _Part | None = None
        try:
            msg = recv.recv()
            if isinstance(msg, _Part):
                got = msg
        except (EOFError, OSError):
            pass
        finally:
            recv.close()
            proc.join()
        parts.append(got if got is not None else _part(chunk, st, None))
    return parts


def _child(rows: list[Row], st: _State, send: Connection) -> None:
    try:
        part: _Part | str = _part(rows, st, None)
    except Exception as exc:  # noqa: BLE001 - the parent recomputes the range itself
        part = repr(exc)
    send.send(part)
    send.close()


def _part(rows: list[Row], st: _State, progress: Callable[[int], None] | None = None) -> _Part:
    """Every configured job over one consecutive range of rows (the per-row work of a run).

    A hot loop (once per row and job): each row is offered to every job that has not consumed
    it yet and reads its kind; the jobs share one lazily decoded document per row.
    """
    ctx, cursors = st.ctx, st.cursors
    part = _Part()
    tally = part.tally
    jobs = []
    for j in st.jobs():
        acc = part.accs[j.name] = j.start()
        jobs.append((j.name, cursors.get(j.name, 0), j.reads, j.take, acc))
    doc = RowDoc()
    reset = doc.reset
    scanned = 0
    for row in rows:
        scanned += 1
        if progress is not None and scanned % 4096 == 0:
            progress(scanned)
        rowid = row.rowid
        kind = row.kind
        consumed = None if row.done is None else done_jobs(row)
        reset(row)
        for name, after, reads, take, acc in jobs:
            if rowid <= after or kind not in reads or (consumed is not None and name in consumed):
                continue
            take(row, doc, acc, tally, ctx)
        part.last_rowid = rowid
    part.scanned = scanned
    return part


def _finish(parts: list[_Part], st: _State, next_tc: int) -> Plan | None:
    """One plan from the parts of consecutive row ranges, in row order; None when a job cannot
    combine them exactly (then the run is computed again with `Context.keep_docs`)."""
    plan = Plan(next_tc=next_tc)
    first_pending: dict[str, int] = {}
    last_rowid = 0
    for part in parts:
        plan.scanned += part.scanned
        last_rowid = part.last_rowid or last_rowid
        tally = part.tally
        for name, rowid in tally.first_pending.items():
            first_pending.setdefault(name, rowid)
        for reason, count in tally.pending.items():
            plan.pending[reason] = plan.pending.get(reason, 0) + count
        plan.rejects += tally.rejects
        plan.done += tally.done
    for j in st.jobs():
        if not j.finish([part.accs[j.name] for part in parts], plan):
            return None
    cursors = st.cursors
    for j in JOBS:
        if j.name in first_pending:
            plan.cursors[j.name] = max(cursors.get(j.name, 0), first_pending[j.name] - 1)
        elif last_rowid:
            plan.cursors[j.name] = max(cursors.get(j.name, 0), last_rowid)
    return plan


@contextmanager
def _run_lock(out: Path) -> Iterator[None]:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ExtractError(f"another extract run holds {out / '.lock'}") from None
        yield


def open_db(cfg: ExtractConfig) -> Sql:
    """The head-office database of `cfg` (database.url or database.path), read/write."""
    if cfg.database_url is None and not cfg.database.exists():
        raise ExtractError(f"database.path: {cfg.database} does not exist (run head office first)")
    try:
        return xdb.open_sql(cfg.target, f"head-office database {describe(cfg.target)}")
    except DatabaseError as exc:
        raise ExtractError(f"{cfg.database_key}: {exc}") from exc


def run_dir(cfg: ExtractConfig, run: int) -> Path:
    return cfg.output_dir / f"run-{run:06d}"


def _recover(db: Sql, cfg: ExtractConfig) -> list[int]:
    """Finish runs that committed but crashed before the rename; drop uncommitted leftovers."""
    committed = {r for (r,) in db.fetchall("SELECT run FROM extract_runs")}
    recovered = []
    for tmp in sorted(cfg.output_dir.glob("run-*.tmp")):
        try:
            n = int(tmp.name[4:-4])
        except ValueError:
            continue
        if n in committed and not run_dir(cfg, n).exists():
            tmp.rename(run_dir(cfg, n))
            recovered.append(n)
        else:
            shutil.rmtree(tmp)
    if recovered:
        output.fsync_dir(cfg.output_dir)
    return recovered


def load_state(db: Sql) -> tuple[dict[str, int], dict[str, ErpPosting], int, int]:
    cursors = {
        job: int(after) for job, after in db.fetchall("SELECT job, after_rowid FROM extract_cursor")
    }
    erp: dict[str, ErpPosting] = {}
    for txn, ref, corr in db.fetchall(
        "SELECT e.txn_id, e.erp_ref, e.corrections FROM extract_erp_postings e WHERE NOT EXISTS "
        "(SELECT 1 FROM extract_done d WHERE d.txn_id = e.txn_id AND d.job = 'purchases')"
    ):
        erp[txn] = ErpPosting(ref, json.loads(corr) if corr else None)
    row = db.fetchone("SELECT value FROM extract_counters WHERE name = 'tc'")
    last = db.fetchone("SELECT coalesce(max(run), 0) FROM extract_runs")
    return cursors, erp, (int(row[0]) if row else 0) + 1, int(last[0]) if last else 0


def run(
    cfg: ExtractConfig,
    *,
    now_ms: int | None = None,
    progress: Progress | None = None,
    fail_point: FailPoint | None = None,
) -> RunReport:
    """One extract run (see the module docstring for its crash-safety)."""
    now = clock.now_ms() if now_ms is None else now_ms
    with _run_lock(cfg.output_dir):
        db = open_db(cfg)
        try:
            _take_run_lock(db, cfg)
            return _run(db, cfg, now, progress, fail_point or (lambda _p: None))
        except xdb.DB_ERRORS as exc:
            _rollback(db)
            raise DatabaseError(f"extract run failed, nothing recorded: {exc}") from exc
        except BaseException:
            _rollback(db)
            raise
        finally:
            db.close()


def _take_run_lock(db: Sql, cfg: ExtractConfig) -> None:
    if not xdb.try_run_lock(db):
        raise ExtractError(f"another extract run holds the run lock of {describe(cfg.target)}")


def _rollback(db: Sql) -> None:
    """Roll back what is open; a connection that broke has nothing left to roll back."""
    with suppress(*xdb.DB_ERRORS):
        db.rollback()


def _run(
    db: Sql, cfg: ExtractConfig, now: int, progress: Progress | None, fail: FailPoint
) -> RunReport:
    recovered = _recover(db, cfg)
    cursors, erp, next_tc, last_run = load_state(db)
    start = min((cursors.get(j.name, 0) for j in JOBS), default=0)
    up_to = xdb.horizon(db)
    rid = xdb.JOURNAL_ID[db.dialect]
    counted = db.fetchone(
        f"SELECT count(*) FROM journal WHERE {rid} > ? AND {rid} <= ? AND applied = 1",  # noqa: S608
        (start, up_to),
    )
    total = int(counted[0]) if counted else 0
    plan = compute(
        read_rows(db, start, up_to),
        cfg,
        now_ms=now,
        cursors=cursors,
        erp=erp,
        next_tc=next_tc,
        progress=(lambda n: progress("documents", n, total)) if progress else None,
    )
    run_no: int | None = None
    final: Path | None = None
    purchase_json: list[str] = []
    if not plan.empty:
        run_no = last_run + 1
        final = run_dir(cfg, run_no)
        tmp = final.with_name(final.name + ".tmp")
        if progress:
            progress("writing", 0, 1)
        purchase_json = [output.purchase_dumps(p) for p in plan.purchases]
        output.write_dir(
            tmp,
            output.render(plan.purchases, plan.rollups, plan.postings, plan.rejects, purchase_json),
        )
        fail("files_written")
    db.begin()
    if run_no is not None and final is not None:
        # Inserted in primary-key order: the same rows, but each B-tree page is filled once
        # instead of being split and rewritten at random (fewer pages through the WAL).
        xdb.insert_rows(
            db,
            "extract_done",
            ("txn_id", "job", "run", "ref"),
            sorted([(t, j, run_no, ref) for t, j, ref in plan.done]),
        )
        xdb.insert_rows(
            db,
            "extract_purchases",
            ("record_id", "txn_id", "run", "body"),
            sorted(
                [
                    (p["record_id"], p["txn_id"], run_no, body)
                    for p, body in zip(plan.purchases, purchase_json, strict=True)
                ]
            ),
        )
        db.execute(
            "INSERT INTO extract_counters (name, value) VALUES ('tc', ?) "
            "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (plan.next_tc - 1,),
        )
        db.execute(
            "INSERT INTO extract_runs (run, as_of, committed_at, dir, purchases, rollups, "
            "postings, rejects) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                run_no,
                now,
                clock.now_ms(),
                str(final),
                len(plan.purchases),
                len(plan.rollups),
                len(plan.postings),
                len(plan.rejects),
            ),
        )
    db.executemany(
        "INSERT INTO extract_cursor (job, after_rowid) VALUES (?, ?) "
        "ON CONFLICT (job) DO UPDATE SET after_rowid = excluded.after_rowid",
        sorted(plan.cursors.items()),
    )
    db.commit()
    fail("committed")
    if final is not None:
        final.with_name(final.name + ".tmp").rename(final)
        output.fsync_dir(cfg.output_dir)
    return RunReport(
        run=run_no,
        dir=str(final) if final else None,
        scanned=plan.scanned,
        purchases=len(plan.purchases),
        rollups=len(plan.rollups),
        rolled_sources=sum(len(r["sources"]) for r in plan.rollups),
        postings=len(plan.postings),
        rejects=len(plan.rejects),
        pending=plan.pending,
        recovered=recovered,
    )


def record_posting(
    cfg: ExtractConfig, txn_id: str, erp_ref: str, corrections: dict[str, Any] | None
) -> str | None:
    """Record that the ERP posted a sale (with the values it corrected); returns a warning.

    Corrections are checked against the stored document before anything is recorded, so a bad
    correction is refused with the field named instead of blocking the extract later.
    """
    allowed = {"customer", "lines", "payments", "total", "business_day", "currency"}
    if corrections:
        bad = sorted(set(corrections) - allowed)
        if bad:
            raise ExtractError(
                f"corrections.{bad[0]}: cannot be corrected (allowed: {', '.join(sorted(allowed))})"
            )
    db = open_db(cfg)
    try:
        r = db.fetchone(
            f"SELECT {xdb.JOURNAL_ID[db.dialect]}, store, lane, epoch, seq, kind, txn_id, ts, "  # noqa: S608
            "body FROM journal WHERE txn_id = ? AND applied = 1",
            (txn_id,),
        )
        if r is None:
            raise ExtractError(f"txn_id: no applied document {txn_id!r} in {describe(cfg.target)}")
        row = Row(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], bytes(r[8]), None)
        try:
            to_doc(row, corrections)
        except DocumentError as exc:
            raise ExtractError(f"corrections: {exc}") from None
        done = db.fetchone(
            "SELECT run FROM extract_done WHERE txn_id = ? AND job = 'purchases'", (txn_id,)
        )
        db.begin()
        db.execute(
            "INSERT INTO extract_erp_postings (txn_id, erp_ref, recorded_at, corrections) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (txn_id) DO UPDATE SET erp_ref = excluded.erp_ref, "
            "recorded_at = excluded.recorded_at, corrections = excluded.corrections",
            (
                txn_id,
                erp_ref,
                clock.now_ms(),
                output.dumps(corrections) if corrections else None,
            ),
        )
        db.commit()
    except xdb.DB_ERRORS as exc:
        _rollback(db)
        raise DatabaseError(f"recording the ERP posting failed: {exc}") from exc
    finally:
        db.close()
    if done is not None:
        return (
            f"purchase record of {txn_id} was already emitted in run {done[0]}; "
            "corrections are not in it"
        )
    return None


async def deliver_pending(cfg: ExtractConfig) -> tuple[int, int]:
    """Deliver every undelivered purchase record (this run's and earlier failures)."""
    from headoffice.extract import delivery  # noqa: PLC0415 - aiohttp only when delivering

    if cfg.delivery.url is None:
        return 0, 0
    db = open_db(cfg)
    try:
        outcomes = await delivery.deliver(cfg.delivery, delivery.pending(db))
        delivery.save(db, outcomes)
    except xdb.DB_ERRORS as exc:
        _rollback(db)
        raise DatabaseError(f"recording delivery outcomes failed: {exc}") from exc
    finally:
        db.close()
    ok = sum(1 for o in outcomes if o.ok)
    return ok, len(outcomes) - ok
