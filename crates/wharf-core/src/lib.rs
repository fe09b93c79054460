//! wharf's domain: what a fleet, a run and a delivery are, and the rules that decide what happens
//! to them — written once, for every backend and every caller.
//!
//! This crate does no I/O and depends on no runtime, database driver or HTTP stack, so a rule can
//! be unit-tested without a database and the store and sandbox crates cannot reach back into the
//! server. Its modules:
//!
//! - [`fleet`]: the fleet document, parsed once into a validated [`fleet::FleetSpec`].
//! - [`vessel`]: the vessel contract as data — kinds, statuses, reasons, outcomes, limits, and
//!   how a body is understood.
//! - [`records`]: what the store keeps — orgs, fleets, webhooks, requests, runs, deliveries — and
//!   the shapes of the batches the queue takes and answers.
//! - [`planner`]: which vessel runs when, given how the vessels it needs ended.
//! - [`admission`]: the rules a webhook can add — rate limits, deduplication keys.
//! - [`destination`]: where a fleet's rows go, and what a run's end makes of them.
//! - [`rules`]: the queue's and the outbox's business rules, each one pure function that both
//!   stores call on the state they read (admission, cancel, replay, lost workers, delivery
//!   verdicts, retention), so the backends differ only in SQL and locking.
//! - [`auth`]: sealing secrets at rest and the providers' signature schemes.
//! - [`util`]: time stamps, hashes and random tokens.

pub mod admission;
pub mod auth;
pub mod destination;
pub mod fleet;
pub mod planner;
pub mod records;
pub mod rules;
pub mod util;
pub mod vessel;
