//! The admin API under `/api/v1`: orgs, keys, projects, fleets, webhooks, runs.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::listing::{RunsQuery, next_before};
use super::{ApiError, AppState, ErrorBody, JsonBody, parse_id};
use crate::admission::{Deduplicate, RateLimit};
use crate::auth::hmac::HmacScheme;
use crate::auth::keys;
use crate::auth::secrets::{SealContext, Secret};
use crate::fleet::FleetDoc;
use crate::sandbox::VesselKind;
use crate::scheduler::PrepareError;
use crate::scheduler::planner::Plan;
use crate::store::{
    Admission, CancelOutcome, Fleet, Replay, RequestRecord, RunRecord, RunStatus, StoreError,
    VesselRun, Webhook, WebhookAuth, WebhookChange, WebhookSettings,
};
use crate::store::{HmacAuth, SealedSecret};
use crate::util::{now_ms, random_token, rfc3339, sha256_hex};

type Created = (StatusCode, Json<Value>);

/// Every admin route; each handler carries its OpenAPI description, so a route cannot be
/// registered here without one.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_org))
        .routes(routes!(create_api_key, list_api_keys))
        .routes(routes!(revoke_api_key))
        .routes(routes!(create_project))
        .routes(routes!(create_fleet))
        .routes(routes!(get_fleet, replace_fleet, delete_fleet))
        .routes(routes!(create_webhook, update_webhook, delete_webhook))
        .routes(routes!(rotate_webhook))
        .routes(routes!(rotate_webhook_secret))
        .routes(routes!(list_runs))
        .routes(routes!(dry_run))
        .routes(routes!(get_run))
        .routes(routes!(cancel_run))
        .routes(routes!(replay_run))
        .routes(routes!(super::ops::api_metrics))
        .routes(routes!(super::deliveries::run_deliveries))
        .routes(routes!(super::deliveries::retry_delivery))
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
    responses((status = 201, description = "`{\"id\",\"org_id\",\"prefix\",\"key\"}`; the key is shown this once", body = Value),
        (status = 404, body = ErrorBody)))]
async fn create_api_key(
    State(s): State<AppState>,
    Path(org): Path<String>,
) -> Result<Created, ApiError> {
    let org_id = parse_id(&org, "org")?;
    let key = keys::new_api_key();
    let prefix = keys::shown_prefix(key.expose());
    let id = s
        .store
        .create_api_key(org_id, &sha256_hex(key.expose().as_bytes()), &prefix)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"id": id, "org_id": org_id, "prefix": prefix, "key": key.expose()})),
    ))
}

/// An org's API keys, oldest first: id, the key's first characters, created, last used (at
/// most about a minute late) and revoked times. Never the key.
#[utoipa::path(get, path = "/orgs/{org}/api-keys", tag = "orgs",
    params(("org" = uuid::Uuid, Path, description = "Org id")),
    responses((status = 200, description = "`{\"api_keys\": [{\"id\",\"org_id\",\"prefix\",\"created_at\",\"last_used_at\",\"revoked_at\"}]}`", body = Value),
        (status = 404, body = ErrorBody)))]
async fn list_api_keys(
    State(s): State<AppState>,
    Path(org): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let keys = s.store.api_keys(parse_id(&org, "org")?).await?;
    let keys: Vec<Value> = keys
        .iter()
        .map(|k| {
            json!({
                "id": k.id,
                "org_id": k.org_id,
                "prefix": k.prefix,
                "created_at": rfc3339(k.created_at),
                "last_used_at": k.last_used_at.map(rfc3339),
                "revoked_at": k.revoked_at.map(rfc3339),
            })
        })
        .collect();
    Ok(Json(json!({"api_keys": keys})))
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
    let mut spec = s
        .scheduler
        .prepare_fleet(doc)
        .await
        .map_err(prepare_error)?;
    let id = uuid::Uuid::new_v4();
    let generated = seal_destinations(&s, id, &mut spec, &[])?;
    let fleet = s.store.create_fleet_with_id(project_id, id, &spec).await?;
    let mut doc = fleet_json(&s, &fleet).await?;
    show_generated(&mut doc, generated);
    Ok((StatusCode::CREATED, Json(doc)))
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
    let stored = s.store.fleet(id).await?;
    let mut spec = s
        .scheduler
        .prepare_fleet(doc)
        .await
        .map_err(prepare_error)?;
    let generated = seal_destinations(&s, id, &mut spec, &stored.spec.destinations)?;
    let fleet = s.store.replace_fleet(id, &spec).await?;
    let mut doc = fleet_json(&s, &fleet).await?;
    show_generated(&mut doc, generated);
    Ok(Json(doc))
}

