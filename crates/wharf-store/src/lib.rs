//! Storage: three traits — [`Catalog`], [`Queue`], [`History`] — that make a [`Store`], one
//! module per backend, each with its own migrations.
//!
//! The traits speak in domain records, never in driver types: a backend's errors become a
//! [`StoreError`]. Times are milliseconds since the epoch; ids are UUIDs (v7 for requests and
//! runs, so they sort by creation).
//!
//! The queue lives in the same store as the history. Its operations are batch-shaped so that a
//! node pays per batch, not per run: ingress commits many calls at once ([`Queue::enqueue`]),
//! a dispatcher claims as many runs as it has room for ([`Queue::claim`]), one call renews every
//! lease a node holds ([`Queue::renew`]) and finished runs are recorded together
//! ([`Queue::finish`]). A claim is *fenced*: it carries a [`Lease`] token, and renew, progress,
//! finish and release succeed only for the current holder, so a worker that lost its run (its
//! lease expired and someone else took it) can never overwrite the newer attempt.

mod batch;
mod cache;
mod listing;
pub mod postgres;
pub mod sqlite;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::admission::{Deduplicate, RateLimit};
use crate::fleet::{Concurrency, FleetSpec, NewCode};
use crate::sandbox::VesselOutcome;

pub use batch::IngestBatcher;
pub use listing::{
    BodyPreview, FleetItem, Listing, OrgItem, Page, ProjectItem, QueueStats, RunCount,
};

/// What can go wrong in the store.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The named thing does not exist.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The operation clashes with what is stored.
    #[error("{0}")]
    Conflict(String),
    /// The database failed; details are for the log, not for clients.
    #[error("database error: {0}")]
    Backend(String),
    /// Stored data could not be decoded.
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        StoreError::Corrupt(e.to_string())
    }
}

/// Result of store calls.
pub type StoreResult<T> = Result<T, StoreError>;

/// `NotFound(what)` when a write touched no row: the thing it addressed does not exist.
fn touched(rows: u64, what: &'static str) -> StoreResult<()> {
    if rows == 0 {
        Err(StoreError::NotFound(what))
    } else {
        Ok(())
    }
}

/// What a renewal found for `leases`, given how each is held now (`None`: not held; `Some(c)`:
/// held, with a cancel asked for when `c`).
fn renewal(leases: &[Lease], held: impl Fn(&Lease) -> Option<bool>) -> Renewal {
    let mut out = Renewal::default();
    for lease in leases {
        match held(lease) {
            None => out.lost.push(*lease),
            Some(true) => out.cancelled.push(*lease),
            Some(false) => {}
        }
    }
    out
}

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

/// One ready run a fair claim may take: its `seq`, its fleet and its org (any key types; a run
/// whose fleet is gone counts its fleet as its org).
pub(crate) type Candidate<K> = (i64, K, K);

/// The `seq` of the (at most `max`) runs a fair claim takes among `candidates` (each fleet's
/// oldest ready runs, at most `max` of each), given the runs running per fleet and per org.
///
/// The k-th ready run of a fleet with n running has turn n + k within its org; the org's runs
/// are interleaved by that turn (ties to the older run), and the j-th of them in an org with m
/// running has turn m + j overall. The lowest turns are taken, ties to the oldest run. So each
/// slot goes to the org, then the fleet, with the fewest runs running (counting the runs this
/// claim has already picked), and a lone fleet still fills every slot. Both stores rank here,
/// on a few hundred rows at most, rather than in SQL, where two window passes cost SQLite ~7 µs
/// per candidate.
fn fair_pick<K: Ord + Clone>(
    mut candidates: Vec<Candidate<K>>,
    busy_fleets: &BTreeMap<K, u64>,
    busy_orgs: &BTreeMap<K, u64>,
    max: usize,
) -> Vec<i64> {
    // Turn within the fleet.
    candidates.sort_by(|a, b| (&a.1, a.0).cmp(&(&b.1, b.0)));
    let mut ranked: Vec<(u64, i64, K)> = Vec::with_capacity(candidates.len());
    let mut k = 0;
    for (i, (seq, fleet, org)) in candidates.iter().enumerate() {
        k = if i > 0 && candidates[i - 1].1 == *fleet {
            k + 1
        } else {
            1
        };
        let turn = busy_fleets.get(fleet).copied().unwrap_or(0) + k;
        ranked.push((turn, *seq, org.clone()));
    }
    // Turn within the org, then overall.
    ranked.sort_by(|a, b| (&a.2, a.0, a.1).cmp(&(&b.2, b.0, b.1)));
    let mut overall: Vec<(u64, i64)> = Vec::with_capacity(ranked.len());
    let mut j = 0;
    for (i, (_, seq, org)) in ranked.iter().enumerate() {
        j = if i > 0 && ranked[i - 1].2 == *org {
            j + 1
        } else {
            1
        };
        overall.push((busy_orgs.get(org).copied().unwrap_or(0) + j, *seq));
    }
    overall.sort_unstable();
    overall.into_iter().take(max).map(|(_, seq)| seq).collect()
}

