"""The catalog's versions at head office: loads committed as deltas, views, deltas, snapshots.

Rows live in a temporal table (catalog_rows: a row is live from since_version until
until_version), so any version's view can be read back and a delta between two versions is
the rows that began or ended between them. Each version writes the view hash of every scope
it touched (catalog_scope_hashes), so a store's hash at any version is the sum of a few
stored hashes and is never recomputed from the rows (protocol/CATALOG.md).

Everything here takes a `Sql` (either backend). A load holds the catalog's write lock for its
transaction (BEGIN IMMEDIATE on SQLite, an advisory lock on PostgreSQL) and diffs against the
rows it reads under that lock, so two loads at once make two correct versions.
"""

from __future__ import annotations

import hashlib
import heapq
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any
from weakref import WeakKeyDictionary

from headoffice.db.sql import PgSql, Sql
from protocol import catalog as cat
from protocol.errors import LanesyncError

_LOCK_SQL = "SELECT pg_advisory_xact_lock(hashtext('lanesync-catalog:' || current_schema()))"
_LIVE_AT = "since_version <= ? AND (until_version IS NULL OR until_version > ?)"
_ROW_AT = f"SELECT body FROM catalog_rows WHERE dataset = ? AND key = ? AND {_LIVE_AT}"  # noqa: S608
_TOUCHED = "SELECT dataset, key, since_version, until_version, body, digest FROM catalog_rows"
# Rows of one scope live at a version, in key order from a (dataset, key) on (a chunk). The
# row value comparison lets both planners range-scan catalog_rows_scope from that key (SQLite:
# sqlite.org/rowvalue.html; written as `dataset > ? OR ...` SQLite sorted the whole scope,
# 35 ms a chunk at 100,000 rows, against 0.5 ms).
_SCOPE_FROM = (
    f"SELECT dataset, key, body FROM catalog_rows WHERE scope = ? AND {_LIVE_AT} "  # noqa: S608
    "AND (dataset, key) >= (?, ?) ORDER BY dataset, key LIMIT ?"
)
_SCOPE_KEYS = (
    f"SELECT dataset, key FROM catalog_rows WHERE scope = ? AND {_LIVE_AT} "  # noqa: S608
    "ORDER BY dataset, key"
)
_PG_COPY_MIN = 200  # rows from which a PostgreSQL load inserts with COPY, not executemany


