//! Runs: a fleet's history, one run, and cancelling or replaying it.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::listing::{RunsQuery, next_before};
pub(super) use super::types::RunPage;
use super::types::{Accepted, Queued, ReplayBody, RequestRef, Run};
use super::{ApiError, AppState, Created, ErrorBody, JsonBody, QueryParams, parse_id};
use crate::scheduler::planner::Plan;
use crate::store::{
    Admission, CancelOutcome, Replay, RequestRecord, RunRecord, RunStatus, StoreError, VesselRun,
};

/// The routes of runs, and of the deliveries a run made.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_runs))
        .routes(routes!(get_run))
        .routes(routes!(cancel_run))
        .routes(routes!(replay_run))
        .routes(routes!(super::deliveries::run_deliveries))
        .routes(routes!(super::deliveries::retry_delivery))
}

/// A fleet's run history, newest first.
#[utoipa::path(get, path = "/fleets/{fleet}/runs", tag = "runs",
    params(("fleet" = uuid::Uuid, Path, description = "Fleet id"), RunsQuery),
    responses((status = 200, body = RunPage), (status = 400, body = ErrorBody)))]
async fn list_runs(
    State(s): State<AppState>,
    Path(fleet): Path<String>,
    QueryParams(q): QueryParams<RunsQuery>,
) -> Result<Json<RunPage>, ApiError> {
    let fleet_id = parse_id(&fleet, "fleet")?;
    let filter = q.filter()?;
    let runs = s.store.runs(fleet_id, &filter).await?;
    Ok(Json(runs_page(&runs, filter.limit)))
}

/// A page of runs: `{"runs": […], "next_before": id or null}`.
pub(super) fn runs_page(runs: &[RunRecord], limit: u32) -> RunPage {
    RunPage {
        next_before: next_before(runs, limit, |r| r.id),
        runs: runs.iter().map(|r| run_json(r, None)).collect(),
    }
}

/// One run: status, request, effective variables, vessel runs with logs.
#[utoipa::path(get, path = "/runs/{run}", tag = "runs",
    params(("run" = uuid::Uuid, Path, description = "Run id")),
    responses((status = 200, body = Run), (status = 404, body = ErrorBody)))]
async fn get_run(
    State(s): State<AppState>,
    Path(run): Path<String>,
) -> Result<Json<Run>, ApiError> {
    let (run, request) = s.store.run(parse_id(&run, "run")?).await?;
    let deliveries = s.store.run_deliveries(run.id).await?;
    let mut doc = run_json(&run, Some(&request));
    doc.destinations = Some(super::deliveries::destinations(&deliveries));
    Ok(Json(doc))
}

/// How long a cancel of a running run waits for the run to end before answering.
const CANCEL_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Cancels a queued run at once, or a running one through the worker holding it, and answers
/// with the run: `cancelled`, or still `running` with `cancel_requested` if its worker did not
/// end it within [`CANCEL_WAIT`] (it will). `409` for a run that had already ended.
#[utoipa::path(post, path = "/runs/{run}/cancel", tag = "runs",
    params(("run" = uuid::Uuid, Path, description = "Run id")),
    responses((status = 200, description = "The run, cancelled (or still running with `cancel_requested`)", body = Run),
        (status = 404, body = ErrorBody),
        (status = 409, description = "The run has already ended", body = ErrorBody)))]
