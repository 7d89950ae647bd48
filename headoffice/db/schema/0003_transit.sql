-- lanesync head office, schema version 3: the central transit inventory (headoffice/transit).
-- Built from journaled transit_inventory documents inside the ingest transaction; accepted
-- (exactly once) by the transit.accept request of a lane at the destination store.

-- One row per parcel. status: in_transit -> received (transit.accept) or cancelled.
CREATE TABLE transit_inventory (
    txn_id          TEXT    PRIMARY KEY,        -- the transit_inventory document
    transit_no      TEXT    NOT NULL,           -- register number of the creating lane (T10001)
    sscc            TEXT    UNIQUE,             -- 18 digits; NULL only for a transit without one
    status          TEXT    NOT NULL CHECK (status IN ('in_transit', 'received', 'cancelled')),
    source_store    TEXT    NOT NULL,
    dest_store      TEXT    NOT NULL,
    by_type         TEXT,                       -- staff, customer, supplier, courier
    by_id           TEXT,
    currency        TEXT,
    created_store   TEXT    NOT NULL,
    created_lane    TEXT    NOT NULL,
    created_by      TEXT,                       -- staff on the document
    created_at      INTEGER NOT NULL,           -- ms, the lane's journal time
    received_store  TEXT,
    received_lane   TEXT,
    received_by     TEXT,
    received_at     INTEGER,                    -- ms, head office's clock at accept
    accept_request  TEXT    UNIQUE,             -- request id of the accept (= lane's accept txn_id)
    accept_txn_id   TEXT,                       -- the lane's journaled transit_inventory_accept
    cancelled_at    INTEGER,
    cancelled_by    TEXT
) STRICT;
CREATE INDEX transit_inventory_no ON transit_inventory (transit_no);
CREATE INDEX transit_inventory_open ON transit_inventory (status, dest_store);

CREATE TABLE transit_inventory_lines (
    txn_id      TEXT    NOT NULL REFERENCES transit_inventory (txn_id),
    line_no     INTEGER NOT NULL,
    item        TEXT    NOT NULL,
    description TEXT,
    qty         TEXT    NOT NULL,               -- decimal string, three places, as journaled
    PRIMARY KEY (txn_id, line_no)
) STRICT, WITHOUT ROWID;

-- Stock per location in thousandths of a unit (qty 1.000 = 1000): no floats (invariant 5).
-- Locations are store ids, and '@transit' (not a valid store id) for parcels on the road.
-- Moved by transits (create, accept, cancel) and stock adjustments.
CREATE TABLE stock (
    location TEXT    NOT NULL,
    item     TEXT    NOT NULL,
    qty      INTEGER NOT NULL,
    PRIMARY KEY (location, item)
) STRICT, WITHOUT ROWID;

-- Accept requests that succeeded, by request id: a retried accept gets the original answer.
CREATE TABLE transit_requests (
    request_id TEXT    PRIMARY KEY,
    store      TEXT    NOT NULL,
    lane       TEXT    NOT NULL,
    txn_id     TEXT    NOT NULL,                -- the transit
    at         INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
