-- Dashboard sessions signed out before they expired, by the sha256 of the session's id; kept
-- until the session would have expired (`until`, ms), then pruned.
CREATE TABLE revoked_sessions (
    id_hash  TEXT PRIMARY KEY,
    until    BIGINT NOT NULL
);
CREATE INDEX revoked_sessions_by_until ON revoked_sessions(until);
