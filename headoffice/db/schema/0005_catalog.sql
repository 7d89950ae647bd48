-- lanesync head office, schema version 5: the catalog (protocol/CATALOG.md), master data down.

-- One row per accepted load: versions are one chain-wide counter, each holding only the delta
-- of one dataset to the version before.
CREATE TABLE catalog_versions (
    version   INTEGER PRIMARY KEY,
    dataset   TEXT    NOT NULL,
    loaded_at INTEGER NOT NULL,               -- ms since 1970
    source    TEXT    NOT NULL,               -- the file or "http:<client>", for the history
    added     INTEGER NOT NULL,
    changed   INTEGER NOT NULL,
    removed   INTEGER NOT NULL,
    upsert    INTEGER NOT NULL DEFAULT 0      -- 1: a load that never removes
) STRICT;

-- Every row of every dataset as a temporal table: a row is live from since_version until
-- until_version (NULL: still current). `body` is protocol.catalog.row_bytes (the canonical
-- msgpack the digest is taken over), `key` the key columns joined by '|', `scope` '*',
-- 'S:<store>' or 'Z:<zone>'.
CREATE TABLE catalog_rows (
    dataset       TEXT    NOT NULL,
    key           TEXT    NOT NULL,
    scope         TEXT    NOT NULL,
    body          BLOB    NOT NULL,
    digest        BLOB    NOT NULL,
    since_version INTEGER NOT NULL,
    until_version INTEGER,
    PRIMARY KEY (dataset, key, since_version),
    CHECK (until_version IS NULL OR until_version > since_version)
) STRICT;
-- The current rows of a dataset (a load diffs against them); the rows of a scope in key order
-- (a snapshot walks each scope of a view in order and merges them).
CREATE UNIQUE INDEX catalog_rows_current ON catalog_rows (dataset, key) WHERE until_version IS NULL;
CREATE INDEX catalog_rows_scope ON catalog_rows (scope, dataset, key, since_version);
-- What changed in a scope between two versions: rows that began or ended in (from, to].
CREATE INDEX catalog_rows_since ON catalog_rows (scope, since_version);
CREATE INDEX catalog_rows_until ON catalog_rows (scope, until_version) WHERE until_version IS NOT NULL;

-- The view hash (sum of row digests mod 2^256) and row count of a scope after each version
-- that touched it; a scope's hash at version V is its row with the greatest version <= V.
CREATE TABLE catalog_scope_hashes (
    scope   TEXT    NOT NULL,
    version INTEGER NOT NULL,
    hash    BLOB    NOT NULL,
    rows    INTEGER NOT NULL,
    PRIMARY KEY (scope, version)
) STRICT;
CREATE INDEX catalog_scope_hashes_version ON catalog_scope_hashes (version);

-- The catalog version a lane said it holds complete (hello and status), per lane epoch row.
ALTER TABLE lanes ADD COLUMN catalog_version INTEGER;

-- held.code also allows 'unregistered' (a batch from a store the registry does not know):
-- SQLite cannot alter a CHECK, so the table is rebuilt with every row and index.
CREATE TABLE held_v5 (
    id           INTEGER PRIMARY KEY,
    store        TEXT    NOT NULL,
    lane         TEXT    NOT NULL,
    epoch        INTEGER NOT NULL,
    seq          INTEGER NOT NULL,
    kind         TEXT    NOT NULL,
    txn_id       TEXT    NOT NULL,
    ts           INTEGER NOT NULL,
    hash         BLOB    NOT NULL,
    code         TEXT    NOT NULL CHECK (code IN
                     ('card_number', 'invalid_body', 'txn_conflict', 'apply_failed',
                      'unregistered')),
    reason       TEXT    NOT NULL,
    body         BLOB,
    body_masked  BLOB,
    body_len     INTEGER NOT NULL,
    body_sha256  BLOB    NOT NULL,
    held_at      INTEGER NOT NULL,
    state        TEXT    NOT NULL DEFAULT 'held' CHECK (state IN ('held', 'released', 'voided')),
    closed_at    INTEGER,
    closed_by    TEXT,
    close_reason TEXT,
    UNIQUE (store, lane, epoch, seq),
    CHECK ((body IS NULL) = (code = 'card_number')),
    CHECK ((body_masked IS NULL) = (body IS NOT NULL)),
    CHECK (state <> 'released' OR body IS NOT NULL)
) STRICT;
INSERT INTO held_v5 (id, store, lane, epoch, seq, kind, txn_id, ts, hash, code, reason, body,
                     body_masked, body_len, body_sha256, held_at, state, closed_at, closed_by,
                     close_reason)
SELECT id, store, lane, epoch, seq, kind, txn_id, ts, hash, code, reason, body, body_masked,
       body_len, body_sha256, held_at, state, closed_at, closed_by, close_reason FROM held;
DROP TABLE held;
ALTER TABLE held_v5 RENAME TO held;
CREATE INDEX held_open ON held (state, store, lane);
CREATE INDEX held_txn ON held (txn_id);
