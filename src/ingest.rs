//! Admission of one webhook call: resolve the webhook, apply the fleet's policy, enqueue
//! durably. The HTTP handler only translates the answer — [`Accepted`] or a [`Refused`] with
//! its reason — into a status code, so authentication, rate limits and idempotency have one
//! place to go.

use std::sync::Arc;

use uuid::Uuid;

use crate::scheduler::Scheduler;
use crate::store::{Admission, Ingest, IngestBatcher, RequestRecord, Store, WebhookTarget};

/// Why a call was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// Unknown, rotated-away, removed or malformed webhook id.
    UnknownWebhook,
    /// The fleet's `reject` policy: it already has a run queued or running.
    Busy {
        /// Seconds after which a retry may succeed.
        retry_after: u64,
    },
    /// The store is failing; the cause is logged.
    Unavailable,
}

/// A call committed with its queued run.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// The fleet triggered.
    pub fleet_id: Uuid,
    /// Its project.
    pub project_id: Uuid,
    /// Its org.
    pub org_id: Uuid,
    /// The queued run.
    pub run_id: Uuid,
}

/// The admission service; cheap to clone.
#[derive(Clone)]
pub struct Ingress {
    store: Arc<dyn Store>,
    batcher: IngestBatcher,
    scheduler: Scheduler,
}

impl Ingress {
    /// Starts the group-commit writer on the current runtime.
    pub fn new(store: Arc<dyn Store>, scheduler: Scheduler) -> Self {
        let metrics = scheduler.metrics().clone();
        let batcher =
            IngestBatcher::start_observed(store.clone(), move |took| metrics.committed(took));
        Ingress {
            store,
            batcher,
            scheduler,
        }
    }

    /// The live webhook behind an id from a URL. Called before the body is read, so that a
    /// dead URL costs no body transfer.
    pub async fn resolve(&self, webhook_id: &str) -> Result<WebhookTarget, Refused> {
        if !well_formed(webhook_id) {
            return Err(Refused::UnknownWebhook);
        }
        match self.store.resolve_webhook(webhook_id).await {
            Ok(Some(target)) => Ok(target),
            Ok(None) => Err(Refused::UnknownWebhook),
            Err(e) => {
                tracing::error!(error = %e, "resolving a webhook failed");
                Err(Refused::Unavailable)
            }
        }
    }

    /// Commits the call and its queued run, durably, under the fleet's concurrency policy
    /// (checked inside the committing transaction, so simultaneous calls cannot both pass).
    pub async fn admit(
        &self,
        target: &WebhookTarget,
        request: RequestRecord,
    ) -> Result<Accepted, Refused> {
        let run_id = Uuid::now_v7();
        let ingest = Ingest {
            request,
            run_id,
            policy: target.concurrency,
        };
        match self.batcher.commit(ingest).await {
            Ok(Admission::Queued) => {
                self.scheduler.wake();
                Ok(Accepted {
                    fleet_id: target.webhook.fleet_id,
                    project_id: target.project_id,
                    org_id: target.org_id,
                    run_id,
                })
            }
            Ok(Admission::Busy) => Err(Refused::Busy { retry_after: 1 }),
            Err(e) => {
                tracing::error!(error = %e, "committing a webhook call failed");
                Err(Refused::Unavailable)
            }
        }
    }
}

/// Webhook ids are `wh_` and 24 alphanumerics; anything else is refused before the store.
fn well_formed(id: &str) -> bool {
    id.len() == 27 && id.starts_with("wh_") && id[3..].bytes().all(|b| b.is_ascii_alphanumeric())
}
