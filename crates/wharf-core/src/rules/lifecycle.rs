//! What becomes of a run when it is cancelled, replayed, or its worker is lost; decided once
//! for both stores, with the reasons and messages they store.

use std::collections::BTreeSet;

use serde::Serialize;
use uuid::Uuid;

use super::Slot;
use super::admission::{Placed, SlotState, place};
use crate::fleet::Policy;
use crate::records::{Admission, CancelOutcome, Requeued, RunReason, RunStatus};

/// Run-level reason of a run cancelled before it started.
pub const CANCELLED: &str = RunReason::Cancelled.as_str();
/// Run-level error of a run cancelled before it started.
pub const CANCELLED_BEFORE_START: &str = "cancelled before it started";
/// Reason of a lost attempt, and of a run re-queued after one.
pub const NODE_LOST: &str = RunReason::NodeLost.as_str();
/// Run-level reason of a run failed after its last attempt was lost.
pub const MAX_ATTEMPTS: &str = RunReason::MaxAttempts.as_str();

/// What a cancel does to a run, given what the backend read of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancel {
    /// A queued run ends now as `cancelled`, with [`CANCELLED`] and [`CANCELLED_BEFORE_START`]
    /// as reason and error, no longer held.
    End {
        /// It was its `queue` slot's active run: the next held run of the slot is released.
        release_next: bool,
    },
    /// A running run gets the cancel recorded for its worker, which ends it.
    Request,
    /// The run had already ended with this status; nothing is written.
    Finished(RunStatus),
}

impl Cancel {
    /// What the caller is told.
    pub fn outcome(self) -> CancelOutcome {
        match self {
            Cancel::End { .. } => CancelOutcome::Cancelled,
            Cancel::Request => CancelOutcome::Requested,
            Cancel::Finished(status) => CancelOutcome::Finished(status),
        }
    }
}

/// Cancels a run in `status`; `serial` and `held` as stored (a `queue`-policy run, and one
/// waiting for its slot's active run).
pub fn cancel(status: RunStatus, serial: bool, held: bool) -> Cancel {
    match status {
        RunStatus::Queued => Cancel::End {
            release_next: serial && !held,
        },
        RunStatus::Running => Cancel::Request,
        done => Cancel::Finished(done),
    }
}

/// A replay under the fleet's `policy`, whose slot (the source run's fleet and key value) is in
/// `state` (read only for a policy other than `parallel`): placed like a call at ingress, or
/// answered [`Admission::Busy`].
pub fn replay(policy: Policy, state: SlotState) -> Result<Placed, Admission> {
    place(policy, state).ok_or(Admission::Busy)
}

/// A running run whose worker was lost (its lease ran out), as the backend read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    /// The run.
    pub run_id: Uuid,
    /// The attempt that was lost, 1 for the first.
    pub attempt: u32,
    /// The node that held it.
    pub node: Option<String>,
    /// When the attempt started (ms).
    pub started_at: Option<i64>,
    /// Its slot.
    pub slot: Slot,
    /// A `queue`-policy run: its end releases the next held run of its slot.
    pub serial: bool,
}

/// One entry of a run's `lost_attempts`, in the order its fields are stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LostAttempt {
    /// The attempt lost.
    pub attempt: u32,
    /// Always [`NODE_LOST`].
    pub reason: &'static str,
    /// The node that held it.
    pub node: Option<String>,
    /// When it started (ms).
    pub started_at: Option<i64>,
    /// When it was found lost (ms).
    pub lost_at: i64,
}

/// The write for one run whose worker was lost: the lease is dropped, `lost` is appended to
/// its `lost_attempts`, and status, reason and error are set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LostRun {
    /// The run.
    pub run_id: Uuid,
    /// `queued` for another attempt, or `failed` when its attempts are used up.
    pub status: RunStatus,
    /// [`NODE_LOST`] or [`MAX_ATTEMPTS`].
    pub reason: &'static str,
    /// The run-level error.
    pub error: String,
    /// Set for a failed run; a re-queued run has none.
    pub finished_at: Option<i64>,
    /// The entry to append to `lost_attempts`.
    pub lost: LostAttempt,
}

/// Everything a pass over lost workers writes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lost {
    /// One write per expired run, in the order given.
    pub runs: Vec<LostRun>,
    /// Slots of failed `queue`-policy runs: each releases its next held run, after the writes.
    pub release: BTreeSet<Slot>,
}

impl Lost {
    /// The counts the caller is told.
    pub fn counts(&self) -> Requeued {
        let failed = self
            .runs
            .iter()
            .filter(|r| r.status == RunStatus::Failed)
            .count() as u64;
        Requeued {
            requeued: self.runs.len() as u64 - failed,
            failed,
        }
    }
}

