-- lanesync head office, schema version 1 (SQLite).

-- One row per lane and journal epoch: how far head office has applied it.
CREATE TABLE lanes (
    store       TEXT    NOT NULL,
    lane        TEXT    NOT NULL,
    epoch       INTEGER NOT NULL,
    hwm         INTEGER NOT NULL DEFAULT 0,   -- highest contiguous seq committed
    last_hash   BLOB    NOT NULL,             -- chain hash of entry hwm (genesis when 0)
    lane_last_seq INTEGER NOT NULL DEFAULT 0, -- what the lane last said it holds (hello)
    gaps        INTEGER NOT NULL DEFAULT 0,   -- resend requests issued for gaps
    redelivered INTEGER NOT NULL DEFAULT 0,   -- entries received again and dropped
    first_seen  INTEGER NOT NULL,
    last_seen   INTEGER NOT NULL,
    PRIMARY KEY (store, lane, epoch)
) STRICT;

-- The replica of every lane journal entry, exactly as the lane chained it.
CREATE TABLE journal (
    store       TEXT    NOT NULL,
    lane        TEXT    NOT NULL,
    epoch       INTEGER NOT NULL,
    seq         INTEGER NOT NULL,
    kind        TEXT    NOT NULL,
    txn_id      TEXT    NOT NULL,
    ts          INTEGER NOT NULL,
    body        BLOB    NOT NULL,
    hash        BLOB    NOT NULL,
    received_at INTEGER NOT NULL,
    applied     INTEGER NOT NULL,             -- 0: its txn_id was already applied elsewhere
    PRIMARY KEY (store, lane, epoch, seq)
) STRICT;  -- a rowid table: rows of ~0.5 KiB are too wide for WITHOUT ROWID (sqlite.org)

-- Each document applied once, whatever replays or imports bring it again (invariant 3).
CREATE TABLE documents (
    txn_id  TEXT    PRIMARY KEY,
    store   TEXT    NOT NULL,
    lane    TEXT    NOT NULL,
    epoch   INTEGER NOT NULL,
    seq     INTEGER NOT NULL,
    kind    TEXT    NOT NULL,
    ts      INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

-- Retained status of every lane (online/offline, backlog) as it last said.
CREATE TABLE lane_status (
    store   TEXT    NOT NULL,
    lane    TEXT    NOT NULL,
    state   TEXT    NOT NULL,
    version TEXT    NOT NULL,
    backlog INTEGER NOT NULL,
    at      INTEGER NOT NULL,
    PRIMARY KEY (store, lane)
) STRICT;

-- Messages that could not be accepted, with the reason and the raw bytes (invariant 7).
-- The same refusal repeated (a lane resending a bad batch) bumps `times` instead of a new row.
CREATE TABLE quarantine (
    id          INTEGER PRIMARY KEY,
    first_at    INTEGER NOT NULL,
    last_at     INTEGER NOT NULL,
    times       INTEGER NOT NULL DEFAULT 1,
    topic       TEXT    NOT NULL,
    store       TEXT,
    lane        TEXT,
    reason      TEXT    NOT NULL,
    raw         BLOB    NOT NULL,
    fingerprint BLOB    NOT NULL UNIQUE        -- sha256 of topic, reason and raw bytes
) STRICT;

CREATE TABLE counters (
    name  TEXT    PRIMARY KEY,
    value INTEGER NOT NULL
) STRICT;