class CatalogRefused(LanesyncError):
    """A request head office cannot answer as asked; `code` is the contract's refusal code."""

    def __init__(self, code: str, reason: str) -> None:
        self.code = code
        super().__init__(reason)


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What a load did: `version` None when the file changed nothing (no version made)."""

    dataset: str
    version: int | None
    added: int
    changed: int
    removed: int
    rows: int  # rows the dataset holds after the load
    source: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class View:
    """A store's view at a version: `version` is the last version ≤ the asked one that
    touched one of its scopes (the version its head names)."""

    store: str
    version: int
    hash: bytes
    rows: int
    scopes: tuple[str, ...]


# --- loads -------------------------------------------------------------------------------------


def latest_version(sql: Sql) -> int:
    row = sql.fetchone("SELECT coalesce(max(version), 0) FROM catalog_versions")
    return int(row[0]) if row else 0


def oldest_version(sql: Sql) -> int:
    """The oldest version whose history head office keeps (prune drops what is before)."""
    row = sql.fetchone("SELECT coalesce(min(version), 0) FROM catalog_versions")
    return int(row[0]) if row else 0


@dataclass(frozen=True, slots=True)
class PruneResult:
    before: int  # versions before this one are gone
    versions: int
    rows: int
    hashes: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def prune(sql: Sql, before: int) -> PruneResult:
    """Drop the history before version `before` (never the latest version): rows no longer
    live at `before`, the versions' records, and scope hashes a later one (<= `before`)
    replaces. Views at `before` and later, and deltas between them, are unchanged; a lane
    asking for anything older gets snapshot_needed / snapshot_expired (CATALOG.md)."""
    sql.begin()
    try:
        if sql.dialect == "postgres":
            sql.execute(_LOCK_SQL)
        before = min(before, latest_version(sql))
        if before <= oldest_version(sql):
            sql.rollback()
            return PruneResult(before, 0, 0, 0)
        rows = sql.execute(
            "DELETE FROM catalog_rows WHERE until_version IS NOT NULL AND until_version <= ?",
            (before,),
        )
        hashes = sql.execute(
            "DELETE FROM catalog_scope_hashes WHERE version < ? AND EXISTS (SELECT 1 FROM "
            "catalog_scope_hashes n WHERE n.scope = catalog_scope_hashes.scope "
            "AND n.version > catalog_scope_hashes.version AND n.version <= ?)",
            (before, before),
        )
        gone = sql.execute("DELETE FROM catalog_versions WHERE version < ?", (before,))
        sql.commit()
    except BaseException:
        sql.rollback()
        raise
    return PruneResult(before, gone, rows, hashes)


def commit_load(
    sql: Sql,
    ds: cat.Dataset,
    rows: Sequence[cat.Row],
    *,
    upsert: bool,
    source: str,
    now_ms: int,
    check: Callable[[Sql], None] | None = None,
) -> LoadResult:
    """Diff `rows` (checked, keys unique) against the dataset's current rows and commit one
    new version holding only the delta; a load that changes nothing makes no version.
    `check` runs under the lock first (rules across datasets) and refuses by raising."""
    fresh: dict[str, tuple[str, bytes, bytes]] = {}
    for row in rows:
        body = cat.row_bytes(ds, row)
        fresh[ds.key_of(row)] = (ds.scope_of(row), body, hashlib.sha256(body).digest())
    sql.begin()
    try:
        if sql.dialect == "postgres":
            sql.execute(_LOCK_SQL)
        if check is not None:
            check(sql)
        current: dict[str, tuple[bytes, str]] = {
            key: (bytes(digest), scope)
            for key, digest, scope in sql.iterate(
                "SELECT key, digest, scope FROM catalog_rows "
                "WHERE dataset = ? AND until_version IS NULL",
                (ds.name,),
            )
        }
        added = [k for k in fresh if k not in current]
        changed = [k for k in fresh if k in current and current[k][0] != fresh[k][2]]
        removed = [] if upsert else [k for k in current if k not in fresh]
        total = len(current) + len(added) - len(removed)
        if not (added or changed or removed):
            sql.rollback()
            return LoadResult(ds.name, None, 0, 0, 0, total, source)
        version = latest_version(sql) + 1
        sql.execute(
            "INSERT INTO catalog_versions (version, dataset, loaded_at, source, added, changed, "
            "removed, upsert) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (version, ds.name, now_ms, source, len(added), len(changed), len(removed), int(upsert)),
        )
        _end_rows(sql, ds.name, [*changed, *removed], version)
        _insert_rows(sql, [(ds.name, k, *fresh[k], version) for k in sorted([*added, *changed])])
        _write_scope_hashes(sql, version, current, fresh, added, changed, removed)
        sql.commit()
    except BaseException:
        sql.rollback()
        raise
    return LoadResult(ds.name, version, len(added), len(changed), len(removed), total, source)


def _end_rows(sql: Sql, dataset: str, keys: list[str], version: int) -> None:
    if not keys:
        return
    if isinstance(sql, PgSql):
        sql.execute(
            "UPDATE catalog_rows SET until_version = ? WHERE dataset = ? "
            "AND until_version IS NULL AND key = ANY(?)",
            (version, dataset, keys),
        )
        return
    sql.executemany(
        "UPDATE catalog_rows SET until_version = ? "
        "WHERE dataset = ? AND key = ? AND until_version IS NULL",
        [(version, dataset, k) for k in keys],
    )


def _insert_rows(sql: Sql, rows: list[tuple[str, str, str, bytes, bytes, int]]) -> None:
    if not rows:
        return
    if isinstance(sql, PgSql) and len(rows) >= _PG_COPY_MIN:
        # COPY streams the rows with no statement per row (see headoffice/db/postgres.py
        # for the measurements that made the journal use it too).
        with (
            sql.conn.cursor() as cur,
            cur.copy(
                "COPY catalog_rows (dataset, key, scope, body, digest, since_version) "
                "FROM STDIN (FORMAT BINARY)"
            ) as copy,
        ):
            copy.set_types(["text", "text", "text", "bytea", "bytea", "int8"])
            for r in rows:
                copy.write_row(r)
        return
    sql.executemany(
        "INSERT INTO catalog_rows (dataset, key, scope, body, digest, since_version) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        rows,
    )


def _write_scope_hashes(
    sql: Sql,
    version: int,
    current: dict[str, tuple[bytes, str]],
    fresh: dict[str, tuple[str, bytes, bytes]],
    added: list[str],
    changed: list[str],
    removed: list[str],
) -> None:
    """Each touched scope's hash moved by the digests that left and came (never a rescan)."""
    moves: dict[str, list[int]] = {}  # scope -> [sum added, sum removed, rows added - removed]
    for k in [*changed, *removed]:
        digest, scope = current[k]
        m = moves.setdefault(scope, [0, 0, 0])
        m[1] += int.from_bytes(digest, "big")
        m[2] -= 1
    for k in [*added, *changed]:
        scope, _body, digest = fresh[k]
        m = moves.setdefault(scope, [0, 0, 0])
        m[0] += int.from_bytes(digest, "big")
        m[2] += 1
    out = []
    for scope in sorted(moves):
        plus, minus, count = moves[scope]
        before, rows, _v = scope_state(sql, scope, version - 1)
        total = (int.from_bytes(before, "big") + plus - minus) % (1 << 256)
        out.append((scope, version, total.to_bytes(cat.HASH_LEN, "big"), rows + count))
    sql.executemany(
        "INSERT INTO catalog_scope_hashes (scope, version, hash, rows) VALUES (?, ?, ?, ?)", out
    )


