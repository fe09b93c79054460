-- Admission: per-webhook rate limits and deduplication, idempotency keys, keyed concurrency,
-- and the indexes retention deletes by.

-- Webhook settings, as JSON; NULL: not set.
ALTER TABLE webhooks ADD COLUMN rate_limit TEXT;
ALTER TABLE webhooks ADD COLUMN deduplicate TEXT;

-- The value of the fleet's concurrency key for this run (NULL: the policy has no key). The
-- `queue` and `reject` policies apply among runs of one fleet with the same value.
ALTER TABLE runs ADD COLUMN concurrency_key TEXT;

-- Replaces runs_held: the next held run is looked up per (fleet, key).
DROP INDEX runs_held;
CREATE INDEX runs_held ON runs(fleet_id, concurrency_key, seq) WHERE held = 1;
-- `reject` and `queue` checks per (fleet, key).
CREATE INDEX runs_active_by_key ON runs(fleet_id, concurrency_key, serial)
    WHERE status IN ('queued', 'running');
-- Retention: old finished runs; whether a request still has a run (also what the foreign key
-- check of a request's deletion looks up); old requests.
CREATE INDEX runs_finished ON runs(finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX runs_by_request ON runs(request_id);
CREATE INDEX requests_by_time ON requests(received_at);

-- A call's key (the header it came from, a colon, its value) within its fleet, for 24 h.
CREATE TABLE idempotency_keys (
    fleet_id    TEXT NOT NULL,
    key         TEXT NOT NULL,
    request_id  TEXT NOT NULL,
    run_id      TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (fleet_id, key)
) WITHOUT ROWID;
CREATE INDEX idempotency_keys_by_time ON idempotency_keys(created_at);

-- Rate-limit state per fleet (a webhook's limit outlives a rotation of its URL): the GCRA
-- theoretical arrival time, in microseconds. A row whose time has passed holds nothing back.
CREATE TABLE rate_limits (
    fleet_id    TEXT PRIMARY KEY,
    tat_us      INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX rate_limits_by_time ON rate_limits(tat_us);
