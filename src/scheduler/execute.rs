//! Executing one fleet run: variables, vessel order, `when` conditions; fenced progress.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use super::pool::VesselPool;
use crate::fleet::{FleetSpec, When};
use crate::sandbox::{
    FailureReason, Limits, Payload, Program, RequestMeta, RunIds, Sandbox, VesselInput, VesselKind,
    VesselOutcome, VesselStatus, value_to_var,
};
use crate::store::{Lease, RunStatus, Store, VesselRun};

/// What executing a fleet needs.
#[derive(Clone)]
pub struct RunContext {
    /// Where code and progress live.
    pub store: Arc<dyn Store>,
    /// Compiles and runs vessels.
    pub sandbox: Arc<Sandbox>,
    /// Threads vessels run on.
    pub pool: VesselPool,
    /// When a running vessel gives its dispatch slot up (see [`Slot`]).
    pub slow_after: Duration,
    /// Vessel durations and fuel of real (not dry) runs.
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// The dispatch slot a claimed run holds. Quick runs hold a permit of the dispatcher's
/// semaphore; a run whose vessel has been running longer than `slow_after` trades it for a
/// permit of the slow lane, so a few slow guests cannot keep the node from claiming more work.
pub(crate) struct Slot {
    permit: Mutex<Option<OwnedSemaphorePermit>>,
    slow: Arc<tokio::sync::Semaphore>,
}

impl Slot {
    pub(crate) fn new(permit: OwnedSemaphorePermit, slow: Arc<tokio::sync::Semaphore>) -> Self {
        Slot {
            permit: Mutex::new(Some(permit)),
            slow,
        }
    }

    /// Moves the run to the slow lane, if the lane has room; otherwise it keeps its slot.
    fn mark_slow(&self) {
        if let Ok(slow) = self.slow.clone().try_acquire_owned()
            && let Ok(mut permit) = self.permit.lock()
        {
            *permit = Some(slow);
        }
    }
}

/// A claimed run as its execution sees it.
pub(crate) struct Held<'a> {
    /// The claim; progress is fenced with it.
    pub lease: Lease,
    /// Fires when the lease was lost: stop, record nothing more.
    pub lost: &'a CancellationToken,
    /// Fires at shutdown: stop between vessels and hand the run back.
    pub shutdown: &'a CancellationToken,
    /// The dispatch slot.
    pub slot: &'a Slot,
}

/// The result of executing a fleet.
#[derive(Debug, Clone)]
pub struct FleetOutcome {
    /// `Succeeded` or `Failed`.
    pub status: RunStatus,
    /// Effective variables at the end.
    pub variables: BTreeMap<String, String>,
    /// One entry per vessel, in run order.
    pub vessels: Vec<VesselRun>,
    /// Set when the run stopped early for shutdown or a lost lease (nothing to finish).
    pub interrupted: bool,
}

/// The declared variables, overridden by same-named top-level keys of a JSON-object body.
pub fn initial_variables(
    spec: &FleetSpec,
    content_type: &str,
    body: &[u8],
) -> BTreeMap<String, String> {
    let mut vars = spec.variables.clone();
    if vars.is_empty() {
        return vars;
    }
    let payload: Payload = Payload::<serde_json::Value>::parse(content_type, body);
    if let Some(obj) = payload.object() {
        for (name, value) in vars.iter_mut() {
            if let Some(v) = obj.get(name) {
                *value = value_to_var(v);
            }
        }
    }
    vars
}

