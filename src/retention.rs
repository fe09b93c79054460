//! Retention: a background task on every node that deletes old history — finished runs and
//! the requests left without a run, after `--retain-days` — and admission state that no longer
//! counts (idempotency keys past 24 h, spent rate-limit states).
//!
//! It deletes in small batches with a pause between them, so that a large backlog (the first
//! start after lowering the age) is worked off without ever holding ingress up: on SQLite each
//! batch is one short job on the writer thread, between ingest commits.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::store::{Pruned, Retention};
use crate::util::now_ms;

/// Rows of each kind deleted per transaction.
pub const BATCH: usize = 500;
/// Pause between two batches of one pass.
const PAUSE: Duration = Duration::from_millis(50);

/// What the task keeps and how often it looks.
#[derive(Debug, Clone, Copy)]
pub struct RetentionConfig {
    /// Age after which finished runs and their requests are deleted; `None`: kept forever.
    pub keep: Option<Duration>,
    /// Time between passes.
    pub every: Duration,
}

/// Prunes every `config.every` until `shutdown`; each pass goes on batch after batch until
/// nothing is left to delete. A failing store is logged and tried again at the next pass.
pub async fn run(store: Arc<dyn Retention>, config: RetentionConfig, shutdown: CancellationToken) {
    loop {
        let pass = tokio::select! {
            pass = prune_all(&store, config.keep, &shutdown) => pass,
            () = shutdown.cancelled() => return,
        };
        match pass {
            Ok(p) if p.total() > 0 => tracing::info!(
                runs = p.runs,
                requests = p.requests,
                keys = p.keys,
                rate_states = p.rate_states,
                "retention deleted old history"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "retention failed; retrying at the next pass"),
        }
        tokio::select! {
            () = tokio::time::sleep(config.every) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

/// One pass: batches until one deletes nothing.
async fn prune_all(
    store: &Arc<dyn Retention>,
    keep: Option<Duration>,
    shutdown: &CancellationToken,
) -> Result<Pruned, crate::store::StoreError> {
    let mut total = Pruned::default();
    loop {
        let now = now_ms();
        let cutoff = keep.map(|k| now.saturating_sub(k.as_millis() as i64));
        let batch = store.prune(cutoff, now, BATCH).await?;
        if batch.total() == 0 {
            return Ok(total);
        }
        total.runs += batch.runs;
        total.requests += batch.requests;
        total.keys += batch.keys;
        total.rate_states += batch.rate_states;
        tokio::select! {
            () = tokio::time::sleep(PAUSE) => {}
            () = shutdown.cancelled() => return Ok(total),
        }
    }
}
