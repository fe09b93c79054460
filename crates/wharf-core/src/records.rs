//! What the store keeps, as the domain speaks of it: orgs, projects, fleets, webhooks, requests,
//! runs and deliveries, and the shapes of the batches the queue takes and answers. Records only —
//! how they are stored is `wharf-store`'s, what they mean is decided by the rules of this crate.
//!
//! Times are milliseconds since the epoch; ids are UUIDs (v7 for requests and runs, so they sort
//! by creation).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::admission::{Deduplicate, RateLimit};
use crate::fleet::{Concurrency, FleetSpec};
use crate::vessel::VesselOutcome;

/// A tenant.
#[derive(Debug, Clone, Serialize)]
pub struct Org {
    /// Id.
    pub id: Uuid,
    /// Name.
    pub name: String,
}

/// A folder of fleets.
#[derive(Debug, Clone, Serialize)]
pub struct Project {
    /// Id.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// Owning org.
    pub org_id: Uuid,
}

/// A stored fleet.
#[derive(Debug, Clone)]
pub struct Fleet {
    /// Id.
    pub id: Uuid,
    /// Project holding it.
    pub project_id: Uuid,
    /// Org owning the project.
    pub org_id: Uuid,
    /// The validated document.
    pub spec: FleetSpec,
    /// Creation time.
    pub created_at: i64,
    /// Last replacement time.
    pub updated_at: i64,
}

/// How callers of a webhook prove who they are, stored as JSON in `webhooks.auth`. An HMAC
/// secret is held only sealed ([`SealedSecret`]), so neither this type's `Debug` nor its JSON can
/// carry a usable secret; the admin API shows a further-redacted view of it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum WebhookAuth {
    /// Anyone with the URL.
    #[default]
    None,
    /// `Authorization: Bearer <key>` with a live API key of the fleet's org.
    Bearer,
    /// A provider's HMAC signature over the raw body.
    Hmac(HmacAuth),
}

/// HMAC settings of a webhook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HmacAuth {
    /// Which provider's signature format.
    pub scheme: crate::auth::hmac::HmacScheme,
    /// The current secret first; during a rotation window also the previous one, with the
    /// time it stops being accepted.
    pub secrets: Vec<SealedSecret>,
}

/// An HMAC secret sealed with the node's [`crate::auth::secrets::SecretBox`].
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct SealedSecret {
    /// `v1:` sealed text; never the secret itself.
    pub sealed: String,
    /// When it was set (ms).
    pub created_at: i64,
    /// When it stops being accepted (ms); `None` while it is the current secret.
    #[serde(default)]
    pub expires_at: Option<i64>,
}

impl std::fmt::Debug for SealedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedSecret")
            .field("sealed", &"[redacted]")
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// An API key as ingress needs it: whose it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiKeyRef {
    /// Key id.
    pub id: Uuid,
    /// The org it belongs to.
    pub org_id: Uuid,
}

/// An API key as listed: never the key nor its hash.
#[derive(Debug, Clone, Serialize)]
pub struct ApiKeyInfo {
    /// Key id.
    pub id: Uuid,
    /// Its org.
    pub org_id: Uuid,
    /// The key's first characters, to tell keys apart; `None` for keys made before it was kept.
    pub prefix: Option<String>,
    /// Creation time (ms).
    pub created_at: i64,
    /// Last accepted use (ms), recorded at most about once a minute per key per node.
    pub last_used_at: Option<i64>,
    /// Revocation time (ms), if revoked.
    pub revoked_at: Option<i64>,
}

/// A fleet's trigger.
#[derive(Debug, Clone, Serialize)]
pub struct Webhook {
    /// The unguessable id in the URL.
    pub id: String,
    /// The fleet it triggers.
    pub fleet_id: Uuid,
    /// Auth mode.
    pub auth: WebhookAuth,
    /// Creation time (ms).
    pub created_at: i64,
    /// Admission limits and deduplication.
    #[serde(flatten)]
    pub settings: WebhookSettings,
    /// The id before the last rotation, still accepted until `previous_until`.
    pub previous_id: Option<String>,
    /// When the previous id stops resolving (ms).
    pub previous_until: Option<i64>,
}

/// A webhook's admission settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct WebhookSettings {
    /// Calls admitted per window; `None`: unlimited.
    pub rate_limit: Option<RateLimit>,
    /// The provider header whose delivery id deduplicates calls; `None`: only `Idempotency-Key`.
    pub deduplicate: Option<Deduplicate>,
}

