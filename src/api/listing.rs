//! Lists under `/api/v1`: orgs, projects, fleets, runs across fleets, and single orgs and
//! projects. Every list pages like a fleet's run history: newest first, `limit` (default 50,
//! at most 500), `before` = the last id of the previous page, `next_before` in the answer
//! (null on the last page).

use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{ApiError, AppState, ErrorBody, QueryParams, parse_id};
use crate::store::{FleetItem, OrgItem, Page, ProjectItem, RunFilter, RunStatus};
use crate::util::rfc3339;

/// Items per page when `limit` is not given.
pub const DEFAULT_LIMIT: u32 = 50;
/// The largest `limit`.
pub const MAX_LIMIT: u32 = 500;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_orgs))
        .routes(routes!(get_org))
        .routes(routes!(list_projects))
        .routes(routes!(get_project))
        .routes(routes!(list_project_fleets))
        .routes(routes!(list_fleets))
        .routes(routes!(list_all_runs))
}

/// Paging of every list.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct PageQuery {
    /// Items per page, 1 to 500 (default 50).
    #[param(schema_with = super::types::query::limit)]
    limit: Option<String>,
    /// The `next_before` of the previous page: only items older than this id.
    #[param(schema_with = super::types::query::uuid)]
    before: Option<String>,
    /// Only items with exactly this name.
    name: Option<String>,
}

/// `limit` and `before` as every list (run history included) reads them.
pub(super) fn paging(
    limit: Option<&str>,
    before: Option<&str>,
    what: &str,
) -> Result<(u32, Option<Uuid>), ApiError> {
    let limit = match limit.filter(|s| !s.is_empty()) {
        None => DEFAULT_LIMIT,
        Some(raw) => raw
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "limit {raw:?} must be a number from 1 to {MAX_LIMIT}"
                ))
            })?,
    };
    let before = match before.filter(|s| !s.is_empty()) {
        None => None,
        Some(raw) => Some(
            Uuid::parse_str(raw)
                .map_err(|_| ApiError::BadRequest(format!("before {raw:?} is not {what} id")))?,
        ),
    };
    Ok((limit, before))
}

/// The cursor of the next page: the last id of a full page.
pub(super) fn next_before<T>(items: &[T], limit: u32, id: impl Fn(&T) -> Uuid) -> Option<Uuid> {
    if items.len() as u32 == limit {
        items.last().map(id)
    } else {
        None
    }
}

impl PageQuery {
    fn page(&self, what: &str) -> Result<Page, ApiError> {
        let (limit, before) = paging(self.limit.as_deref(), self.before.as_deref(), what)?;
        Ok(Page {
            limit,
            before,
            name: self.name.clone().filter(|n| !n.is_empty()),
        })
    }
}

/// An org.
#[derive(Serialize, ToSchema)]
pub(super) struct OrgOut {
    id: Uuid,
    name: String,
    created_at: String,
}

impl From<OrgItem> for OrgOut {
    fn from(o: OrgItem) -> Self {
        OrgOut {
            id: o.id,
            name: o.name,
            created_at: rfc3339(o.created_at),
        }
    }
}

/// A project.
#[derive(Serialize, ToSchema)]
pub(super) struct ProjectOut {
    id: Uuid,
    org_id: Uuid,
    name: String,
    created_at: String,
}

impl From<ProjectItem> for ProjectOut {
    fn from(p: ProjectItem) -> Self {
        ProjectOut {
            id: p.id,
            org_id: p.org_id,
            name: p.name,
            created_at: rfc3339(p.created_at),
        }
    }
}

/// A fleet in a list: ids, name, times, webhook URL, vessel names, newest run's status.
#[derive(Serialize, ToSchema)]
pub(super) struct FleetOut {
    id: Uuid,
    project_id: Uuid,
    org_id: Uuid,
    name: String,
    /// Names of its vessels, in run order.
    vessels: Vec<String>,
    /// Its webhook's URL; null when it has none.
    webhook_url: Option<String>,
    /// Status of its newest run; null when it never ran.
    #[schema(value_type = Option<String>)]
    last_run_status: Option<RunStatus>,
    created_at: String,
    updated_at: String,
}

fn fleet_out(s: &AppState, f: FleetItem) -> FleetOut {
    FleetOut {
        id: f.id,
        project_id: f.project_id,
        org_id: f.org_id,
        name: f.name,
        vessels: f.vessels,
        webhook_url: f
            .webhook_id
            .map(|id| format!("{}/webhooks/{id}", s.settings.public_url)),
        last_run_status: f.last_run_status,
        created_at: rfc3339(f.created_at),
        updated_at: rfc3339(f.updated_at),
    }
}

/// A page of orgs.
#[derive(Serialize, ToSchema)]
pub(super) struct OrgPage {
    orgs: Vec<OrgOut>,
    /// Pass as `before` for the next page; null on the last page.
    next_before: Option<Uuid>,
}

/// A page of projects.
#[derive(Serialize, ToSchema)]
pub(super) struct ProjectPage {
    projects: Vec<ProjectOut>,
    /// Pass as `before` for the next page; null on the last page.
    next_before: Option<Uuid>,
}

/// A page of fleets.
#[derive(Serialize, ToSchema)]
pub(super) struct FleetPage {
    fleets: Vec<FleetOut>,
    /// Pass as `before` for the next page; null on the last page.
    next_before: Option<Uuid>,
}

/// Orgs, newest first.
#[utoipa::path(get, path = "/orgs", tag = "orgs", params(PageQuery),
    responses((status = 200, body = OrgPage), (status = 400, body = ErrorBody)))]
