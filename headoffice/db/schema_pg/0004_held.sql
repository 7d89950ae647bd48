-- lanesync head office, schema version 4 (PostgreSQL): held entries and capped quarantine rows.
-- Mirrors schema/0004_held.sql; see there for what each column means.

CREATE TABLE held (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    store        TEXT   NOT NULL,
    lane         TEXT   NOT NULL,
    epoch        BIGINT NOT NULL,
    seq          BIGINT NOT NULL,
    kind         TEXT   NOT NULL,
    txn_id       TEXT   NOT NULL,
    ts           BIGINT NOT NULL,
    hash         BYTEA  NOT NULL,
    code         TEXT   NOT NULL CHECK (code IN
                     ('card_number', 'invalid_body', 'txn_conflict', 'apply_failed')),
    reason       TEXT   NOT NULL,
    body         BYTEA,
    body_masked  BYTEA,
    body_len     BIGINT NOT NULL,
    body_sha256  BYTEA  NOT NULL,
    held_at      BIGINT NOT NULL,
    state        TEXT   NOT NULL DEFAULT 'held' CHECK (state IN ('held', 'released', 'voided')),
    closed_at    BIGINT,
    closed_by    TEXT,
    close_reason TEXT,
    UNIQUE (store, lane, epoch, seq),
    CHECK ((body IS NULL) = (code = 'card_number')),
    CHECK ((body_masked IS NULL) = (body IS NOT NULL)),
    CHECK (state <> 'released' OR body IS NOT NULL)
);
CREATE INDEX held_open ON held (state, store, lane);
CREATE INDEX held_txn ON held (txn_id);

ALTER TABLE quarantine ADD COLUMN raw_len BIGINT;
ALTER TABLE quarantine ADD COLUMN raw_sha256 BYTEA;
CREATE INDEX quarantine_recent ON quarantine (last_at);
CREATE INDEX quarantine_lane ON quarantine (store, lane, times);
CREATE INDEX quarantine_unscrubbed ON quarantine (id) WHERE raw_sha256 IS NULL;
