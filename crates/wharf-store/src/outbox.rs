//! What the store keeps of deliveries, and the [`Outbox`] trait both backends implement.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::store::StoreResult;

/// Where a delivery is.
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

/// The outbox: deliveries created with a run's end ([`crate::store::Queue::finish`]), claimed
/// and recorded like runs, with a fenced lease.
#[async_trait]
pub trait Outbox: Send + Sync {
    /// Claims up to `max` due pending deliveries (`next_attempt_at <= now`, not leased) for
    /// `node` until `lease_until`, earliest due first; a destination (fleet and name) never has
    /// more than `per_destination` deliveries leased at once, counting those already leased, so
    /// one slow or failing destination cannot take every slot.
    async fn claim_deliveries(
        &self,
        node: &str,
        max: usize,
        per_destination: usize,
        now: i64,
        lease_until: i64,
    ) -> StoreResult<Vec<Delivery>>;
    /// Records attempts and what follows them; one flag per record, false where the claim was
    /// no longer held (nothing written).
    async fn record_attempts(&self, records: Vec<AttemptRecord>) -> StoreResult<Vec<bool>>;
    /// Drops every delivery lease (a store of one node, at start: their sender is gone).
    async fn release_deliveries(&self) -> StoreResult<u64>;
    /// A run's deliveries (bodies not loaded), by destination and batch.
    async fn run_deliveries(&self, run_id: Uuid) -> StoreResult<Vec<Delivery>>;
    /// Deliveries still pending whose request holds a value sealed by an earlier version
    /// (`v1:`), for the start-up migration.
    async fn deliveries_with_legacy_seals(&self) -> StoreResult<Vec<Delivery>>;
    /// Replaces what a delivery sends (the migration's new seals).
    async fn set_delivery_request(&self, id: Uuid, request: &DeliveryRequest) -> StoreResult<()>;
    /// Puts a failed delivery back to pending, due at `now`. `NotFound` for an unknown id,
    /// `Conflict` unless it is failed.
    async fn retry_delivery(&self, id: Uuid, now: i64) -> StoreResult<Delivery>;
}