/// What became of one call handed to [`Queue::enqueue`]. Checks run in this order: a repeat is
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

/// What one [`Retention::prune`] pass deleted.
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
    pub status: crate::sandbox::VesselStatus,
    /// Typed reason (`exit_code`, `timeout`… or `node_lost`).
    pub reason: Option<crate::sandbox::FailureReason>,
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
    /// A typed run-level failure reason (`max_attempts`, `node_lost` while re-queued…).
    pub reason: Option<String>,
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

/// What [`Queue::requeue_expired`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Requeued {
    /// Runs put back in the queue for another attempt.
    pub requeued: u64,
    /// Runs that had used up their attempts and were failed with reason `max_attempts`.
    pub failed: u64,
}

/// What [`Queue::renew`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Renewal {
    /// Leases no longer held (the run was re-queued, claimed again, or ended).
    pub lost: Vec<Lease>,
    /// Held leases whose run has a cancel asked for.
    pub cancelled: Vec<Lease>,
}

/// What [`Queue::cancel`] did.
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
    pub reason: Option<String>,
    /// Deliveries of the run's rows to the fleet's destinations, committed with the run's end.
    pub deliveries: Vec<NewDelivery>,
}

/// Organisations, projects, code, fleets and webhooks: what users configure.
#[async_trait]
pub trait Catalog: Send + Sync {
    /// True before the first org exists (first start).
    async fn is_empty(&self) -> StoreResult<bool>;

    /// Creates an org.
    async fn create_org(&self, name: &str) -> StoreResult<Org>;
    /// Stores the hash of a new API key of an org, with its first characters to list it by;
    /// returns the key's id.
    async fn create_api_key(&self, org_id: Uuid, key_hash: &str, prefix: &str)
    -> StoreResult<Uuid>;
    /// Revokes an API key; every node refuses it from its next call (cached lookups included).
    async fn revoke_api_key(&self, id: Uuid) -> StoreResult<()>;
    /// The live (unrevoked) key with this sha256 hex hash. Cached like webhook resolutions.
    async fn api_key(&self, key_hash: &str) -> StoreResult<Option<ApiKeyRef>>;
    /// An org's keys, oldest first; `NotFound` for an unknown org.
    async fn api_keys(&self, org_id: Uuid) -> StoreResult<Vec<ApiKeyInfo>>;
    /// Records when keys were last used, in one write.
    async fn touch_api_keys(&self, used: &[(Uuid, i64)]) -> StoreResult<()>;
    /// Marks a dashboard session signed out, by the sha256 hex of its id, until `until` (ms):
    /// when it would have expired anyway. Marking twice is no error.
    async fn revoke_session(&self, id_hash: &str, until: i64) -> StoreResult<()>;
    /// Whether a dashboard session was signed out (and its mark is still held).
    async fn session_revoked(&self, id_hash: &str) -> StoreResult<bool>;
    /// Creates a project in an org.
    async fn create_project(&self, org_id: Uuid, name: &str) -> StoreResult<Project>;

    /// Stores code under its hash (existing hashes are left alone).
    async fn put_code(&self, code: &[NewCode]) -> StoreResult<()>;
    /// Loads code by hash.
    async fn code(&self, sha256: &str) -> StoreResult<Vec<u8>>;

