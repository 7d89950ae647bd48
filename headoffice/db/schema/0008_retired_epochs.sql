-- lanesync head office, schema version 8: lane epochs retired when a till box is replaced
-- (issue 18 item 5, `lanesync headoffice lane retire S001/L1 --epoch E`, headoffice/retire.py).

-- A retired epoch is never the lane's current one on the status page, and a box still
-- sending under it is refused; an import of its USB export still applies (exactly once).
CREATE TABLE retired_epochs (
    store      TEXT    NOT NULL,
    lane       TEXT    NOT NULL,
    epoch      INTEGER NOT NULL,
    retired_at INTEGER NOT NULL,    -- ms, head office's clock
    note       TEXT    NOT NULL,    -- who or why, as the operator gave it
    PRIMARY KEY (store, lane, epoch)
) STRICT, WITHOUT ROWID;
