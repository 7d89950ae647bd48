"""The embedded head-office store: one SQLite file in WAL mode with synchronous=FULL.

Used from the ingest's single writer thread only. Writes of a group of messages share one
transaction; the lane positions they moved are cached in memory and written at commit, and the
cache is dropped on rollback so memory never runs ahead of the database.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path

from headoffice.db.base import (
    DEFAULT_MAX_EPOCHS_PER_LANE,
    HELD_COLUMNS,
    BatchWriter,
    DatabaseError,
    DocumentRow,
    EpochRefused,
    EpochRetired,
    HeldRow,
    JournalRow,
    LaneState,
    Owner,
    PendingWrites,
    QuarantineRow,
    catalog_updates,
    retired_reason,
    scrub_legacy_quarantine,
    status_row,
)
from headoffice.db.projection import Projections
from headoffice.db.sql import SqliteSql
from protocol.chain import genesis
from protocol.identity import LaneId
from protocol.messages import Status
from protocol.runtime import migrations

log = logging.getLogger(__name__)

_IN_CHUNK = 500  # host parameters per IN (...) list, far below SQLite's limit
# Lane positions cached in memory (this process is the only writer). A store sending hellos for
# ever new lanes or epochs must not grow head office's memory: beyond this many the oldest half
# is dropped after a commit, and read back from the database when a lane is heard again.
MAX_CACHED_LANES = 20_000


# Binding a bytes value (a journal row's body and hash) has sqlite3 look for an adapter the
# slow way (no adapter registered: the protocol's __adapt__, then the object's __conform__)
# before it binds the value itself as a BLOB (executemany of rows of four values, two of them
# bytes: 1.73 us a row without, 1.31 with the adapter below). The identity
# adapter binds the very same object, found at the first lookup (`bytes(b)` is `b`; the
# registry is keyed by exact type, so bytes subclasses are looked up as before).
sqlite3.register_adapter(bytes, bytes)


def connect(path: str | Path, *, readonly: bool = False) -> sqlite3.Connection:
    """Open the head-office database (read-only for status and reports)."""
    if readonly:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    else:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
    db.execute("PRAGMA busy_timeout=5000")
    return db


def migrate(db: sqlite3.Connection, what: str) -> None:
    migrations.apply_sqlite(db, "headoffice.db.schema", what, error=DatabaseError)


_JOURNAL_INSERT = (
    "INSERT INTO journal (store, lane, epoch, seq, kind, txn_id, ts, body, hash, "
    "received_at, applied) VALUES "
)
_DOCUMENTS_INSERT = (
    "INSERT INTO documents (txn_id, store, lane, epoch, seq, kind, ts, catalog_version) VALUES "
)
# A txn_id held already is skipped, not refused (and the row counts tell); a conflict on any
# other constraint still fails the statement.
_ON_CONFLICT_TXN_ID = " ON CONFLICT (txn_id) DO NOTHING"
_DOCUMENTS_INSERT_NEW = (_DOCUMENTS_INSERT, _ON_CONFLICT_TXN_ID)
# Rows per INSERT statement: up to this many, in powers of two (a few statements, each
# prepared once and kept in the connection's statement cache). One statement of many rows
# costs SQLite one step instead of one per row: a fifth less CPU than executemany for journal
# rows. 128 x 11 parameters stays far below SQLITE_MAX_VARIABLE_NUMBER (32766).
ROWS_PER_INSERT = 128


def _insert_rows(
    db: sqlite3.Connection,
    insert: str | tuple[str, str],
    width: int,
    rows: Sequence[Sequence[object]],
) -> int:
    """Insert `rows` (each of `width` values) with multi-row INSERTs: `insert` is the
    statement up to VALUES, or (that, a suffix). Returns the rows inserted."""
    head, tail = (insert, "") if isinstance(insert, str) else insert
    done = 0
    i, n = 0, len(rows)
    while i < n:
        k = ROWS_PER_INSERT
        while k > n - i:
            k //= 2
        values: list[object] = []
        for row in rows[i : i + k]:
            values += row  # a list grown by each row: under half the cost of chain()
        done += db.execute(_multi_row_sql(head, tail, width, k), values).rowcount
        i += k
    return done


@functools.cache
def _multi_row_sql(head: str, tail: str, width: int, rows: int) -> str:
    one = "(" + ",".join("?" * width) + ")"
    return head + ",".join([one] * rows) + tail


class SqliteDatabase(BatchWriter):
    def __init__(
        self,
        path: str | Path,
        *,
        projections: Projections,
        max_epochs_per_lane: int = DEFAULT_MAX_EPOCHS_PER_LANE,
        accepts_retired: bool = False,
    ) -> None:
        self.path = Path(path)
        self.projections = projections
        self.max_epochs_per_lane = max_epochs_per_lane
        self.accepts_retired = accepts_retired
        try:
            self.db = connect(self.path)
            migrate(self.db, f"head-office database {self.path}")
            scrubbed = scrub_legacy_quarantine(SqliteSql(self.db))
        except sqlite3.Error as exc:
            raise DatabaseError(f"cannot open head-office database {self.path}: {exc}") from exc
        if scrubbed:
            log.info("%s: %d quarantine rows masked and cut (schema 4)", self.path, scrubbed)
        self.max_cached_lanes = MAX_CACHED_LANES
        self._lanes: dict[tuple[str, str, int], LaneState] = {}
        self._dirty: dict[tuple[str, str, int], LaneState] = {}
        self._counters: dict[str, int] = {}
        self._catalogs: dict[tuple[str, str], int] = {}  # catalog versions lanes said, by lane
        # Lane epochs found not retired in this transaction: a retire by another process
        # takes effect at the next transaction, whatever the lane cache holds.
        self._not_retired: set[tuple[str, str, int]] = set()
        self._pending = PendingWrites()
        self._sql = SqliteSql(self.db)

    @property
    def sql(self) -> SqliteSql:
        return self._sql

    @property
    def cached_lane_count(self) -> int:
        """Lane positions held in memory now (kept at most max_cached_lanes; the others are
        read back from the database when their lane sends again)."""
        return len(self._lanes)

    # --- transactions ---------------------------------------------------------------------

    def _begin(self) -> None:
        if not self.db.in_transaction:
            self.db.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        if not self.db.in_transaction:
            return
        try:
            self.flush()
            self.db.executemany(
                "UPDATE lanes SET hwm = ?, last_hash = ?, lane_last_seq = ?, gaps = ?, "
                "redelivered = ?, last_seen = ? WHERE store = ? AND lane = ? AND epoch = ?",
                [
                    (
                        s.hwm,
                        s.last_hash,
                        s.lane_last_seq,
                        s.gaps,
                        s.redelivered,
                        self._now,
                        s.lane.store,
                        s.lane.lane,
                        s.epoch,
                    )
                    for s in self._dirty.values()
                ],
            )
            self.db.executemany(
                "INSERT INTO counters (name, value) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
                list(self._counters.items()),
            )
            if self._catalogs:
                self.db.executemany(*catalog_updates(self._catalogs, "sqlite"))
            self.db.execute("COMMIT")
        except sqlite3.Error as exc:
            self.rollback()
            raise DatabaseError(f"commit failed, nothing acknowledged: {exc}") from exc
        self._dirty.clear()
        self._counters.clear()
        self._catalogs.clear()
        self._not_retired.clear()
        if len(self._lanes) > self.max_cached_lanes:
            for key in list(self._lanes)[: len(self._lanes) // 2]:
                del self._lanes[key]

    def rollback(self) -> None:
        if self.db.in_transaction:
            self.db.execute("ROLLBACK")
        self._pending.clear()
        self._lanes.clear()
        self._dirty.clear()
        self._counters.clear()
        self._catalogs.clear()
        self._not_retired.clear()

    def close(self) -> None:
        self.rollback()
        self.db.close()

    _now = 0

    # --- lanes ----------------------------------------------------------------------------

    def lock_lanes(self, lanes: Sequence[tuple[LaneId, int]]) -> None:
        """BEGIN IMMEDIATE already serialises writers on SQLite: one lock for the file. The
        lane cache stays valid across transactions because this process is the only writer
        (an importer colliding with it makes a group fail, and rollback drops the cache)."""
        self._begin()

    def lane_state(self, lane: LaneId, epoch: int) -> LaneState | None:
        key = (lane.store, lane.lane, epoch)
        state = self._lanes.get(key)
        if state is None:
            row = self.db.execute(
                "SELECT hwm, last_hash, lane_last_seq, gaps, redelivered FROM lanes "
                "WHERE store = ? AND lane = ? AND epoch = ?",
                key,
            ).fetchone()
            if row is None:
                return None
            state = LaneState(lane, epoch, row[0], bytes(row[1]), row[2], row[3], row[4])
            self._lanes[key] = state
        return state

    def _lane_for_write(self, lane: LaneId, epoch: int, now_ms: int) -> LaneState:
        self._begin()
        self._now = now_ms
        self._refuse_retired(lane, epoch)
        state = self.lane_state(lane, epoch)
        if state is None:
            (epochs,) = self.db.execute(
                "SELECT count(*) FROM lanes WHERE store = ? AND lane = ?", (lane.store, lane.lane)
            ).fetchone()
            if epochs >= self.max_epochs_per_lane:
                self._count("epochs_refused")
                raise EpochRefused(
                    f"lane {lane} already has {epochs} epochs on record, the most head office "
                    "keeps for one lane (ingest.max_epochs_per_lane); a new epoch is refused"
                )
            state = LaneState(lane, epoch, 0, genesis(lane, epoch))
            self.db.execute(
                "INSERT INTO lanes (store, lane, epoch, hwm, last_hash, first_seen, last_seen) "
                "VALUES (?, ?, ?, 0, ?, ?, ?)",
                (lane.store, lane.lane, epoch, state.last_hash, now_ms, now_ms),
            )
            self._lanes[(lane.store, lane.lane, epoch)] = state
        self._dirty[(lane.store, lane.lane, epoch)] = state
        return state

    def _refuse_retired(self, lane: LaneId, epoch: int) -> None:
        """Raise EpochRetired for an epoch an operator retired (one lookup per lane epoch and
        transaction), unless this database was opened for an import."""
        key = (lane.store, lane.lane, epoch)
        if self.accepts_retired or key in self._not_retired:
            return
        row = self.db.execute(
            "SELECT retired_at FROM retired_epochs WHERE store = ? AND lane = ? AND epoch = ?",
            key,
        ).fetchone()
        if row is not None:
            self._count("retired_epochs_refused")
            raise EpochRetired(retired_reason(lane, epoch, row[0]))
        self._not_retired.add(key)

    def note_hello(
        self, lane: LaneId, epoch: int, last_seq: int, now_ms: int, *, catalog: int | None = None
    ) -> LaneState:
        state = self._lane_for_write(lane, epoch, now_ms)
        state.lane_last_seq = max(state.lane_last_seq, last_seq)
        if catalog is not None:
            self._catalogs[(lane.store, lane.lane)] = catalog
        return state

    # --- ingest ---------------------------------------------------------------------------

    def _insert_journal(self, journal: list[JournalRow]) -> None:
        _insert_rows(self.db, _JOURNAL_INSERT, 11, journal)

    def _insert_held(self, held: list[HeldRow]) -> None:
        self.db.executemany(
            f"INSERT INTO held ({HELD_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) "  # noqa: S608
            "ON CONFLICT (store, lane, epoch, seq) DO NOTHING",
            held,
        )

    def _owners(self, txn_ids: list[str]) -> dict[str, Owner]:
        out: dict[str, Owner] = {}
        for i in range(0, len(txn_ids), _IN_CHUNK):
            chunk = txn_ids[i : i + _IN_CHUNK]
            marks = ",".join("?" * len(chunk))
            for txn, store, lane, epoch, seq, kind, body in self.db.execute(
                "SELECT d.txn_id, d.store, d.lane, d.epoch, d.seq, d.kind, j.body "  # noqa: S608
                "FROM documents d LEFT JOIN journal j ON j.store = d.store AND j.lane = d.lane "
                f"AND j.epoch = d.epoch AND j.seq = d.seq WHERE d.txn_id IN ({marks})",
                chunk,
            ):
                kept = None if body is None else bytes(body)
                out[txn] = Owner(store, lane, epoch, seq, kind, kept)
        return out

    def _insert_new_documents(self, documents: list[DocumentRow]) -> set[str]:
        """All at once when none is held yet (a drain: each document new), told by the
        statements' row counts; otherwise undone and done as before, looking first."""
        if not documents:
            return set()
        self.db.execute("SAVEPOINT new_documents")
        try:
            inserted = _insert_rows(self.db, _DOCUMENTS_INSERT_NEW, 8, documents)
        except BaseException:
            with contextlib.suppress(sqlite3.Error):  # the error raised says more
                self.db.execute("ROLLBACK TO new_documents")
                self.db.execute("RELEASE new_documents")
            raise
        if inserted != len(documents):
            # Some are held already (a resubmission, a redelivery): which ones is read first.
            self.db.execute("ROLLBACK TO new_documents")
            self.db.execute("RELEASE new_documents")
            return self._insert_unheld_documents(documents)
        self.db.execute("RELEASE new_documents")
        return {d[0] for d in documents}

    def _insert_unheld_documents(self, documents: list[DocumentRow]) -> set[str]:
        # One writer owns the file, so looking first and inserting the rest cannot race.
        held = self._existing_txn_ids(d[0] for d in documents)
        rows = [d for d in documents if d[0] not in held]
        _insert_rows(self.db, _DOCUMENTS_INSERT, 8, rows)
        return {d[0] for d in rows}

    def _existing_txn_ids(self, txn_ids: Iterable[str]) -> set[str]:
        ids = list(txn_ids)
        found: set[str] = set()
        for i in range(0, len(ids), _IN_CHUNK):
            chunk: Sequence[str] = ids[i : i + _IN_CHUNK]
            marks = ",".join("?" * len(chunk))
            found.update(
                r[0]
                for r in self.db.execute(
                    f"SELECT txn_id FROM documents WHERE txn_id IN ({marks})",  # noqa: S608
                    chunk,
                )
            )
        return found

    def save_status(self, status: Status) -> None:
        self._begin()
        if status.state == "online":
            self._catalogs[(status.lane.store, status.lane.lane)] = status.catalog
        self.db.execute(
            "INSERT INTO lane_status (store, lane, state, version, backlog, at) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (store, lane) DO UPDATE SET "
            "state = excluded.state, version = excluded.version, backlog = excluded.backlog, "
            "at = excluded.at",
            status_row(status),
        )

    def quarantine(
        self,
        topic: str,
        lane: LaneId | None,
        reason: str,
        raw: bytes,
        now_ms: int,
        *,
        fold: str | None = None,
        times: int = 1,
    ) -> None:
        self._begin()
        self._count("quarantined", times)
        row = QuarantineRow.of(topic, reason, raw, fold=fold)
        self.db.execute(
            "INSERT INTO quarantine (first_at, last_at, topic, store, lane, reason, raw, "
            "raw_len, raw_sha256, fingerprint, times) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (fingerprint) DO UPDATE SET times = times + excluded.times, "
            "last_at = excluded.last_at",
            (
                now_ms,
                now_ms,
                topic,
                lane.store if lane else None,
                lane.lane if lane else None,
                row.reason,
                row.kept,
                row.raw_len,
                row.raw_sha256,
                row.fingerprint,
                times,
            ),
        )