    /// Creates a fleet in a project.
    async fn create_fleet(&self, project_id: Uuid, spec: &FleetSpec) -> StoreResult<Fleet> {
        self.create_fleet_with_id(project_id, Uuid::new_v4(), spec)
            .await
    }
    /// Creates a fleet under an id chosen beforehand: its destinations' secrets are sealed for
    /// that id before the fleet is stored.
    async fn create_fleet_with_id(
        &self,
        project_id: Uuid,
        id: Uuid,
        spec: &FleetSpec,
    ) -> StoreResult<Fleet>;
    /// Loads a fleet.
    async fn fleet(&self, id: Uuid) -> StoreResult<Fleet>;
    /// Replaces a fleet's document.
    async fn replace_fleet(&self, id: Uuid, spec: &FleetSpec) -> StoreResult<Fleet>;
    /// Deletes a fleet and its webhook; its run history stays.
    async fn delete_fleet(&self, id: Uuid) -> StoreResult<()>;

    /// Fleets whose document or webhook holds a value sealed by an earlier version (`v1:`),
    /// for the start-up migration that seals them again for their place.
    async fn fleets_with_legacy_seals(&self) -> StoreResult<Vec<Uuid>>;

    /// Creates the fleet's webhook; `Conflict` if it has one.
    async fn create_webhook(
        &self,
        fleet_id: Uuid,
        id: &str,
        auth: &WebhookAuth,
        settings: &WebhookSettings,
    ) -> StoreResult<Webhook>;
    /// Changes settings of the fleet's webhook; every node sees the change from its next call.
    async fn update_webhook(&self, fleet_id: Uuid, change: &WebhookChange) -> StoreResult<Webhook>;
    /// Gives the fleet's webhook a new id; the old one stops resolving.
    async fn rotate_webhook(&self, fleet_id: Uuid, new_id: &str) -> StoreResult<Webhook> {
        self.rotate_webhook_keeping(fleet_id, new_id, None).await
    }
    /// Gives the fleet's webhook a new id; the old one keeps resolving until `old_until` (ms),
    /// or stops at once for `None`. An id kept from an earlier rotation is dropped.
    async fn rotate_webhook_keeping(
        &self,
        fleet_id: Uuid,
        new_id: &str,
        old_until: Option<i64>,
    ) -> StoreResult<Webhook>;
    /// Removes the fleet's webhook.
    async fn delete_webhook(&self, fleet_id: Uuid) -> StoreResult<()>;
    /// The fleet's webhook, if any.
    async fn fleet_webhook(&self, fleet_id: Uuid) -> StoreResult<Option<Webhook>>;
    /// Resolves a webhook id from a URL.
    async fn resolve_webhook(&self, id: &str) -> StoreResult<Option<WebhookTarget>>;
}

/// The run queue. Every operation takes or returns many runs at once; see the module docs.
#[async_trait]
pub trait Queue: Send + Sync {
    /// Fired when another node queued or released runs, for stores shared between nodes; an
    /// idle dispatcher waits on it as well as on its own node's ingress.
    fn work_signal(&self) -> Option<Arc<tokio::sync::Notify>> {
        None
    }
    /// Whether other nodes may hold leases in this store. A store used by one node only can
    /// re-queue every running run at start-up; a shared one must wait for leases to expire.
    fn is_shared(&self) -> bool {
        false
    }
    /// Commits calls and their queued runs in one durable transaction, applying each fleet's
    /// concurrency policy inside it. Returns one [`Admission`] per call, in order.
    async fn enqueue(&self, batch: Vec<Ingest>) -> StoreResult<Vec<Admission>>;
    /// Claims up to `max` claimable runs, oldest first, for `node` until `lease_until` (ms).
    /// A `queue`-policy fleet never has two runs claimed at once (per key value, for a keyed
    /// policy), and its runs go in arrival order. A claimed run keeps the vessel runs recorded
    /// so far (by a resume, or by an earlier attempt whose worker was lost), so its executor
    /// carries them over.
    async fn claim(&self, node: &str, max: usize, lease_until: i64) -> StoreResult<Vec<Claimed>>;
    /// Extends every lease `node` holds to `lease_until`, in one statement; reports those of
    /// `leases` that are no longer held, and held ones whose run has a cancel asked for.
    async fn renew(&self, node: &str, leases: &[Lease], lease_until: i64) -> StoreResult<Renewal>;
    /// Records progress of a held run; false when the lease is no longer held.
    async fn progress(
        &self,
        lease: Lease,
        vars: &BTreeMap<String, String>,
        vessels: &[VesselRun],
    ) -> StoreResult<bool>;
    /// Ends held runs; one flag per entry, false where the lease was no longer held (nothing
    /// was written for that run).
    async fn finish(&self, done: Vec<(Lease, Finish)>) -> StoreResult<Vec<bool>>;
    /// Gives held runs back to the queue without counting an attempt (graceful shutdown).
    async fn release(&self, leases: &[Lease]) -> StoreResult<()>;
    /// Cancels a run: a queued one ends now as `cancelled` with `vessels` as its vessel runs
    /// (releasing the next run of a `queue` fleet); a running one gets the cancel recorded for
    /// its worker, and other nodes of a shared store are told at once (see
    /// [`Queue::cancel_signal`]). `NotFound` for an unknown run.
    async fn cancel(&self, run_id: Uuid, vessels: &[VesselRun]) -> StoreResult<CancelOutcome>;
    /// Fired with a run id when a node asked to cancel a running run, for stores shared between
    /// nodes (the node holding it stops it).
    fn cancel_signal(&self) -> Option<tokio::sync::broadcast::Receiver<Uuid>> {
        None
    }
    /// Queues a new run of the source run's request under the fleet's concurrency policy;
    /// `NotFound` if the source run does not exist.
    async fn replay(&self, replay: Replay) -> StoreResult<Admission>;
    /// Deals with running runs whose lease ended before `now` (every running run when `all`:
    /// a single-node store at start-up): each lost attempt is recorded with reason `node_lost`;
    /// a run that has had `max_attempts` attempts is failed with reason `max_attempts`, the
    /// others go back to the queue.
    async fn requeue_expired(
        &self,
        now: i64,
        all: bool,
        max_attempts: u32,
    ) -> StoreResult<Requeued>;
}