/// A change to a webhook's settings: `None` leaves a setting as it is, `Some(None)` removes it.
/// A struct rather than arguments, so more settings join without changing callers.
#[derive(Debug, Clone, Default)]
pub struct WebhookChange {
    /// New rate limit; changing it starts the limit afresh (the old window's state is dropped).
    pub rate_limit: Option<Option<RateLimit>>,
    /// New deduplication header.
    pub deduplicate: Option<Option<Deduplicate>>,
    /// New auth mode (with its sealed secrets).
    pub auth: Option<WebhookAuth>,
}

impl WebhookChange {
    /// True when it changes nothing.
    pub fn is_empty(&self) -> bool {
        self.rate_limit.is_none() && self.deduplicate.is_none() && self.auth.is_none()
    }
}

/// What ingress needs to know about a webhook id.
#[derive(Debug, Clone)]
pub struct WebhookTarget {
    /// The webhook.
    pub webhook: Webhook,
    /// Project of the fleet.
    pub project_id: Uuid,
    /// Org of the project.
    pub org_id: Uuid,
    /// The fleet's concurrency policy.
    pub concurrency: Concurrency,
    /// The fleet's document, for what admission computes from a call (a concurrency key's
    /// value); shared, so a cached resolution is cheap to hand out.
    pub spec: Arc<FleetSpec>,
}

/// A webhook call as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestRecord {
    /// Request id.
    pub id: Uuid,
    /// Fleet it was for.
    pub fleet_id: Uuid,
    /// HTTP method.
    pub method: String,
    /// Content type, empty if none.
    pub content_type: String,
    /// Headers, names lower-cased, secrets redacted.
    pub headers: BTreeMap<String, String>,
    /// Query parameters.
    pub query: BTreeMap<String, String>,
    /// The body as received (up to the body limit).
    #[serde(skip)]
    pub body: Vec<u8>,
    /// Size of the body in bytes.
    pub body_size: u64,
    /// Receipt time (ms).
    pub received_at: i64,
}

/// One accepted webhook call and its queued run, committed together.
#[derive(Debug, Clone)]
pub struct Ingest {
    /// The request.
    pub request: RequestRecord,
    /// The id of the run to queue.
    pub run_id: Uuid,
    /// The fleet's concurrency policy, applied inside the committing transaction so that two
    /// simultaneous calls cannot both pass a `reject` check.
    pub policy: Concurrency,
    /// The value of the policy's key variable for this call; the policy applies among the
    /// fleet's runs with the same value. `None` for a policy without a key.
    pub concurrency_key: Option<String>,
    /// The key repeats of this call are recognised by (see [`crate::admission::call_key`]): a
    /// call whose key the fleet has seen in the last 24 h is answered with the first call's ids.
    pub call_key: Option<String>,
    /// The webhook's rate limit, checked (and, when the call is admitted, counted) inside the
    /// committing transaction.
    pub rate_limit: Option<RateLimit>,
    /// Most runs the fleet may have queued (held ones included) for this call to be stored;
    /// `None`: no cap. Counted inside the committing transaction, under the same guard as the
    /// policy, so that simultaneous calls cannot pass it together.
    pub max_queued: Option<u64>,
}

/// How claims choose among ready runs.
///
/// [`ClaimOrder::Fair`] is what nodes use. [`ClaimOrder::OldestFirst`], one index walk in
/// arrival order, is kept so that the cost of fairness can be measured against it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ClaimOrder {
    /// Vessel threads are shared across orgs, then across each org's fleets: each slot goes to
    /// the org, then the fleet, with the fewest runs running (counting the runs this claim has
    /// already picked), ties to the oldest run. Within a fleet, runs keep their arrival order.
    #[default]
    Fair,
    /// The oldest ready runs of all fleets, in one order: one fleet's backlog delays every
    /// other fleet's calls.
    OldestFirst,
}

/// What became of one call handed to `Queue::enqueue`. Checks run in this order: a repeat is
/// answered first (and counts against nothing), then the fleet's backlog cap, then the rate
/// limit, then the policy; only a call that is queued counts against the rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The request and its run are committed.
    Queued,
    /// `reject` policy: the fleet already has a run queued or running; nothing was stored.
    Busy,
    /// The webhook's rate limit is reached; a call would be admitted after `retry_after_ms`.
    /// Nothing was stored.
    RateLimited {
        /// Milliseconds until a call would be admitted.
        retry_after_ms: i64,
    },
    /// The fleet already has [`Ingest::max_queued`] runs queued; nothing was stored.
    Backlogged {
        /// The cap that was reached.
        max_queued: u64,
    },
    /// The call's key was seen in the last 24 h: nothing was stored; these are the first
    /// call's ids.
    Duplicate {
        /// The first call's request.
        request_id: Uuid,
        /// The first call's run.
        run_id: Uuid,
    },
}

