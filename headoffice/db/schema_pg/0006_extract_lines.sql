-- lanesync head office, schema version 6 (PostgreSQL): the extract's projection. Mirrors
-- schema/0006_extract_lines.sql; see there for what each column means.

CREATE TABLE extract_docs (
    store           TEXT   NOT NULL,
    lane            TEXT   NOT NULL,
    epoch           BIGINT NOT NULL,
    seq             BIGINT NOT NULL,
    register_no     TEXT   NOT NULL,
    business_day    TEXT   NOT NULL,
    currency        TEXT   NOT NULL,
    customer        TEXT,
    total           BIGINT NOT NULL,
    change          BIGINT NOT NULL,
    return_type     TEXT,
    original_txn_id TEXT,
    PRIMARY KEY (store, lane, epoch, seq)
);

CREATE TABLE extract_lines (
    store       TEXT   NOT NULL,
    lane        TEXT   NOT NULL,
    epoch       BIGINT NOT NULL,
    seq         BIGINT NOT NULL,
    idx         BIGINT NOT NULL,
    line_no     BIGINT NOT NULL,
    item        TEXT   NOT NULL,
    description TEXT,
    qty         BIGINT NOT NULL,
    unit_price  BIGINT NOT NULL,
    tax_code    TEXT   NOT NULL,
    amount      BIGINT NOT NULL,
    tax         BIGINT NOT NULL,
    open_qty    BIGINT NOT NULL,
    PRIMARY KEY (store, lane, epoch, seq, idx)
);

CREATE TABLE extract_payments (
    store  TEXT   NOT NULL,
    lane   TEXT   NOT NULL,
    epoch  BIGINT NOT NULL,
    seq    BIGINT NOT NULL,
    idx    BIGINT NOT NULL,
    tender TEXT   NOT NULL,
    amount BIGINT NOT NULL,
    scheme TEXT,
    token  TEXT,
    last4  TEXT,
    banked SMALLINT NOT NULL,
    PRIMARY KEY (store, lane, epoch, seq, idx)
);
