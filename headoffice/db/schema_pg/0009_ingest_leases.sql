-- lanesync head office, schema version 9 (PostgreSQL only): ingest workers own stores through
-- leases (issue 17.4, headoffice/ingest/leases.py). SQLite head office is one process and has
-- no such tables; its schema stays at 8.

-- One row per live (or recently live) ingest worker: its heartbeat. The stores are split over
-- the workers whose expires_at is in the future (rendezvous hashing over their ids). The
-- counters are the worker's own at its last heartbeat, for operators and tests.
CREATE TABLE ingest_workers (
    worker          TEXT        PRIMARY KEY,   -- the MQTT client id (lanesync-headoffice-w1)
    expires_at      TIMESTAMPTZ NOT NULL,      -- now() + lease_ttl_s at its last heartbeat
    started_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    stores          BIGINT      NOT NULL DEFAULT 0,  -- stores it held then
    entries_applied BIGINT      NOT NULL DEFAULT 0,
    gaps            BIGINT      NOT NULL DEFAULT 0,  -- resend requests it sent for gaps
    gaps_held       BIGINT      NOT NULL DEFAULT 0,  -- batches it held for a predecessor
    takeovers       BIGINT      NOT NULL DEFAULT 0   -- stores it acquired
);

-- One row per known store (the store registry's, every store in `lanes`, and stores first
-- heard by the discovery role's hello subscription), and one for the discovery role itself
-- (store '*', never a topic segment). A worker holds a store while holder is its id and
-- expires_at is in the future; it takes one only with UPDATE ... WHERE holder IS NULL OR
-- expires_at <= now() OR holder = itself, the fencing that keeps a store on one worker.
CREATE TABLE ingest_leases (
    store      TEXT        PRIMARY KEY,
    holder     TEXT,                      -- NULL: released, free to take
    expires_at TIMESTAMPTZ,
    since      TIMESTAMPTZ                -- when the holder took it
);
