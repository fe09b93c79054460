-- Authentication: listing API keys without the key, and URL rotation with a grace period.
ALTER TABLE api_keys ADD COLUMN prefix TEXT;
ALTER TABLE api_keys ADD COLUMN last_used_at BIGINT;
CREATE INDEX api_keys_org ON api_keys (org_id, created_at);

-- The id before the last rotation keeps resolving until previous_until (ms).
ALTER TABLE webhooks ADD COLUMN previous_id TEXT;
ALTER TABLE webhooks ADD COLUMN previous_until BIGINT;
CREATE UNIQUE INDEX webhooks_previous_id ON webhooks (previous_id);
