//! The business rules of the queue and the outbox, each written once as a pure function over
//! the state a backend read. A backend reads what a decision needs (in its transaction, with its
//! locking), calls the rule, and writes what the rule returns: SQLite and PostgreSQL differ only
//! in SQL and locking, never in what they decide or in the texts they store.
//!
//! Nothing here does I/O: std, serde, serde_json, uuid and the domain types only, so that the
//! rules can live in a crate with no driver, runtime or HTTP dependency.
//!
//! - [`admission`]: which calls of an ingress batch are queued, held or answered without a run,
//!   and the same policy decision for a replay.
//! - [`claims`]: which ready runs a claim takes, fairly across orgs and fleets.
//! - [`lifecycle`]: cancelling a run, and runs whose worker was lost.
//! - [`delivery`]: what follows a delivery attempt (delivered, given up, retried after a
//!   backoff), what that verdict makes of the stored delivery, and which deliveries a retry by
//!   hand may re-open.
//! - [`retention`]: what counts as old enough to delete.

pub mod admission;
pub mod claims;
pub mod delivery;
pub mod lifecycle;
pub mod retention;

/// A fleet's runs that one policy decision looks at: the fleet and a concurrency key value
/// (`None` for a policy without a key; such runs match each other).
pub type Slot = (uuid::Uuid, Option<String>);
