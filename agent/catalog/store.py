"""The lane's catalog file: the store's view at one version, and the version on its way in.

Its own SQLite file (WAL, synchronous=FULL), schema files in agent/catalog/schema. `rows` holds
exactly the version named in `meta`; a new version replaces it inside one transaction whose
view hash is compared with head office's before COMMIT, so readers (agent.catalog.view) see a
complete version, never half of one (invariant 10). What is still arriving (delta pages,
snapshot chunks) is staged in `transfer`/`staged`, each part committed as it comes, so a kill -9
or a cut link resumes from what was staged.

Writes run one at a time in a worker thread (sqlite3, serialised by a lock), so applying a
100,000-row snapshot never stalls the event loop that carries sales.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import msgpack

from protocol import catalog as contract
from protocol.errors import LanesyncError
from protocol.runtime import migrations as schema

log = logging.getLogger(__name__)

T = TypeVar("T")
Change = Sequence[Any]  # (dataset, key, row | None), checked by protocol.catalog on arrival


class CatalogStoreError(LanesyncError):
    """The catalog file could not do what was asked; the version it holds is unchanged."""


class HashMismatch(CatalogStoreError):
    """A version's rows do not add up to head office's view hash: rolled back, not applied."""


@dataclass(frozen=True, slots=True)
class Held:
    """The complete version the lane holds: 0 with the empty view's hash before the first."""

    version: int
    hash: bytes
    rows: int


@dataclass(frozen=True, slots=True)
class Transfer:
    """A version being staged: delta pages from `base`, or snapshot chunks of `target`."""

    kind: str  # "delta" or "snapshot"
    base: int
    target: int
    hash: bytes
    rows: int
    chunks: int | None
    size: int | None
    after: Any  # delta: [dataset, key] of the last change staged, or None
    parts: frozenset[int]  # staged part numbers (snapshot: chunk indexes)


# What the view looks a row up by other than its key (the `refs` table): an item by each of its
# GTINs, a setting by its name. Everything else is found by its key or a prefix of it (a price
# by item, a tax rate by code: protocol.catalog keys are key columns joined by `|`).
def _refs(dataset: str, row: dict[str, Any]) -> list[str]:
    match dataset:
        case "items":
            return [f"gtin:{g}" for g in row.get("gtins") or ()]
        case "settings":
            return [str(row["name"])]
        case _:
            return []


def _pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def _unpack(blob: bytes) -> Any:
    return msgpack.unpackb(blob, raw=False)


def decode_row(dataset: str, body: bytes) -> dict[str, Any]:
    """A stored row back as its map (absent optionals left out, as on the wire)."""
    name, values = _unpack(body)
    columns = contract.DATASETS[name].column_names
    return {c: v for c, v in zip(columns, values, strict=True) if v is not None}


