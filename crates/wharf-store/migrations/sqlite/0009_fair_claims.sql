-- Fair claims: ready runs by fleet, in arrival order. A claim walks the fleets that have ready
-- runs (one index seek each) and takes at most a batch of runs from each, so its cost follows
-- the number of such fleets and the batch size, never a fleet's backlog.
CREATE INDEX runs_ready_by_fleet ON runs(fleet_id, seq) WHERE status = 'queued' AND held = 0;
-- `runs_ready` stays: the oldest-first order, which the store benchmark measures fairness
-- against, walks it. Claims name their index (INDEXED BY), so it never misleads them.
