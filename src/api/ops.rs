//! What operators and their tools read besides the admin resources: health, the OpenAPI
//! document, Prometheus metrics.

use std::sync::LazyLock;

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::types::{Health, OpenApiDocument};
use super::{ApiError, AppState, ErrorBody};

/// The document, generated once from the routes and their annotations.
static OPENAPI_JSON: LazyLock<String> = LazyLock::new(|| {
    super::documented()
        .1
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"the OpenAPI document failed: {e}\"}}"))
});

/// Liveness: answers while the process serves HTTP.
#[utoipa::path(get, path = "/healthz", tag = "ops", security(()),
    responses((status = 200, body = Health)))]
pub(super) async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// This document: OpenAPI 3.1 of the admin API and webhook ingress. Served without the admin
/// token, like the README it mirrors: it holds no data.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "ops", security(()),
    responses((status = 200, description = "The OpenAPI document", body = OpenApiDocument)))]
pub(super) async fn openapi_json() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        OPENAPI_JSON.as_str(),
    )
        .into_response()
}

/// Prometheus metrics (text format 0.0.4). Needs the admin token; `--metrics-listen` serves the
/// same without one on an address of its own.
#[utoipa::path(get, path = "/metrics", tag = "ops",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"),
        (status = 401, body = ErrorBody)))]
pub(super) async fn metrics(State(s): State<AppState>) -> Result<Response, ApiError> {
    let queue = s.store.queue_stats().await?;
    let body = s.scheduler.metrics().render(queue, crate::util::now_ms());
    Ok(([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], body).into_response())
}

/// The same metrics under the admin API (kept from before `/metrics` existed).
#[utoipa::path(get, path = "/metrics", tag = "ops",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"),
        (status = 401, body = ErrorBody)))]
pub(super) async fn api_metrics(state: State<AppState>) -> Result<Response, ApiError> {
    metrics(state).await
}
