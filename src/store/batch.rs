//! Group commit for ingress: concurrent webhook calls share one transaction.
//!
//! Each caller hands its [`Ingest`] to one writer task and waits for the commit; the writer takes
//! everything that queued up while the previous transaction ran. Under load a batch grows by
//! itself, so throughput is bounded by transactions per second times batch size rather than by
//! the per-statement cost of the driver; when idle, a call commits alone with no added delay.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::{Ingest, Store, StoreError};

/// The largest number of calls committed in one transaction.
const MAX_BATCH: usize = 256;

type Reply = oneshot::Sender<Result<(), String>>;

/// Handle to the writer task; cheap to clone.
#[derive(Clone)]
pub struct IngestBatcher {
    tx: mpsc::Sender<(Ingest, Reply)>,
}

impl IngestBatcher {
    /// Starts the writer task on the current runtime.
    pub fn start(store: Arc<dyn Store>) -> Self {
        let (tx, mut rx) = mpsc::channel::<(Ingest, Reply)>(MAX_BATCH * 4);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(MAX_BATCH);
            while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
                let (items, replies): (Vec<Ingest>, Vec<Reply>) = batch.drain(..).unzip();
                let result = store.enqueue(&items).await.map_err(|e| {
                    tracing::error!(error = %e, calls = items.len(), "committing webhook calls failed");
                    e.to_string()
                });
                for reply in replies {
                    let _ = reply.send(result.clone());
                }
            }
        });
        IngestBatcher { tx }
    }

    /// Commits one call; returns once it is durable.
    pub async fn commit(&self, ingest: Ingest) -> Result<(), StoreError> {
        let (reply, done) = oneshot::channel();
        let closed = || StoreError::Corrupt("the ingest writer has stopped".into());
        self.tx.send((ingest, reply)).await.map_err(|_| closed())?;
        done.await
            .map_err(|_| closed())?
            .map_err(StoreError::Conflict)
    }
}
