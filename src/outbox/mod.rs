//! Destinations (DESIGN §4b): the rows a run's vessels emit, sent to HTTP endpoints after the
//! run through a durable outbox.
//!
//! - `destination`: the fleet document's `destinations`, their checks, sealed secrets, and the
//!   deliveries a run's end creates (in the transaction that records the end, see
//!   [`crate::store::Queue::finish`]);
//! - `store`: the delivery records and the [`store::Outbox`] trait of both backends;
//! - `worker`: every node's [`Deliverer`], claiming due deliveries and sending them;
//! - `sign`: Standard Webhooks signatures;
//! - `egress`: which addresses may be connected to.

pub mod destination;
pub mod egress;
pub mod sign;
pub mod store;
mod worker;

pub use destination::{
    DestinationSpec, deliveries, fill_url, parse_destinations, plan, seal_secrets,
};
pub use egress::EgressPolicy;
pub use worker::{Deliverer, OutboxConfig, OutboxHook, client};
