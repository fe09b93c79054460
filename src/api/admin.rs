//! The admin API under `/api/v1`: orgs, keys, projects, fleets, webhooks, runs.

use std::collections::HashMap;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};

use super::{ApiError, AppState, JsonBody, parse_id};
use crate::admission::{Deduplicate, RateLimit};
use crate::fleet::FleetDoc;
use crate::sandbox::VesselKind;
use crate::scheduler::PrepareError;
use crate::scheduler::planner::Plan;
use crate::store::{
    Admission, CancelOutcome, Fleet, Replay, RequestRecord, RunFilter, RunRecord, RunStatus,
    StoreError, VesselRun, Webhook, WebhookAuth, WebhookChange, WebhookSettings,
};
use crate::util::{random_token, rfc3339, sha256_hex};

type Created = (StatusCode, Json<Value>);

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/orgs", post(create_org))
        .route("/orgs/{org}/api-keys", post(create_api_key))
        .route("/api-keys/{id}", delete(revoke_api_key))
        .route("/orgs/{org}/projects", post(create_project))
        .route("/projects/{project}/fleets", post(create_fleet))
        .route(
            "/fleets/{fleet}",
            get(get_fleet).put(replace_fleet).delete(delete_fleet),
        )
        .route(
            "/fleets/{fleet}/webhook",
            post(create_webhook)
                .patch(update_webhook)
                .delete(delete_webhook),
        )
        .route("/fleets/{fleet}/webhook/rotate", post(rotate_webhook))
        .route("/fleets/{fleet}/runs", get(list_runs))
        .route("/fleets/{fleet}/dry-run", post(dry_run))
        .route("/runs/{run}", get(get_run))
        .route("/runs/{run}/cancel", post(cancel_run))
        .route("/runs/{run}/replay", post(replay_run))
        .route("/metrics", get(metrics))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NameBody {
    name: String,
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

async fn revoke_api_key(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    s.store.revoke_api_key(parse_id(&id, "api key")?).await?;
    Ok(StatusCode::NO_CONTENT)
}

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

async fn get_fleet(
    State(s): State<AppState>,
    Path(fleet): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let fleet = s.store.fleet(parse_id(&fleet, "fleet")?).await?;
    Ok(Json(fleet_json(&s, &fleet).await?))
}

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
        "rate_limit": w.settings.rate_limit,
        "deduplicate": w.settings.deduplicate,
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
    #[serde(default)]
    deduplicate: Option<Value>,
}

/// `PATCH` of a webhook: a field that is present is changed (`null` removes the setting), an
/// absent one is left as it is. `Some(Value::Null)` is how a present `null` arrives.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookPatch {
    #[serde(default, deserialize_with = "present")]
    rate_limit: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    deduplicate: Option<Value>,
}

/// Keeps a present `null` apart from an absent field.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// A setting's value: `None` for `null`, else parsed, the parser's message in a 400.
fn setting<T>(v: &Value, parse: fn(&Value) -> Result<T, String>) -> Result<Option<T>, ApiError> {
    if v.is_null() {
        return Ok(None);
    }
    parse(v).map(Some).map_err(ApiError::BadRequest)
}

/// A new webhook id: 24 random alphanumerics (about 143 bits), so URLs cannot be guessed.
pub fn new_webhook_id() -> String {
    random_token("wh_", 24)
}

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
    let settings = WebhookSettings {
        rate_limit: setting(
            body.rate_limit.as_ref().unwrap_or(&Value::Null),
            RateLimit::from_value,
        )?,
        deduplicate: setting(
            body.deduplicate.as_ref().unwrap_or(&Value::Null),
            Deduplicate::from_value,
        )?,
    };
    let hook = s
        .store
        .create_webhook(fleet_id, &new_webhook_id(), &auth, &settings)
        .await?;
    Ok((StatusCode::CREATED, Json(webhook_json(&s, &hook))))
}

async fn update_webhook(
    State(s): State<AppState>,
    Path(fleet): Path<String>,
    JsonBody(body): JsonBody<WebhookPatch>,
) -> Result<Json<Value>, ApiError> {
    let fleet_id = parse_id(&fleet, "fleet")?;
    let change = WebhookChange {
        rate_limit: body
            .rate_limit
            .map(|v| setting(&v, RateLimit::from_value))
            .transpose()?,
        deduplicate: body
            .deduplicate
            .map(|v| setting(&v, Deduplicate::from_value))
            .transpose()?,
    };
    if change.is_empty() {
        return Err(ApiError::BadRequest(
            "nothing to change: give rate_limit and/or deduplicate (null removes one)".into(),
        ));
    }
    let hook = s.store.update_webhook(fleet_id, &change).await?;
    Ok(Json(webhook_json(&s, &hook)))
}

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