/// Decides about runs whose worker was lost, found at `now` (ms): each lost attempt is recorded;
/// a run that has had `max_attempts` attempts fails, the others go back to the queue (a
/// re-queued `queue` run stays its slot's active run, so order is kept).
pub fn lost(expired: &[Expired], now: i64, max_attempts: u32) -> Lost {
    let mut out = Lost::default();
    for run in expired {
        let lost = LostAttempt {
            attempt: run.attempt,
            reason: NODE_LOST,
            node: run.node.clone(),
            started_at: run.started_at,
            lost_at: now,
        };
        let n = run.attempt;
        let write = if n >= max_attempts {
            if run.serial {
                out.release.insert(run.slot.clone());
            }
            LostRun {
                run_id: run.run_id,
                status: RunStatus::Failed,
                reason: MAX_ATTEMPTS,
                error: format!(
                    "max_attempts: {n} attempts ended without finishing (the worker was lost each time)"
                ),
                finished_at: Some(now),
                lost,
            }
        } else {
            LostRun {
                run_id: run.run_id,
                status: RunStatus::Queued,
                reason: NODE_LOST,
                error: format!("node_lost: the worker running attempt {n} stopped; re-queued"),
                finished_at: None,
                lost,
            }
        };
        out.runs.push(write);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expired(attempt: u32, serial: bool, key: Option<&str>) -> Expired {
        Expired {
            run_id: Uuid::now_v7(),
            attempt,
            node: Some("node-a".into()),
            started_at: Some(100),
            slot: (Uuid::nil(), key.map(str::to_owned)),
            serial,
        }
    }

    #[test]
    fn a_queued_run_ends_and_only_an_active_queue_run_releases_the_next() {
        assert_eq!(
            cancel(RunStatus::Queued, true, false),
            Cancel::End { release_next: true }
        );
        // A held run was not its slot's active run; a parallel run holds nothing back.
        assert_eq!(
            cancel(RunStatus::Queued, true, true),
            Cancel::End {
                release_next: false
            }
        );
        assert_eq!(
            cancel(RunStatus::Queued, false, false),
            Cancel::End {
                release_next: false
            }
        );
        assert_eq!(
            cancel(RunStatus::Queued, true, false).outcome(),
            CancelOutcome::Cancelled
        );
    }

    #[test]
    fn a_running_run_is_asked_and_an_ended_one_is_left_alone() {
        assert_eq!(cancel(RunStatus::Running, true, false), Cancel::Request);
        assert_eq!(
            cancel(RunStatus::Running, false, false).outcome(),
            CancelOutcome::Requested
        );
        for done in [
            RunStatus::Succeeded,
            RunStatus::Failed,
            RunStatus::Cancelled,
        ] {
            assert_eq!(cancel(done, true, false), Cancel::Finished(done));
            assert_eq!(
                cancel(done, false, false).outcome(),
                CancelOutcome::Finished(done)
            );
        }
    }

    #[test]
    fn a_replay_is_placed_like_a_call() {
        let idle = SlotState::default();
        let busy = SlotState {
            active: true,
            serial: false,
        };
        let serial = SlotState {
            active: true,
            serial: true,
        };
        assert_eq!(replay(Policy::Reject, busy), Err(Admission::Busy));
        assert_eq!(
            replay(Policy::Reject, idle),
            Ok(Placed {
                serial: false,
                held: false
            })
        );
        assert_eq!(
            replay(Policy::Queue, serial),
            Ok(Placed {
                serial: true,
                held: true
            })
        );
        // A queue replay waits only for a queue run, not for a parallel one.
        assert_eq!(
            replay(Policy::Queue, busy),
            Ok(Placed {
                serial: true,
                held: false
            })
        );
        assert_eq!(
            replay(Policy::Parallel, serial),
            Ok(Placed {
                serial: false,
                held: false
            })
        );
    }

    #[test]
    fn a_lost_attempt_requeues_until_the_last_which_fails() {
        let runs = [
            expired(1, true, None),
            expired(3, true, Some("k")),
            expired(2, false, None),
        ];
        let out = lost(&runs, 500, 3);
        assert_eq!(
            out.counts(),
            Requeued {
                requeued: 2,
                failed: 1
            }
        );
        let first = &out.runs[0];
        assert_eq!(first.status, RunStatus::Queued);
        assert_eq!(first.reason, "node_lost");
        assert_eq!(
            first.error,
            "node_lost: the worker running attempt 1 stopped; re-queued"
        );
        assert_eq!(first.finished_at, None);
        let last = &out.runs[1];
        assert_eq!(last.status, RunStatus::Failed);
        assert_eq!(last.reason, "max_attempts");
        assert_eq!(
            last.error,
            "max_attempts: 3 attempts ended without finishing (the worker was lost each time)"
        );
        assert_eq!(last.finished_at, Some(500));
        // Only the failed queue run frees its slot; a re-queued one stays the active run.
        assert_eq!(
            out.release,
            BTreeSet::from([(Uuid::nil(), Some("k".to_string()))])
        );
    }

    #[test]
    fn every_lost_attempt_is_recorded_with_its_node_and_times() {
        let out = lost(&[expired(2, false, None)], 500, 2);
        assert_eq!(
            serde_json::to_value(&out.runs[0].lost).unwrap(),
            serde_json::json!({"attempt": 2, "reason": "node_lost", "node": "node-a",
                               "started_at": 100, "lost_at": 500})
        );
        // A failed parallel run releases nothing.
        assert!(out.release.is_empty());
        assert_eq!(
            out.counts(),
            Requeued {
                requeued: 0,
                failed: 1
            }
        );
    }

    #[test]
    fn nothing_expired_writes_nothing() {
        assert_eq!(lost(&[], 1, 3), Lost::default());
    }
}
