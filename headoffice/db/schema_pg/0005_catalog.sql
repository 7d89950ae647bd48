-- lanesync head office, schema version 5 (PostgreSQL): the catalog. Mirrors
-- schema/0005_catalog.sql; see there for what each column means. Keys compare and sort
-- COLLATE "C" (byte order), the order protocol.catalog and the lanes sort them in.

CREATE TABLE catalog_versions (
    version   BIGINT   PRIMARY KEY,
    dataset   TEXT     NOT NULL,
    loaded_at BIGINT   NOT NULL,
    source    TEXT     NOT NULL,
    added     BIGINT   NOT NULL,
    changed   BIGINT   NOT NULL,
    removed   BIGINT   NOT NULL,
    upsert    SMALLINT NOT NULL DEFAULT 0
);

CREATE TABLE catalog_rows (
    dataset       TEXT COLLATE "C" NOT NULL,
    key           TEXT COLLATE "C" NOT NULL,
    scope         TEXT COLLATE "C" NOT NULL,
    body          BYTEA  NOT NULL,
    digest        BYTEA  NOT NULL,
    since_version BIGINT NOT NULL,
    until_version BIGINT,
    PRIMARY KEY (dataset, key, since_version),
    CHECK (until_version IS NULL OR until_version > since_version)
);
CREATE UNIQUE INDEX catalog_rows_current ON catalog_rows (dataset, key) WHERE until_version IS NULL;
CREATE INDEX catalog_rows_scope ON catalog_rows (scope, dataset, key, since_version);
CREATE INDEX catalog_rows_since ON catalog_rows (scope, since_version);
CREATE INDEX catalog_rows_until ON catalog_rows (scope, until_version) WHERE until_version IS NOT NULL;

CREATE TABLE catalog_scope_hashes (
    scope   TEXT COLLATE "C" NOT NULL,
    version BIGINT NOT NULL,
    hash    BYTEA  NOT NULL,
    rows    BIGINT NOT NULL,
    PRIMARY KEY (scope, version)
);
CREATE INDEX catalog_scope_hashes_version ON catalog_scope_hashes (version);

ALTER TABLE lanes ADD COLUMN catalog_version BIGINT;

-- held.code also allows 'unregistered'; PostgreSQL alters the CHECK in place (rows and
-- indexes stay). The constraint of 0004's column CHECK has PostgreSQL's default name.
ALTER TABLE held DROP CONSTRAINT held_code_check;
ALTER TABLE held ADD CONSTRAINT held_code_check CHECK (code IN
    ('card_number', 'invalid_body', 'txn_conflict', 'apply_failed', 'unregistered'));
