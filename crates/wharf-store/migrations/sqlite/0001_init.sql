-- wharf schema, SQLite. Times are milliseconds since the Unix epoch; ids are UUID text.

CREATE TABLE orgs (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    org_id      TEXT NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    key_hash    TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);

CREATE TABLE projects (
    id          TEXT PRIMARY KEY,
    org_id      TEXT NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

-- Vessel code, content-addressed: fleets refer to it by sha256.
CREATE TABLE code (
    sha256      TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    bytes       BLOB NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE fleets (
    id          TEXT PRIMARY KEY,
    project_id  TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    spec        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

CREATE TABLE webhooks (
    id          TEXT PRIMARY KEY,
    fleet_id    TEXT NOT NULL UNIQUE REFERENCES fleets(id) ON DELETE CASCADE,
    auth        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

-- History: requests and runs outlive their fleet, so no foreign key to fleets.
CREATE TABLE requests (
    id            TEXT PRIMARY KEY,
    fleet_id      TEXT NOT NULL,
    method        TEXT NOT NULL,
    content_type  TEXT NOT NULL,
    headers       TEXT NOT NULL,
    query         TEXT NOT NULL,
    body          BLOB NOT NULL,
    body_size     INTEGER NOT NULL,
    received_at   INTEGER NOT NULL
);

CREATE TABLE runs (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    id           TEXT NOT NULL UNIQUE,
    fleet_id     TEXT NOT NULL,
    request_id   TEXT NOT NULL REFERENCES requests(id),
    status       TEXT NOT NULL,
    serial       INTEGER NOT NULL DEFAULT 0,
    attempt      INTEGER NOT NULL DEFAULT 0,
    variables    TEXT NOT NULL DEFAULT '{}',
    vessels      TEXT NOT NULL DEFAULT '[]',
    error        TEXT,
    lease_owner  TEXT,
    lease_until  INTEGER,
    created_at   INTEGER NOT NULL,
    started_at   INTEGER,
    finished_at  INTEGER
);

-- The queue: claims walk queued runs in order; history pages walk one fleet's runs.
CREATE INDEX runs_by_status ON runs(status, seq);
CREATE INDEX runs_by_fleet ON runs(fleet_id, seq);
