"""Durable, hash-chained lane journal on SQLite (WAL, synchronous=FULL) through aiosqlite.

One writer task owns every write. Appenders put their document on a queue and await a future;
the writer takes everything queued, assigns consecutive seqs, chains hashes, inserts the group
and commits once, so concurrent appends share one fsync (group commit). A future resolves only
after COMMIT returned, which is what lets the local API confirm a document (invariant 1).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import secrets
import shutil
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar

import aiosqlite

from protocol.chain import entry_hash, genesis
from protocol.documents import encode_body
from protocol.errors import LanesyncError
from protocol.identity import LaneId
from protocol.messages import Entry
from protocol.runtime import migrations as schema
from protocol.runtime.clock import now_ms
from protocol.runtime.tasks import Tasks

log = logging.getLogger(__name__)

SELECT_ENTRIES = "SELECT seq, kind, txn_id, ts, body, hash FROM entries"
CLOSE_TIMEOUT_S = 10.0

# SQLite's primary result code for "database or disk is full" (the low byte of an extended
# code), and the shared-memory file failing to grow (a WAL reader needs it; ENOSPC on tmpfs).
SQLITE_FULL = 13
SQLITE_IOERR_SHMSIZE = 4874

T = TypeVar("T")


class DiskGuard(Protocol):
    """What keeps the journal within its disk budget (agent.retention.Retention is one); the
    daemon hands it over with `Journal.guarded_by`."""

    async def admit(self, db: aiosqlite.Connection, incoming: int) -> str | None:
        """Given the writer connection and the bytes a group of new documents adds: why they
        must be refused, or None to let them in."""

    def disk_filled(self) -> bool:
        """A write found the disk full (called in the writer): True if room was made."""


class JournalError(LanesyncError):
    """The journal could not do what was asked; nothing was half done."""


class JournalFull(JournalError):
    """The disk budget is exhausted: the new document is refused, confirmed ones are kept."""


def is_disk_full(exc: BaseException) -> bool:
    """True for SQLite's 'database or disk is full' and a WAL index that could not grow."""
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(code, int) and (code & 0xFF == SQLITE_FULL or code == SQLITE_IOERR_SHMSIZE)


class JournalConflict(JournalError):
    """A txn_id that is already journaled with a different document."""

    def __init__(self, txn_id: str, seq: int) -> None:
        self.txn_id = txn_id
        self.seq = seq
        super().__init__(
            f"txn_id {txn_id} is already journaled as seq {seq} with a different document"
        )


@dataclass(frozen=True, slots=True)
class Appended:
    """What the POS gets back: the document is durable under this seq."""

    seq: int
    txn_id: str
    epoch: int
    duplicate: bool = False  # the same document was already journaled by an earlier submit


@dataclass(slots=True)
class _Append:
    kind: str
    txn_id: str
    ts: int
    body: bytes
    future: asyncio.Future[Appended] = field(repr=False)


@dataclass(slots=True)
class _MarkAcked:
    hwm: int
    future: asyncio.Future[None] = field(repr=False)


@dataclass(slots=True)
class _Exec:
    fn: Callable[[aiosqlite.Connection], Awaitable[Any]]
    future: asyncio.Future[Any] = field(repr=False)


@dataclass(slots=True)
class _Stop:
    """Close: the writer finishes what is queued before it, then ends."""

    future: asyncio.Future[None] = field(repr=False)


_Op = _Append | _MarkAcked | _Exec | _Stop


async def _rollback(db: aiosqlite.Connection) -> None:
    """Roll back whatever is open, keeping the error that got us here.

    A cancelled await does not stop aiosqlite's thread: the COMMIT may still have run, and a
    ROLLBACK then fails with "no transaction is active". That failure must not replace the
    original exception (a swallowed CancelledError left the writer unable to stop).
    """
    if db.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            await db.execute("ROLLBACK")


async def _ping(db: aiosqlite.Connection) -> None:
    await (await db.execute("SELECT 1")).fetchone()


_last_v7_ms = 0