class CatalogStore:
    """Async context manager over the lane's catalog file; see the module docstring."""

    def __init__(self, path: str | Path, store: str) -> None:
        self.path = Path(path)
        self.store = store
        self._db: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()
        self.held = Held(0, contract.EMPTY_HASH, 0)
        self.head_version = 0  # the newest head seen from head office (for `lanesync status`)
        self.head_at: int | None = None
        self._listeners: list[Callable[[Held], None]] = []

    # --- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await asyncio.to_thread(self._open)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        async with self._lock:
            if self._db is not None:
                await asyncio.to_thread(self._db.close)
                self._db = None

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # check_same_thread off: every use is serialised by self._lock, from to_thread.
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise CatalogStoreError(f"cannot open catalog {self.path}: {exc}") from exc
        try:
            # WAL lets the view read the last complete version while a new one is written;
            # FULL fsyncs every commit, so a version (or a staged chunk) survives power loss.
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA busy_timeout=5000")
            self._migrate(db)
            self._load(db)
        except sqlite3.Error as exc:
            db.close()
            raise CatalogStoreError(f"cannot open catalog {self.path}: {exc}") from exc
        except BaseException:
            db.close()
            raise
        self._db = db

    def _migrate(self, db: sqlite3.Connection) -> None:
        schema.apply_sqlite(
            db,
            "agent.catalog.schema",
            f"catalog {self.path}",
            error=CatalogStoreError,
            subject=str(self.path),
        )

    def _load(self, db: sqlite3.Connection) -> None:
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        owner = meta.get("store")
        if owner is None:
            db.execute("INSERT INTO meta (key, value) VALUES ('store', ?)", (self.store,))
        elif owner != self.store:
            raise CatalogStoreError(
                f"catalog {self.path} holds store {owner}'s view, but the configuration says "
                f"store {self.store}; point catalog.path at this lane's own file"
            )
        if "version" in meta:
            self.held = Held(int(meta["version"]), bytes(meta["hash"]), int(meta["rows"]))
        self.head_version = int(meta.get("head_version", 0))
        self.head_at = meta.get("head_at")

    # --- running work in the thread -------------------------------------------------------

    async def _run(self, fn: Callable[[sqlite3.Connection], T], *, durable: bool = True) -> T:
        """Run `fn` in one transaction in the worker thread, one at a time.

        `durable=False` commits with synchronous=NORMAL (no fsync of its own; the next durable
        commit or a checkpoint carries it to disk): for staged parts, which a power cut may lose
        (WAL drops whole transactions from the tail, never half of one) and which are then
        simply fetched again. A version, and the head seen, always commit with FULL.
        """
        async with self._lock:
            db = self._db
            if db is None:
                raise CatalogStoreError(f"catalog {self.path} is closed")
            # A cancelled await does not stop the thread: wait for it before the lock is let
            # go, so the next write never meets a transaction still open.
            work = asyncio.ensure_future(asyncio.to_thread(self._tx_checked, db, fn, durable))
            try:
                return await asyncio.shield(work)
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):
                    await work
                raise

    def _tx_checked(
        self, db: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T], durable: bool
    ) -> T:
        try:
            return self._tx(db, fn, durable)
        except sqlite3.Error as exc:
            # A full disk, a locked or damaged file: the version held stays (rolled back).
            raise CatalogStoreError(f"catalog {self.path}: {exc}") from exc

    @staticmethod
    def _tx(db: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T], durable: bool) -> T:
        if not durable:
            db.execute("PRAGMA synchronous=NORMAL")  # outside a transaction, as SQLite requires
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                out = fn(db)
                db.execute("COMMIT")
            except BaseException:
                # Also after a failed COMMIT (a full disk leaves the transaction open).
                if db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        db.execute("ROLLBACK")
                raise
        finally:
            if not durable:
                db.execute("PRAGMA synchronous=FULL")
        return out

    def on_version(self, listener: Callable[[Held], None]) -> Callable[[], None]:
        """Call `listener` after each new version is committed; returns the unsubscribe."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def _became(self, held: Held) -> None:
        self.held = held
        for listener in list(self._listeners):
            listener(held)

    # --- the head -------------------------------------------------------------------------

    async def note_head(self, version: int, at: int | None) -> None:
        """Remember the newest head seen, so `lanesync status` can say the lane is behind."""
        if version == self.head_version:
            return

        def write(db: sqlite3.Connection) -> None:
            db.executemany(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                [("head_version", version), ("head_at", at)],
            )

        await self._run(write)
        self.head_version, self.head_at = version, at

    # --- applying a version ---------------------------------------------------------------

    async def apply_delta(
        self, base: int, target: int, changes: Sequence[Change], hash_: bytes, rows: int
    ) -> Held:
        """Apply an inline delta (the head's `changes`) from `base` to `target` whole."""
        held = self.held
        if base != held.version:
            raise CatalogStoreError(
                f"delta starts at version {base}, the lane holds {held.version}"
            )

        def apply(db: sqlite3.Connection) -> Held:
            h, n = self._apply_changes(db, held.hash, held.rows, changes)
            return self._commit_version(db, target, h, n, hash_, rows)

        new = await self._run(apply)
        self._became(new)
        return new

    def _apply_changes(
        self, db: sqlite3.Connection, h: bytes, n: int, changes: Iterable[Change]
    ) -> tuple[bytes, int]:
        for change in changes:
            dataset, key, row = self._change(change)
            k = key
            old = db.execute(
                "SELECT digest FROM rows WHERE dataset = ? AND key = ?", (dataset, k)
            ).fetchone()
            if old is not None:
                h = contract.hash_sub(h, bytes(old[0]))
                n -= 1
                db.execute("DELETE FROM refs WHERE dataset = ? AND key = ?", (dataset, k))
            if row is None:
                if old is not None:
                    db.execute("DELETE FROM rows WHERE dataset = ? AND key = ?", (dataset, k))
                continue
            ds = contract.DATASETS[dataset]
            body = contract.row_bytes(ds, row)
            digest = contract.row_digest(ds, row)
            db.execute(
                "INSERT OR REPLACE INTO rows (dataset, key, body, digest) VALUES (?, ?, ?, ?)",
                (dataset, k, body, digest),
            )
            db.executemany(
                "INSERT OR IGNORE INTO refs (dataset, ref, key) VALUES (?, ?, ?)",
                [(dataset, ref, k) for ref in _refs(dataset, row)],
            )
            h = contract.hash_add(h, digest)
            n += 1
        return h, n

    @staticmethod
    def _change(change: Change) -> tuple[str, Any, dict[str, Any] | None]:
        if not isinstance(change, list | tuple) or len(change) != 3:
            raise CatalogStoreError(f"a change must be [dataset, key, row|nil], got {change!r:.80}")
        dataset, key, row = change
        if dataset not in contract.DATASETS:
            raise CatalogStoreError(f"a change names unknown dataset {dataset!r:.40}")
        if row is not None and not isinstance(row, dict):
            raise CatalogStoreError(f"a {dataset} change's row must be a map or nil")
        return dataset, key, row

    def _commit_version(
        self, db: sqlite3.Connection, target: int, h: bytes, n: int, want: bytes, rows: int
    ) -> Held:
        """Record `target` as held, or raise HashMismatch (the caller's transaction rolls back)."""
        if h != want or n != rows:
            raise HashMismatch(
                f"version {target}: the lane's view adds up to {n} rows, hash {h.hex()[:16]}..., "
                f"head office says {rows} rows, hash {want.hex()[:16]}...; not applied"
            )
        db.executemany(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
            [
                ("version", target),
                ("hash", h),
                ("rows", n),
                ("applied_at", int(time.time() * 1000)),
            ],
        )
        return Held(target, h, n)

    # --- staging a transfer ---------------------------------------------------------------

    async def transfer(self) -> Transfer | None:
        """The transfer staged (possibly by an earlier run of the agent), or None."""

        def read(db: sqlite3.Connection) -> Transfer | None:
            t = db.execute(
                "SELECT kind, base, target, hash, rows, chunks, size, after FROM transfer"
            ).fetchone()
            if t is None:
                return None
            parts = frozenset(int(r[0]) for r in db.execute("SELECT part FROM staged"))
            after = None if t[7] is None else _unpack(t[7])
            return Transfer(t[0], t[1], t[2], bytes(t[3]), t[4], t[5], t[6], after, parts)

        return await self._run(read)

    async def begin(
        self,
        kind: str,
        base: int,
        target: int,
        hash_: bytes,
        rows: int,
        *,
        chunks: int | None = None,
        size: int | None = None,
    ) -> None:
        """Start staging a new transfer, dropping whatever was staged before."""

        def write(db: sqlite3.Connection) -> None:
            self._clear_staging(db)
            db.execute(
                "INSERT INTO transfer (id, kind, base, target, hash, rows, chunks, size, started)"
                " VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?)",
                (kind, base, target, hash_, rows, chunks, size, int(time.time() * 1000)),
            )

        await self._run(write)

    async def stage(self, part: int, changes: Sequence[Change], after: Any = None) -> None:
        """Stage one delta page or snapshot chunk, durably (it survives a kill -9).

        A snapshot chunk's rows are made ready to copy in (canonical bytes, digest, refs) here,
        while later chunks are still on their way, so `finish` is a copy between tables.
        """

        def write(db: sqlite3.Connection) -> None:
            t = db.execute("SELECT kind FROM transfer").fetchone()
            if t is None:
                raise CatalogStoreError("no transfer is staged; the part was dropped")
            if t[0] == "snapshot":
                self._stage_rows(db, part, changes)
                db.execute("INSERT OR REPLACE INTO staged (part) VALUES (?)", (part,))
                return
            db.execute(
                "INSERT OR REPLACE INTO staged (part, changes) VALUES (?, ?)",
                (part, _pack([list(c) for c in changes])),
            )
            if after is not None:
                db.execute("UPDATE transfer SET after = ?", (_pack(list(after)),))

        await self._run(write, durable=False)

    def _stage_rows(self, db: sqlite3.Connection, part: int, changes: Iterable[Change]) -> None:
        rows: list[tuple[str, str, int, bytes, bytes]] = []
        refs: list[tuple[str, str, str, int]] = []
        for dataset, key, row in changes:  # checked whole by SnapshotReply.from_map
            if row is None:
                raise CatalogStoreError(f"a snapshot chunk removes a {dataset} row")
            ds = contract.DATASETS[dataset]
            rows.append(
                (dataset, key, part, contract.row_bytes(ds, row), contract.row_digest(ds, row))
            )
            refs.extend((dataset, ref, key, part) for ref in _refs(dataset, row))
        if db.execute("SELECT 1 FROM staged WHERE part = ?", (part,)).fetchone() is not None:
            # A chunk staged again (its reply came twice) replaces its own rows only.
            db.execute("DELETE FROM staged_rows WHERE part = ?", (part,))
            db.execute("DELETE FROM staged_refs WHERE part = ?", (part,))
        db.executemany(
            "INSERT INTO staged_rows (dataset, key, part, body, digest) VALUES (?, ?, ?, ?, ?)",
            rows,
        )
        db.executemany(
            "INSERT INTO staged_refs (dataset, ref, key, part) VALUES (?, ?, ?, ?)", refs
        )

    @staticmethod
    def _clear_staging(db: sqlite3.Connection) -> None:
        for table in ("staged", "staged_rows", "staged_refs", "transfer"):
            db.execute(f"DELETE FROM {table}")  # noqa: S608 - fixed table names

    async def drop(self) -> None:
        """Forget the staged transfer (expired, refused, or superseded)."""
        await self._run(self._clear_staging)

    async def finish(self) -> Held:
        """Apply the staged transfer whole, in one transaction, and drop its staging.

        A delta is applied over the held version; a snapshot replaces every row. Either way the
        result must add up to the transfer's hash and row count, or nothing changes
        (HashMismatch; the staging is dropped, since it cannot become right).
        """
        held = self.held

        def apply(db: sqlite3.Connection) -> Held:
            t = db.execute("SELECT kind, base, target, hash, rows, chunks FROM transfer").fetchone()
            if t is None:
                raise CatalogStoreError("no transfer is staged")
            kind, base, target, want, rows, chunks = t
            parts = [int(r[0]) for r in db.execute("SELECT part FROM staged ORDER BY part")]
            if kind == "snapshot":
                if parts != list(range(chunks)):
                    raise CatalogStoreError(
                        f"snapshot of version {target} has {len(parts)} of {chunks} chunks staged"
                    )
                h, n = self._copy_snapshot(db)
            else:
                if base != held.version:
                    raise CatalogStoreError(
                        f"staged delta starts at version {base}, the lane holds {held.version}"
                    )
                h, n = held.hash, held.rows
                for part in parts:
                    blob = db.execute("SELECT changes FROM staged WHERE part = ?", (part,))
                    h, n = self._apply_changes(db, h, n, _unpack(blob.fetchone()[0]))
            new = self._commit_version(db, target, h, n, bytes(want), rows)
            self._clear_staging(db)
            return new

        try:
            new = await self._run(apply)
        except HashMismatch:
            await self.drop()
            raise
        self._became(new)
        return new

    @staticmethod
    def _copy_snapshot(db: sqlite3.Connection) -> tuple[bytes, int]:
        """Replace the view by the staged snapshot rows; their hash and count, from scratch."""
        db.execute("DELETE FROM rows")
        db.execute("DELETE FROM refs")
        try:
            db.execute(
                "INSERT INTO rows (dataset, key, body, digest)"
                " SELECT dataset, key, body, digest FROM staged_rows"
            )
        except sqlite3.IntegrityError as exc:
            # Two chunks hold the same row: not head office's view; refused like a bad hash.
            raise HashMismatch(f"the snapshot's chunks repeat a row ({exc})") from exc
        db.execute(
            "INSERT OR IGNORE INTO refs (dataset, ref, key)"
            " SELECT dataset, ref, key FROM staged_refs"
        )
        n = int(db.execute("SELECT count(*) FROM staged_rows").fetchone()[0])
        digests = db.execute("SELECT digest FROM staged_rows")
        return contract.hash_sum(bytes(d) for (d,) in digests), n


@contextlib.contextmanager
def open_readonly(path: str | Path) -> Any:
    """A read-only sqlite3 connection to a catalog file (safe while the agent writes)."""
    db = sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True)
    try:
        yield db
    finally:
        db.close()
