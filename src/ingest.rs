//! Admission of one webhook call: resolve the webhook, apply the fleet's policy, enqueue
//! durably. The HTTP handler only translates the answer — [`Accepted`] or a [`Refused`] with
//! its reason — into a status code, so authentication, rate limits and idempotency have one
//! place to go.

use std::sync::Arc;

use uuid::Uuid;

use crate::admission::{RateLimit, call_key, retry_after_secs};
use crate::auth::secrets::{SealContext, Secret, SecretBox};
use crate::auth::{AuthFailure, hmac, keys, redact};
use crate::disk::FreeDisk;
use crate::scheduler::{Scheduler, initial_variables};
use crate::store::{
    Admission, Ingest, IngestBatcher, RequestRecord, Store, WebhookAuth, WebhookTarget,
};

/// Longest concurrency key value stored as it is; longer ones are stored as their sha256, so
/// that a key taken from a body stays small enough to index.
const MAX_KEY_VALUE: usize = 256;

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
    /// The webhook's rate limit is reached.
    RateLimited {
        /// Seconds until a call would be admitted (rounded up, at least 1).
        retry_after: u64,
        /// The limit, for the message.
        limit: RateLimit,
    },
    /// The call's idempotency or delivery-id header is malformed; the message names it.
    BadKey(String),
    /// The call does not authenticate as the webhook's auth mode asks: `401`.
    Unauthorized(AuthFailure),
    /// An API key was sent in the query string of a `bearer` webhook, where it would end up in
    /// proxy and access logs; refused before anything is stored.
    KeyInQuery,
    /// The store is failing; the cause is logged.
    Unavailable,
    /// The fleet already has `--max-queued-per-fleet` runs queued: `429`.
    Backlogged {
        /// The cap.
        max_queued: u64,
        /// Seconds after which a retry may succeed.
        retry_after: u64,
    },
    /// The data volume is below `--min-free-disk`: `503`, before the body is read.
    LowDisk {
        /// The free space and the threshold.
        low: crate::disk::LowDisk,
        /// Seconds after which a retry may succeed.
        retry_after: u64,
    },
}

/// What a caller refused for a full backlog is told to wait: about what a few hundred quick
/// runs take to drain, and short enough that a caller retrying on it loses little.
const BACKLOG_RETRY_SECS: u64 = 5;

/// What a caller refused for want of disk is told to wait: space comes back when an operator
/// or retention (every minute) frees it, not in a moment.
const LOW_DISK_RETRY_SECS: u64 = 30;

