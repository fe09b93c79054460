//! wharf — a self-hosted runtime that turns webhooks into sandboxed runs.
//!
//! A caller POSTs any body to a fleet's webhook; wharf commits the request and a queued run,
//! answers `201`, and workers run the fleet's vessels (Wasm modules or Rhai scripts) in a
//! fuel-metered sandbox. This crate is organised so that each
//! part of it has one obvious home.
//!
//! # Layout
//!
//! - [`auth`]: secrets sealed at rest, and the ways webhook callers prove who they are.
//! - [`config`]: the typed settings of `wharf serve`, secrets redacted in `Debug`.
//! - [`fleet`]: the fleet document, parsed once into a validated [`fleet::FleetSpec`].
//! - [`sandbox`]: the vessel contract — inputs, outcomes, limits — with one runner per kind.
//!   It knows nothing of HTTP or storage.
//! - [`store`]: the [`store::Store`] traits (catalog, queue, history); the SQLite store, whose
//!   one writer thread commits every write in batches; and the PostgreSQL store, for several
//!   nodes on one database.
//! - [`rules`]: the queue's and the outbox's business rules, each one pure function that both
//!   stores call on the state they read (admission, cancel, lost workers, delivery verdicts,
//!   retention), so the backends differ only in SQL and locking.
//! - [`ingest`]: admission of one webhook call — resolve, policy, durable enqueue.
//! - [`disk`]: the data volume's free space, which ingress keeps above `--min-free-disk`.
//! - [`admission`]: the rules a webhook can add — rate limit, deduplication keys — that the
//!   store applies inside the committing transaction.
//! - [`retention`]: the background task that deletes old history, on every node.
//! - [`scheduler`]: claims queued runs in batches, executes fleets vessel by vessel on the
//!   vessel threads, records ends in batches.
//! - [`api`]: HTTP only — routing, extractors, status codes.
//! - [`metrics`]: the Prometheus registry of one server and its lock-free recording.
//! - [`local`]: `wharf run` and `wharf bundle` for guest authors, on the scheduler's dry-run path.
//! - [`cli`]: the client commands (`apply`, `fleets`, `webhook`, `runs`, `trigger`) over the
//!   admin API.
//! - [`server`]: wires the parts together: `serve(listener, shutdown)` and first-start set-up.
//!
//! Dependencies point inward: `api → ingest / scheduler → sandbox`, and everything may use
//! `store`.

pub mod admission;
pub mod api;
pub mod auth;
pub mod cli;
pub mod config;
pub mod disk;
pub mod fleet;
pub mod ingest;
pub mod local;
pub mod metrics;
pub mod outbox;
pub mod retention;
pub mod rules;
pub mod sandbox;
pub mod scheduler;
pub mod server;
pub mod store;
pub mod util;

/// The system allocator, counting per thread what each holds, so that a Rhai vessel is held to
/// its memory limit as a whole (see `sandbox::memory`). Declared here, in the library, so the
/// binary, the tests and the benchmarks all run with it.
#[global_allocator]
static ALLOCATOR: sandbox::memory::CountingAlloc = sandbox::memory::CountingAlloc;
