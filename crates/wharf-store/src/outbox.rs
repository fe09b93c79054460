//! The [`Outbox`] trait both backends implement: deliveries created with a run's end, claimed
//! and recorded like runs. What a delivery is lives in `wharf_core::records`.

use async_trait::async_trait;
use uuid::Uuid;

use crate::{AttemptRecord, Delivery, DeliveryRequest, StoreResult};

/// The outbox: deliveries created with a run's end ([`crate::Queue::finish`]), claimed
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
