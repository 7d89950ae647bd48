-- lanesync head office, schema version 8 (PostgreSQL). Mirrors schema/0008_retired_epochs.sql;
-- see there for what each column means.

CREATE TABLE retired_epochs (
    store      TEXT   NOT NULL,
    lane       TEXT   NOT NULL,
    epoch      BIGINT NOT NULL,
    retired_at BIGINT NOT NULL,
    note       TEXT   NOT NULL,
    PRIMARY KEY (store, lane, epoch)
);
