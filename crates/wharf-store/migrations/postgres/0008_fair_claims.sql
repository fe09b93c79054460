-- Fair claims: ready runs by fleet, in arrival order. A claim walks the fleets that have ready
-- runs (one index seek each) and takes at most a batch of runs from each, so its cost follows
-- the number of such fleets and the batch size, never a fleet's backlog.
CREATE INDEX runs_ready_by_fleet ON runs(fleet_id, seq) WHERE status = 'queued' AND NOT held;
-- Claims no longer walk all ready runs in arrival order. Left in place, this index would also
-- tempt the planner into walking every fleet's runs in `seq` order looking for one fleet's.
DROP INDEX runs_ready;