/// What one `Retention::prune` pass deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Finished runs.
    pub runs: u64,
    /// Requests left without a run.
    pub requests: u64,
    /// Expired idempotency keys.
    pub keys: u64,
    /// Rate-limit states that no longer hold anything back.
    pub rate_states: u64,
    /// Deliveries of runs that were pruned.
    pub deliveries: u64,
    /// Sign-out marks of sessions that have expired since.
    pub sessions: u64,
}

impl Pruned {
    /// Rows deleted in all.
    pub fn total(&self) -> u64 {
        self.runs + self.requests + self.keys + self.rate_states + self.deliveries + self.sessions
    }
}

/// Status of a fleet run.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Waiting for a worker.
    Queued,
    /// A worker holds it.
    Running,
    /// Every vessel that ran succeeded.
    Succeeded,
    /// A vessel failed.
    Failed,
    /// Cancelled before the end.
    Cancelled,
}

impl RunStatus {
    /// Stored and query-string name.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }

    /// Parses a stored or query-string name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => RunStatus::Queued,
            "running" => RunStatus::Running,
            "succeeded" => RunStatus::Succeeded,
            "failed" => RunStatus::Failed,
            "cancelled" => RunStatus::Cancelled,
            _ => return None,
        })
    }
}

/// Why a run ended as it did, or went back to the queue — beside its status, for the cases the
/// status alone does not tell (a vessel's own failure has its reason on the vessel run).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunReason {
    /// The run was cancelled.
    Cancelled,
    /// The worker running an attempt stopped; the run was re-queued.
    NodeLost,
    /// Every attempt's worker was lost; the run failed.
    MaxAttempts,
    /// The run's fleet was deleted before it ran.
    FleetDeleted,
}

impl RunReason {
    /// The stored and wire form.
    pub const fn as_str(self) -> &'static str {
        match self {
            RunReason::Cancelled => "cancelled",
            RunReason::NodeLost => "node_lost",
            RunReason::MaxAttempts => "max_attempts",
            RunReason::FleetDeleted => "fleet_deleted",
        }
    }

    /// Parses the stored form.
    pub fn parse(s: &str) -> Option<Self> {
        [
            RunReason::Cancelled,
            RunReason::NodeLost,
            RunReason::MaxAttempts,
            RunReason::FleetDeleted,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

/// One vessel's part of a fleet run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VesselRun {
    /// Vessel name.
    pub name: String,
    /// What happened (in the last attempt).
    #[serde(flatten)]
    pub outcome: VesselOutcome,
    /// Attempt of this vessel the outcome is from, 1 for the first.
    #[serde(default = "first_attempt")]
    pub attempt: u32,
    /// Earlier attempts that failed and were retried, or whose worker was lost.
    #[serde(default)]
    pub attempts: Vec<VesselAttempt>,
    /// When the (last) attempt started, RFC 3339.
    #[serde(default)]
    pub started_at: Option<String>,
    /// When it ended, RFC 3339.
    #[serde(default)]
    pub finished_at: Option<String>,
    /// Recorded by an earlier run (resume) or an earlier attempt of this run, not run again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub carried_over: bool,
}

fn first_attempt() -> u32 {
    1
}

impl VesselRun {
    /// A vessel run that ended as `outcome` without timing (skipped, cancelled before start).
    pub fn not_run(name: &str, outcome: VesselOutcome) -> Self {
        VesselRun {
            name: name.to_owned(),
            outcome,
            attempt: 1,
            attempts: Vec::new(),
            started_at: None,
            finished_at: None,
            carried_over: false,
        }
    }
}

/// One earlier attempt of a vessel run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VesselAttempt {
    /// Attempt number, 1 for the first.
    pub attempt: u32,
    /// `failed`, or `running` when its worker was lost.
    pub status: crate::vessel::VesselStatus,
    /// Typed reason (`exit_code`, `timeout`… or `node_lost`).
    pub reason: Option<crate::vessel::FailureReason>,
    /// Exit status, if the vessel ended by itself.
    pub exit_code: Option<i32>,
    /// Error message.
    pub error: Option<String>,
    /// When it started, RFC 3339.
    pub started_at: Option<String>,
    /// How long it ran, in milliseconds.
    pub duration_ms: f64,
}

