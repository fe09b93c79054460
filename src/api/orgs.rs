//! Orgs, their projects and API keys.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::types::{ApiKey, ApiKeyCreated, ApiKeyList, NameBody, OrgCreated, ProjectCreated};
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

fn checked_name(name: &str) -> Result<String, ApiError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 128 {
        return Err(ApiError::BadRequest(
            "name must be 1 to 128 characters".into(),
        ));
    }
    Ok(name.to_owned())
}

/// Creates an org.
#[utoipa::path(post, path = "/orgs", tag = "orgs", request_body = NameBody,
    responses((status = 201, body = OrgCreated),
        (status = 400, body = ErrorBody)))]
async fn create_org(
    State(s): State<AppState>,
    JsonBody(body): JsonBody<NameBody>,
) -> Result<Created<OrgCreated>, ApiError> {
    let org = s.store.create_org(&checked_name(&body.name)?).await?;
    Ok((
        StatusCode::CREATED,
        Json(OrgCreated {
            id: org.id,
            name: org.name,
        }),
    ))
}

/// A new API key of an org: shown once, stored hashed.
#[utoipa::path(post, path = "/orgs/{org}/api-keys", tag = "orgs",
    params(("org" = uuid::Uuid, Path, description = "Org id")),
    responses((status = 201, description = "The key is shown this once", body = ApiKeyCreated),
        (status = 404, body = ErrorBody)))]
async fn create_api_key(
    State(s): State<AppState>,
    Path(org): Path<String>,
) -> Result<Created<ApiKeyCreated>, ApiError> {
    let org_id = parse_id(&org, "org")?;
    let key = keys::new_api_key();
    let prefix = keys::shown_prefix(key.expose());
    let id = s
        .store
        .create_api_key(org_id, &sha256_hex(key.expose().as_bytes()), &prefix)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(ApiKeyCreated {
            id,
            org_id,
            prefix,
            key: key.expose().to_owned(),
        }),
    ))
}

/// An org's API keys, oldest first: id, the key's first characters, created, last used (at
/// most about a minute late) and revoked times. Never the key.
#[utoipa::path(get, path = "/orgs/{org}/api-keys", tag = "orgs",
    params(("org" = uuid::Uuid, Path, description = "Org id")),
    responses((status = 200, body = ApiKeyList),
        (status = 404, body = ErrorBody)))]
async fn list_api_keys(
    State(s): State<AppState>,
    Path(org): Path<String>,
) -> Result<Json<ApiKeyList>, ApiError> {
    let keys = s.store.api_keys(parse_id(&org, "org")?).await?;
    let api_keys = keys
        .iter()
        .map(|k| ApiKey {
            id: k.id,
            org_id: k.org_id,
            prefix: k.prefix.clone(),
            created_at: rfc3339(k.created_at),
            last_used_at: k.last_used_at.map(rfc3339),
            revoked_at: k.revoked_at.map(rfc3339),
        })
        .collect();
    Ok(Json(ApiKeyList { api_keys }))
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
    responses((status = 201, body = ProjectCreated),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn create_project(
    State(s): State<AppState>,
    Path(org): Path<String>,
    JsonBody(body): JsonBody<NameBody>,
) -> Result<Created<ProjectCreated>, ApiError> {
    let org_id = parse_id(&org, "org")?;
    let p = s
        .store
        .create_project(org_id, &checked_name(&body.name)?)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(ProjectCreated {
            id: p.id,
            name: p.name,
            org_id: p.org_id,
        }),
    ))
}
