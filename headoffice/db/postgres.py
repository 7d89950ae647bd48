"""The head-office store on PostgreSQL, for several ingest workers over one database.

Same contract as SqliteDatabase (headoffice.db.base decides, this only persists), with what
sharing the database with other worker processes demands:

- Lane positions are never trusted across transactions: `lock_lanes` locks the rows of the
  lanes a group touches (SELECT ... FOR UPDATE, in (store, lane, epoch) order so two workers
  never wait on each other in a cycle) and reads their state under that lock. Per-lane order
  then holds whichever worker a batch reached.
- Statuses and counters, rows every worker writes, are buffered and written at commit in a
  fixed order, for the same reason.
- Any psycopg error rolls the group back and raises DatabaseError; a connection that broke
  (server restart, pg_terminate_backend) is opened again at the next group, so the ingest
  process lives on and lanes simply resend what was not acknowledged.

Rows are written per group, not per batch (BatchWriter.flush): all the journal rows of a group
with one binary COPY, its documents staged with one binary COPY into a temporary table and
merged with INSERT ... ON CONFLICT (txn_id) DO NOTHING RETURNING txn_id, which says which
txn_ids are new. Measured on the 2-core dev machine (2026-11-22, 30 transactions of 1,000
journal rows, two runs each, inserts only): COPY (FORMAT BINARY) 62,000-84,000 rows/s,
executemany (psycopg pipelines it) 20,000-24,000, INSERT ... SELECT FROM unnest(arrays)
10,000-16,000. COPY sends the rows as one stream with no per-row statement or parameter
parsing; for the documents merge (2026-12-01, groups of 1,800) staging by COPY took half the
client CPU of unnest() arrays, which psycopg builds in Python. The merge needs no query plan to
find duplicates (the unique index decides), so it cannot turn into a sequential scan of a table
that grew faster than autovacuum analyzed it, which is what a SELECT ... = ANY() did. A txn_id
another worker inserts concurrently waits for that worker's commit and is then skipped;
documents are merged in txn_id order, so two workers wait for each other without deadlock.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import psycopg

from headoffice.catalog.registry import Registry
from headoffice.db.base import (
    DEFAULT_MAX_EPOCHS_PER_LANE,
    HELD_COLUMNS,
    ApplyResult,
    BatchWriter,
    CheckedBatch,
    DatabaseError,
    DocumentRow,
    EpochRefused,
    EpochRetired,
    HeldEntry,
    HeldOutcome,
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
from headoffice.db.sql import PgSql
from protocol.chain import genesis
from protocol.identity import LaneId
from protocol.messages import JournalBatch, Status
from protocol.runtime import migrations

log = logging.getLogger(__name__)

T = TypeVar("T")
LaneKey = tuple[str, str, int]

_JOURNAL_COPY = (
    "COPY journal (store, lane, epoch, seq, kind, txn_id, ts, body, hash, received_at, applied) "
    "FROM STDIN (FORMAT BINARY)"
)
_JOURNAL_TYPES = ["text", "text", "int8", "int8", "text", "text", "int8"]
_JOURNAL_TYPES += ["bytea", "bytea", "int8", "int2"]
# The group's documents are staged in a temporary table of the connection, then merged.
_DOCUMENTS_STAGE = (
    "CREATE TEMPORARY TABLE documents_in (txn_id TEXT NOT NULL, store TEXT NOT NULL, "
    "lane TEXT NOT NULL, epoch BIGINT NOT NULL, seq BIGINT NOT NULL, kind TEXT NOT NULL, "
    "ts BIGINT NOT NULL, catalog_version BIGINT)"
)
_DOCUMENTS_STAGE_COPY = (
    "COPY documents_in (txn_id, store, lane, epoch, seq, kind, ts, catalog_version) "
    "FROM STDIN (FORMAT BINARY)"
)
_DOCUMENTS_TYPES = ["text", "text", "text", "int8", "int8", "text", "int8", "int8"]
_LANE_COLS = "store, lane, epoch, hwm, last_hash, lane_last_seq, gaps, redelivered"
# Lock order: byte order ("C" collation), the order Python sorts the same keys in.
_LANE_ORDER = 'store COLLATE "C", lane COLLATE "C", epoch'


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def connect(url: str, *, readonly: bool = False) -> psycopg.Connection[tuple[Any, ...]]:
    """Open a connection in autocommit mode: transactions are begun explicitly (sql.PgSql)."""
    conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
    if readonly:
        conn.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
    return conn


def migrate(conn: psycopg.Connection[tuple[Any, ...]], what: str) -> None:
    """Bring the schema up to date (protocol.runtime.migrations, locked per schema)."""
    migrations.apply_postgres(conn, "headoffice.db.schema_pg", what, "lanesync-headoffice")


class PostgresDatabase(BatchWriter):
    def __init__(
        self,
        url: str,
        *,
        projections: Projections,
        max_epochs_per_lane: int = DEFAULT_MAX_EPOCHS_PER_LANE,
        accepts_retired: bool = False,
    ) -> None:
        self.url = url
        self.projections = projections
        self.what = f"head-office database {redact(url)}"
        self.max_epochs_per_lane = max_epochs_per_lane
        self.accepts_retired = accepts_retired
        self._sql = PgSql(self._open())
        self._lanes: dict[LaneKey, LaneState] = {}  # locked in this transaction
        self._refused: dict[LaneKey, int] = {}  # new epochs refused in this transaction
        self._retired: dict[LaneKey, int] = {}  # retired epochs locked here: when (ms)
        self._dirty: dict[LaneKey, LaneState] = {}
        self._statuses: dict[tuple[str, str], Status] = {}
        self._counters: dict[str, int] = {}
        self._catalogs: dict[tuple[str, str], int] = {}  # catalog versions lanes said, by lane
        self._pending = PendingWrites()
        self._now = 0

    def _open(self) -> psycopg.Connection[tuple[Any, ...]]:
        try:
            conn = connect(self.url)
        except psycopg.Error as exc:
            raise DatabaseError(f"cannot open {self.what}: {exc}") from exc
        try:
            migrate(conn, self.what)
            scrubbed = scrub_legacy_quarantine(PgSql(conn))
            if scrubbed:
                log.info("%s: %d quarantine rows masked and cut (schema 4)", self.what, scrubbed)
            conn.execute(_DOCUMENTS_STAGE)
        except psycopg.Error as exc:
            conn.close()
            raise DatabaseError(f"migrating {self.what}: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        return conn

    @property
    def sql(self) -> PgSql:
        return self._sql

    @property
    def conn(self) -> psycopg.Connection[tuple[Any, ...]]:
        return self._sql.conn

    def _guard(self, what: str, fn: Callable[[], T]) -> T:
        """Run fn; a database error rolls the whole group back and becomes DatabaseError."""
        try:
            return fn()
        except psycopg.Error as exc:
            self.rollback()
            raise DatabaseError(f"{what} failed, nothing acknowledged: {exc}") from exc

    # --- transactions ---------------------------------------------------------------------

    def _ensure_open(self) -> None:
        if self.conn.closed or self.conn.broken:
            log.warning("%s: connection lost; opening it again", self.what)
            self.conn.close()
            self._sql.conn = self._open()

    def _begin(self) -> None:
        self._ensure_open()
        self._sql.begin()

    def commit(self) -> None:
        if not self._sql.in_transaction:
            return
        self._guard("commit", self._commit)
        self._forget()

    def _commit(self) -> None:
        self.flush()
        conn = self.conn
        with conn.cursor() as cur:
            dirty = [self._dirty[k] for k in sorted(self._dirty)]
            cur.executemany(
                "UPDATE lanes SET hwm = %s, last_hash = %s, lane_last_seq = %s, gaps = %s, "
                "redelivered = %s, last_seen = %s WHERE store = %s AND lane = %s AND epoch = %s",
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
                    for s in dirty
                ],
            )
            cur.executemany(
                "INSERT INTO lane_status (store, lane, state, version, backlog, at) "
                "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (store, lane) DO UPDATE SET "
                "state = excluded.state, version = excluded.version, "
                "backlog = excluded.backlog, at = excluded.at",
                [status_row(self._statuses[k]) for k in sorted(self._statuses)],
            )
            cur.executemany(
                "INSERT INTO counters (name, value) VALUES (%s, %s) "
                "ON CONFLICT (name) DO UPDATE SET value = counters.value + excluded.value",
                sorted(self._counters.items()),
            )
        if self._catalogs:
            # After the lanes' own rows, in lane order: rows of the lane's other epochs are
            # locked here, in the order every worker uses.
            self._sql.executemany(*catalog_updates(self._catalogs, "postgres"))
        conn.execute("COMMIT")

    def _forget(self) -> None:
        self._pending.clear()
        self._lanes.clear()
        self._refused.clear()
        self._retired.clear()
        self._dirty.clear()
        self._statuses.clear()
        self._counters.clear()
        self._catalogs.clear()

    def rollback(self) -> None:
        try:
            self._sql.rollback()
        except psycopg.Error as exc:  # the connection died under us: reopened at next begin
            log.warning("%s: rollback failed (%s); the connection will be reopened", self.what, exc)
            self.conn.close()
        self._forget()

    def close(self) -> None:
        self.rollback()
        self.conn.close()

    # --- lanes ----------------------------------------------------------------------------

    def lock_lanes(self, lanes: Sequence[tuple[LaneId, int]]) -> None:
        self._guard("locking lanes", lambda: self._lock_lanes(lanes))

    def _lock_lanes(self, lanes: Iterable[tuple[LaneId, int]]) -> None:
        self._begin()
        keys = sorted(
            {(ln.store, ln.lane, epoch) for ln, epoch in lanes}
            - self._lanes.keys()
            - self._refused.keys()
        )
        if not keys:
            return
        stores, names, epochs = (list(c) for c in zip(*keys, strict=True))
        hashes = [genesis(LaneId(s, n), e) for s, n, e in keys]
        now = time.time_ns() // 1_000_000
        conn = self.conn
        # New lanes first (another worker inserting the same one makes us wait for its commit,
        # then DO NOTHING), so that every lane has a row to lock. A lane gets new epochs only
        # up to the most head office keeps on record for one lane (counted per lane: what it
        # holds plus the new ones of this statement, in epoch order); two workers inserting
        # new epochs of one lane at the same instant may together pass it by a few.
        conn.execute(
            "INSERT INTO lanes (store, lane, epoch, hwm, last_hash, first_seen, last_seen) "
            "SELECT s, l, e, 0, h, %s, %s FROM ("
            " SELECT u.s, u.l, u.e, u.h,"
            "  row_number() OVER (PARTITION BY u.s, u.l ORDER BY u.e) AS k,"
            "  (SELECT count(*) FROM lanes m WHERE m.store = u.s AND m.lane = u.l) AS have"
            " FROM unnest(%s::text[], %s::text[], %s::bigint[], %s::bytea[]) AS u (s, l, e, h)"
            " WHERE NOT EXISTS (SELECT 1 FROM lanes x"
            "  WHERE x.store = u.s AND x.lane = u.l AND x.epoch = u.e)"
            ") n WHERE n.have + n.k <= %s "
            "ON CONFLICT DO NOTHING",
            (now, now, stores, names, epochs, hashes, self.max_epochs_per_lane),
        )
        # With ORDER BY, rows are locked in that order (the LockRows step runs on the sorted
        # rows), which is what makes the fixed order deadlock-free.
        rows = conn.execute(
            f"SELECT {_LANE_COLS} FROM lanes "  # noqa: S608 - constants only
            "WHERE (store, lane, epoch) IN "
            "(SELECT * FROM unnest(%s::text[], %s::text[], %s::bigint[])) "
            f"ORDER BY {_LANE_ORDER} FOR UPDATE",
            (stores, names, epochs),
        ).fetchall()
        for store, lane, epoch, hwm, last_hash, last_seq, gaps, redelivered in rows:
            self._lanes[(store, lane, epoch)] = LaneState(
                LaneId(store, lane), epoch, hwm, bytes(last_hash), last_seq, gaps, redelivered
            )
        for key in keys:
            if key not in self._lanes:
                self._refused[key] = self.max_epochs_per_lane
        # Read after the lane rows are locked: `lane retire` locks them too, so a retire
        # either waits for this transaction or is seen here.
        for store, lane, epoch, at in conn.execute(
            "SELECT store, lane, epoch, retired_at FROM retired_epochs "
            "WHERE (store, lane, epoch) IN "
            "(SELECT * FROM unnest(%s::text[], %s::text[], %s::bigint[]))",
            (stores, names, epochs),
        ).fetchall():
            self._retired[(store, lane, epoch)] = at

    def lane_state(self, lane: LaneId, epoch: int) -> LaneState | None:
        key = (lane.store, lane.lane, epoch)
        state = self._lanes.get(key)
        if state is not None:
            return state

        def read() -> LaneState | None:
            self._ensure_open()
            row = self.conn.execute(
                f"SELECT {_LANE_COLS} FROM lanes WHERE store = %s AND lane = %s AND epoch = %s",  # noqa: S608
                key,
            ).fetchone()
            if row is None:
                return None
            return LaneState(lane, epoch, row[3], bytes(row[4]), row[5], row[6], row[7])

        return self._guard("reading a lane", read)

    def _lane_for_write(self, lane: LaneId, epoch: int, now_ms: int) -> LaneState:
        self._now = now_ms
        key = (lane.store, lane.lane, epoch)
        if key not in self._lanes and key not in self._refused:
            self._lock_lanes([(lane, epoch)])  # not named to lock_lanes (importer, tests)
        if key in self._retired and not self.accepts_retired:
            self._count("retired_epochs_refused")
            raise EpochRetired(retired_reason(lane, epoch, self._retired[key]))
        if key in self._refused:
            self._count("epochs_refused")
            raise EpochRefused(
                f"lane {lane} already has {self._refused[key]} epochs on record, the most head "
                "office keeps for one lane (ingest.max_epochs_per_lane); a new epoch is refused"
            )
        state = self._lanes[key]
        self._dirty[key] = state
        return state

    def note_hello(
        self, lane: LaneId, epoch: int, last_seq: int, now_ms: int, *, catalog: int | None = None
    ) -> LaneState:
        def note() -> LaneState:
            state = self._lane_for_write(lane, epoch, now_ms)
            state.lane_last_seq = max(state.lane_last_seq, last_seq)
            if catalog is not None:
                self._catalogs[(lane.store, lane.lane)] = catalog
            return state

        return self._guard("noting a hello", note)

    # --- ingest ---------------------------------------------------------------------------

    def apply_batch(
        self, checked: CheckedBatch | JournalBatch, now_ms: int, *, defer: bool = False
    ) -> ApplyResult:
        return self._guard(
            "applying a batch",
            lambda: BatchWriter.apply_batch(self, checked, now_ms, defer=defer),
        )

    def hold_entry(
        self, lane: LaneId, epoch: int, prev_hash: bytes, held: HeldEntry, now_ms: int
    ) -> ApplyResult:
        return self._guard(
            "holding an entry",
            lambda: BatchWriter.hold_entry(self, lane, epoch, prev_hash, held, now_ms),
        )

    def flush(self) -> None:
        self._guard("writing the group's rows", lambda: BatchWriter.flush(self))

    def release_held(
        self,
        ids: Sequence[int],
        by: str,
        note: str,
        now_ms: int,
        *,
        registry: Registry | None = None,
    ) -> list[HeldOutcome]:
        return self._guard(
            "releasing held entries",
            lambda: BatchWriter.release_held(self, ids, by, note, now_ms, registry=registry),
        )

    def void_held(self, ids: Sequence[int], by: str, reason: str, now_ms: int) -> list[HeldOutcome]:
        return self._guard(
            "voiding held entries", lambda: BatchWriter.void_held(self, ids, by, reason, now_ms)
        )

    def held_ids(
        self, store: str, lane: str | None, code: str, limit: int | None = None
    ) -> list[int]:
        return self._guard(
            "reading held entries", lambda: BatchWriter.held_ids(self, store, lane, code, limit)
        )

    def held_lanes(self, code: str) -> set[tuple[str, str]]:
        return self._guard("reading held entries", lambda: BatchWriter.held_lanes(self, code))

    def _insert_held(self, held: list[HeldRow]) -> None:
        with self.conn.cursor() as cur:
            cur.executemany(
                f"INSERT INTO held ({HELD_COLUMNS}) VALUES "  # noqa: S608 - constants only
                "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (store, lane, epoch, seq) DO NOTHING",
                held,
            )

    def _owners(self, txn_ids: list[str]) -> dict[str, Owner]:
        rows = self.conn.execute(
            "SELECT d.txn_id, d.store, d.lane, d.epoch, d.seq, d.kind, j.body "
            "FROM unnest(%s::text[]) AS u (t) JOIN documents d ON d.txn_id = u.t "
            "LEFT JOIN journal j ON j.store = d.store AND j.lane = d.lane "
            "AND j.epoch = d.epoch AND j.seq = d.seq",
            (txn_ids,),
        ).fetchall()
        return {
            r[0]: Owner(r[1], r[2], r[3], r[4], r[5], None if r[6] is None else bytes(r[6]))
            for r in rows
        }

    def _insert_new_documents(self, documents: list[DocumentRow]) -> set[str]:
        # Staged with a binary COPY, then merged: the unique index decides which are new, with
        # no plan to choose. (A SELECT ... WHERE txn_id = ANY() first was planned as a
        # sequential scan while the fast-growing table had no statistics yet, autovacuum
        # analyzing it a minute later, so each batch read the whole table and a 1000-lane
        # drain fell from 6,000 to 500 entries/s. Passing the rows as unnest() arrays cost
        # twice the client CPU of the COPY: psycopg builds array literals in Python.) A txn_id
        # another worker is inserting meanwhile waits for its commit and is then skipped.
        if not documents:
            return set()
        with self.conn.cursor() as cur:
            with cur.copy(_DOCUMENTS_STAGE_COPY) as copy:
                copy.set_types(_DOCUMENTS_TYPES)
                for row in documents:
                    copy.write_row(row)
            rows = cur.execute(
                "INSERT INTO documents (txn_id, store, lane, epoch, seq, kind, ts, "
                "catalog_version) SELECT txn_id, store, lane, epoch, seq, kind, ts, "
                "catalog_version FROM documents_in "
                "ORDER BY txn_id ON CONFLICT (txn_id) DO NOTHING RETURNING txn_id"
            ).fetchall()
            cur.execute("TRUNCATE documents_in")
        return {r[0] for r in rows}

    def _insert_journal(self, journal: list[JournalRow]) -> None:
        with self.conn.cursor() as cur, cur.copy(_JOURNAL_COPY) as copy:
            copy.set_types(_JOURNAL_TYPES)
            for row in journal:
                copy.write_row(row)

    def save_status(self, status: Status) -> None:
        """Buffered and written at commit, in lane order (every worker writes these rows)."""
        self._guard("saving a status", self._begin)
        self._statuses[(status.lane.store, status.lane.lane)] = status
        if status.state == "online":
            self._catalogs[(status.lane.store, status.lane.lane)] = status.catalog

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
        row = QuarantineRow.of(topic, reason, raw, fold=fold)

        def insert() -> None:
            self._begin()
            self._count("quarantined", times)
            self.conn.execute(
                "INSERT INTO quarantine (first_at, last_at, topic, store, lane, reason, raw, "
                "raw_len, raw_sha256, fingerprint, times) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (fingerprint) DO UPDATE "
                "SET times = quarantine.times + excluded.times, last_at = excluded.last_at",
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

        self._guard("quarantining a message", insert)