/// A fleet run as stored.
#[derive(Debug, Clone)]
pub struct RunRecord {
    /// Run id.
    pub id: Uuid,
    /// Fleet.
    pub fleet_id: Uuid,
    /// The request that caused it.
    pub request_id: Uuid,
    /// Status.
    pub status: RunStatus,
    /// Attempt number, 1 for the first claim; 0 while never claimed.
    pub attempt: u32,
    /// Effective variables (set when the run starts, updated as vessels set more).
    pub variables: BTreeMap<String, String>,
    /// Vessel runs so far.
    pub vessels: Vec<VesselRun>,
    /// A run-level error (fleet deleted, worker lost…).
    pub error: Option<String>,
    /// A typed run-level reason (`max_attempts`, `node_lost` while re-queued…).
    pub reason: Option<RunReason>,
    /// Attempts whose worker was lost: `{"attempt","reason","node","started_at","lost_at"}`.
    pub lost_attempts: Vec<serde_json::Value>,
    /// The run this one replays (same request), if any.
    pub replay_of: Option<Uuid>,
    /// The vessel a resume restarted from, if this run is one.
    pub resumed_from: Option<String>,
    /// Whether a cancel was asked for while it ran.
    pub cancel_requested: bool,
    /// The value of its fleet's concurrency key variable, for a keyed policy.
    pub concurrency_key: Option<String>,
    /// Queued at (ms).
    pub created_at: i64,
    /// Claimed at (ms), latest attempt.
    pub started_at: Option<i64>,
    /// Finished at (ms).
    pub finished_at: Option<i64>,
}

/// Proof of holding a claimed run: the run and the token of this one claim. A run claimed
/// again (after its lease ran out) gets a new token, which fences off the previous holder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Lease {
    /// The run.
    pub run_id: Uuid,
    /// Unique to one claim of the run.
    pub token: i64,
}

/// A run a worker has claimed, with everything it needs to execute it.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// The claim.
    pub lease: Lease,
    /// The run, status `running`.
    pub run: RunRecord,
    /// Its request, body included.
    pub request: RequestRecord,
    /// The fleet as it is now; `None` when it was deleted after the call was accepted.
    pub fleet: Option<Arc<Fleet>>,
}

/// What `Queue::requeue_expired` did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Requeued {
    /// Runs put back in the queue for another attempt.
    pub requeued: u64,
    /// Runs that had used up their attempts and were failed with reason `max_attempts`.
    pub failed: u64,
}

/// What `Queue::renew` found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Renewal {
    /// Leases no longer held (the run was re-queued, claimed again, or ended).
    pub lost: Vec<Lease>,
    /// Held leases whose run has a cancel asked for.
    pub cancelled: Vec<Lease>,
}

/// What `Queue::cancel` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The run was queued and is now cancelled.
    Cancelled,
    /// The run is running: the cancel is recorded for its worker, which ends it.
    Requested,
    /// The run had already ended with this status; nothing changed.
    Finished(RunStatus),
}

/// A new run of a stored request (replay), possibly resuming part-way.
#[derive(Debug, Clone)]
pub struct Replay {
    /// The run replayed.
    pub source: Uuid,
    /// The new run's id.
    pub run_id: Uuid,
    /// The vessel a resume restarts from.
    pub resumed_from: Option<String>,
    /// Vessel runs carried over from the source (a resume); empty for a plain replay.
    pub carried: Vec<VesselRun>,
    /// The fleet's concurrency policy, applied as at ingress (with the source run's key value,
    /// for a keyed policy).
    pub policy: crate::fleet::Policy,
}

/// Filters of the run history.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    /// Only runs in this status.
    pub status: Option<RunStatus>,
    /// At most this many.
    pub limit: u32,
    /// Only runs created before this run (a cursor).
    pub before: Option<Uuid>,
}

/// How a worker ends a run it holds.
#[derive(Debug, Clone)]
pub struct Finish {
    /// Final status.
    pub status: RunStatus,
    /// Effective variables at the end.
    pub variables: BTreeMap<String, String>,
    /// Every vessel's outcome.
    pub vessels: Vec<VesselRun>,
    /// Run-level error, if any.
    pub error: Option<String>,
    /// Typed run-level reason, if any.
    pub reason: Option<RunReason>,
    /// Deliveries of the run's rows to the fleet's destinations, committed with the run's end.
    pub deliveries: Vec<NewDelivery>,
}

// Deliveries.

/// Where a delivery is.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// Waiting for its (next) attempt, or being attempted.
    Pending,
    /// A 2xx answer was received.
    Delivered,
    /// Given up: a 4xx other than 429, or `max_attempts` used up. A retry by hand re-opens it.
    Failed,
}

