-- lanesync head office, schema version 2: extract bookkeeping (headoffice/extract).
-- What each extract run emitted is recorded in the same transaction as the job cursors, so a
-- run that crashes before its commit is redone in full and one that committed is never redone.

-- One row per committed run that emitted something; its files live in output_dir/run-NNNNNN.
CREATE TABLE extract_runs (
    run          INTEGER PRIMARY KEY,
    as_of        INTEGER NOT NULL,            -- the run's clock (ms), for delay and day close
    committed_at INTEGER NOT NULL,
    dir          TEXT    NOT NULL,
    purchases    INTEGER NOT NULL,
    rollups      INTEGER NOT NULL,
    postings     INTEGER NOT NULL,
    rejects      INTEGER NOT NULL
) STRICT;

-- Per job (purchases, rollup, postings): every journal rowid up to here is dealt with.
CREATE TABLE extract_cursor (
    job         TEXT    PRIMARY KEY,
    after_rowid INTEGER NOT NULL
) STRICT;

-- Each document consumed once per job; ref is the purchase record id, TC number or docket.
CREATE TABLE extract_done (
    txn_id TEXT    NOT NULL,
    job    TEXT    NOT NULL,
    run    INTEGER NOT NULL,
    ref    TEXT,
    PRIMARY KEY (txn_id, job)
) STRICT, WITHOUT ROWID;

-- Purchase records as emitted (exact JSON), and their HTTP delivery state.
CREATE TABLE extract_purchases (
    record_id    TEXT    PRIMARY KEY,
    txn_id       TEXT    NOT NULL UNIQUE,
    run          INTEGER NOT NULL,
    body         TEXT    NOT NULL,
    delivered_at INTEGER,
    attempts     INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT
) STRICT;
CREATE INDEX extract_purchases_undelivered ON extract_purchases (run) WHERE delivered_at IS NULL;

-- The ERP's word that it posted a sale, with the values it corrected to post it (JSON map).
CREATE TABLE extract_erp_postings (
    txn_id      TEXT    PRIMARY KEY,
    erp_ref     TEXT    NOT NULL,
    recorded_at INTEGER NOT NULL,
    corrections TEXT
) STRICT;

CREATE TABLE extract_counters (
    name  TEXT    PRIMARY KEY,
    value INTEGER NOT NULL
) STRICT;