/// Seals the destinations' secrets before the fleet is stored (`"set"` keeps the stored one of
/// the destination of the same name); returns the signing secrets generated now.
fn seal_destinations(
    s: &AppState,
    fleet_id: uuid::Uuid,
    spec: &mut crate::fleet::FleetSpec,
    stored: &[crate::outbox::DestinationSpec],
) -> Result<std::collections::BTreeMap<String, String>, ApiError> {
    crate::outbox::seal_secrets(fleet_id, &mut spec.destinations, stored, &s.secrets)
        .map_err(|e| ApiError::BadRequest(e.0))
}

/// Shows signing secrets generated by this save, once: in this answer, in place of `"set"`.
fn show_generated(doc: &mut Value, generated: std::collections::BTreeMap<String, String>) {
    let Some(list) = doc.get_mut("destinations").and_then(Value::as_array_mut) else {
        return;
    };
    for d in list {
        let name = d.get("name").and_then(Value::as_str).map(str::to_owned);
        if let Some(secret) = name.and_then(|n| generated.get(&n))
            && let Some(map) = d.as_object_mut()
        {
            map.insert("signing_secret".into(), secret.clone().into());
        }
    }
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
    let mut out = json!({
        "id": w.id,
        "url": format!("{}/webhooks/{}", s.settings.public_url, w.id),
        "fleet_id": w.fleet_id,
        "auth": auth_json(&w.auth),
        "rate_limit": w.settings.rate_limit,
        "deduplicate": w.settings.deduplicate,
        "created_at": rfc3339(w.created_at),
    });
    if let (Some(id), Some(until)) = (&w.previous_id, w.previous_until)
        && until > now_ms()
        && let Some(map) = out.as_object_mut()
    {
        map.insert(
            "previous_url".into(),
            json!(format!("{}/webhooks/{id}", s.settings.public_url)),
        );
        map.insert("previous_url_until".into(), json!(rfc3339(until)));
    }
    out
}

/// A webhook's auth as the API shows it: the mode, and for `hmac` the scheme and when each
/// secret was set and expires. Secrets are shown only in the answer that set them.
fn auth_json(auth: &WebhookAuth) -> Value {
    match auth {
        WebhookAuth::None => json!({"mode": "none"}),
        WebhookAuth::Bearer => json!({"mode": "bearer"}),
        WebhookAuth::Hmac(h) => json!({
            "mode": "hmac",
            "scheme": h.scheme.as_str(),
            "secrets": h.secrets.iter().map(|s| json!({
                "created_at": rfc3339(s.created_at),
                "expires_at": s.expires_at.map(rfc3339),
            })).collect::<Vec<_>>(),
        }),
    }
}

/// The `auth` of a create or PATCH body: `"none"`, `"bearer"`, or
/// `{"mode": "hmac", "scheme": …, "secret": …}` (the secret optional: generated when absent).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthInput {
    mode: String,
    #[serde(default)]
    scheme: Option<String>,
    #[serde(default)]
    secret: Option<String>,
}

