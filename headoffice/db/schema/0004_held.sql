-- lanesync head office, schema version 4: held entries (design invariant 9) and quarantine rows
-- capped in size with no card number in them (issue 12).

-- A journal entry head office could not apply, held at its seq. The lane's high-water mark and
-- chain (lanes.hwm, lanes.last_hash) move past it, so the lane's later entries apply in order;
-- the entry has no journal or documents row. It is kept for an operator to release (apply it
-- once, after the rule or the data is fixed) or void (close it, applied never). An entry whose
-- body carries a card number keeps only a masked copy (protocol.pan.mask_bytes) and the sha256
-- of the original: it can only be voided.
CREATE TABLE held (
    id           INTEGER PRIMARY KEY,
    store        TEXT    NOT NULL,
    lane         TEXT    NOT NULL,
    epoch        INTEGER NOT NULL,
    seq          INTEGER NOT NULL,
    kind         TEXT    NOT NULL,
    txn_id       TEXT    NOT NULL,
    ts           INTEGER NOT NULL,
    hash         BLOB    NOT NULL,            -- the entry's chain hash, verified at ingest
    code         TEXT    NOT NULL CHECK (code IN
                     ('card_number', 'invalid_body', 'txn_conflict', 'apply_failed')),
    reason       TEXT    NOT NULL,            -- names the field or the lanes; never a card number
    body         BLOB,                        -- the exact bytes the lane chained (NULL: card number)
    body_masked  BLOB,                        -- card-number entries only: card numbers masked
    body_len     INTEGER NOT NULL,            -- of the original body
    body_sha256  BLOB    NOT NULL,            -- of the original body
    held_at      INTEGER NOT NULL,
    state        TEXT    NOT NULL DEFAULT 'held' CHECK (state IN ('held', 'released', 'voided')),
    closed_at    INTEGER,                     -- when released or voided
    closed_by    TEXT,
    close_reason TEXT,
    UNIQUE (store, lane, epoch, seq),
    CHECK ((body IS NULL) = (code = 'card_number')),
    CHECK ((body_masked IS NULL) = (body IS NOT NULL)),
    CHECK (state <> 'released' OR body IS NOT NULL)
) STRICT;
CREATE INDEX held_open ON held (state, store, lane);
CREATE INDEX held_txn ON held (txn_id);

-- Quarantine rows keep the first 4 KiB of a refused payload with card numbers masked, its
-- original length and the sha256 of the original. Rows written before version 4 (raw kept
-- whole, NULL here) are masked and cut by the store when it opens the database.
ALTER TABLE quarantine ADD COLUMN raw_len INTEGER;
ALTER TABLE quarantine ADD COLUMN raw_sha256 BLOB;
CREATE INDEX quarantine_recent ON quarantine (last_at);
CREATE INDEX quarantine_lane ON quarantine (store, lane, times);
CREATE INDEX quarantine_unscrubbed ON quarantine (id) WHERE raw_sha256 IS NULL;
