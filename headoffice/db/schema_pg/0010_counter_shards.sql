-- lanesync head office, schema version 10 (PostgreSQL only): counters in shards (issue 17.4).
-- Every ingest worker adds to the same few counters at each commit; with one row per counter
-- the row lock taken by one worker's upsert is held through its COMMIT's WAL flush, so the
-- workers' commits queued behind each other on it (seen as Lock:transactionid waits on the
-- counters upsert in pg_stat_activity during `lanesync bench fleet --backends pg3`). Each
-- commit now adds to one of a fixed number of rows per counter (headoffice/db/postgres.py
-- COUNTER_SHARDS, picked at random per commit), and readers sum them. Existing values stay in
-- shard 0. SQLite head office is one process and keeps schema 8.
ALTER TABLE counters ADD COLUMN shard SMALLINT NOT NULL DEFAULT 0;
ALTER TABLE counters DROP CONSTRAINT counters_pkey;
ALTER TABLE counters ADD PRIMARY KEY (name, shard);