# --- views -------------------------------------------------------------------------------------


def scope_state(sql: Sql, scope: str, at: int) -> tuple[bytes, int, int]:
    """(hash, rows, version that last touched it) of a scope at version `at`."""
    row = sql.fetchone(
        "SELECT hash, rows, version FROM catalog_scope_hashes WHERE scope = ? AND version <= ? "
        "ORDER BY version DESC LIMIT 1",
        (scope, at),
    )
    if row is None:
        return cat.EMPTY_HASH, 0, 0
    return bytes(row[0]), int(row[1]), int(row[2])


def row_at(sql: Sql, ds: cat.Dataset, key: str, at: int) -> cat.Row | None:
    row = sql.fetchone(_ROW_AT, (ds.name, key, at, at))
    return None if row is None else cat.row_from_bytes(ds, bytes(row[0]))


def store_scopes(sql: Sql, store: str, at: int) -> tuple[str, ...]:
    """The scopes of `store`'s view at `at` (its price zone read from the stores rows)."""
    row = row_at(sql, cat.DATASETS["stores"], store, at)
    return cat.store_scopes(store, None if row is None else row.get("price_zone"))


def view(sql: Sql, store: str, at: int | None = None) -> View:
    at = latest_version(sql) if at is None else at
    scopes = store_scopes(sql, store, at)
    states = [scope_state(sql, s, at) for s in scopes]
    return View(
        store,
        max(v for _h, _r, v in states),
        cat.hash_sum(h for h, _r, _v in states),
        sum(r for _h, r, _v in states),
        scopes,
    )


