//! Executing one fleet run: variables, vessel order, `when` conditions, lease renewal.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::pool::VesselPool;
use crate::fleet::{FleetSpec, When};
use crate::sandbox::{
    FailureReason, Limits, Payload, Program, RequestMeta, RunIds, Sandbox, VesselInput, VesselKind,
    VesselOutcome, VesselStatus, value_to_var,
};
use crate::store::{Claimed, Finish, RunStatus, Store, StoreError, VesselRun};

/// What executing a fleet needs.
#[derive(Clone)]
pub struct RunContext {
    /// Where code and progress live.
    pub store: Arc<dyn Store>,
    /// Compiles and runs vessels.
    pub sandbox: Arc<Sandbox>,
    /// Threads vessels run on.
    pub pool: VesselPool,
    /// The lease owner (node id).
    pub owner: String,
    /// Lease length.
    pub lease: Duration,
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
    /// Set when the run stopped early for shutdown (the run is handed back, not finished).
    pub interrupted: bool,
}

/// Executes a claimed run to its end and records it.
pub(crate) async fn execute_claimed(
    ctx: &RunContext,
    claimed: Claimed,
    shutdown: &CancellationToken,
) {
    // The span is attached to the future, never entered with a guard held across an await:
    // a guard would leak into whatever else the thread polls and nest spans without end.
    let span = tracing::info_span!("run", run_id = %claimed.run.id, attempt = claimed.run.attempt);
    tracing::Instrument::instrument(execute_claimed_inner(ctx, claimed, shutdown), span).await
}

async fn execute_claimed_inner(ctx: &RunContext, claimed: Claimed, shutdown: &CancellationToken) {
    let run = &claimed.run;
    let fleet = match ctx.store.fleet(run.fleet_id).await {
        Ok(f) => f,
        Err(e) => {
            let error = match e {
                StoreError::NotFound(_) => {
                    "the fleet was deleted before the run started".to_string()
                }
                other => format!("could not load the fleet: {other}"),
            };
            let finish = Finish {
                status: RunStatus::Failed,
                variables: BTreeMap::new(),
                vessels: Vec::new(),
                error: Some(error),
            };
            if let Err(e) = ctx.store.finish(run.id, &ctx.owner, &finish).await {
                tracing::error!(error = %e, "recording a failed run");
            }
            return;
        }
    };
    let req = &claimed.request;
    let meta = Arc::new(RequestMeta {
        id: req.id.to_string(),
        method: req.method.clone(),
        content_type: req.content_type.clone(),
        headers: req.headers.clone(),
        query: req.query.clone(),
    });
    let ids = RunIds {
        org_id: fleet.org_id.to_string(),
        project_id: fleet.project_id.to_string(),
        fleet_id: fleet.id.to_string(),
        fleet_run_id: run.id.to_string(),
        vessel: String::new(),
        attempt: run.attempt,
    };
    let body = bytes::Bytes::from(claimed.request.body);

    // Renew the lease while the fleet executes; losing it means another node took the run over.
    let renewer = {
        let (store, owner, lease, id) = (ctx.store.clone(), ctx.owner.clone(), ctx.lease, run.id);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(lease / 3).await;
                let until = crate::util::now_ms() + lease.as_millis() as i64;
                match store.renew(id, &owner, until).await {
                    Ok(true) => {}
                    Ok(false) => return,
                    Err(e) => tracing::warn!(error = %e, "renewing a lease failed"),
                }
            }
        })
    };
    let outcome = execute_fleet(
        ctx,
        &fleet.spec,
        ids,
        meta,
        body,
        Some(run.id),
        Some(shutdown),
    )
    .await;
    renewer.abort();

    if outcome.interrupted {
        if let Err(e) = ctx.store.release(run.id, &ctx.owner).await {
            tracing::error!(error = %e, "handing a run back failed");
        }
        return;
    }
    let finish = Finish {
        status: outcome.status,
        variables: outcome.variables,
        vessels: outcome.vessels,
        error: None,
    };
    match ctx.store.finish(run.id, &ctx.owner, &finish).await {
        Ok(()) => tracing::info!(status = finish.status.as_str(), "run finished"),
        Err(e) => tracing::error!(error = %e, "recording a finished run failed"),
    }
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

/// Runs every vessel of a fleet in order. With `run_id`, progress is recorded after each vessel;
/// with `shutdown`, the run stops between vessels once it fires (and is reported interrupted).
pub async fn execute_fleet(
    ctx: &RunContext,
    spec: &FleetSpec,
    ids: RunIds,
    meta: Arc<RequestMeta>,
    body: bytes::Bytes,
    run_id: Option<Uuid>,
    shutdown: Option<&CancellationToken>,
) -> FleetOutcome {
    let mut variables = initial_variables(spec, &meta.content_type, &body);
    let defaults = Limits::default().with(&spec.limits);
    let mut vessels: Vec<VesselRun> = Vec::with_capacity(spec.vessels.len());
    let mut failed = false;
    for vessel in &spec.vessels {
        if shutdown.is_some_and(|s| s.is_cancelled()) {
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
            run_vessel(ctx, vessel.kind, &vessel.sha256, input).await
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
        // finish write records the same, so that statement is saved.
        let more_to_come = vessels.len() < spec.vessels.len();
        if let Some(id) = run_id.filter(|_| more_to_come)
            && let Err(e) = ctx
                .store
                .progress(id, &ctx.owner, &variables, &vessels)
                .await
        {
            tracing::warn!(error = %e, "recording progress failed");
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
    match ctx.pool.run(move || sandbox.run(&program, &input)).await {
        Ok(outcome) => outcome,
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
