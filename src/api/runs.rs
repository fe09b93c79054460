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
use crate::scheduler::planner::ResumeError;
use crate::scheduler::runs::RunError;
use crate::store::{RequestRecord, RunRecord};

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

/// Cancels a queued run at once, or a running one through the worker holding it, and answers
/// with the run: `cancelled`, or still `running` with `cancel_requested` if its worker did not
/// end it within [`CANCEL_WAIT`](crate::scheduler::runs::CANCEL_WAIT) (it will). `409` for a run that had already ended.
#[utoipa::path(post, path = "/runs/{run}/cancel", tag = "runs",
    params(("run" = uuid::Uuid, Path, description = "Run id")),
    responses((status = 200, description = "The run, cancelled (or still running with `cancel_requested`)", body = Run),
        (status = 404, body = ErrorBody),
        (status = 409, description = "The run has already ended", body = ErrorBody)))]
async fn cancel_run(
    State(s): State<AppState>,
    Path(run): Path<String>,
) -> Result<Json<Run>, ApiError> {
    let (run, request) = s.scheduler.cancel_run(parse_id(&run, "run")?).await?;
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
    let replayed = s
        .scheduler
        .replay_run(parse_id(&run, "run")?, body.from)
        .await?;
    let fleet = &replayed.fleet;
    Ok((
        StatusCode::CREATED,
        Json(Accepted {
            request: RequestRef {
                id: replayed.source.request_id,
            },
            data: Queued {
                fleet_id: fleet.id,
                project_id: fleet.project_id,
                org_id: fleet.org_id,
                fleet_run_id: replayed.run_id,
                replay_of: Some(replayed.source.id),
            },
        }),
    ))
}

/// The one place the rules' refusals become statuses.
impl From<RunError> for ApiError {
    fn from(e: RunError) -> Self {
        match e {
            RunError::Store(e) => e.into(),
            RunError::Resume(ResumeError::UnknownVessel { .. }) => {
                ApiError::BadRequest(e.to_string())
            }
            RunError::Ended { .. }
            | RunError::FleetDeleted
            | RunError::Resume(ResumeError::NotEnded { .. }) => ApiError::Conflict(e.to_string()),
            RunError::Busy => ApiError::Busy(e.to_string()),
        }
    }
}

/// A run as the API shows it; the field names are part of the contract.
pub(crate) fn run_json(run: &RunRecord, request: Option<&RequestRecord>) -> Run {
    Run::new(run, request)
}
