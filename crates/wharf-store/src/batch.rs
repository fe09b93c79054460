//! Group commit for ingress: concurrent webhook calls share one transaction.
//!
//! Each caller hands its [`Ingest`] to one task and waits for the commit; the task takes
//! everything that queued up while the previous transaction ran. Under load a batch grows by
//! itself, so throughput is bounded by transactions per second times batch size rather than by
//! the per-statement cost of the database; when idle, a call commits alone with no added delay.
//! It works over any [`Queue`], so every backend groups ingress the same way.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::{Admission, Ingest, Queue, StoreError};

/// The largest number of calls committed in one transaction.
const MAX_BATCH: usize = 512;

type Reply = oneshot::Sender<Result<Admission, StoreError>>;

/// Handle to the committing task; cheap to clone.
#[derive(Clone)]
pub struct IngestBatcher {
    tx: mpsc::Sender<(Ingest, Reply)>,
}

impl IngestBatcher {
    /// Starts the committing task on the current runtime.
    pub fn start(queue: Arc<dyn Queue>) -> Self {
        Self::start_observed(queue, |_| {})
    }

    /// Like [`IngestBatcher::start`], telling `observe` how long each commit took.
    pub fn start_observed(
        queue: Arc<dyn Queue>,
        observe: impl Fn(std::time::Duration) + Send + 'static,
    ) -> Self {
        let (tx, mut rx) = mpsc::channel::<(Ingest, Reply)>(MAX_BATCH * 4);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(MAX_BATCH);
            while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
                let (items, replies): (Vec<Ingest>, Vec<Reply>) = batch.drain(..).unzip();
                let calls = items.len();
                let started = std::time::Instant::now();
                match queue.enqueue(items).await {
                    Ok(admissions) => {
                        observe(started.elapsed());
                        for (reply, admission) in replies.into_iter().zip(admissions) {
                            let _ = reply.send(Ok(admission));
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, calls, "committing webhook calls failed");
                        for reply in replies {
                            let _ = reply.send(Err(e.clone()));
                        }
                    }
                }
            }
        });
        IngestBatcher { tx }
    }

    /// Commits one call; returns once it is durable (or refused by its fleet's policy).
    pub async fn commit(&self, ingest: Ingest) -> Result<Admission, StoreError> {
        let (reply, done) = oneshot::channel();
        let closed = || StoreError::Backend("the ingest writer has stopped".into());
        self.tx.send((ingest, reply)).await.map_err(|_| closed())?;
        done.await.map_err(|_| closed())?
    }
}
