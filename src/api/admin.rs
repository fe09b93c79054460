//! The admin API under `/api/v1`: orgs, keys, projects, fleets, webhooks, runs.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::listing::{RunsQuery, next_before};
use super::{ApiError, AppState, ErrorBody, JsonBody, parse_id};
use crate::fleet::FleetDoc;
use crate::sandbox::VesselKind;
use crate::scheduler::PrepareError;
use crate::store::{Fleet, RequestRecord, RunRecord, Webhook, WebhookAuth};
use crate::util::{random_token, rfc3339, sha256_hex};

type Created = (StatusCode, Json<Value>);

/// Every admin route; each handler carries its OpenAPI description, so a route cannot be
/// registered here without one.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_org))
        .routes(routes!(create_api_key))
        .routes(routes!(revoke_api_key))
        .routes(routes!(create_project))
        .routes(routes!(create_fleet))
        .routes(routes!(get_fleet, replace_fleet, delete_fleet))
        .routes(routes!(create_webhook, delete_webhook))
        .routes(routes!(rotate_webhook))
        .routes(routes!(list_runs))
        .routes(routes!(dry_run))
        .routes(routes!(get_run))
        .routes(routes!(super::ops::api_metrics))
}

/// `{"name": …}`: the body that creates an org or a project.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NameBody {
    name: String,
}

/// A fleet document (DESIGN §3): `name`, `variables`, `concurrency`, `limits`, `vessels`.
/// Code comes inline (`source`, `wasm_base64`) or by the `sha256` of stored code.
#[derive(ToSchema)]
#[schema(value_type = Object)]
#[allow(dead_code)] // Only describes the document in OpenAPI; handlers take a `FleetDoc`.
pub(super) struct FleetDocument(Value);

/// A page of run history.
#[derive(Serialize, ToSchema)]
pub(super) struct RunPage {
    /// Runs, newest first, each as `GET /api/v1/runs/{run}` shows it minus the request details.
    runs: Vec<Value>,
    /// Pass as `before` for the next page; null on the last page.
    next_before: Option<uuid::Uuid>,
}

fn checked_name(name: &str) -> Result<String, ApiError> {
    let name = name.trim();
    if name.is_empty() || name.len() > 128 {
        return Err(ApiError::BadRequest(
            "name must be 1 to 128 characters".into(),
        ));
    }
    Ok(name.to_owned())
}

/// Creates an org.
#[utoipa::path(post, path = "/orgs", tag = "orgs", request_body = NameBody,
    responses((status = 201, description = "`{\"id\",\"name\"}`", body = Value),
        (status = 400, body = ErrorBody)))]
async fn create_org(
    State(s): State<AppState>,
    JsonBody(body): JsonBody<NameBody>,
) -> Result<Created, ApiError> {
    let org = s.store.create_org(&checked_name(&body.name)?).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"id": org.id, "name": org.name})),
    ))
}

/// A new API key of an org: shown once, stored hashed.
#[utoipa::path(post, path = "/orgs/{org}/api-keys", tag = "orgs",
    params(("org" = uuid::Uuid, Path, description = "Org id")),
    responses((status = 201, description = "`{\"id\",\"org_id\",\"key\"}`", body = Value),
        (status = 404, body = ErrorBody)))]
async fn create_api_key(
    State(s): State<AppState>,
    Path(org): Path<String>,
) -> Result<Created, ApiError> {
    let org_id = parse_id(&org, "org")?;
    let key = random_token("wharf_key_", 40);
    let id = s
        .store
        .create_api_key(org_id, &sha256_hex(key.as_bytes()))
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"id": id, "org_id": org_id, "key": key})),
    ))
}

/// Revokes an API key.
#[utoipa::path(delete, path = "/api-keys/{id}", tag = "orgs",
    params(("id" = uuid::Uuid, Path, description = "API key id")),
    responses((status = 204, description = "Revoked"), (status = 404, body = ErrorBody)))]
async fn revoke_api_key(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    s.store.revoke_api_key(parse_id(&id, "api key")?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Creates a project in an org.
#[utoipa::path(post, path = "/orgs/{org}/projects", tag = "projects", request_body = NameBody,
    params(("org" = uuid::Uuid, Path, description = "Org id")),
    responses((status = 201, description = "`{\"id\",\"name\",\"org_id\"}`", body = Value),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn create_project(
    State(s): State<AppState>,
    Path(org): Path<String>,
    JsonBody(body): JsonBody<NameBody>,
) -> Result<Created, ApiError> {
    let org_id = parse_id(&org, "org")?;
    let p = s
        .store
        .create_project(org_id, &checked_name(&body.name)?)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"id": p.id, "name": p.name, "org_id": p.org_id})),
    ))
}

