//! wharf — a self-hosted runtime that turns webhooks into sandboxed runs.
//!
//! A caller POSTs any body to a fleet's webhook; wharf commits the request and a queued run,
//! answers `201`, and workers run the fleet's vessels (Wasm modules or Rhai scripts) in a
//! fuel-metered sandbox. This crate is organised so that each
//! part of it has one obvious home.
//!
//! # Layout
//!
//! The server sits on three crates of the workspace (ARCHITECTURE.md): [`wharf_core`] (the
//! domain, no I/O), [`wharf_sandbox`] (the vessel runners) and [`wharf_store`] (the store
//! traits and backends). They are re-exported under the names the server's modules use:
//!
//! - [`fleet`], [`admission`] (the core's): the fleet document, parsed once into a validated
//!   [`fleet::FleetSpec`]; webhook rate limits and deduplication keys.
//! - [`sandbox`]: the vessel contract with one runner per kind; it knows nothing of HTTP or
//!   storage.
//! - [`store`]: the [`store::Store`] traits and the records they keep; the SQLite store, whose
//!   one writer thread commits every write in batches; and the PostgreSQL store, for several
//!   nodes on one database.
//!
//! This crate's own modules:
//!
//! - [`auth`]: API keys and redaction (sealing and signatures are the core's, re-exported).
//! - [`config`]: the typed settings of `wharf serve`, secrets redacted in `Debug`.
//! - [`ingest`]: admission of one webhook call — resolve, policy, durable enqueue.
//! - [`disk`]: the data volume's free space, which ingress keeps above `--min-free-disk`.
//! - [`retention`]: the background task that deletes old history, on every node.
//! - [`scheduler`]: claims queued runs in batches, executes fleets vessel by vessel on the
//!   vessel threads, records ends in batches.
//! - [`outbox`]: the delivery worker, signing and the egress policy.
//! - [`api`]: HTTP only — routing, extractors, status codes.
//! - [`metrics`]: the Prometheus registry of one server and its lock-free recording.
//! - [`local`]: `wharf run` and `wharf bundle` for guest authors, on the scheduler's dry-run path.
//! - [`cli`]: the client commands (`apply`, `fleets`, `webhook`, `runs`, `trigger`) over the
//!   admin API.
//! - [`server`]: wires the parts together: `serve(listener, shutdown)` and first-start set-up.
//!
//! Dependencies point inward: `api → ingest / scheduler → sandbox, store → core`, and the
//! crate graph enforces the lower half of it.

pub mod api;
pub mod auth;
pub mod cli;
pub mod config;
pub mod disk;
pub mod ingest;
pub mod local;
pub mod metrics;
pub mod outbox;
pub mod retention;
pub mod scheduler;
pub mod server;
pub mod util;

// The crates below the server, under the names the server's modules use for them.
pub use wharf_core::{admission, fleet};
pub use wharf_sandbox as sandbox;
pub use wharf_store as store;

/// The system allocator, counting per thread what each holds, so that a Rhai vessel is held to
/// its memory limit as a whole (see `sandbox::memory`). Declared here, in the library, so the
/// binary, the tests and the benchmarks all run with it.
#[global_allocator]
static ALLOCATOR: sandbox::memory::CountingAlloc = sandbox::memory::CountingAlloc;
