-- lanesync head office, schema version 1 (PostgreSQL). Mirrors schema/0001_initial.sql:
-- BIGINT for every integer (epochs are 63-bit), BYTEA for hashes and raw bytes.

-- One row per lane and journal epoch: how far head office has applied it. Ingest workers lock
-- the rows of the lanes a group touches (SELECT ... FOR UPDATE): per-lane order across workers.
CREATE TABLE lanes (
    store         TEXT   NOT NULL,
    lane          TEXT   NOT NULL,
    epoch         BIGINT NOT NULL,
    hwm           BIGINT NOT NULL DEFAULT 0,   -- highest contiguous seq committed
    last_hash     BYTEA  NOT NULL,             -- chain hash of entry hwm (genesis when 0)
    lane_last_seq BIGINT NOT NULL DEFAULT 0,   -- what the lane last said it holds (hello)
    gaps          BIGINT NOT NULL DEFAULT 0,   -- resend requests issued for gaps
    redelivered   BIGINT NOT NULL DEFAULT 0,   -- entries received again and dropped
    first_seen    BIGINT NOT NULL,
    last_seen     BIGINT NOT NULL,
    PRIMARY KEY (store, lane, epoch)
);

-- The replica of every lane journal entry, exactly as the lane chained it. `id` stands in for
-- SQLite's rowid: the order rows were committed in, which the extract jobs walk.
CREATE TABLE journal (
    id          BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    store       TEXT   NOT NULL,
    lane        TEXT   NOT NULL,
    epoch       BIGINT NOT NULL,
    seq         BIGINT NOT NULL,
    kind        TEXT   NOT NULL,
    txn_id      TEXT   NOT NULL,
    ts          BIGINT NOT NULL,
    body        BYTEA  NOT NULL,
    hash        BYTEA  NOT NULL,
    received_at BIGINT NOT NULL,
    applied     SMALLINT NOT NULL,             -- 0: its txn_id was already applied elsewhere
    PRIMARY KEY (store, lane, epoch, seq)
);

-- Each document applied once, whatever replays or imports bring it again (invariant 3).
CREATE TABLE documents (
    txn_id  TEXT   PRIMARY KEY,
    store   TEXT   NOT NULL,
    lane    TEXT   NOT NULL,
    epoch   BIGINT NOT NULL,
    seq     BIGINT NOT NULL,
    kind    TEXT   NOT NULL,
    ts      BIGINT NOT NULL
);

-- Retained status of every lane (online/offline, backlog) as it last said.
CREATE TABLE lane_status (
    store   TEXT   NOT NULL,
    lane    TEXT   NOT NULL,
    state   TEXT   NOT NULL,
    version TEXT   NOT NULL,
    backlog BIGINT NOT NULL,
    at      BIGINT NOT NULL,
    PRIMARY KEY (store, lane)
);

-- Messages that could not be accepted, with the reason and the raw bytes (invariant 7).
-- The same refusal repeated (a lane resending a bad batch) bumps `times` instead of a new row.
CREATE TABLE quarantine (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    first_at    BIGINT NOT NULL,
    last_at     BIGINT NOT NULL,
    times       BIGINT NOT NULL DEFAULT 1,
    topic       TEXT   NOT NULL,
    store       TEXT,
    lane        TEXT,
    reason      TEXT   NOT NULL,
    raw         BYTEA  NOT NULL,
    fingerprint BYTEA  NOT NULL UNIQUE         -- sha256 of topic, reason and raw bytes
);

CREATE TABLE counters (
    name  TEXT   PRIMARY KEY,
    value BIGINT NOT NULL
);