async fn cancel_run(
    State(s): State<AppState>,
    Path(run): Path<String>,
) -> Result<Json<Run>, ApiError> {
    let id = parse_id(&run, "run")?;
    let (record, _) = s.store.run(id).await?;
    // What a queued run records: what it carried over, and every other vessel cancelled.
    let mut vessels = record.vessels.clone();
    if let Ok(fleet) = s.store.fleet(record.fleet_id).await {
        for v in &fleet.spec.vessels {
            if !vessels.iter().any(|r| r.name == v.name) {
                vessels.push(VesselRun::not_run(
                    &v.name,
                    crate::sandbox::VesselOutcome::not_run(
                        crate::sandbox::VesselStatus::Cancelled,
                        Some(crate::sandbox::FailureReason::Cancelled),
                        None,
                    ),
                ));
            }
        }
    }
    match s.store.cancel(id, &vessels).await? {
        CancelOutcome::Finished(status) => {
            return Err(ApiError::Conflict(format!(
                "run {id} has already ended ({}); only a queued or running run can be cancelled",
                status.as_str()
            )));
        }
        CancelOutcome::Cancelled => {}
        CancelOutcome::Requested => {
            s.scheduler.cancel_local(id);
            let deadline = tokio::time::Instant::now() + CANCEL_WAIT;
            while tokio::time::Instant::now() < deadline {
                let (run, _) = s.store.run(id).await?;
                if !matches!(run.status, RunStatus::Queued | RunStatus::Running) {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        }
    }
    let (run, request) = s.store.run(id).await?;
    Ok(Json(run_json(&run, Some(&request))))
}

/// A new run of a stored request, with the fleet's current code. With `from`, a resume: every
/// vessel run the source recorded that is neither the named vessel nor downstream of it is
/// carried over (variables and rows included) instead of run again.
#[utoipa::path(post, path = "/runs/{run}/replay", tag = "runs",
    request_body(content = Option<ReplayBody>, description = "`{}`, or `{\"from\": \"<vessel>\"}` to resume"),
    params(("run" = uuid::Uuid, Path, description = "Run id")),
    responses((status = 201, description = "Like ingress, with `data.replay_of`", body = Accepted),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody),
        (status = 429, description = "The fleet's `reject` policy", body = ErrorBody)))]
async fn replay_run(
    State(s): State<AppState>,
    Path(run): Path<String>,
    JsonBody(body): JsonBody<ReplayBody>,
) -> Result<Created<Accepted>, ApiError> {
    let id = parse_id(&run, "run")?;
    let (source, _) = s.store.run(id).await?;
    let fleet = match s.store.fleet(source.fleet_id).await {
        Err(StoreError::NotFound(_)) => {
            return Err(ApiError::Conflict(
                "the run's fleet has been deleted; there is nothing to replay it on".into(),
            ));
        }
        other => other?,
    };
    let (carried, resumed_from) = match body.from {
        None => (Vec::new(), None),
        Some(from) => {
            let spec = &fleet.spec;
            let Some(index) = spec.vessels.iter().position(|v| v.name == from) else {
                let names: Vec<&str> = spec.vessels.iter().map(|v| v.name.as_str()).collect();
                return Err(ApiError::BadRequest(format!(
                    "from: the fleet has no vessel {from:?} (it has {})",
                    names.join(", ")
                )));
            };
            if matches!(source.status, RunStatus::Queued | RunStatus::Running) {
                return Err(ApiError::Conflict(format!(
                    "run {id} is still {}; resume a run that has ended",
                    source.status.as_str()
                )));
            }
            let rerun: Vec<&str> = Plan::new(spec)
                .downstream_of(index)
                .into_iter()
                .map(|i| spec.vessels[i].name.as_str())
                .collect();
            let carried = source
                .vessels
                .iter()
                .filter(|v| !rerun.contains(&v.name.as_str()))
                .filter(|v| spec.vessels.iter().any(|s| s.name == v.name))
                .filter(|v| {
                    use crate::sandbox::VesselStatus::*;
                    matches!(v.outcome.status, Succeeded | Failed | Skipped)
                })
                .map(|v| VesselRun {
                    carried_over: true,
                    ..v.clone()
                })
                .collect();
            (carried, Some(from))
        }
    };
    let run_id = uuid::Uuid::now_v7();
    let replay = Replay {
        source: id,
        run_id,
        resumed_from,
        carried,
        policy: fleet.spec.concurrency.policy,
    };
    match s.store.replay(replay).await? {
        Admission::Queued => s.scheduler.wake(),
        // A replay is no webhook call: only the policy can refuse it.
        _ => {
            return Err(ApiError::Busy(
                "the fleet already has a run queued or running".into(),
            ));
        }
    }
    Ok((
        StatusCode::CREATED,
        Json(Accepted {
            request: RequestRef {
                id: source.request_id,
            },
            data: Queued {
                fleet_id: fleet.id,
                project_id: fleet.project_id,
                org_id: fleet.org_id,
                fleet_run_id: run_id,
                replay_of: Some(id),
            },
        }),
    ))
}

/// A run as the API shows it; the field names are part of the contract.
pub(crate) fn run_json(run: &RunRecord, request: Option<&RequestRecord>) -> Run {
    Run::new(run, request)
}
