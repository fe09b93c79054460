-- The outbox: one row per batch of rows to send to one destination after a run. Created in the
-- transaction that records the run's end, so a run that finished always has its deliveries.
-- `request` holds method, URL, headers (secret ones sealed) and retry settings as JSON, so a
-- change of the fleet later does not change what an existing delivery sends.

CREATE TABLE deliveries (
    id           TEXT PRIMARY KEY,
    run_id       TEXT NOT NULL,
    fleet_id     TEXT NOT NULL,
    destination  TEXT NOT NULL,
    batch        INTEGER NOT NULL,
    batches      INTEGER NOT NULL,
    row_count    INTEGER NOT NULL,
    request      TEXT NOT NULL,
    body         TEXT NOT NULL,
    status       TEXT NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    attempt_log  TEXT NOT NULL DEFAULT '[]',
    next_at      INTEGER,
    lease_owner  TEXT,
    lease_token  INTEGER,
    lease_until  INTEGER,
    created_at   INTEGER NOT NULL,
    finished_at  INTEGER
);

-- A run's deliveries (the API, retention).
CREATE INDEX deliveries_by_run ON deliveries(run_id, destination, batch);
-- Claims: pending deliveries by due time.
CREATE INDEX deliveries_due ON deliveries(next_at) WHERE status = 'pending';
-- Retention: deliveries whose run was pruned.
CREATE INDEX deliveries_by_created ON deliveries(created_at);