impl DeliveryStatus {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => DeliveryStatus::Pending,
            "delivered" => DeliveryStatus::Delivered,
            "failed" => DeliveryStatus::Failed,
            _ => return None,
        })
    }
}

/// How a delivery is sent, fixed when it is created: later changes of the fleet do not change
/// what an existing delivery sends. Secret header values and the signing secret are sealed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryRequest {
    /// `POST`, `PUT` or `PATCH`.
    pub method: String,
    /// The URL with variables filled in.
    pub url: String,
    /// Header values that are not secret (`Content-Type`, custom headers).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Header values sealed with the server's secret key (`Authorization`, `X-Api-Key`).
    #[serde(default)]
    pub sealed_headers: BTreeMap<String, String>,
    /// The sealed `whsec_…` signing secret, when the destination signs.
    #[serde(default)]
    pub signing_secret: Option<String>,
    /// Per-attempt timeout.
    pub timeout_ms: u64,
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// Backoff ceiling before the second attempt.
    pub base_ms: u64,
    /// Largest backoff ceiling.
    pub max_ms: u64,
    /// Why this delivery is never sent (the URL with variables filled in was refused); it fails
    /// at its first attempt with this error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

/// A delivery to create with a run's end.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    /// Id (v7); also the `webhook-id` of a signed delivery, the same on every attempt.
    pub id: Uuid,
    /// The fleet whose destination it is.
    pub fleet_id: Uuid,
    /// Destination name.
    pub destination: String,
    /// Batch number, 1 for the first.
    pub batch: u32,
    /// Batches of this destination in the run.
    pub batches: u32,
    /// Rows in this batch.
    pub rows: u32,
    /// How to send it.
    pub request: DeliveryRequest,
    /// The JSON body.
    pub body: String,
}

/// One attempt to send a delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryAttempt {
    /// 1 for the first.
    pub attempt: u32,
    /// When it started (ms).
    pub at: i64,
    /// The answer's status code; `None` when there was no answer (timeout, connection error,
    /// egress refused).
    pub status_code: Option<u16>,
    /// Time until the answer was read, or until the attempt gave up (ms).
    pub latency_ms: u64,
    /// The start of the answer's body, at most 4 KiB.
    pub response: Option<String>,
    /// What went wrong, when something did.
    pub error: Option<String>,
    /// The backoff ceiling for the pause after this attempt, when it is retried (the pause is
    /// drawn between 0 and it: full jitter).
    pub backoff_ms: Option<u64>,
    /// The pause drawn (or `Retry-After`), when it is retried.
    pub retry_in_ms: Option<u64>,
}

/// What an attempt decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx.
    Delivered,
    /// Not retried.
    Failed,
    /// Attempt again at this time (ms).
    RetryAt(i64),
}

/// An attempt to record, fenced by the claim that made it.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    /// The delivery.
    pub id: Uuid,
    /// The token of the claim.
    pub token: i64,
    /// What happened.
    pub attempt: DeliveryAttempt,
    /// What comes next.
    pub verdict: Verdict,
}

/// A stored delivery.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Id.
    pub id: Uuid,
    /// The run whose rows it carries.
    pub run_id: Uuid,
    /// The fleet.
    pub fleet_id: Uuid,
    /// Destination name.
    pub destination: String,
    /// Batch number, 1 for the first.
    pub batch: u32,
    /// Batches of this destination in the run.
    pub batches: u32,
    /// Rows in the batch.
    pub rows: u32,
    /// Where it is.
    pub status: DeliveryStatus,
    /// Attempts so far, oldest first.
    pub attempts: Vec<DeliveryAttempt>,
    /// When the next attempt is due (ms); `None` once delivered or failed.
    pub next_attempt_at: Option<i64>,
    /// How it is sent.
    pub request: DeliveryRequest,
    /// The body; only loaded by claims.
    pub body: Option<String>,
    /// The claim's token; 0 when not loaded by a claim.
    pub token: i64,
    /// Created at (ms).
    pub created_at: i64,
    /// Delivered or failed at (ms).
    pub finished_at: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_reasons_parse_from_their_stored_form_and_serialize_to_it() {
        for r in [
            RunReason::Cancelled,
            RunReason::NodeLost,
            RunReason::MaxAttempts,
            RunReason::FleetDeleted,
        ] {
            assert_eq!(RunReason::parse(r.as_str()), Some(r));
            assert_eq!(
                serde_json::to_value(r).unwrap(),
                serde_json::json!(r.as_str())
            );
        }
        assert_eq!(RunReason::parse("other"), None);
    }
}
