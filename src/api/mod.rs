//! HTTP only: routing, extractors, status codes. Handlers parse, call the store or the
//! scheduler, and shape the answer; the rules live elsewhere.

mod admin;
pub use admin::new_webhook_id;
mod ingress;

use std::sync::Arc;

use axum::extract::{FromRequest, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde_json::json;
use uuid::Uuid;

use crate::ingest::Ingress;
use crate::scheduler::Scheduler;
use crate::store::{Store, StoreError};

/// Largest admin API body: a fleet document may carry 16 MiB modules in base64.
const MAX_ADMIN_BODY: usize = 64 << 20;

/// Settings the HTTP layer needs.
#[derive(Clone)]
pub struct ApiSettings {
    /// sha256 hex of the admin token.
    pub admin_token_hash: String,
    /// Base URL for webhook URLs, without a trailing slash.
    pub public_url: String,
    /// Largest accepted webhook body.
    pub max_body_bytes: usize,
}

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    /// The store.
    pub store: Arc<dyn Store>,
    /// The scheduler (woken after ingress, used for fleet checks).
    pub scheduler: Scheduler,
    /// Admission of webhook calls.
    pub ingress: Ingress,
    /// HTTP settings.
    pub settings: Arc<ApiSettings>,
    /// Seals and opens stored secrets.
    pub secrets: crate::auth::secrets::SecretBox,
}

/// The whole HTTP surface.
pub fn router(state: AppState) -> Router {
    let admin = admin::routes()
        .route_layer(middleware::from_fn_with_state(state.clone(), require_admin))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_ADMIN_BODY));
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/webhooks/{*id}", any(ingress::ingress))
        .nest("/api/v1", admin)
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .with_state(state)
}

/// An error answer of the admin API: `{"error": "…"}` with a fitting status.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the input is wrong; the message says how.
    #[error("{0}")]
    BadRequest(String),
    /// 401.
    #[error("{0}")]
    Unauthorized(String),
    /// 404.
    #[error("{0}")]
    NotFound(String),
    /// 409.
    #[error("{0}")]
    Conflict(String),
    /// 413.
    #[error("{0}")]
    TooLarge(String),
    /// 429, with `Retry-After: 1`.
    #[error("{0}")]
    Busy(String),
    /// 503: the server could not do it now (storage failing); the cause is logged.
    #[error("the service is temporarily unavailable")]
    Unavailable(String),
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => ApiError::NotFound(format!("{what} not found")),
            StoreError::Conflict(msg) => ApiError::Conflict(msg),
            other => ApiError::Unavailable(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Busy(_) => {
                let body = Json(json!({"error": self.to_string()}));
                return (
                    StatusCode::TOO_MANY_REQUESTS,
                    [(axum::http::header::RETRY_AFTER, "1")],
                    body,
                )
                    .into_response();
            }
            ApiError::Unavailable(cause) => {
                tracing::error!(%cause, "request failed on the server side");
                StatusCode::SERVICE_UNAVAILABLE
            }
        };
        (status, Json(json!({"error": self.to_string()}))).into_response()
    }
}

/// A JSON body whose rejections share the error format and name what is wrong. It reads the
/// body whatever the `Content-Type`, because `curl -d` labels JSON as a form.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::TooLarge(format!("request body over {MAX_ADMIN_BODY} bytes"))
                } else {
                    ApiError::BadRequest(format!("could not read the body: {e}"))
                }
            })?;
        let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        serde_json::from_slice(bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
    }
}

/// Parses an id from a path, naming what it should have been.
pub(crate) fn parse_id(raw: &str, what: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw)
        .map_err(|_| ApiError::NotFound(format!("{what} not found (malformed id {raw:?})")))
}

async fn require_admin(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        None => {
            ApiError::Unauthorized("missing admin token: send Authorization: Bearer <token>".into())
                .into_response()
        }
        Some(token) if crate::util::secret_matches(token, &state.settings.admin_token_hash) => {
            next.run(req).await
        }
        Some(_) => ApiError::Unauthorized("wrong admin token".into()).into_response(),
    }
}
