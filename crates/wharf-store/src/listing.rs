//! [`Listing`]: what operators page through — orgs, projects, fleets, runs across fleets — and
//! the queue figures `/metrics` reads when scraped.
//!
//! Every list is newest first and paged the same way as a fleet's run history: at most
//! [`Page::limit`] items, starting after the item whose id is [`Page::before`]. Orgs, projects
//! and fleets are ordered by `(created_at, id)` (their ids are random), runs by their sequence.

use async_trait::async_trait;
use serde::Serialize;
use uuid::Uuid;

use super::{RunFilter, RunRecord, RunStatus, StoreResult};

/// One page of a list.
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// At most this many items.
    pub limit: u32,
    /// Only items older than this one (a cursor: the last id of the previous page). An id that
    /// names nothing in the list gives an empty page.
    pub before: Option<Uuid>,
    /// Only items with exactly this name.
    pub name: Option<String>,
}

/// An org as lists show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OrgItem {
    /// Id.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// Creation time (ms).
    pub created_at: i64,
}

/// A project as lists show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProjectItem {
    /// Id.
    pub id: Uuid,
    /// Owning org.
    pub org_id: Uuid,
    /// Name.
    pub name: String,
    /// Creation time (ms).
    pub created_at: i64,
}

/// A fleet as lists show it: enough to pick one, without its code or settings.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetItem {
    /// Id.
    pub id: Uuid,
    /// Project holding it.
    pub project_id: Uuid,
    /// Org owning the project.
    pub org_id: Uuid,
    /// Name from its document.
    pub name: String,
    /// Its vessels' names, in run order.
    pub vessels: Vec<String>,
    /// The id of its webhook, if it has one.
    pub webhook_id: Option<String>,
    /// Status of its newest run, if it has run.
    pub last_run_status: Option<RunStatus>,
    /// Creation time (ms).
    pub created_at: i64,
    /// Last replacement time (ms).
    pub updated_at: i64,
}

/// The queue as a whole, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Runs in status `queued` (claimable or held back by a `queue` policy).
    pub queued: u64,
    /// When the oldest of them was queued (ms), if any is.
    pub oldest_queued_at: Option<i64>,
}

/// How many runs of one fleet, created within one time bucket, are in one status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunCount {
    /// The fleet.
    pub fleet_id: Uuid,
    /// Bucket number: `(created_at - since) / bucket_ms`.
    pub bucket: i64,
    /// The runs' status now.
    pub status: RunStatus,
    /// How many.
    pub count: u64,
}

/// The start of a stored request body, for previews.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyPreview {
    /// At most the bytes asked for, from the start of the body.
    pub bytes: Vec<u8>,
    /// Size of the whole body as received.
    pub body_size: u64,
}

/// Paged lists for operators, and cheap queue figures.
#[async_trait]
pub trait Listing: Send + Sync {
    /// Orgs, newest first.
    async fn orgs(&self, page: &Page) -> StoreResult<Vec<OrgItem>>;
    /// One org; `NotFound("org")` if unknown.
    async fn org(&self, id: Uuid) -> StoreResult<OrgItem>;
    /// Projects of an org, newest first (empty for an unknown org).
    async fn projects(&self, org_id: Uuid, page: &Page) -> StoreResult<Vec<ProjectItem>>;
    /// One project; `NotFound("project")` if unknown.
    async fn project(&self, id: Uuid) -> StoreResult<ProjectItem>;
    /// Fleets of one project, or of every project when `project_id` is `None`, newest first.
    async fn fleets(&self, project_id: Option<Uuid>, page: &Page) -> StoreResult<Vec<FleetItem>>;
    /// Runs of every fleet, newest first. The status filter is applied while walking the
    /// history newest first: no index on status alone, since one would cost every queue write.
    async fn recent_runs(&self, filter: &RunFilter) -> StoreResult<Vec<RunRecord>>;
    /// How many runs are queued and since when.
    async fn queue_stats(&self) -> StoreResult<QueueStats>;
    /// Runs created at or after `since` (ms), counted by fleet, time bucket and status; only
    /// one fleet's when `fleet_id` is given. Reads the window's runs only: a walk of the primary
    /// key back to the first run older than `since`, whatever the size of the history.
    async fn run_counts(
        &self,
        since: i64,
        bucket_ms: i64,
        fleet_id: Option<Uuid>,
    ) -> StoreResult<Vec<RunCount>>;
    /// The first `max` bytes of the body of a run's request; `NotFound("run")` if unknown.
    async fn body_preview(&self, run_id: Uuid, max: usize) -> StoreResult<BodyPreview>;
}