/// Creates a fleet from a fleet document; its code is checked first.
#[utoipa::path(post, path = "/projects/{project}/fleets", tag = "fleets",
    request_body = FleetDocument,
    params(("project" = uuid::Uuid, Path, description = "Project id")),
    responses((status = 201, description = "The fleet: its document with ids, webhook and times", body = FleetDocument),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn create_fleet(
    State(s): State<AppState>,
    Path(project): Path<String>,
    JsonBody(doc): JsonBody<FleetDoc>,
) -> Result<Created, ApiError> {
    let project_id = parse_id(&project, "project")?;
    let spec = s
        .scheduler
        .prepare_fleet(doc)
        .await
        .map_err(prepare_error)?;
    let fleet = s.store.create_fleet(project_id, &spec).await?;
    Ok((StatusCode::CREATED, Json(fleet_json(&s, &fleet).await?)))
}

fn prepare_error(e: PrepareError) -> ApiError {
    match e {
        PrepareError::Invalid(e) => ApiError::BadRequest(e.0),
        PrepareError::Store(e) => e.into(),
    }
}

/// A fleet: its document (Rhai sources inline, Wasm by sha256), ids, webhook and times.
#[utoipa::path(get, path = "/fleets/{fleet}", tag = "fleets",
    params(("fleet" = uuid::Uuid, Path, description = "Fleet id")),
    responses((status = 200, body = FleetDocument), (status = 404, body = ErrorBody)))]
async fn get_fleet(
    State(s): State<AppState>,
    Path(fleet): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let fleet = s.store.fleet(parse_id(&fleet, "fleet")?).await?;
    Ok(Json(fleet_json(&s, &fleet).await?))
}

/// Replaces a fleet's document.
#[utoipa::path(put, path = "/fleets/{fleet}", tag = "fleets", request_body = FleetDocument,
    params(("fleet" = uuid::Uuid, Path, description = "Fleet id")),
    responses((status = 200, body = FleetDocument), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn replace_fleet(
    State(s): State<AppState>,
    Path(fleet): Path<String>,
    JsonBody(doc): JsonBody<FleetDoc>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&fleet, "fleet")?;
    s.store.fleet(id).await?;
    let spec = s
        .scheduler
        .prepare_fleet(doc)
        .await
        .map_err(prepare_error)?;
    let fleet = s.store.replace_fleet(id, &spec).await?;
    Ok(Json(fleet_json(&s, &fleet).await?))
}

/// Deletes a fleet and its webhook; its run history stays.
#[utoipa::path(delete, path = "/fleets/{fleet}", tag = "fleets",
    params(("fleet" = uuid::Uuid, Path, description = "Fleet id")),
    responses((status = 204, description = "Deleted"), (status = 404, body = ErrorBody)))]
async fn delete_fleet(
    State(s): State<AppState>,
    Path(fleet): Path<String>,
) -> Result<StatusCode, ApiError> {
    s.store.delete_fleet(parse_id(&fleet, "fleet")?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A fleet as the API shows it: the document (Rhai sources inline, Wasm by sha256), ids and
/// its webhook.
async fn fleet_json(s: &AppState, fleet: &Fleet) -> Result<Value, ApiError> {
    let mut sources = HashMap::new();
    for v in fleet
        .spec
        .vessels
        .iter()
        .filter(|v| v.kind == VesselKind::Rhai)
    {
        if let Ok(code) = s.store.code(&v.sha256).await {
            sources.insert(
                v.sha256.clone(),
                String::from_utf8_lossy(&code).into_owned(),
            );
        }
    }
    let mut doc = fleet.spec.to_document(&sources);
    let webhook = s.store.fleet_webhook(fleet.id).await?;
    if let Some(map) = doc.as_object_mut() {
        map.insert("id".into(), json!(fleet.id));
        map.insert("project_id".into(), json!(fleet.project_id));
        map.insert("org_id".into(), json!(fleet.org_id));
        map.insert(
            "webhook".into(),
            webhook.map(|w| webhook_json(s, &w)).unwrap_or(Value::Null),
        );
        map.insert("created_at".into(), json!(rfc3339(fleet.created_at)));
        map.insert("updated_at".into(), json!(rfc3339(fleet.updated_at)));
    }
    Ok(doc)
}

fn webhook_json(s: &AppState, w: &Webhook) -> Value {
    json!({
        "id": w.id,
        "url": format!("{}/webhooks/{}", s.settings.public_url, w.id),
        "fleet_id": w.fleet_id,
        "auth": w.auth,
        "created_at": rfc3339(w.created_at),
    })
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct WebhookBody {
    #[serde(default)]
    auth: Option<Value>,
    #[serde(default)]
    rate_limit: Option<Value>,
}

/// A new webhook id: 24 random alphanumerics (about 143 bits), so URLs cannot be guessed.
pub fn new_webhook_id() -> String {
    random_token("wh_", 24)
}

/// Creates the fleet's webhook.
#[utoipa::path(post, path = "/fleets/{fleet}/webhook", tag = "webhooks",
    request_body(content = Value, description = "`{\"auth\": \"none\"}` or empty"),
    params(("fleet" = uuid::Uuid, Path, description = "Fleet id")),
    responses((status = 201, description = "`{\"id\",\"url\",\"fleet_id\",\"auth\",\"created_at\"}`", body = Value),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "The fleet has a webhook", body = ErrorBody)))]
