-- lanesync head office, schema version 7: stock from every kind, the catalog version each
-- document was checked against, and SSCC serial leases (issue 15 items 1, 5 and 6).

-- The catalog version a lane checked the document against (its body's `catalog_version`);
-- NULL for documents journaled before lanes recorded it.
ALTER TABLE documents ADD COLUMN catalog_version INTEGER;

-- SSCC serials head office leased to lanes, in blocks [first, last] of one chain-wide
-- counter (headoffice/sscc): a serial is leased once, whatever epoch or box asks next.
CREATE TABLE sscc_leases (
    first      INTEGER PRIMARY KEY,     -- first serial of the block
    last       INTEGER NOT NULL CHECK (last >= first),
    store      TEXT    NOT NULL,
    lane       TEXT    NOT NULL,
    epoch      INTEGER NOT NULL,        -- the lane's journal epoch when it asked
    request_id TEXT    NOT NULL UNIQUE, -- the request's correlation id: a retry gets this block
    at         INTEGER NOT NULL         -- ms, head office's clock
) STRICT;
CREATE INDEX sscc_leases_lane ON sscc_leases (store, lane, epoch);