/// Parses an `auth` value; for `hmac`, the secret (generated or given) to show once.
fn parse_auth(
    s: &AppState,
    fleet_id: uuid::Uuid,
    v: &Value,
) -> Result<(WebhookAuth, Option<Secret>), ApiError> {
    let input = match v {
        Value::Null => return Ok((WebhookAuth::None, None)),
        Value::String(mode) => AuthInput {
            mode: mode.clone(),
            scheme: None,
            secret: None,
        },
        other => serde_json::from_value::<AuthInput>(other.clone()).map_err(|e| {
            ApiError::BadRequest(format!(
                "auth: {e}; expected \"none\", \"bearer\" or {{\"mode\": \"hmac\", \"scheme\", \"secret\"?}}"
            ))
        })?,
    };
    let schemes = || {
        HmacScheme::ALL
            .map(|s| format!("\"{}\"", s.as_str()))
            .join(", ")
    };
    match input.mode.as_str() {
        "none" | "bearer" if input.scheme.is_some() || input.secret.is_some() => {
            Err(ApiError::BadRequest(format!(
                "auth: mode {:?} takes no scheme or secret",
                input.mode
            )))
        }
        "none" => Ok((WebhookAuth::None, None)),
        "bearer" => Ok((WebhookAuth::Bearer, None)),
        "hmac" => {
            let name = input.scheme.ok_or_else(|| {
                ApiError::BadRequest(format!("auth: hmac needs a scheme: one of {}", schemes()))
            })?;
            let scheme = HmacScheme::parse(&name).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "auth: unknown scheme {name:?}: one of {}",
                    schemes()
                ))
            })?;
            let secret = new_secret(scheme, input.secret)?;
            let auth = HmacAuth {
                scheme,
                secrets: vec![SealedSecret {
                    sealed: s.secrets.seal(
                        &SealContext::webhook_secret(fleet_id),
                        secret.expose().as_bytes(),
                    ),
                    created_at: now_ms(),
                    expires_at: None,
                }],
            };
            Ok((WebhookAuth::Hmac(auth), Some(secret)))
        }
        other => Err(ApiError::BadRequest(format!(
            "auth: unknown mode {other:?}: one of \"none\", \"bearer\", \"hmac\""
        ))),
    }
}

/// A given secret, checked, or a generated one.
fn new_secret(scheme: HmacScheme, given: Option<String>) -> Result<Secret, ApiError> {
    match given {
        Some(secret) => {
            scheme
                .check_secret(&secret)
                .map_err(|e| ApiError::BadRequest(format!("auth: {e}")))?;
            Ok(Secret::new(secret))
        }
        None => Ok(scheme.generate_secret()),
    }
}

/// The webhook's JSON with a secret set by this call, shown this once.
fn with_secret(mut hook: Value, secret: Option<Secret>) -> Value {
    if let (Some(secret), Some(map)) = (secret, hook.as_object_mut()) {
        map.insert("secret".into(), json!(secret.expose()));
    }
    hook
}

/// Longest grace period of a rotation: 7 days.
const MAX_GRACE_SECONDS: u64 = 7 * 24 * 3600;

/// `{"grace_seconds": N}` of a rotation, at most 7 days; absent or 0: no grace.
fn grace_until(grace: Option<u64>) -> Result<Option<i64>, ApiError> {
    match grace {
        None | Some(0) => Ok(None),
        Some(n) if n > MAX_GRACE_SECONDS => Err(ApiError::BadRequest(format!(
            "grace_seconds: at most {MAX_GRACE_SECONDS} (7 days), got {n}"
        ))),
        Some(n) => Ok(Some(now_ms() + n as i64 * 1000)),
    }
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
    #[serde(default, deserialize_with = "present")]
    auth: Option<Value>,
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

/// Creates the fleet's webhook.
#[utoipa::path(post, path = "/fleets/{fleet}/webhook", tag = "webhooks",
    request_body(content = Value, description = "`{\"auth\": \"none\" | \"bearer\" | {\"mode\": \"hmac\", \"scheme\": \"github\" | \"stripe\" | \"standard-webhooks\", \"secret\"?}, \"rate_limit\": {\"requests\", \"per_seconds\"}, \"deduplicate\": …}`, every field optional"),
    params(("fleet" = uuid::Uuid, Path, description = "Fleet id")),
    responses((status = 201, description = "`{\"id\",\"url\",\"fleet_id\",\"auth\",\"rate_limit\",\"deduplicate\",\"created_at\"}`, and `secret` (shown this once) for hmac", body = Value),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "The fleet has a webhook", body = ErrorBody)))]
async fn create_webhook(
    State(s): State<AppState>,
    Path(fleet): Path<String>,
    JsonBody(body): JsonBody<WebhookBody>,
) -> Result<Created, ApiError> {
    let fleet_id = parse_id(&fleet, "fleet")?;
    let (auth, secret) = parse_auth(&s, fleet_id, body.auth.as_ref().unwrap_or(&Value::Null))?;
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
    Ok((
        StatusCode::CREATED,
        Json(with_secret(webhook_json(&s, &hook), secret)),
    ))
}