/// Reading what happened.
#[async_trait]
pub trait History: Send + Sync {
    /// Run history of a fleet, newest first.
    async fn runs(&self, fleet_id: Uuid, filter: &RunFilter) -> StoreResult<Vec<RunRecord>>;
    /// One run with its request (body omitted).
    async fn run(&self, id: Uuid) -> StoreResult<(RunRecord, RequestRecord)>;
}

/// Deleting what is no longer wanted, a bounded batch at a time so that no transaction holds
/// ingress up; several nodes may prune one database at once.
#[async_trait]
pub trait Retention: Send + Sync {
    /// One batch: up to `limit` rows of each kind — runs that finished before `finished_before`
    /// and requests received before it that have no run left (neither when `None`: history is
    /// kept forever), and deliveries created before it whose run is gone; idempotency keys
    /// older than 24 h and rate-limit states spent by `now`.
    /// Queued and running runs, and their requests, are never touched.
    async fn prune(
        &self,
        finished_before: Option<i64>,
        now: i64,
        limit: usize,
    ) -> StoreResult<Pruned>;
}

/// A whole store: what the server is given.
pub trait Store: Catalog + Queue + History + Retention + Listing + Outbox + 'static {}

impl<T: Catalog + Queue + History + Retention + Listing + Outbox + 'static> Store for T {}

pub use crate::outbox::store::{
    AttemptRecord, Delivery, DeliveryAttempt, DeliveryRequest, DeliveryStatus, NewDelivery, Outbox,
    Verdict,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fair_pick_shares_slots_by_org_then_fleet_and_counts_what_runs() {
        // Fleet a (org x) has 4 running and a backlog; b (org y) and c (org x) have none.
        let runs = |fleet: &'static str, org: &'static str, seqs: &[i64]| {
            seqs.iter()
                .map(move |s| (*s, fleet, org))
                .collect::<Vec<_>>()
        };
        let candidates = [
            runs("a", "x", &[1, 2, 3, 4]),
            runs("b", "y", &[10, 11]),
            runs("c", "x", &[20, 21]),
        ]
        .concat();
        let busy_fleets = BTreeMap::from([("a", 4)]);
        let busy_orgs = BTreeMap::from([("x", 4)]);
        // y has nothing running: both of b's runs first; then x's, c before a within x.
        assert_eq!(
            fair_pick(candidates.clone(), &busy_fleets, &busy_orgs, 5),
            [10, 11, 20, 21, 1]
        );
        // Nothing running anywhere: one run per org in turn, oldest first on ties.
        let none = BTreeMap::new();
        assert_eq!(
            fair_pick(candidates.clone(), &none, &none, 4),
            [1, 10, 11, 20]
        );
        // A lone fleet fills the batch in arrival order.
        assert_eq!(
            fair_pick(runs("a", "x", &[5, 3, 9]), &busy_fleets, &busy_orgs, 2),
            [3, 5]
        );
    }
}