/// A call committed with its queued run — or a repeat of one, answered with its ids.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// The committed request: this call's, or the first call's for a repeat.
    pub request_id: Uuid,
    /// True when this call repeated an earlier one's key and nothing new was stored.
    pub repeated: bool,
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
    usage: Arc<keys::KeyUsage>,
    /// `--max-queued-per-fleet`; `None`: no cap.
    max_queued: Option<u64>,
    /// `--min-free-disk` on the data folder; `None`: not checked.
    disk: Option<Arc<FreeDisk>>,
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
            usage: Arc::default(),
            max_queued: None,
            disk: None,
        }
    }

    /// Caps each fleet's queued runs at `max_queued_per_fleet` (0: no cap), and refuses calls
    /// while `disk` says its volume is low.
    pub fn with_limits(mut self, max_queued_per_fleet: u64, disk: FreeDisk) -> Self {
        self.max_queued = (max_queued_per_fleet > 0).then_some(max_queued_per_fleet);
        self.disk = Some(Arc::new(disk));
        self
    }

    /// Refuses a call while the data volume is below `--min-free-disk`; checked before the
    /// body is read, so a refused call costs no transfer.
    pub fn check_disk(&self) -> Result<(), Refused> {
        match &self.disk {
            Some(disk) => disk.check().map_err(|low| Refused::LowDisk {
                low,
                retry_after: LOW_DISK_RETRY_SECS,
            }),
            None => Ok(()),
        }
    }

    /// The live webhook behind an id from a URL. Called before the body is read, so that a
    /// dead URL costs no body transfer.
    pub async fn resolve(&self, webhook_id: &str) -> Result<WebhookTarget, Refused> {
        if !well_formed(webhook_id) {
            return Err(Refused::UnknownWebhook);
        }
        match self.store.resolve_webhook(webhook_id).await {
            // The id before a rotation resolves during its grace period only; checked here
            // rather than in the query, so a cached resolution expires on time too.
            Ok(Some(target))
                if target.webhook.id != webhook_id
                    && target
                        .webhook
                        .previous_until
                        .is_none_or(|until| until <= crate::util::now_ms()) =>
            {
                Err(Refused::UnknownWebhook)
            }
            Ok(Some(target)) => Ok(target),
            Ok(None) => Err(Refused::UnknownWebhook),
            Err(e) => {
                tracing::error!(error = %e, "resolving a webhook failed");
                Err(Refused::Unavailable)
            }
        }
    }

    /// What can be checked before the body is read: a `bearer` webhook's API key (a live key of
    /// the fleet's org; none in the query string). A key's use is recorded off the call's path.
    pub async fn authorize(
        &self,
        target: &WebhookTarget,
        query: Option<&str>,
        headers: &axum::http::HeaderMap,
    ) -> Result<(), Refused> {
        if target.webhook.auth != WebhookAuth::Bearer {
            return Ok(());
        }
        if let Some(q) = query
            && form_urlencoded::parse(q.as_bytes()).any(|(k, v)| redact::api_key_in_query(&k, &v))
        {
            return Err(Refused::KeyInQuery);
        }
        let key = keys::bearer(headers).ok_or(Refused::Unauthorized(AuthFailure::Missing))?;
        let hash = crate::util::sha256_hex(key.as_bytes());
        match self.store.api_key(&hash).await {
            Ok(Some(k)) if k.org_id == target.org_id => {
                let now = crate::util::now_ms();
                if self.usage.note(k.id, now) {
                    let store = self.store.clone();
                    tokio::spawn(async move {
                        if let Err(e) = store.touch_api_keys(&[(k.id, now)]).await {
                            tracing::warn!(error = %e, "recording an API key's use failed");
                        }
                    });
                }
                Ok(())
            }
            Ok(_) => Err(Refused::Unauthorized(AuthFailure::Wrong)),
            Err(e) => {
                tracing::error!(error = %e, "looking up an API key failed");
                Err(Refused::Unavailable)
            }
        }
    }

    /// An `hmac` webhook's signature over the raw body, with any of its live secrets. Returns
    /// the identity the signature covers (see [`hmac::signed_key`]), which deduplicates the
    /// call: a replay within the signature's tolerance is answered as a repeat.
    pub fn verify_signature(
        &self,
        target: &WebhookTarget,
        headers: &axum::http::HeaderMap,
        body: &[u8],
        sealer: &SecretBox,
    ) -> Result<Option<String>, Refused> {
        let WebhookAuth::Hmac(auth) = &target.webhook.auth else {
            return Ok(None);
        };
        let now = crate::util::now_ms();
        let place = SealContext::webhook_secret(target.webhook.fleet_id);
        let live: Vec<Secret> = auth
            .secrets
            .iter()
            .filter(|s| s.expires_at.is_none_or(|at| at > now))
            .filter_map(|s| match sealer.open_string(&place, &s.sealed) {
                Ok(secret) => Some(secret),
                Err(e) => {
                    tracing::error!(error = %e, fleet_id = %target.webhook.fleet_id,
                        "a webhook's HMAC secret cannot be opened");
                    None
                }
            })
            .collect();
        if live.is_empty() {
            // Sealed under another key: the node is misconfigured, not the caller wrong.
            return Err(Refused::Unavailable);
        }
        hmac::verify(auth.scheme, &live, headers, body, now / 1000)
            .map_err(Refused::Unauthorized)?;
        Ok(hmac::signed_key(auth.scheme, headers, body))
    }

    /// Commits the call and its queued run, durably. Inside the committing transaction (so
    /// that simultaneous calls, on any node, cannot both pass a check): a repeat of a key seen
    /// in the last 24 h gets the first call's ids; else the rate limit, then the concurrency
    /// policy, may refuse it. `signed_key` is what [`Ingress::verify_signature`] returned.
    pub async fn admit(
        &self,
        target: &WebhookTarget,
        request: RequestRecord,
        signed_key: Option<String>,
    ) -> Result<Accepted, Refused> {
        let settings = &target.webhook.settings;
        let call_key = call_key(&request.headers, settings.deduplicate.as_ref(), signed_key)
            .map_err(Refused::BadKey)?;
        let run_id = Uuid::now_v7();
        let request_id = request.id;
        let ingest = Ingest {
            concurrency_key: concurrency_key(target, &request),
            call_key,
            rate_limit: settings.rate_limit,
            max_queued: self.max_queued,
            request,
            run_id,
            policy: target.concurrency.clone(),
        };
        let accepted = |request_id, run_id, repeated| Accepted {
            request_id,
            repeated,
            fleet_id: target.webhook.fleet_id,
            project_id: target.project_id,
            org_id: target.org_id,
            run_id,
        };
        match self.batcher.commit(ingest).await {
            Ok(Admission::Queued) => {
                self.scheduler.wake();
                Ok(accepted(request_id, run_id, false))
            }
            Ok(Admission::Duplicate { request_id, run_id }) => {
                Ok(accepted(request_id, run_id, true))
            }
            Ok(Admission::Busy) => Err(Refused::Busy { retry_after: 1 }),
            Ok(Admission::Backlogged { max_queued }) => Err(Refused::Backlogged {
                max_queued,
                retry_after: BACKLOG_RETRY_SECS,
            }),
            Ok(Admission::RateLimited { retry_after_ms }) => match settings.rate_limit {
                Some(limit) => Err(Refused::RateLimited {
                    retry_after: retry_after_secs(retry_after_ms),
                    limit,
                }),
                None => {
                    tracing::error!("the store rate-limited a call of a webhook without a limit");
                    Err(Refused::Unavailable)
                }
            },
            Err(e) => {
                tracing::error!(error = %e, "committing a webhook call failed");
                Err(Refused::Unavailable)
            }
        }
    }
}

/// The value of the fleet's concurrency key for this call: the variable's initial value (its
/// default, or the same-named top-level key of a JSON-object body), as the run will see it.
fn concurrency_key(target: &WebhookTarget, request: &RequestRecord) -> Option<String> {
    let name = target.concurrency.key.as_ref()?;
    let vars = initial_variables(&target.spec, &request.content_type, &request.body);
    let value = vars.get(name).cloned().unwrap_or_default();
    Some(if value.len() > MAX_KEY_VALUE {
        format!("sha256:{}", crate::util::sha256_hex(value.as_bytes()))
    } else {
        value
    })
}

/// Webhook ids are `wh_` and 24 alphanumerics; anything else is refused before the store.
fn well_formed(id: &str) -> bool {
    id.len() == 27 && id.starts_with("wh_") && id[3..].bytes().all(|b| b.is_ascii_alphanumeric())
}
