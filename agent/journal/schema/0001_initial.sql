-- lanesync lane journal, schema version 1.
-- Every confirmed document is one row of `entries`, never updated or deleted while unacked.
-- The outbox is not a table of its own: it is every entry with seq > outbox.acked_seq, so an
-- entry leaves the outbox only when head office's ack moves acked_seq past it (invariant 2).

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value ANY NOT NULL
) STRICT;

-- The epoch is created with the database: 63 random bits so it fits SQLite's and PostgreSQL's
-- signed 64-bit integers; a recreated or restored-empty journal gets a new one.
INSERT INTO meta (key, value) VALUES ('epoch', (random() & 0x7FFFFFFFFFFFFFFF) | 1);
INSERT INTO meta (key, value) VALUES ('created_at', CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));

CREATE TABLE entries (
    seq     INTEGER PRIMARY KEY,         -- 1, 2, 3 ... per epoch, assigned in the append txn
    kind    TEXT    NOT NULL,
    txn_id  TEXT    NOT NULL UNIQUE,     -- a retried submit of the same document is not a new one
    ts      INTEGER NOT NULL,            -- ms since the Unix epoch, UTC
    body    BLOB    NOT NULL,            -- msgpack document, hashed as these exact bytes
    hash    BLOB    NOT NULL CHECK (length(hash) = 32)
) STRICT;

CREATE TABLE outbox (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    acked_seq INTEGER NOT NULL DEFAULT 0,  -- head office's high-water mark for this epoch
    acked_at  INTEGER                      -- ms since the Unix epoch of the last ack that moved it
) STRICT;
INSERT INTO outbox (id, acked_seq) VALUES (1, 0);