def new_txn_id() -> str:
    """A UUIDv7 (RFC 9562 section 5.7): 48 bits of Unix milliseconds, then 74 random bits.

    As uuid6.uuid7 makes them (which this replaces: the package reads its own version with
    importlib.metadata at import, for nothing the agent uses): a millisecond already used is
    bumped by one, so the ids of one process sort in the order they were made.
    """
    global _last_v7_ms  # noqa: PLW0603 - one clock per process, as uuid6 keeps it
    ms = time.time_ns() // 1_000_000
    if ms <= _last_v7_ms:
        ms = _last_v7_ms + 1
    _last_v7_ms = ms
    value = (ms & 0xFFFF_FFFF_FFFF) << 80 | secrets.randbits(76)
    # version 7 in bits 76-79 (overwriting 4 of the random bits), variant 0b10 in bits 62-63
    value = value & ~(0xF << 76) | 7 << 76
    value = value & ~(0x3 << 62) | 0x2 << 62
    return str(uuid.UUID(int=value))


class Journal:
    """Async context manager over one journal file; see the module docstring."""

    def __init__(self, path: str | Path, lane: LaneId, *, max_group: int = 1024) -> None:
        self.path = Path(path)
        self.lane = lane
        self.max_group = max_group
        self._db: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._queue: asyncio.Queue[_Op] = asyncio.Queue()
        self._tasks = Tasks(f"journal {lane}")
        self._writer_task: asyncio.Task[None] | None = None
        self._new_entries = asyncio.Event()
        # Timestamps of appends submitted and not yet answered (clock_bound_ms).
        self._pending_ts: collections.Counter[int] = collections.Counter()
        self.epoch = 0
        self.last_seq = 0
        self._last_hash = b""
        # Head office's ack mark as the replicator knows it. On a full disk it may be ahead of
        # `saved_acked_seq` (what the file holds): held in memory and written when possible, so
        # the backlog still drains; after a restart the lane resends from the saved mark and
        # head office answers those entries as duplicates.
        self.acked_seq = 0
        self.saved_acked_seq = 0
        self.acked_at: int | None = None
        # Set when a write found the disk full, cleared by the next write that commits.
        self.disk_full: str | None = None
        self.disk_full_free: int | None = None  # bytes free when that write failed
        # The disk budget (agent.retention), handed over by the daemon with guarded_by(): it
        # admits or refuses each group of new documents, and makes room (gives back its
        # reserve) when a write found the disk full, after which a held ack is tried again.
        self._guard: DiskGuard | None = None
        self.commits = 0  # number of append transactions; appends / commits = group size
        self._listeners: list[Callable[[], None]] = []

    # --- lifecycle ------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def guarded_by(self, guard: DiskGuard) -> AsyncIterator[None]:
        """Enforce `guard`'s disk budget on every append while inside."""
        if self._guard is not None:
            raise JournalError(f"journal {self.path} already has a disk guard")
        self._guard = guard
        try:
            yield
        finally:
            self._guard = None

    async def __aenter__(self) -> Self:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = await self._connect()
            await self._migrate(self._db)
            await self._load_state(self._db)
            self._reader = await self._connect()
        except BaseException:
            await self._close_connections()
            raise
        await self._tasks.__aenter__()
        self._writer_task = self._tasks.start(self._writer(), "writer")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        task = self._writer_task
        try:
            if task is not None and not task.done():
                # Let the writer finish the group it is committing and what is queued, so no
                # appender is left waiting and no commit is cut in half by a cancellation.
                self._queue.put_nowait(_Stop(asyncio.get_running_loop().create_future()))
                await asyncio.wait({task}, timeout=CLOSE_TIMEOUT_S)
        finally:
            await self._tasks.stop()
            self._fail_pending(JournalError("journal closed"))
            await self._close_connections()

    async def _connect(self) -> aiosqlite.Connection:
        try:
            db = await aiosqlite.connect(self.path, isolation_level=None)
        except sqlite3.Error as exc:
            raise JournalError(f"cannot open journal {self.path}: {exc}") from exc
        # WAL lets the replicator read while the writer appends; FULL fsyncs the WAL on every
        # commit so a confirmed document survives power loss, not just a process crash.
        # Before the first table exists this makes pruned pages returnable to the filesystem
        # (agent.retention runs incremental_vacuum); on an older file it changes nothing.
        # Only a new, empty file gets auto_vacuum set: on an existing one the pragma is a write
        # and fails on a full disk, which kept the agent from starting.
        try:
            row = await (await db.execute("PRAGMA page_count")).fetchone()
            if not row or not row[0]:
                await db.execute("PRAGMA auto_vacuum=INCREMENTAL")
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA synchronous=FULL")
            await db.execute("PRAGMA busy_timeout=5000")
            # 256 KiB of page cache instead of SQLite's 2 MiB (issue 17.2): appends touch the
            # tail of the table and its txn_id index, the replicator reads forward, so the
            # inner pages the cache must keep are few; measured with bench drain, the agent's
            # peak RSS fell about 2.5 MB with no loss in fill or drain rate.
            await db.execute("PRAGMA cache_size=-256")
        except BaseException:
            await db.close()  # cancelled or failed while opening: no connection thread left over
            raise
        return db

    async def _close_connections(self) -> None:
        for db in (self._reader, self._db):
            if db is not None:
                await db.close()
        self._reader = self._db = None

    async def _migrate(self, db: aiosqlite.Connection) -> None:
        await schema.apply_aiosqlite(
            db,
            "agent.journal.schema",
            f"journal {self.path}",
            error=JournalError,
            subject=str(self.path),
        )

    async def _load_state(self, db: aiosqlite.Connection) -> None:
        meta: dict[str, Any] = {
            str(k): v for k, v in await db.execute_fetchall("SELECT key, value FROM meta")
        }
        owner = (meta.get("store"), meta.get("lane"))
        if owner == (None, None):
            await db.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?)",
                [("store", self.lane.store), ("lane", self.lane.lane)],
            )
        elif owner != (self.lane.store, self.lane.lane):
            raise JournalError(
                f"journal {self.path} belongs to lane {owner[0]}/{owner[1]}, but the configuration "
                f"says {self.lane}; point journal.path at this lane's own file"
            )
        self.epoch = int(meta["epoch"])
        rows = list(
            await db.execute_fetchall("SELECT seq, hash FROM entries ORDER BY seq DESC LIMIT 1")
        )
        if rows:
            self.last_seq, self._last_hash = int(rows[0][0]), bytes(rows[0][1])
        else:
            self.last_seq, self._last_hash = 0, genesis(self.lane, self.epoch)
        acked = list(await db.execute_fetchall("SELECT acked_seq, acked_at FROM outbox"))
        self.acked_seq, self.acked_at = int(acked[0][0]), acked[0][1]
        self.saved_acked_seq = self.acked_seq

    # --- appending ------------------------------------------------------------------------

    async def append(
        self, kind: str, doc: dict[str, Any], *, txn_id: str | None = None, ts: int | None = None
    ) -> Appended:
        """Journal one document; returns only after it is committed to disk.

        The document must already be validated (protocol.documents.check_document). Submitting
        the same txn_id with the same document again returns the original seq.
        """
        txn_id = txn_id or new_txn_id()
        body = encode_body(doc)
        fut: asyncio.Future[Appended] = asyncio.get_running_loop().create_future()
        ts = ts if ts is not None else now_ms()
        self._pending_ts[ts] += 1
        try:
            self._put(_Append(kind, txn_id, ts, body, fut))
            return await fut
        finally:
            self._pending_ts[ts] -= 1
            if not self._pending_ts[ts]:
                del self._pending_ts[ts]

    def clock_bound_ms(self) -> int:
        """A time no later than now nor than the timestamp of any entry past `last_seq`.

        An entry's timestamp is taken when it is submitted, but `last_seq` moves only once its
        group is committed, so an entry waiting for the fsync is already dated and not yet
        counted. The hello's `sent_at` is this bound: head office tells a journal restored from
        an old copy by the entry after the hello's last seq being dated before the hello
        (headoffice.ingest.applier._restored_copy), and a hello it receives late (a broker
        redelivering it after a restart) must not be taken for one because of such an entry."""
        return min([now_ms(), *self._pending_ts])

    async def mark_acked(self, hwm: int) -> None:
        """Record head office's high-water mark: entries up to `hwm` leave the outbox."""
        if hwm <= self.acked_seq:
            return
        if hwm > self.last_seq:
            raise JournalError(
                f"head office acked seq {hwm} but this journal ends at {self.last_seq} "
                f"(epoch {self.epoch}); was the journal restored from an old copy?"
            )
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._put(_MarkAcked(hwm, fut))
        await fut

    @property
    def held_ack(self) -> int | None:
        """The ack mark held in memory because the disk was full, or None."""
        return self.acked_seq if self.acked_seq > self.saved_acked_seq else None

    async def save_held_ack(self) -> None:
        """Try again to write an ack mark held in memory (agent.retention calls this)."""
        if self.held_ack is not None:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._put(_MarkAcked(self.acked_seq, fut))
            await fut

    async def ping(self) -> None:
        """Return once the writer task takes a request and SQLite answers it (the watchdog)."""
        await self.run_write(_ping)

    async def prune(self, bound: int, limit: int, *, checkpoint: bool) -> tuple[int, int | None]:
        """Delete up to `limit` of the oldest entries at or below seq `bound` (agent.retention
        decides which may go) in one short transaction on the writer, and give the freed pages
        back to the filesystem (auto_vacuum=INCREMENTAL journals); `checkpoint`: truncate the
        WAL too, which a full disk needs before the pages are really returned.

        Returns how many went and the oldest seq the journal still holds (None: none).
        """

        async def step(db: aiosqlite.Connection) -> tuple[int, int | None]:
            await db.execute("BEGIN IMMEDIATE")
            cur = await db.execute(
                "DELETE FROM entries WHERE seq IN "
                "(SELECT seq FROM entries WHERE seq <= ? ORDER BY seq LIMIT ?)",
                (bound, limit),
            )
            await db.execute("COMMIT")
            n = cur.rowcount
            if n:
                # executescript steps the pragma to the end; execute() frees only one page.
                await db.executescript(f"PRAGMA incremental_vacuum({4 * limit});")
                if checkpoint:
                    await db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            row = await (await db.execute("SELECT min(seq) FROM entries")).fetchone()
            return int(n), int(row[0]) if row and row[0] is not None else None

        return await self.run_write(step)

    async def run_write(self, fn: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        """Run `fn` on the writer connection inside the writer task, between commit groups.

        For maintenance of the file itself (agent.retention measures its pages): it never
        races an append. The journal's tables are read and written only by this module.
        A sqlite3.Error from `fn` comes back as JournalError.
        """
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._put(_Exec(fn, fut))
        return await fut

    def _put(self, op: _Op) -> None:
        if self._writer_task is None or self._writer_task.done():
            raise JournalError("journal is not open")
        self._queue.put_nowait(op)

    async def _writer(self) -> None:
        while True:
            group: list[_Op] = [await self._queue.get()]
            while len(group) < self.max_group and not self._queue.empty():
                group.append(self._queue.get_nowait())
            appends = [op for op in group if isinstance(op, _Append)]
            acks = [op for op in group if isinstance(op, _MarkAcked)]
            stops = [op for op in group if isinstance(op, _Stop)]
            if stops:
                await self._finish_group(group, appends, acks)
                for op in stops:
                    op.future.set_result(None)
                return
            await self._finish_group(group, appends, acks)

    async def _finish_group(
        self, group: list[_Op], appends: list[_Append], acks: list[_MarkAcked]
    ) -> None:
        """Commit one group and answer every op in it; errors go to the waiting callers."""
        ack = max((a.hwm for a in acks), default=None)
        if self.held_ack is not None:
            ack = max(ack or 0, self.acked_seq)  # a held mark rides along with any write
        try:
            appends = await self._admit(appends)
            results = await self._commit(appends, ack)
        except sqlite3.Error as exc:
            # Never swallowed: every waiting appender gets the error; nothing was committed.
            full = is_disk_full(exc)
            err = self._full_error() if full else None
            log.error(
                "journal %s: write failed, %d documents refused: %s",
                self.path,
                len(appends),
                err or exc,
            )
            if full and ack is not None:
                self._hold_ack(ack)  # acks are not lost on a full disk: see `acked_seq`
                for op in group:
                    if isinstance(op, _MarkAcked) and not op.future.done():
                        op.future.set_result(None)
            self._fail_group(
                group, err or JournalError(f"journal write failed, not confirmed: {exc}")
            )
            if full:
                await self._after_disk_full()
            return
        except Exception as exc:
            # A bug, not a disk problem: still answer every waiting till (never leave one
            # hanging) and keep the writer alive; the traceback goes to the log.
            log.exception("journal %s: unexpected error in the writer", self.path)
            self._fail_group(group, JournalError(f"journal write failed, not confirmed: {exc!r}"))
            return
        for app, res in zip(appends, results, strict=True):
            if app.future.done():
                continue
            if isinstance(res, JournalError):
                app.future.set_exception(res)
            else:
                app.future.set_result(res)
        for a in acks:
            if not a.future.done():
                a.future.set_result(None)
        for ex in [op for op in group if isinstance(op, _Exec)]:
            await self._exec(ex)

    def _full_error(self) -> JournalFull:
        free = None
        with contextlib.suppress(OSError):
            free = shutil.disk_usage(self.path.parent).free
        self.disk_full_free = free
        self.disk_full = (
            f"disk full: {free if free is not None else 'unknown'} bytes free on the journal's "
            f"filesystem ({self.path.parent})"
        )
        return JournalFull(
            f"{self.disk_full}; the document is NOT confirmed. Confirmed documents are kept; "
            "free disk space (the agent resumes by itself) or restore the link to head office "
            "so acknowledged entries can be pruned"
        )

    def _hold_ack(self, hwm: int) -> None:
        if hwm <= self.acked_seq:
            return  # already held (or saved)
        self.acked_seq, self.acked_at = hwm, now_ms()
        log.warning(
            "journal %s: head office's ack of seq %d is held in memory (saved: %d) until the "
            "disk has room",
            self.path,
            self.acked_seq,
            self.saved_acked_seq,
        )

    async def _after_disk_full(self) -> None:
        """Let the hook make room (the reserve), then write a held ack mark once more."""
        if self._guard is None or not self._guard.disk_filled():
            return
        if self.held_ack is None:
            return
        try:
            await self._commit([], self.acked_seq)
        except sqlite3.Error as exc:
            log.warning("journal %s: the held ack is still not written: %s", self.path, exc)

    @staticmethod
    def _fail_group(group: list[_Op], err: JournalError) -> None:
        for op in group:
            if not isinstance(op, _Stop) and not op.future.done():
                op.future.set_exception(err)

    async def _admit(self, appends: list[_Append]) -> list[_Append]:
        """Refuse a group's new documents when the disk budget is exhausted (acks still pass)."""
        if not appends or self._guard is None:
            return appends
        incoming = sum(len(a.body) + 200 for a in appends)  # + row, index and txn_id overhead
        reason = await self._guard.admit(self._require(self._db), incoming)
        if reason is None:
            return appends
        log.error("journal %s: %d documents refused: %s", self.path, len(appends), reason)
        err = JournalFull(reason)
        for a in appends:
            if not a.future.done():
                a.future.set_exception(err)
        return []

    async def _exec(self, op: _Exec) -> None:
        db = self._require(self._db)
        try:
            result = await op.fn(db)
        except sqlite3.Error as exc:
            await _rollback(db)
            log.error("journal %s: maintenance failed: %s", self.path, exc)
            if is_disk_full(exc) and self._guard is not None:
                self._guard.disk_filled()
            if not op.future.done():
                op.future.set_exception(JournalError(f"journal {self.path}: {exc}"))
        except Exception as exc:  # noqa: BLE001 - handed to the caller; the writer must live on
            await _rollback(db)
            if not op.future.done():
                op.future.set_exception(exc)
        else:
            if not op.future.done():
                op.future.set_result(result)

    async def _commit(
        self, appends: Sequence[_Append], ack: int | None
    ) -> list[Appended | JournalError]:
        db = self._require(self._db)
        try:
            return await self._commit_once(db, appends, ack, {})
        except sqlite3.IntegrityError:
            # A txn_id already journaled by an earlier group: look them up and retry the group
            # without them (rare: a POS retrying a submit whose confirmation it lost).
            ids = [a.txn_id for a in appends]
            marks = ",".join("?" * len(ids))
            rows = await db.execute_fetchall(
                f"SELECT txn_id, seq, body FROM entries WHERE txn_id IN ({marks})",  # noqa: S608
                ids,
            )
            known = {str(r[0]): (int(r[1]), bytes(r[2])) for r in rows}
            return await self._commit_once(db, appends, ack, known)

    async def _commit_once(
        self,
        db: aiosqlite.Connection,
        appends: Sequence[_Append],
        ack: int | None,
        known: dict[str, tuple[int, bytes]],
    ) -> list[Appended | JournalError]:
        seq, prev = self.last_seq, self._last_hash
        rows: list[tuple[int, str, str, int, bytes, bytes]] = []
        results: list[Appended | JournalError] = []
        for a in appends:
            old = known.get(a.txn_id)
            if old is not None:
                same = old[1] == a.body
                results.append(
                    Appended(old[0], a.txn_id, self.epoch, duplicate=True)
                    if same
                    else JournalConflict(a.txn_id, old[0])
                )
                continue
            seq += 1
            prev = entry_hash(prev, seq, a.kind, a.txn_id, a.ts, a.body)
            rows.append((seq, a.kind, a.txn_id, a.ts, a.body, prev))
            known[a.txn_id] = (seq, a.body)  # a duplicate inside the same group
            results.append(Appended(seq, a.txn_id, self.epoch))
        acked_at = now_ms()
        await db.execute("BEGIN IMMEDIATE")
        try:
            if rows:
                await db.executemany(
                    "INSERT INTO entries (seq, kind, txn_id, ts, body, hash) VALUES (?,?,?,?,?,?)",
                    rows,
                )
            if ack is not None:
                await db.execute(
                    "UPDATE outbox SET acked_seq = ?, acked_at = ? WHERE id = 1 AND acked_seq < ?",
                    (ack, acked_at, ack),
                )
            await db.execute("COMMIT")
        except BaseException:
            await _rollback(db)
            raise
        if rows or ack is not None:
            self.disk_full = None  # pages were written: there was room
        if rows:
            self.last_seq, self._last_hash = seq, prev
            self.commits += 1
            self._new_entries.set()
            self._new_entries = asyncio.Event()
            for listener in self._listeners:
                listener()
        if ack is not None:
            if ack > self.acked_seq:
                self.acked_seq, self.acked_at = ack, acked_at
            self.saved_acked_seq = max(self.saved_acked_seq, ack)
        return results

    def on_commit(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call `listener` after every commit that added entries; returns the remover."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    # --- reading --------------------------------------------------------------------------

    async def wait_beyond(self, seq: int, timeout: float | None = None) -> bool:
        """Wait until an entry after `seq` is committed; False on timeout."""
        while self.last_seq <= seq:
            try:
                async with asyncio.timeout(timeout):
                    await self._new_entries.wait()
            except TimeoutError:
                return self.last_seq > seq
        return True

    async def read_from(self, seq: int, limit: int, max_bytes: int | None = None) -> list[Entry]:
        """Committed entries from `seq` on, at most `limit` of them and (beyond the first)
        at most `max_bytes` of bodies."""
        db = self._require(self._reader)
        rows = await db.execute_fetchall(
            f"{SELECT_ENTRIES} WHERE seq >= ? ORDER BY seq LIMIT ?", (seq, limit)
        )
        out: list[Entry] = []
        size = 0
        for r in rows:
            size += len(r[4]) + 80
            if out and max_bytes is not None and size > max_bytes:
                break
            out.append(Entry(*r))
        return out

    async def hash_before(self, seq: int) -> bytes:
        """Chain hash of entry `seq - 1`, or the epoch's genesis for seq 1."""
        if seq <= 1:
            return genesis(self.lane, self.epoch)
        db = self._require(self._reader)
        rows = list(await db.execute_fetchall("SELECT hash FROM entries WHERE seq = ?", (seq - 1,)))
        if not rows:
            raise JournalError(f"entry {seq - 1} is not in the journal (pruned?)")
        return bytes(rows[0][0])

    @property
    def backlog(self) -> int:
        return self.last_seq - self.acked_seq

    def _require(self, db: aiosqlite.Connection | None) -> aiosqlite.Connection:
        if db is None:
            raise JournalError("journal is not open")
        return db

    def _fail_pending(self, err: JournalError) -> None:
        while not self._queue.empty():
            op = self._queue.get_nowait()
            if not op.future.done():
                op.future.set_exception(err)
