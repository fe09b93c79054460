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

use crate::fleet::{Concurrency, FleetSpec, NewCode};
use crate::sandbox::VesselOutcome;

pub use batch::IngestBatcher;
pub use listing::{FleetItem, Listing, OrgItem, Page, ProjectItem, QueueStats};

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

/// How callers of a webhook prove who they are. Only `none` is enforced for now; the field is
/// stored as JSON so richer modes slot in without a migration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum WebhookAuth {
    /// Anyone with the URL.
    #[default]
    None,
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
}

/// What became of one call handed to [`Queue::enqueue`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The request and its run are committed.
    Queued,
    /// `reject` policy: the fleet already has a run queued or running; nothing was stored.
    Busy,
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
    /// What happened.
    #[serde(flatten)]
    pub outcome: VesselOutcome,
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
}

/// Organisations, projects, code, fleets and webhooks: what users configure.
#[async_trait]
pub trait Catalog: Send + Sync {
    /// True before the first org exists (first start).
    async fn is_empty(&self) -> StoreResult<bool>;

    /// Creates an org.
    async fn create_org(&self, name: &str) -> StoreResult<Org>;
    /// Stores the hash of a new API key of an org; returns the key's id.
    async fn create_api_key(&self, org_id: Uuid, key_hash: &str) -> StoreResult<Uuid>;
    /// Revokes an API key.
    async fn revoke_api_key(&self, id: Uuid) -> StoreResult<()>;
    /// Creates a project in an org.
    async fn create_project(&self, org_id: Uuid, name: &str) -> StoreResult<Project>;

    /// Stores code under its hash (existing hashes are left alone).
    async fn put_code(&self, code: &[NewCode]) -> StoreResult<()>;
    /// Loads code by hash.
    async fn code(&self, sha256: &str) -> StoreResult<Vec<u8>>;

    /// Creates a fleet in a project.
    async fn create_fleet(&self, project_id: Uuid, spec: &FleetSpec) -> StoreResult<Fleet>;
    /// Loads a fleet.
    async fn fleet(&self, id: Uuid) -> StoreResult<Fleet>;
    /// Replaces a fleet's document.
    async fn replace_fleet(&self, id: Uuid, spec: &FleetSpec) -> StoreResult<Fleet>;
    /// Deletes a fleet and its webhook; its run history stays.
    async fn delete_fleet(&self, id: Uuid) -> StoreResult<()>;

    /// Creates the fleet's webhook; `Conflict` if it has one.
    async fn create_webhook(
        &self,
        fleet_id: Uuid,
        id: &str,
        auth: &WebhookAuth,
    ) -> StoreResult<Webhook>;
    /// Gives the fleet's webhook a new id; the old one stops resolving.
    async fn rotate_webhook(&self, fleet_id: Uuid, new_id: &str) -> StoreResult<Webhook>;
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
    /// A `queue`-policy fleet never has two runs claimed at once, and its runs go in arrival
    /// order.
    async fn claim(&self, node: &str, max: usize, lease_until: i64) -> StoreResult<Vec<Claimed>>;
    /// Extends every lease `node` holds to `lease_until`, in one statement; returns those of
    /// `leases` that are no longer held (the run was re-queued, claimed again, or ended).
    async fn renew(
        &self,
        node: &str,
        leases: &[Lease],
        lease_until: i64,
    ) -> StoreResult<Vec<Lease>>;
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

/// A whole store: what the server is given.
pub trait Store: Catalog + Queue + History + Listing + 'static {}

impl<T: Catalog + Queue + History + Listing + 'static> Store for T {}
