-- lanesync head office, schema version 3 (PostgreSQL): the central transit inventory.
-- Mirrors schema/0003_transit.sql; see there for what each column means.

CREATE TABLE transit_inventory (
    txn_id          TEXT   PRIMARY KEY,
    transit_no      TEXT   NOT NULL,
    sscc            TEXT   UNIQUE,
    status          TEXT   NOT NULL CHECK (status IN ('in_transit', 'received', 'cancelled')),
    source_store    TEXT   NOT NULL,
    dest_store      TEXT   NOT NULL,
    by_type         TEXT,
    by_id           TEXT,
    currency        TEXT,
    created_store   TEXT   NOT NULL,
    created_lane    TEXT   NOT NULL,
    created_by      TEXT,
    created_at      BIGINT NOT NULL,
    received_store  TEXT,
    received_lane   TEXT,
    received_by     TEXT,
    received_at     BIGINT,
    accept_request  TEXT   UNIQUE,
    accept_txn_id   TEXT,
    cancelled_at    BIGINT,
    cancelled_by    TEXT
);
CREATE INDEX transit_inventory_no ON transit_inventory (transit_no);
CREATE INDEX transit_inventory_open ON transit_inventory (status, dest_store);

CREATE TABLE transit_inventory_lines (
    txn_id      TEXT   NOT NULL REFERENCES transit_inventory (txn_id),
    line_no     BIGINT NOT NULL,
    item        TEXT   NOT NULL,
    description TEXT,
    qty         TEXT   NOT NULL,
    PRIMARY KEY (txn_id, line_no)
);

-- Stock per location in thousandths of a unit; '@transit' for parcels on the road.
CREATE TABLE stock (
    location TEXT   NOT NULL,
    item     TEXT   NOT NULL,
    qty      BIGINT NOT NULL,
    PRIMARY KEY (location, item)
);

CREATE TABLE transit_requests (
    request_id TEXT   PRIMARY KEY,
    store      TEXT   NOT NULL,
    lane       TEXT   NOT NULL,
    txn_id     TEXT   NOT NULL,
    at         BIGINT NOT NULL
);
