-- Scheduling: replays link to the run they repeat, resumes name the vessel they restart from,
-- and a cancel asked for while a run is running is recorded for its worker.

ALTER TABLE runs ADD COLUMN replay_of TEXT;
ALTER TABLE runs ADD COLUMN resumed_from TEXT;
ALTER TABLE runs ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;
