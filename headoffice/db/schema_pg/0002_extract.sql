-- lanesync head office, schema version 2 (PostgreSQL): extract bookkeeping. Mirrors
-- schema/0002_extract.sql so version numbers mean the same on both backends; the extract job
-- itself runs on SQLite only for now. Cursors walk journal.id (SQLite: rowid).

CREATE TABLE extract_runs (
    run          BIGINT PRIMARY KEY,
    as_of        BIGINT NOT NULL,
    committed_at BIGINT NOT NULL,
    dir          TEXT   NOT NULL,
    purchases    BIGINT NOT NULL,
    rollups      BIGINT NOT NULL,
    postings     BIGINT NOT NULL,
    rejects      BIGINT NOT NULL
);

CREATE TABLE extract_cursor (
    job         TEXT   PRIMARY KEY,
    after_rowid BIGINT NOT NULL
);

CREATE TABLE extract_done (
    txn_id TEXT   NOT NULL,
    job    TEXT   NOT NULL,
    run    BIGINT NOT NULL,
    ref    TEXT,
    PRIMARY KEY (txn_id, job)
);

CREATE TABLE extract_purchases (
    record_id    TEXT   PRIMARY KEY,
    txn_id       TEXT   NOT NULL UNIQUE,
    run          BIGINT NOT NULL,
    body         TEXT   NOT NULL,
    delivered_at BIGINT,
    attempts     BIGINT NOT NULL DEFAULT 0,
    last_error   TEXT
);
CREATE INDEX extract_purchases_undelivered ON extract_purchases (run) WHERE delivered_at IS NULL;

CREATE TABLE extract_erp_postings (
    txn_id      TEXT   PRIMARY KEY,
    erp_ref     TEXT   NOT NULL,
    recorded_at BIGINT NOT NULL,
    corrections TEXT
);

CREATE TABLE extract_counters (
    name  TEXT   PRIMARY KEY,
    value BIGINT NOT NULL
);