/// Changes the webhook's settings: a field given is changed (`null` removes it), others stay.
#[utoipa::path(patch, path = "/fleets/{fleet}/webhook", tag = "webhooks",
    request_body(content = Value, description = "`{\"rate_limit\": …, \"deduplicate\": …, \"auth\": …}` (auth as at create; `secret` is in the answer when hmac is set)"),
    params(("fleet" = uuid::Uuid, Path, description = "Fleet id")),
    responses((status = 200, description = "The webhook", body = Value),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn update_webhook(
    State(s): State<AppState>,
    Path(fleet): Path<String>,
    JsonBody(body): JsonBody<WebhookPatch>,
) -> Result<Json<Value>, ApiError> {
    let fleet_id = parse_id(&fleet, "fleet")?;
    let mut change = WebhookChange {
        rate_limit: body
            .rate_limit
            .map(|v| setting(&v, RateLimit::from_value))
            .transpose()?,
        deduplicate: body
            .deduplicate
            .map(|v| setting(&v, Deduplicate::from_value))
            .transpose()?,
        auth: None,
    };
    let mut secret = None;
    if let Some(v) = &body.auth {
        let (auth, given) = parse_auth(&s, fleet_id, v)?;
        change.auth = Some(auth);
        secret = given;
    }
    if change.is_empty() {
        return Err(ApiError::BadRequest(
            "nothing to change: give rate_limit, deduplicate and/or auth (null removes one)".into(),
        ));
    }
    let hook = s.store.update_webhook(fleet_id, &change).await?;
    Ok(Json(with_secret(webhook_json(&s, &hook), secret)))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RotateBody {
    /// How long the old URL (or secret) keeps working, in seconds; at most 7 days.
    #[serde(default)]
    grace_seconds: Option<u64>,
    /// For a secret rotation: the new secret, else one is generated.
    #[serde(default)]
    secret: Option<String>,
}

/// Gives the fleet's webhook a new id and URL. The old URL answers 400 at once, or after
/// `grace_seconds` (at most 7 days) when given; a URL kept from an earlier rotation stops.
#[utoipa::path(post, path = "/fleets/{fleet}/webhook/rotate", tag = "webhooks",
    request_body(content = Value, description = "`{}` or `{\"grace_seconds\": N}`"),
    params(("fleet" = uuid::Uuid, Path, description = "Fleet id")),
    responses((status = 200, description = "The webhook with its new URL (and `previous_url`, `previous_url_until` during a grace period)", body = Value),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn rotate_webhook(
    State(s): State<AppState>,
    Path(fleet): Path<String>,
    JsonBody(body): JsonBody<RotateBody>,
) -> Result<Json<Value>, ApiError> {
    if body.secret.is_some() {
        return Err(ApiError::BadRequest(
            "secret: a URL rotation takes only grace_seconds; see /webhook/secret/rotate".into(),
        ));
    }
    let until = grace_until(body.grace_seconds)?;
    let hook = s
        .store
        .rotate_webhook_keeping(parse_id(&fleet, "fleet")?, &new_webhook_id(), until)
        .await?;
    Ok(Json(webhook_json(&s, &hook)))
}

/// Gives an `hmac` webhook a new secret (given, or generated and shown this once). The
/// previous one keeps being accepted for `grace_seconds` (at most 7 days; none when absent), so
/// the sender can switch without a failed delivery; one kept from an earlier rotation stops.
#[utoipa::path(post, path = "/fleets/{fleet}/webhook/secret/rotate", tag = "webhooks",
    request_body(content = Value, description = "`{\"grace_seconds\": N, \"secret\"?}`"),
    params(("fleet" = uuid::Uuid, Path, description = "Fleet id")),
    responses((status = 200, description = "The webhook, with the new `secret` shown this once", body = Value),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "The webhook's auth is not hmac", body = ErrorBody)))]
