-- The lane's copy of its store's catalog view (protocol/CATALOG.md), in its own SQLite file.
--
-- `rows` holds the version named in `meta` and nothing else: a version replaces the previous
-- one inside a single transaction, after its view hash matched head office's, so a reader
-- sees one complete version or the one before, never a mix.

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value
) WITHOUT ROWID;

-- One row per (dataset, key) of the store's view. `key` is the wire key (key columns joined by
-- `|`, protocol.catalog.Dataset.key_of) and
-- `body` the canonical row bytes (protocol.catalog.row_bytes); `digest` is sha256(body), kept
-- so that a change subtracts the old digest from the view hash without re-reading the row.
CREATE TABLE rows (
    dataset TEXT NOT NULL,
    key     TEXT NOT NULL,
    body    BLOB NOT NULL,
    digest  BLOB NOT NULL,
    PRIMARY KEY (dataset, key)
) WITHOUT ROWID;

-- Lookups the view makes other than by key (an item by GTIN, a setting by name): `ref` is the
-- value looked up, maintained with `rows`. Prices of an item and rates of a tax code are a
-- range of the primary key (keys are key columns joined by `|`).
CREATE TABLE refs (
    dataset TEXT NOT NULL,
    ref     TEXT NOT NULL,
    key     TEXT NOT NULL,
    PRIMARY KEY (dataset, ref, key)
) WITHOUT ROWID;

-- A version on its way in, staged so that a kill -9 or a cut link resumes where it stopped.
-- At most one transfer at a time: kind 'delta' (pages from `base` to `target`, `after` the
-- last key staged) or 'snapshot' (`chunks` chunks of `size` rows of version `target`).
CREATE TABLE transfer (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    kind    TEXT NOT NULL CHECK (kind IN ('delta', 'snapshot')),
    base    INTEGER NOT NULL,
    target  INTEGER NOT NULL,
    hash    BLOB NOT NULL,
    rows    INTEGER NOT NULL,
    chunks  INTEGER,
    size    INTEGER,
    after   BLOB,
    started INTEGER NOT NULL
);

-- The staged parts: delta pages in arrival order (`changes`: the msgpack list of
-- [dataset, key, row|nil] as head office sent it), or snapshot chunks by index (`changes`
-- NULL: their rows are already in staged_rows, ready to be copied in).
CREATE TABLE staged (
    part    INTEGER PRIMARY KEY,
    changes BLOB
);

-- A snapshot chunk's rows and refs made when the chunk arrives (while later chunks are still
-- on their way), so applying the snapshot is a copy between tables inside one transaction.
-- Plain rowid tables: appending is cheap; a row staged twice by two chunks is caught by the
-- primary key of `rows` when the snapshot is applied (and the snapshot refused).
CREATE TABLE staged_rows (
    dataset TEXT NOT NULL,
    key     TEXT NOT NULL,
    part    INTEGER NOT NULL,
    body    BLOB NOT NULL,
    digest  BLOB NOT NULL
);

CREATE TABLE staged_refs (
    dataset TEXT NOT NULL,
    ref     TEXT NOT NULL,
    key     TEXT NOT NULL,
    part    INTEGER NOT NULL
);

CREATE INDEX staged_rows_part ON staged_rows (part);
CREATE INDEX staged_refs_part ON staged_refs (part);
