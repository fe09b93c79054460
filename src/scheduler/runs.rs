//! Cancelling and replaying a run: the rules the admin API's run routes apply, so its handlers
//! only parse and answer.
//!
//! These are methods on [`Scheduler`] rather than a service of their own because both need what
//! only the scheduler holds: the runs this node executes (to stop one at once, and to hear it
//! end on [`Events`](super::events::Events) instead of reading the store in a loop), and the
//! wake-up of idle workers once a replay is queued. What is decided without I/O — the vessel
//! runs a cancelled run records, and what a resume carries over — is in [`planner`].

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::{Receiver, error::RecvError};
use uuid::Uuid;

use super::Scheduler;
use super::events::RunEvent;
use super::planner::{self, ResumeError};
use crate::store::{
    Admission, CancelOutcome, Fleet, Replay, RequestRecord, RunRecord, RunStatus, StoreError,
};

/// How long a cancel of a running run waits for the run to end before answering.
pub const CANCEL_WAIT: Duration = Duration::from_secs(5);

/// How often a cancel waiting for a run it cannot hear end reads the run from the store.
const STORE_POLL: Duration = Duration::from_millis(10);

/// Why a run could not be cancelled or replayed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The store failed, or has no such run.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A cancel of a run that had already ended.
    #[error(
        "run {run} has already ended ({}); only a queued or running run can be cancelled",
        status.as_str()
    )]
    Ended {
        /// The run.
        run: Uuid,
        /// How it ended.
        status: RunStatus,
    },
    /// A replay of a run whose fleet has been deleted.
    #[error("the run's fleet has been deleted; there is nothing to replay it on")]
    FleetDeleted,
    /// A resume the run or its fleet does not allow.
    #[error(transparent)]
    Resume(#[from] ResumeError),
    /// The fleet's concurrency policy refused the replay.
    #[error("the fleet already has a run queued or running")]
    Busy,
}

/// A replay that was queued.
#[derive(Debug)]
pub struct Replayed {
    /// The new run.
    pub run_id: Uuid,
    /// The run replayed.
    pub source: RunRecord,
    /// The fleet it runs on.
    pub fleet: Fleet,
}

impl Scheduler {
    /// Cancels a run: a queued one at once, recording what it carried over and every other
    /// vessel `cancelled`; a running one through the node holding it, waiting up to
    /// [`CANCEL_WAIT`] for it to end. Answers the run as it then is: `cancelled`, or still
    /// `running` with `cancel_requested` (its worker ends it later).
    pub async fn cancel_run(&self, id: Uuid) -> Result<(RunRecord, RequestRecord), RunError> {
        let store = &self.inner.store;
        let (record, _) = store.run(id).await?;
        // A deleted fleet leaves its runs' history behind: a queued run of it keeps what it
        // recorded.
        let fleet = store.fleet(record.fleet_id).await.ok();
        let vessels = planner::cancelled_vessels(&record.vessels, fleet.as_ref().map(|f| &f.spec));
        // Subscribed before the cancel is recorded: a run still running then publishes its end
        // after this point, so it cannot be missed.
        let mut events = self.inner.events.subscribe();
        match store.cancel(id, &vessels).await? {
            CancelOutcome::Finished(status) => return Err(RunError::Ended { run: id, status }),
            CancelOutcome::Cancelled => {}
            CancelOutcome::Requested => {
                let ended = async {
                    if self.cancel_local(id) {
                        self.ended_here(&mut events, id).await
                    } else {
                        self.ended_in_store(id).await
                    }
                };
                // Past the wait the run is answered as it is: still running, cancel requested.
                if let Ok(ended) = tokio::time::timeout(CANCEL_WAIT, ended).await {
                    ended?;
                }
            }
        }
        Ok(store.run(id).await?)
    }

    /// Waits for the `end` event of a run this node executes. A receiver that fell behind the
    /// broadcast may have lost that event, so it then reads the store instead.
    async fn ended_here(
        &self,
        events: &mut Receiver<Arc<RunEvent>>,
        id: Uuid,
    ) -> Result<(), StoreError> {
        loop {
            match events.recv().await {
                Ok(event) if event.run_id == id && event.kind == "end" => return Ok(()),
                Ok(_) => {}
                Err(RecvError::Lagged(_) | RecvError::Closed) => {
                    return self.ended_in_store(id).await;
                }
            }
        }
    }

    /// Waits until the store shows the run ended. Only for a run this node cannot hear end: one
    /// executing on another node of a shared store (whose events stay on that node), or one
    /// claimed here a moment ago whose worker learns of the cancel from the store. Nothing
    /// tells this node when the store changes, so it reads it, briefly: the caller bounds the
    /// wait by [`CANCEL_WAIT`].
    async fn ended_in_store(&self, id: Uuid) -> Result<(), StoreError> {
        loop {
            let (run, _) = self.inner.store.run(id).await?;
            if !matches!(run.status, RunStatus::Queued | RunStatus::Running) {
                return Ok(());
            }
            tokio::time::sleep(STORE_POLL).await;
        }
    }

    /// Queues a new run of a run's request on its fleet's current code. With `from`, a resume:
    /// the vessel runs [`planner::resume_plan`] names are carried over instead of run again.
    /// Only the fleet's concurrency policy can refuse it ([`RunError::Busy`]): a replay is no
    /// webhook call, so rate limits and deduplication do not apply.
    pub async fn replay_run(&self, id: Uuid, from: Option<String>) -> Result<Replayed, RunError> {
        let store = &self.inner.store;
        let (source, _) = store.run(id).await?;
        let fleet = match store.fleet(source.fleet_id).await {
            Err(StoreError::NotFound(_)) => return Err(RunError::FleetDeleted),
            other => other?,
        };
        let carried = match &from {
            None => Vec::new(),
            Some(from) => planner::resume_plan(&fleet.spec, &source, from)?,
        };
        let run_id = Uuid::now_v7();
        let replay = Replay {
            source: id,
            run_id,
            resumed_from: from,
            carried,
            policy: fleet.spec.concurrency.policy,
        };
        match store.replay(replay).await? {
            Admission::Queued => self.wake(),
            _ => return Err(RunError::Busy),
        }
        Ok(Replayed {
            run_id,
            source,
            fleet,
        })
    }
}