def stores(sql: Sql) -> dict[str, cat.Row]:
    """The registry: every current row of the `stores` dataset, by store id."""
    ds = cat.DATASETS["stores"]
    return {
        key: cat.row_from_bytes(ds, bytes(body))
        for key, body in sql.iterate(
            "SELECT key, body FROM catalog_rows WHERE dataset = 'stores' "
            "AND until_version IS NULL ORDER BY key"
        )
    }


def current_rows(sql: Sql, dataset: str, scopes: Sequence[str] | None = None) -> list[cat.Row]:
    """A dataset's current rows in key order, all or those of `scopes` (a store's view)."""
    ds = cat.dataset(dataset)
    where, params = "dataset = ? AND until_version IS NULL", [ds.name]
    if scopes is not None:
        where += f" AND scope IN ({', '.join('?' * len(scopes))})"
        params += scopes
    return [
        cat.row_from_bytes(ds, bytes(body))
        for (body,) in sql.iterate(
            f"SELECT body FROM catalog_rows WHERE {where} ORDER BY key",  # noqa: S608 - only ?s
            params,
        )
    ]


def history(sql: Sql) -> list[dict[str, Any]]:
    return sql.fetchdicts(
        "SELECT version, dataset, loaded_at, source, added, changed, removed, upsert "
        "FROM catalog_versions ORDER BY version"
    )


# --- deltas ------------------------------------------------------------------------------------

# A net change: (dataset, key, the row's bytes at `to` or None when removed).
Net = tuple[str, str, bytes | None]


def _touched(sql: Sql, scopes: Sequence[str] | None, a: int, b: int) -> Iterator[tuple[Any, ...]]:
    """Rows that began or ended in (a, b], in the scopes given (None: every scope)."""
    for col in ("since_version", "until_version"):
        if scopes is None:
            yield from sql.iterate(f"{_TOUCHED} WHERE {col} > ? AND {col} <= ?", (a, b))
            continue
        for scope in scopes:
            yield from sql.iterate(
                f"{_TOUCHED} WHERE scope = ? AND {col} > ? AND {col} <= ?", (scope, a, b)
            )


def net_changes(sql: Sql, scopes: Sequence[str] | None, a: int, b: int) -> list[Net]:
    """The delta from version a to b (a <= b) of the rows in `scopes`, in (dataset, key)
    order: a row's state at a is the touched row that ended in (a, b], its state at b the
    touched row that began in (a, b] and is still live at b; equal digests cancel out."""
    before: dict[tuple[str, str], bytes] = {}
    after: dict[tuple[str, str], tuple[bytes, bytes]] = {}
    for dataset, key, since, until, body, digest in _touched(sql, scopes, a, b):
        k = (dataset, key)
        if since <= a:
            before[k] = bytes(digest)
        if a < since <= b and (until is None or until > b):
            after[k] = (bytes(body), bytes(digest))
    out: list[Net] = []
    for k in sorted(before.keys() | after.keys()):
        now = after.get(k)
        if now is None:
            out.append((k[0], k[1], None))
        elif before.get(k) != now[1]:
            out.append((k[0], k[1], now[0]))
    return out


def decode(changes: Iterable[Net]) -> list[cat.Change]:
    return [
        (d, k, None if body is None else cat.row_from_bytes(cat.DATASETS[d], body))
        for d, k, body in changes
    ]


class _Lru(OrderedDict[Any, Any]):
    """A small LRU of immutable results (a version's rows never change once committed),
    bounded in entries and in their total length (changes or keys held)."""

    def __init__(self, size: int, budget: int = 1_000_000) -> None:
        super().__init__()
        self.size = size
        self.budget = budget
        self.weight = 0

    def fetch(self, key: Any) -> Any:
        if key in self:
            self.move_to_end(key)
            return self[key]
        return None

    def keep(self, key: Any, value: Any) -> Any:
        if key in self:
            self.weight -= len(self.pop(key))
        self[key] = value
        self.weight += len(value)
        while len(self) > 1 and (len(self) > self.size or self.weight > self.budget):
            _k, old = self.popitem(last=False)
            self.weight -= len(old)
        return value


