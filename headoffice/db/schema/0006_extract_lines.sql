-- lanesync head office, schema version 6: the extract's projection (headoffice/extract/
-- projection.py). Each sale-family document head office applies is also written here, parsed,
-- in the ingest transaction that applies it, so an extract run reads lines and payments as
-- rows instead of decoding every body again. Keyed by journal position (store, lane, epoch,
-- seq): a lane's documents arrive in seq order, so inserts append to the B-tree. A document
-- that is not here (applied before schema 6, or one the extract would reject) is read from
-- journal.body as before, with the same result.

-- The header of a document as headoffice.extract.documents.parse reads it.
CREATE TABLE extract_docs (
    store           TEXT    NOT NULL,
    lane            TEXT    NOT NULL,
    epoch           INTEGER NOT NULL,
    seq             INTEGER NOT NULL,
    register_no     TEXT    NOT NULL,
    business_day    TEXT    NOT NULL,
    currency        TEXT    NOT NULL,
    customer        TEXT,
    total           INTEGER NOT NULL,             -- minor units
    change          INTEGER NOT NULL,
    return_type     TEXT,
    original_txn_id TEXT,
    PRIMARY KEY (store, lane, epoch, seq)
) STRICT, WITHOUT ROWID;

-- Its lines, in document order (idx from 0).
CREATE TABLE extract_lines (
    store       TEXT    NOT NULL,
    lane        TEXT    NOT NULL,
    epoch       INTEGER NOT NULL,
    seq         INTEGER NOT NULL,
    idx         INTEGER NOT NULL,
    line_no     INTEGER NOT NULL,
    item        TEXT    NOT NULL,
    description TEXT,
    qty         INTEGER NOT NULL,                 -- thousandths
    unit_price  INTEGER NOT NULL,
    tax_code    TEXT    NOT NULL,
    amount      INTEGER NOT NULL,
    tax         INTEGER NOT NULL,
    open_qty    INTEGER NOT NULL,                 -- thousandths, 0 when absent
    PRIMARY KEY (store, lane, epoch, seq, idx)
) STRICT, WITHOUT ROWID;

-- Its payments, in document order (idx from 0). last4 and token only: never a card number.
CREATE TABLE extract_payments (
    store  TEXT    NOT NULL,
    lane   TEXT    NOT NULL,
    epoch  INTEGER NOT NULL,
    seq    INTEGER NOT NULL,
    idx    INTEGER NOT NULL,
    tender TEXT    NOT NULL,
    amount INTEGER NOT NULL,
    scheme TEXT,
    token  TEXT,
    last4  TEXT,
    banked INTEGER NOT NULL,                      -- 1 banked, 0 card clearing
    PRIMARY KEY (store, lane, epoch, seq, idx)
) STRICT, WITHOUT ROWID;
