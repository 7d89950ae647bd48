-- lanesync head office, schema version 7 (PostgreSQL). Mirrors schema/0007_stock_leases.sql;
-- see there for what each column means.

ALTER TABLE documents ADD COLUMN catalog_version BIGINT;

CREATE TABLE sscc_leases (
    first      BIGINT PRIMARY KEY,
    last       BIGINT NOT NULL CHECK (last >= first),
    store      TEXT   NOT NULL,
    lane       TEXT   NOT NULL,
    epoch      BIGINT NOT NULL,
    request_id TEXT   NOT NULL UNIQUE,
    at         BIGINT NOT NULL
);
CREATE INDEX sscc_leases_lane ON sscc_leases (store, lane, epoch);
