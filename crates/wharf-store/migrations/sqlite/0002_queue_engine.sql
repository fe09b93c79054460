-- The queue engine: fenced leases, runs held back by the `queue` policy, typed run-level
-- reasons, the record of lost attempts, and indexes for exactly what claims and policies look up.

ALTER TABLE runs ADD COLUMN held INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN lease_token INTEGER;
ALTER TABLE runs ADD COLUMN reason TEXT;
ALTER TABLE runs ADD COLUMN lost_attempts TEXT NOT NULL DEFAULT '[]';

-- A `queue` fleet has at most one run that is queued-and-claimable or running; the others wait
-- with held = 1 until it ends. Runs queued before this migration were claimed with a check at
-- claim time; hold back all but the oldest of each busy serial fleet now.
UPDATE runs SET held = 1
WHERE status = 'queued' AND serial = 1 AND EXISTS (
    SELECT 1 FROM runs b
    WHERE b.fleet_id = runs.fleet_id AND b.serial = 1 AND b.status IN ('queued', 'running')
      AND b.seq < runs.seq);

DROP INDEX runs_by_status;
-- Claims: the oldest claimable runs, without stepping over held ones.
CREATE INDEX runs_ready ON runs(seq) WHERE status = 'queued' AND held = 0;
-- The next run of a `queue` fleet to release when its running one ends.
CREATE INDEX runs_held ON runs(fleet_id, seq) WHERE held = 1;
-- `reject` and `queue` checks, and history pages filtered on queued / running.
CREATE INDEX runs_active ON runs(fleet_id, status, seq) WHERE status IN ('queued', 'running');
-- Leases that ran out.
CREATE INDEX runs_leased ON runs(lease_until) WHERE status = 'running';