async fn rotate_webhook_secret(
    State(s): State<AppState>,
    Path(fleet): Path<String>,
    JsonBody(body): JsonBody<RotateBody>,
) -> Result<Json<Value>, ApiError> {
    let fleet_id = parse_id(&fleet, "fleet")?;
    let until = grace_until(body.grace_seconds)?;
    let hook = s
        .store
        .fleet_webhook(fleet_id)
        .await?
        .ok_or_else(|| ApiError::NotFound("webhook not found".into()))?;
    let WebhookAuth::Hmac(current) = hook.auth else {
        return Err(ApiError::Conflict(
            "the webhook's auth is not hmac: it has no secret to rotate".into(),
        ));
    };
    let secret = new_secret(current.scheme, body.secret)?;
    let now = now_ms();
    let mut secrets = vec![SealedSecret {
        sealed: s.secrets.seal(
            &SealContext::webhook_secret(fleet_id),
            secret.expose().as_bytes(),
        ),
        created_at: now,
        expires_at: None,
    }];
    if let Some(until) = until
        && let Some(old) = current.secrets.into_iter().find(|s| s.expires_at.is_none())
    {
        secrets.push(SealedSecret {
            expires_at: Some(until),
            ..old
        });
    }
    let change = WebhookChange {
        auth: Some(WebhookAuth::Hmac(HmacAuth {
            scheme: current.scheme,
            secrets,
        })),
        ..WebhookChange::default()
    };
    let hook = s.store.update_webhook(fleet_id, &change).await?;
    Ok(Json(with_secret(webhook_json(&s, &hook), Some(secret))))
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
    let deliveries = s.store.run_deliveries(run.id).await?;
    let mut doc = run_json(&run, Some(&request));
    if let Some(map) = doc.as_object_mut() {
        map.insert(
            "destinations".into(),
            super::deliveries::summary(&deliveries).into(),
        );
    }
    Ok(Json(doc))
}

/// How long a cancel of a running run waits for the run to end before answering.
const CANCEL_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Cancels a queued run at once, or a running one through the worker holding it, and answers
/// with the run: `cancelled`, or still `running` with `cancel_requested` if its worker did not
/// end it within [`CANCEL_WAIT`] (it will). `409` for a run that had already ended.
#[utoipa::path(post, path = "/runs/{run}/cancel", tag = "runs",
    params(("run" = uuid::Uuid, Path, description = "Run id")),
    responses((status = 200, description = "The run, cancelled (or still running with `cancel_requested`)", body = Value),
        (status = 404, body = ErrorBody),
        (status = 409, description = "The run has already ended", body = ErrorBody)))]
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
#[utoipa::path(post, path = "/runs/{run}/replay", tag = "runs",
    request_body(content = Value, description = "`{}`, or `{\"from\": \"<vessel>\"}` to resume"),
    params(("run" = uuid::Uuid, Path, description = "Run id")),
    responses((status = 201, description = "Like ingress, with `data.replay_of`", body = Value),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody),
        (status = 429, description = "The fleet's `reject` policy", body = ErrorBody)))]
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
#[utoipa::path(post, path = "/fleets/{fleet}/dry-run", tag = "runs",
    request_body(content = Vec<u8>, description = "Any body, as a webhook call would carry", content_type = "*/*"),
    params(("fleet" = uuid::Uuid, Path, description = "Fleet id")),
    responses((status = 200, description = "What the run would record", body = Value),
        (status = 404, body = ErrorBody), (status = 408, body = ErrorBody),
        (status = 413, body = ErrorBody)))]
async fn dry_run(
    State(s): State<AppState>,
    Path(fleet): Path<String>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
    super::limits::BodyBytes(body): super::limits::BodyBytes,
) -> Result<Json<Value>, ApiError> {
    // The body is bounded by `--max-body-bytes` and `--body-timeout-seconds`, as at ingress.
    let fleet = s.store.fleet(parse_id(&fleet, "fleet")?).await?;
    let request_id = uuid::Uuid::now_v7();
    let request = super::ingress::describe(request_id, &method, &uri, &headers);
    let ids = [fleet.org_id, fleet.project_id, fleet.id].map(|id| id.to_string());
    let dry = s.scheduler.dry_run(&fleet.spec, ids, request, body).await;
    Ok(Json(dry.report))
}