async fn create_webhook(
    State(s): State<AppState>,
    Path(fleet): Path<String>,
    JsonBody(body): JsonBody<WebhookBody>,
) -> Result<Created, ApiError> {
    let fleet_id = parse_id(&fleet, "fleet")?;
    let auth = match body.auth {
        None | Some(Value::Null) => WebhookAuth::None,
        Some(Value::String(mode)) if mode == "none" => WebhookAuth::None,
        Some(other) => serde_json::from_value::<WebhookAuth>(other.clone()).map_err(|_| {
            ApiError::BadRequest(format!(
                "unsupported auth {other}: this version supports only \"none\""
            ))
        })?,
    };
    if body.rate_limit.as_ref().is_some_and(|v| !v.is_null()) {
        return Err(ApiError::BadRequest(
            "rate_limit is not supported by this version".into(),
        ));
    }
    let hook = s
        .store
        .create_webhook(fleet_id, &new_webhook_id(), &auth)
        .await?;
    Ok((StatusCode::CREATED, Json(webhook_json(&s, &hook))))
}

/// Gives the fleet's webhook a new id and URL; the old URL answers 400 from now on.
#[utoipa::path(post, path = "/fleets/{fleet}/webhook/rotate", tag = "webhooks",
    params(("fleet" = uuid::Uuid, Path, description = "Fleet id")),
    responses((status = 200, description = "The webhook with its new URL", body = Value),
        (status = 404, body = ErrorBody)))]
async fn rotate_webhook(
    State(s): State<AppState>,
    Path(fleet): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let hook = s
        .store
        .rotate_webhook(parse_id(&fleet, "fleet")?, &new_webhook_id())
        .await?;
    Ok(Json(webhook_json(&s, &hook)))
}

/// Removes the fleet's webhook; its URL answers 400.
#[utoipa::path(delete, path = "/fleets/{fleet}/webhook", tag = "webhooks",
    params(("fleet" = uuid::Uuid, Path, description = "Fleet id")),
    responses((status = 204, description = "Removed"), (status = 404, body = ErrorBody)))]
async fn delete_webhook(
    State(s): State<AppState>,
    Path(fleet): Path<String>,
) -> Result<StatusCode, ApiError> {
    s.store.delete_webhook(parse_id(&fleet, "fleet")?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A fleet's run history, newest first.
#[utoipa::path(get, path = "/fleets/{fleet}/runs", tag = "runs",
    params(("fleet" = uuid::Uuid, Path, description = "Fleet id"), RunsQuery),
    responses((status = 200, body = RunPage), (status = 400, body = ErrorBody)))]
async fn list_runs(
    State(s): State<AppState>,
    Path(fleet): Path<String>,
    Query(q): Query<RunsQuery>,
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
    responses((status = 200, body = Value), (status = 404, body = ErrorBody)))]
async fn get_run(
    State(s): State<AppState>,
    Path(run): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (run, request) = s.store.run(parse_id(&run, "run")?).await?;
    Ok(Json(run_json(&run, Some(&request))))
}

/// A run as the API shows it; the field names are part of the contract.
pub(crate) fn run_json(run: &RunRecord, request: Option<&RequestRecord>) -> Value {
    let request = match request {
        Some(r) => json!({
            "id": r.id, "method": r.method, "content_type": r.content_type,
            "received_at": rfc3339(r.received_at), "headers": r.headers, "query": r.query,
            "body_size": r.body_size,
        }),
        None => json!({"id": run.request_id}),
    };
    json!({
        "id": run.id,
        "fleet_id": run.fleet_id,
        "status": run.status,
        "attempt": run.attempt,
        "variables": run.variables,
        "request": request,
        "vessels": run.vessels,
        "error": run.error,
        "reason": run.reason,
        "lost_attempts": run.lost_attempts,
        "created_at": rfc3339(run.created_at),
        "started_at": run.started_at.map(rfc3339),
        "finished_at": run.finished_at.map(rfc3339),
    })
}

/// Runs the whole fleet on the posted body, as a webhook call would, and answers what the run
/// would record. Nothing is queued or stored; the request id is fresh and marks no stored request.
#[utoipa::path(post, path = "/fleets/{fleet}/dry-run", tag = "runs",
    request_body(content = Vec<u8>, description = "Any body, as a webhook call would carry", content_type = "*/*"),
    params(("fleet" = uuid::Uuid, Path, description = "Fleet id")),
    responses((status = 200, description = "What the run would record", body = Value),
        (status = 404, body = ErrorBody), (status = 413, body = ErrorBody)))]
async fn dry_run(
    State(s): State<AppState>,
    Path(fleet): Path<String>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let fleet = s.store.fleet(parse_id(&fleet, "fleet")?).await?;
    let limit = s.settings.max_body_bytes;
    if body.len() > limit {
        return Err(ApiError::TooLarge(format!(
            "body of {} bytes is over the limit of {limit} bytes",
            body.len()
        )));
    }
    let request_id = uuid::Uuid::now_v7();
    let request = super::ingress::describe(request_id, &method, &uri, &headers);
    let ids = [fleet.org_id, fleet.project_id, fleet.id].map(|id| id.to_string());
    let dry = s.scheduler.dry_run(&fleet.spec, ids, request, body).await;
    Ok(Json(dry.report))
}