class Catalog:
    """The catalog's read side over one connection, with caches of what lanes ask again and
    again: 200 lanes of a store asking the same delta page by page, or chunk after chunk of
    one snapshot, cost one computation, not 200 (results of committed versions never change).
    """

    def __init__(self, sql: Sql) -> None:
        self.sql = sql
        self._deltas = _Lru(16)
        self._scope_deltas = _Lru(256)
        self._bounds = _Lru(1024)
        self._keys = _Lru(64, budget=400_000)  # ~50 MB at most
        self._lock = threading.Lock()

    # The delta of a store between two versions: each scope's part computed once (every
    # store shares the chain's), merged once per store, and paged from memory.
    def delta(self, store: str, a: int, b: int) -> tuple[View, list[Net]]:
        latest = latest_version(self.sql)
        if a < 1 or a > b or b > latest:
            raise CatalogRefused(
                cat.SNAPSHOT_NEEDED, f"no delta from {a} to {b} (head office is at {latest})"
            )
        oldest = oldest_version(self.sql)
        a_kept, b_kept = self._kept(store, a, oldest), self._kept(store, b, oldest)
        if a_kept is None or b_kept is None:
            raise CatalogRefused(
                cat.SNAPSHOT_NEEDED,
                f"version {a} is older than the history head office keeps (from {oldest})",
            )
        a, b = a_kept, b_kept
        at_b = view(self.sql, store, b)
        if store_scopes(self.sql, store, a) != at_b.scopes:
            raise CatalogRefused(cat.SNAPSHOT_NEEDED, "the store changed price zone in between")
        key = (store, at_b.scopes, a, b)
        with self._lock:
            hit = self._deltas.fetch(key)
        if hit is None:
            hit = _merge([self._scope_delta(s, a, b) for s in at_b.scopes])
            with self._lock:
                self._deltas.keep(key, hit)
        return at_b, hit

    def _scope_delta(self, scope: str, a: int, b: int) -> list[Net]:
        key = (scope, a, b)
        with self._lock:
            hit: list[Net] | None = self._scope_deltas.fetch(key)
        if hit is None:
            hit = net_changes(self.sql, [scope], a, b)
            with self._lock:
                self._scope_deltas.keep(key, hit)
        return hit

    def delta_page(self, store: str, req: cat.DeltaRequest) -> cat.DeltaReply:
        at_b, changes = self.delta(store, req.from_, req.to)
        start = 0
        if req.after is not None:
            start = _bisect_after(changes, req.after)
        page: list[Net] = []
        size = 0
        for c in changes[start : start + cat.MAX_DELTA_CHANGES]:
            if page and size + len(c[2] or b"") > cat.DELTA_PAGE_BYTES:
                break
            page.append(c)
            size += len(c[2] or b"")
        more = start + len(page) < len(changes)
        return cat.DeltaReply(req.from_, req.to, at_b.hash, at_b.rows, decode(page), more)

    def _kept(self, store: str, v: int, oldest: int) -> int | None:
        """The version whose rows stand for `v` in this store's view: `v` itself when its
        history is kept, else the oldest kept version if the store's view did not change in
        between (a store untouched since a version whose history was pruned), else None."""
        if v >= oldest:
            return v
        if view(self.sql, store, oldest).version <= v:
            return oldest
        return None

    # Snapshots: each scope walked in key order from the chunk's first key, merged.
    def snapshot_chunk(self, store: str, req: cat.SnapshotRequest) -> cat.SnapshotReply:
        latest = latest_version(self.sql)
        named = view(self.sql, store, latest).version if req.version == 0 else req.version
        kept = self._kept(store, named, oldest_version(self.sql)) if named >= 1 else None
        if kept is None or named > latest:
            raise CatalogRefused(
                cat.SNAPSHOT_EXPIRED, f"head office holds no version {named} (latest {latest})"
            )
        version = kept
        at = view(self.sql, store, version)
        bounds = self._chunk_bounds(at.scopes, version, req.size)
        chunks = max(1, len(bounds))
        if req.chunk >= chunks:
            raise CatalogRefused(
                cat.BAD_REQUEST, f"chunk {req.chunk} is past the last ({chunks - 1})"
            )
        rows: list[tuple[str, str, bytes]] = []
        if bounds:
            first = bounds[req.chunk]
            merged = heapq.merge(
                *(self._scope_rows(s, version, first, req.size) for s in at.scopes)
            )
            rows = [r for _, r in zip(range(req.size), merged, strict=False)]
        digest = hashlib.sha256(b"".join(body for _d, _k, body in rows)).digest()
        return cat.SnapshotReply(named, at.hash, at.rows, chunks, req.chunk, digest, decode(rows))

    def _scope_rows(
        self, scope: str, at: int, first: tuple[str, str], limit: int
    ) -> list[tuple[str, str, bytes]]:
        return [
            (d, k, bytes(body))
            for d, k, body in self.sql.fetchall(
                _SCOPE_FROM, (scope, at, at, first[0], first[1], limit)
            )
        ]

    def _chunk_bounds(self, scopes: tuple[str, ...], at: int, size: int) -> list[tuple[str, str]]:
        """The first (dataset, key) of every chunk of the view, from one walk of its keys."""
        key = (scopes, at, size)
        with self._lock:
            hit = self._bounds.fetch(key)
        if hit is not None:
            return list(hit)
        walks = [w for w in (self._scope_keys(s, at) for s in scopes) if w]
        if len(walks) == 1:  # the common case: a store with no rows of its own
            bounds = walks[0][::size]
        else:
            merged = heapq.merge(*walks)
            bounds = [k for i, k in enumerate(merged) if i % size == 0]
        with self._lock:
            self._bounds.keep(key, bounds)
        return bounds

    def _scope_keys(self, scope: str, at: int) -> list[tuple[str, str]]:
        """A scope's keys at a version, in order: walked once, shared by every store (the
        chain's 100,000 keys cost 0.25 s to walk; 200 new stores walked it 200 times)."""
        key = (scope, at)
        with self._lock:
            hit: list[tuple[str, str]] | None = self._keys.fetch(key)
        if hit is None:
            hit = [(d, k) for d, k in self.sql.fetchall(_SCOPE_KEYS, (scope, at, at))]
            with self._lock:
                self._keys.keep(key, hit)
        return hit


def _merge(parts: list[list[Net]]) -> list[Net]:
    """One store's delta from its scopes' parts. A row lives in one scope at a time, so a key
    in two parts moved between scopes of the view: the part that has its row wins."""
    filled = [p for p in parts if p]
    if len(filled) <= 1:
        return filled[0] if filled else []
    out: dict[tuple[str, str], bytes | None] = {}
    for part in filled:
        for d, k, body in part:
            if body is not None or (d, k) not in out:
                out[(d, k)] = body
    return [(d, k, out[(d, k)]) for d, k in sorted(out)]


def _bisect_after(changes: list[Net], after: tuple[str, str]) -> int:
    lo, hi = 0, len(changes)
    while lo < hi:
        mid = (lo + hi) // 2
        if (changes[mid][0], changes[mid][1]) <= after:
            lo = mid + 1
        else:
            hi = mid
    return lo


_catalogs: WeakKeyDictionary[Any, Catalog] = WeakKeyDictionary()


def catalog_for(sql: Sql) -> Catalog:
    """The Catalog (and its caches) of one connection, made on first use."""
    found = _catalogs.get(sql)
    if found is None:
        found = _catalogs[sql] = Catalog(sql)
    return found
