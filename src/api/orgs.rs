//! Orgs, their projects and API keys.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, AppState, Created, ErrorBody, JsonBody, parse_id};
use crate::auth::keys;
use crate::util::{rfc3339, sha256_hex};

/// The routes of orgs, projects and API keys.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_org))
        .routes(routes!(create_api_key, list_api_keys))
        .routes(routes!(revoke_api_key))
        .routes(routes!(create_project))
}

/// `{"name": …}`: the body that creates an org or a project.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NameBody {
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
