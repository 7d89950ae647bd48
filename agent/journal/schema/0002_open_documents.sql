-- lanesync lane journal, schema version 2: lane-local state that is not replicated.
-- Open (in-progress) sales and transits live here, not in `entries`: they are not documents yet,
-- head office must never apply half a sale, and a till edits a sale dozens of times. Every change
-- is committed (synchronous=FULL) before the API answers, so kill -9 resumes where it was; the
-- completed document is journaled under the open document's id as txn_id, then the row goes.

CREATE TABLE open_docs (
    id         TEXT    PRIMARY KEY,       -- the txn_id the completed document will carry
    kind       TEXT    NOT NULL,          -- a sale-family kind
    mode       INTEGER NOT NULL DEFAULT 0 CHECK (mode IN (0, 8)),  -- 8: transit (setmode 8)
    state      TEXT    NOT NULL CHECK (state IN ('open', 'parked')),
    body       TEXT    NOT NULL,          -- JSON: the document so far
    version    INTEGER NOT NULL,          -- bumped by every change
    created_at INTEGER NOT NULL,          -- ms since the Unix epoch, UTC
    updated_at INTEGER NOT NULL
) STRICT;

-- Counters the lane hands out. 'sscc': last SSCC serial, written durably before the number is
-- used, never reused. 'register:<prefix>': a checkpoint of the register number counter; numbers
-- handed out after it are in entries with seq > at_seq (or in open_docs), found again at start.
CREATE TABLE counters (
    name   TEXT    PRIMARY KEY,
    value  INTEGER NOT NULL,
    at_seq INTEGER NOT NULL DEFAULT 0
) STRICT;
