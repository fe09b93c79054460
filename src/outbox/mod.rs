//! Destinations (DESIGN §4b): the rows a run's vessels emit, sent to HTTP endpoints after the
//! run through a durable outbox.
//!
//! - `destination` (the core's): the fleet document's `destinations`, their checks, sealed
//!   secrets, and the deliveries a run's end creates (in the transaction that records the end,
//!   see [`crate::store::Queue::finish`]); the delivery records and the `Outbox` trait are the
//!   store's;
//! - `worker`: every node's [`Deliverer`], claiming due deliveries and sending them;
//! - `sign`: Standard Webhooks signatures;
//! - `egress`: which addresses may be connected to.

pub mod egress;
pub mod sign;
mod worker;

pub use wharf_core::destination;

pub use destination::{
    DestinationSpec, deliveries, fill_url, parse_destinations, plan, seal_secrets,
};
pub use egress::EgressPolicy;
pub use worker::{Deliverer, OutboxConfig, OutboxHook, client};