async fn delete_webhook(
    State(s): State<AppState>,
    Path(fleet): Path<String>,
) -> Result<StatusCode, ApiError> {
    s.store.delete_webhook(parse_id(&fleet, "fleet")?).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct RunsQuery {
    status: Option<String>,
    limit: Option<String>,
    before: Option<String>,
}

async fn list_runs(
    State(s): State<AppState>,
    Path(fleet): Path<String>,
    Query(q): Query<RunsQuery>,
) -> Result<Json<Value>, ApiError> {
    let fleet_id = parse_id(&fleet, "fleet")?;
    let status = match q.status.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(raw) => Some(RunStatus::parse(raw).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "status {raw:?} is not one of queued, running, succeeded, failed, cancelled"
            ))
        })?),
    };
    let limit = match q.limit.as_deref().filter(|s| !s.is_empty()) {
        None => 50,
        Some(raw) => raw
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| {
                ApiError::BadRequest(format!("limit {raw:?} must be a number from 1 to 1000"))
            })?,
    };
    let before = match q.before.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(raw) => Some(
            uuid::Uuid::parse_str(raw)
                .map_err(|_| ApiError::BadRequest(format!("before {raw:?} is not a run id")))?,
        ),
    };
    let runs = s
        .store
        .runs(
            fleet_id,
            &RunFilter {
                status,
                limit,
                before,
            },
        )
        .await?;
    let next = if runs.len() as u32 == limit {
        runs.last().map(|r| r.id)
    } else {
        None
    };
    let runs: Vec<Value> = runs.iter().map(|r| run_json(r, None)).collect();
    Ok(Json(json!({"runs": runs, "next_before": next})))
}

async fn get_run(
    State(s): State<AppState>,
    Path(run): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (run, request) = s.store.run(parse_id(&run, "run")?).await?;
    Ok(Json(run_json(&run, Some(&request))))
}

/// How long a cancel of a running run waits for the run to end before answering.
const CANCEL_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Cancels a queued run at once, or a running one through the worker holding it, and answers
/// with the run: `cancelled`, or still `running` with `cancel_requested` if its worker did not
/// end it within [`CANCEL_WAIT`] (it will). `409` for a run that had already ended.
async fn cancel_run(
    State(s): State<AppState>,
    Path(run): Path<String>,
) -> Result<Json<Value>, ApiError> {
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

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ReplayBody {
    /// Resume from this vessel: what is not it or downstream of it carries over.
    #[serde(default)]
    from: Option<String>,
}

/// A new run of a stored request, with the fleet's current code. With `from`, a resume: every
/// vessel run the source recorded that is neither the named vessel nor downstream of it is
/// carried over (variables and rows included) instead of run again.
async fn replay_run(
    State(s): State<AppState>,
    Path(run): Path<String>,
    JsonBody(body): JsonBody<ReplayBody>,
) -> Result<Created, ApiError> {
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
        Json(json!({
            "request": {"id": source.request_id},
            "data": {
                "fleet_id": fleet.id,
                "project_id": fleet.project_id,
                "org_id": fleet.org_id,
                "fleet_run_id": run_id,
                "replay_of": id,
            }
        })),
    ))
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
        "replay_of": run.replay_of,
        "resumed_from": run.resumed_from,
        "cancel_requested": run.cancel_requested,
        "concurrency_key": run.concurrency_key,
        "created_at": rfc3339(run.created_at),
        "started_at": run.started_at.map(rfc3339),
        "finished_at": run.finished_at.map(rfc3339),
    })
}

/// Runs the whole fleet on the posted body, as a webhook call would, and answers what the run
/// would record. Nothing is queued or stored; the request id is fresh and marks no stored request.
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

/// Counters in the Prometheus text format.
async fn metrics(
    State(s): State<AppState>,
) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    let stats = s.scheduler.sandbox().stats();
    let body = format!(
        "# HELP wharf_wasm_modules_compiled_total Wasm modules compiled since start.\n\
         # TYPE wharf_wasm_modules_compiled_total counter\n\
         wharf_wasm_modules_compiled_total {}\n\
         # HELP wharf_wasm_modules_loaded_total Wasm modules loaded from the disk cache since start.\n\
         # TYPE wharf_wasm_modules_loaded_total counter\n\
         wharf_wasm_modules_loaded_total {}\n",
        stats.wasm_compiled, stats.wasm_loaded_from_disk
    );
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        body,
    )
}
