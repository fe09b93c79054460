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
pub mod files;
mod listing;
pub mod memory;
mod outbox;
pub mod postgres;
pub mod sqlite;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;

use uuid::Uuid;

use wharf_core::fleet::{FleetSpec, NewCode};

/// The records the traits speak in; they are the domain's, re-exported so that a caller of the
/// store needs one path.
pub use wharf_core::records::*;
/// Fair claims rank ready runs by the core's rule.
pub(crate) use wharf_core::rules::claims::{Candidate, fair_pick};

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

/// Vessel code by its sha256: what saving a fleet stores and a worker loads. A trait of its own
/// because a dry run (`wharf run`) needs code and nothing else: [`memory::MemoryCode`] serves it
/// without a database.
#[async_trait]
pub trait Code: Send + Sync {
    /// Stores code under its hash (existing hashes are left alone).
    async fn put_code(&self, code: &[NewCode]) -> StoreResult<()>;
    /// Loads code by hash.
    async fn code(&self, sha256: &str) -> StoreResult<Vec<u8>>;
}

/// Organisations, projects, code, fleets and webhooks: what users configure.
#[async_trait]
pub trait Catalog: Code + Send + Sync {
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

pub use outbox::Outbox;
