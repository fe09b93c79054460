-- Admission: per-webhook rate limits and deduplication, idempotency keys, keyed concurrency,
-- and the indexes retention deletes by. The same as the SQLite store's 0004_admission.

ALTER TABLE webhooks ADD COLUMN rate_limit TEXT;
ALTER TABLE webhooks ADD COLUMN deduplicate TEXT;

ALTER TABLE runs ADD COLUMN concurrency_key TEXT;

DROP INDEX runs_held;
CREATE INDEX runs_held ON runs(fleet_id, concurrency_key, seq) WHERE held;
CREATE INDEX runs_active_by_key ON runs(fleet_id, concurrency_key, serial)
    WHERE status IN ('queued', 'running');
CREATE INDEX runs_finished ON runs(finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX runs_by_request ON runs(request_id);
CREATE INDEX requests_by_time ON requests(received_at);

CREATE TABLE idempotency_keys (
    fleet_id    UUID NOT NULL,
    key         TEXT NOT NULL,
    request_id  UUID NOT NULL,
    run_id      UUID NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (fleet_id, key)
);
CREATE INDEX idempotency_keys_by_time ON idempotency_keys(created_at);

CREATE TABLE rate_limits (
    fleet_id    UUID PRIMARY KEY,
    tat_us      BIGINT NOT NULL
);
CREATE INDEX rate_limits_by_time ON rate_limits(tat_us);