async fn list_orgs(
    State(s): State<AppState>,
    QueryParams(q): QueryParams<PageQuery>,
) -> Result<Json<OrgPage>, ApiError> {
    let page = q.page("an org")?;
    let orgs = s.store.orgs(&page).await?;
    let next = next_before(&orgs, page.limit, |o| o.id);
    Ok(Json(OrgPage {
        orgs: orgs.into_iter().map(OrgOut::from).collect(),
        next_before: next,
    }))
}

/// One org.
#[utoipa::path(get, path = "/orgs/{org}", tag = "orgs",
    params(("org" = Uuid, Path, description = "Org id")),
    responses((status = 200, body = OrgOut), (status = 404, body = ErrorBody)))]
async fn get_org(
    State(s): State<AppState>,
    Path(org): Path<String>,
) -> Result<Json<OrgOut>, ApiError> {
    let org = s.store.org(parse_id(&org, "org")?).await?;
    Ok(Json(org.into()))
}

/// Projects of an org, newest first.
#[utoipa::path(get, path = "/orgs/{org}/projects", tag = "projects",
    params(("org" = Uuid, Path, description = "Org id"), PageQuery),
    responses((status = 200, body = ProjectPage), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn list_projects(
    State(s): State<AppState>,
    Path(org): Path<String>,
    QueryParams(q): QueryParams<PageQuery>,
) -> Result<Json<ProjectPage>, ApiError> {
    let org_id = parse_id(&org, "org")?;
    let page = q.page("a project")?;
    s.store.org(org_id).await?;
    let projects = s.store.projects(org_id, &page).await?;
    let next = next_before(&projects, page.limit, |p| p.id);
    Ok(Json(ProjectPage {
        projects: projects.into_iter().map(ProjectOut::from).collect(),
        next_before: next,
    }))
}

/// One project.
#[utoipa::path(get, path = "/projects/{project}", tag = "projects",
    params(("project" = Uuid, Path, description = "Project id")),
    responses((status = 200, body = ProjectOut), (status = 404, body = ErrorBody)))]
async fn get_project(
    State(s): State<AppState>,
    Path(project): Path<String>,
) -> Result<Json<ProjectOut>, ApiError> {
    let project = s.store.project(parse_id(&project, "project")?).await?;
    Ok(Json(project.into()))
}

/// Fleets of a project, newest first.
#[utoipa::path(get, path = "/projects/{project}/fleets", tag = "fleets",
    params(("project" = Uuid, Path, description = "Project id"), PageQuery),
    responses((status = 200, body = FleetPage), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn list_project_fleets(
    State(s): State<AppState>,
    Path(project): Path<String>,
    QueryParams(q): QueryParams<PageQuery>,
) -> Result<Json<FleetPage>, ApiError> {
    let project_id = parse_id(&project, "project")?;
    let page = q.page("a fleet")?;
    s.store.project(project_id).await?;
    fleets_page(&s, Some(project_id), page).await
}

/// Fleets of every project, newest first; `name` finds a fleet by name across projects.
#[utoipa::path(get, path = "/fleets", tag = "fleets", params(PageQuery),
    responses((status = 200, body = FleetPage), (status = 400, body = ErrorBody)))]
async fn list_fleets(
    State(s): State<AppState>,
    QueryParams(q): QueryParams<PageQuery>,
) -> Result<Json<FleetPage>, ApiError> {
    let page = q.page("a fleet")?;
    fleets_page(&s, None, page).await
}

async fn fleets_page(
    s: &AppState,
    project_id: Option<Uuid>,
    page: Page,
) -> Result<Json<FleetPage>, ApiError> {
    let fleets = s.store.fleets(project_id, &page).await?;
    let next = next_before(&fleets, page.limit, |f| f.id);
    Ok(Json(FleetPage {
        fleets: fleets.into_iter().map(|f| fleet_out(s, f)).collect(),
        next_before: next,
    }))
}

/// Paging and filter of run lists.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct RunsQuery {
    /// Only runs in this status: queued, running, succeeded, failed or cancelled.
    #[param(schema_with = super::types::query::run_status)]
    pub(super) status: Option<String>,
    /// Runs per page, 1 to 500 (default 50).
    #[param(schema_with = super::types::query::limit)]
    pub(super) limit: Option<String>,
    /// The `next_before` of the previous page: only runs older than this run.
    #[param(schema_with = super::types::query::uuid)]
    pub(super) before: Option<String>,
}

impl RunsQuery {
    /// The filter these parameters name.
    pub(super) fn filter(&self) -> Result<RunFilter, ApiError> {
        let status = match self.status.as_deref().filter(|s| !s.is_empty()) {
            None => None,
            Some(raw) => Some(RunStatus::parse(raw).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "status {raw:?} is not one of queued, running, succeeded, failed, cancelled"
                ))
            })?),
        };
        let (limit, before) = paging(self.limit.as_deref(), self.before.as_deref(), "a run")?;
        Ok(RunFilter {
            status,
            limit,
            before,
        })
    }
}

/// Runs of every fleet, newest first (each as in a fleet's run history).
#[utoipa::path(get, path = "/runs", tag = "runs", params(RunsQuery),
    responses((status = 200, body = super::runs::RunPage), (status = 400, body = ErrorBody)))]
async fn list_all_runs(
    State(s): State<AppState>,
    QueryParams(q): QueryParams<RunsQuery>,
) -> Result<Json<super::runs::RunPage>, ApiError> {
    let filter = q.filter()?;
    let runs = s.store.recent_runs(&filter).await?;
    Ok(Json(super::runs::runs_page(&runs, filter.limit)))
}