/// Runs every vessel of a fleet in order. With `held` (a claimed run, not a dry run), progress
/// is recorded after each vessel but the last, and the run stops between vessels once its
/// lease is lost or shutdown fires (reported as interrupted).
pub(crate) async fn execute_fleet(
    ctx: &RunContext,
    spec: &FleetSpec,
    ids: RunIds,
    meta: Arc<RequestMeta>,
    body: bytes::Bytes,
    held: Option<Held<'_>>,
) -> FleetOutcome {
    let mut variables = initial_variables(spec, &meta.content_type, &body);
    let defaults = Limits::default().with(&spec.limits);
    let mut vessels: Vec<VesselRun> = Vec::with_capacity(spec.vessels.len());
    let mut failed = false;
    for vessel in &spec.vessels {
        if held
            .as_ref()
            .is_some_and(|h| h.shutdown.is_cancelled() || h.lost.is_cancelled())
        {
            return FleetOutcome {
                status: RunStatus::Queued,
                variables,
                vessels,
                interrupted: true,
            };
        }
        let needs_ok = vessel.needs.iter().all(|n| {
            vessels
                .iter()
                .any(|v| &v.name == n && v.outcome.status == VesselStatus::Succeeded)
        });
        let should_run = match vessel.when {
            When::Success => !failed && needs_ok,
            When::Failure => failed,
            When::Always => true,
        };
        let outcome = if !should_run {
            VesselOutcome::not_run(VesselStatus::Skipped, None, None)
        } else {
            let input = VesselInput {
                body: body.clone(),
                request: meta.clone(),
                ids: RunIds {
                    vessel: vessel.name.clone(),
                    ..ids.clone()
                },
                variables: variables.clone(),
                limits: defaults.with(&vessel.limits),
            };
            run_vessel(ctx, vessel.kind, &vessel.sha256, input, held.as_ref()).await
        };
        if outcome.status == VesselStatus::Failed {
            failed = true;
        }
        variables.extend(
            outcome
                .variables
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        vessels.push(VesselRun {
            name: vessel.name.clone(),
            outcome,
        });
        // Progress lets `GET /runs/{id}` show a long fleet part-way; after the last vessel the
        // finish records the same, so that write is saved.
        let more_to_come = vessels.len() < spec.vessels.len();
        if let Some(h) = held.as_ref().filter(|_| more_to_come) {
            match ctx.store.progress(h.lease, &variables, &vessels).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!("lease lost: another claim holds this run; stopping");
                    h.lost.cancel();
                }
                Err(e) => tracing::warn!(error = %e, "recording progress failed"),
            }
        }
    }
    let status = if failed {
        RunStatus::Failed
    } else {
        RunStatus::Succeeded
    };
    FleetOutcome {
        status,
        variables,
        vessels,
        interrupted: false,
    }
}

/// Loads (or takes from the cache) a vessel's program and runs it on the pool.
async fn run_vessel(
    ctx: &RunContext,
    kind: VesselKind,
    sha256: &str,
    input: VesselInput,
    held: Option<&Held<'_>>,
) -> VesselOutcome {
    let program = match load_program(ctx, kind, sha256).await {
        Ok(p) => p,
        Err(e) => {
            return VesselOutcome::not_run(
                VesselStatus::Failed,
                Some(FailureReason::Trap),
                Some(e),
            );
        }
    };
    let sandbox = ctx.sandbox.clone();
    // When the vessel got a thread: time spent waiting for one is not slowness of the vessel.
    let started = Arc::new(std::sync::OnceLock::<Instant>::new());
    let job = ctx.pool.run({
        let started = started.clone();
        move || {
            let _ = started.set(Instant::now());
            sandbox.run(&program, &input)
        }
    });
    tokio::pin!(job);
    let result = match held {
        None => job.await,
        Some(h) => loop {
            let mark = started.get().map_or(Instant::now(), |t| *t) + ctx.slow_after;
            tokio::select! {
                result = &mut job => break result,
                _ = tokio::time::sleep_until(mark.into()) => {
                    if started.get().is_some_and(|t| t.elapsed() >= ctx.slow_after) {
                        h.slot.mark_slow();
                        break job.await;
                    }
                }
            }
        },
    };
    match result {
        Ok(outcome) => {
            if held.is_some() {
                ctx.metrics.observe_vessel(kind, &outcome);
            }
            outcome
        }
        Err(panic) => {
            tracing::error!(error = %panic, "a vessel run panicked");
            VesselOutcome::not_run(
                VesselStatus::Failed,
                Some(FailureReason::Trap),
                Some("internal error in the sandbox".into()),
            )
        }
    }
}

/// The compiled program for some code: from the cache, or fetched and compiled on the pool.
pub(crate) async fn load_program(
    ctx: &RunContext,
    kind: VesselKind,
    sha256: &str,
) -> Result<Program, String> {
    if let Some(p) = ctx.sandbox.cached(kind, sha256) {
        return Ok(p);
    }
    let code = ctx
        .store
        .code(sha256)
        .await
        .map_err(|e| format!("could not load the vessel's code: {e}"))?;
    let (sandbox, sha) = (ctx.sandbox.clone(), sha256.to_owned());
    ctx.pool
        .run(move || sandbox.compile(kind, &sha, &code))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("the vessel's code does not compile: {e}"))
}
