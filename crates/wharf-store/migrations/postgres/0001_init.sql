-- wharf schema, PostgreSQL. Times are milliseconds since the Unix epoch; ids are UUIDs.
-- The same tables as the SQLite store (see migrations/sqlite), in one migration.

CREATE TABLE orgs (
    id          UUID PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id          UUID PRIMARY KEY,
    org_id      UUID NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    key_hash    TEXT NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);

CREATE TABLE projects (
    id          UUID PRIMARY KEY,
    org_id      UUID NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE code (
    sha256      TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    bytes       BYTEA NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE fleets (
    id          UUID PRIMARY KEY,
    project_id  UUID NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    spec        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE TABLE webhooks (
    id          TEXT PRIMARY KEY,
    fleet_id    UUID NOT NULL UNIQUE REFERENCES fleets(id) ON DELETE CASCADE,
    auth        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

-- History outlives fleets: no foreign key to fleets.
CREATE TABLE requests (
    id            UUID PRIMARY KEY,
    fleet_id      UUID NOT NULL,
    method        TEXT NOT NULL,
    content_type  TEXT NOT NULL,
    headers       TEXT NOT NULL,
    query         TEXT NOT NULL,
    body          BYTEA NOT NULL,
    body_size     BIGINT NOT NULL,
    received_at   BIGINT NOT NULL
);

CREATE TABLE runs (
    seq            BIGSERIAL PRIMARY KEY,
    id             UUID NOT NULL UNIQUE,
    fleet_id       UUID NOT NULL,
    request_id     UUID NOT NULL REFERENCES requests(id),
    status         TEXT NOT NULL,
    serial         BOOLEAN NOT NULL DEFAULT FALSE,
    held           BOOLEAN NOT NULL DEFAULT FALSE,
    attempt        INTEGER NOT NULL DEFAULT 0,
    variables      TEXT NOT NULL DEFAULT '{}',
    vessels        TEXT NOT NULL DEFAULT '[]',
    error          TEXT,
    reason         TEXT,
    lost_attempts  JSONB NOT NULL DEFAULT '[]',
    lease_owner    TEXT,
    lease_token    BIGINT,
    lease_until    BIGINT,
    created_at     BIGINT NOT NULL,
    started_at     BIGINT,
    finished_at    BIGINT
);

CREATE INDEX runs_by_fleet ON runs(fleet_id, seq);
CREATE INDEX runs_ready ON runs(seq) WHERE status = 'queued' AND NOT held;
CREATE INDEX runs_held ON runs(fleet_id, seq) WHERE held;
CREATE INDEX runs_active ON runs(fleet_id, status, seq) WHERE status IN ('queued', 'running');
CREATE INDEX runs_leased ON runs(lease_until) WHERE status = 'running';
