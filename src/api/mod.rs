//! HTTP only: routing, extractors, status codes. Handlers parse, call the store or the
//! scheduler, and shape the answer; the rules live elsewhere.

mod deliveries;
mod events;
mod fleets;
mod ingress;
mod limits;
pub use limits::{MAX_ADMIN_BODY, MAX_SIGN_IN_BODY};
mod listing;
mod ops;
mod orgs;
mod runs;
mod session;
pub use session::Sessions;
mod sign_in_guard;
pub use sign_in_guard::{SignInGuard, client_key};
mod stats;
pub mod types;
mod ui;
mod webhooks;
pub use webhooks::new_webhook_id;

use std::sync::Arc;

use axum::extract::{FromRequest, Request};
use axum::http::{Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Extension, Json, Router};
use serde::de::DeserializeOwned;
use tracing::Instrument;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::ingest::Ingress;
use crate::scheduler::Scheduler;
use crate::store::{Store, StoreError};

/// Settings the HTTP layer needs.
#[derive(Clone)]
pub struct ApiSettings {
    /// sha256 hex of the admin token.
    pub admin_token_hash: String,
    /// Base URL for webhook URLs, without a trailing slash.
    pub public_url: String,
    /// Largest accepted webhook body.
    pub max_body_bytes: usize,
    /// Origins allowed to call from a browser (CORS); empty: CORS off.
    pub cors_origins: Vec<String>,
    /// Longest request target (path and query), answered `414` beyond.
    pub max_url_bytes: usize,
    /// Time any request body has to arrive once the headers are in, answered `408` beyond.
    pub body_timeout: std::time::Duration,
    /// Largest fleet document (create or replace), answered `413` beyond.
    pub max_document_bytes: usize,
    /// Failed sign-ins per client address, refused with `429` past their limit.
    pub sign_ins: SignInGuard,
    /// The dashboard's browser sessions.
    pub sessions: Sessions,
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
    let (routes, _) = documented();
    let routes = routes
        .merge(ui::routes())
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .layer(Extension(state.settings.clone()));
    // Outside the admin check, so that a browser's preflight (which carries no token) is
    // answered; the calls themselves still need the token.
    let routes = match cors(&state.settings.cors_origins) {
        Some(layer) => routes.layer(layer),
        None => routes,
    };
    routes
        .layer(middleware::from_fn_with_state(
            state.settings.clone(),
            limits::bounded_body,
        ))
        .layer(middleware::from_fn(request_span))
        .layer(middleware::from_fn_with_state(
            state.settings.clone(),
            limits::url_length,
        ))
        .with_state(state)
}

/// The CORS layer for `--cors-origin`; `None` (no CORS headers at all) when none is given.
fn cors(origins: &[String]) -> Option<tower_http::cors::CorsLayer> {
    use axum::http::{HeaderValue, Method};
    let origins: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o.trim().trim_end_matches('/')).ok())
        .collect();
    if origins.is_empty() {
        return None;
    }
    Some(
        tower_http::cors::CorsLayer::new()
            .allow_origin(origins)
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE]),
    )
}

/// Only `GET /metrics`, without the admin token: what `--metrics-listen` serves.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(ops::metrics))
        .fallback(|| async { ApiError::NotFound("only /metrics is served here".into()) })
        .with_state(state)
}

/// The OpenAPI description's frame; the paths come from the routes' annotations.
#[derive(OpenApi)]
#[openapi(
    info(title = "wharf", description = "Webhook ingress and the admin API of a wharf server. \
        Admin calls need `Authorization: Bearer <admin token>`."),
    paths(ingress::ingress),
    modifiers(&AdminToken),
    security(("admin_token" = [])),
    tags(
        (name = "webhooks", description = "Webhook ingress and each fleet's webhook"),
        (name = "orgs"), (name = "projects"), (name = "fleets"), (name = "runs"),
        (name = "ops", description = "Health, this document, metrics"),
        (name = "deliveries", description = "Rows sent to fleets' destinations after runs"),
    )
)]
struct ApiDoc;

struct AdminToken;

impl utoipa::Modify for AdminToken {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let scheme = HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build();
        doc.components
            .get_or_insert_with(Default::default)
            .add_security_scheme("admin_token", SecurityScheme::Http(scheme));
    }
}

/// Every route of the server (before its state is given) and the OpenAPI document describing
/// them. Routes are registered with `routes!`, which takes each handler's `#[utoipa::path]`
/// along; the only route added by hand is ingress, whose catch-all path (`{*id}`, so that a
/// malformed id is a 400 rather than a 404) is described by its handler's annotation under
/// `ApiDoc`. A test compares the router's paths with the document's.
pub fn documented() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let admin = orgs::routes()
        .merge(fleets::routes())
        .merge(webhooks::routes())
        .merge(runs::routes())
        .routes(routes!(ops::api_metrics))
        .merge(listing::routes())
        .merge(events::routes())
        .merge(stats::routes())
        .merge(session::routes())
        .route_layer(middleware::from_fn(require_admin))
        .merge(session::open_routes())
        // Sizes and read times are bounded by `limits::bounded_body` for every route.
        .layer(axum::extract::DefaultBodyLimit::disable());
    let metrics = OpenApiRouter::new()
        .routes(routes!(ops::metrics))
        .route_layer(middleware::from_fn(require_admin));
    let (router, doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::openapi_json))
        .route("/webhooks/{*id}", any(ingress::ingress))
        .merge(metrics)
        .nest("/api/v1", admin)
        .split_for_parts();
    let mut doc = doc;
    common_answers(&mut doc);
    (router, doc)
}

/// Adds the answers every admin call can get before its handler runs, where its annotation does
/// not give them: `401` without a valid token (or session), and `429` with `Retry-After` once
/// its address has failed to sign in too often (the guard answers before any token is compared).
fn common_answers(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::security::SecurityRequirement;
    use utoipa::openapi::{
        ContentBuilder, HeaderBuilder, ObjectBuilder, Ref, ResponseBuilder, Type,
    };
    let error = |description: &str| {
        ResponseBuilder::new().description(description).content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
    };
    for item in doc.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for op in operations.into_iter().flatten() {
            // A body of any shape may also be empty; `Option<RawBody>` would say so with a
            // `oneOf` in which `null` matches twice.
            let raw = op.request_body.as_mut().filter(|b| {
                b.content.values().any(|c| {
                    matches!(&c.schema, Some(utoipa::openapi::RefOr::Ref(r))
                        if r.ref_location.ends_with("/RawBody"))
                })
            });
            if let Some(body) = raw {
                body.required = Some(utoipa::openapi::Required::False);
            }
        }
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for op in operations.into_iter().flatten() {
            let public = op
                .security
                .as_ref()
                .is_some_and(|s| s.iter().all(|r| *r == SecurityRequirement::default()));
            if public {
                continue;
            }
            let has_path_id = op
                .parameters
                .iter()
                .flatten()
                .any(|p| matches!(p.parameter_in, utoipa::openapi::path::ParameterIn::Path));
            let answers = &mut op.responses.responses;
            if has_path_id {
                // `parse_id` answers a malformed id as the missing resource it names.
                answers
                    .entry("404".into())
                    .or_insert_with(|| error("No such resource, or a malformed id").build().into());
            }
            answers.entry("401".into()).or_insert_with(|| {
                error("Missing or wrong admin token, or no valid session")
                    .build()
                    .into()
            });
            answers.entry("429".into()).or_insert_with(|| {
                error("Too many failed sign-ins from this address (with `Retry-After`)")
                    .header(
                        "Retry-After",
                        HeaderBuilder::new()
                            .schema(ObjectBuilder::new().schema_type(Type::Integer))
                            .description(Some("Seconds until the address may try again"))
                            .build(),
                    )
                    .build()
                    .into()
            });
        }
    }
}

/// Every request runs in a span carrying its request id, so its log lines (JSON fields with
/// `--log-format json`) can be told apart. Ingress answers with the same id. The span holds the
/// id alone: it is made for every webhook call, and each field is formatted when it is made.
async fn request_span(mut req: Request, next: Next) -> Response {
    let id = RequestId(Uuid::now_v7());
    req.extensions_mut().insert(id);
    let span = tracing::info_span!("request", request_id = %id.0);
    async move {
        // An access log for debugging; off at the default level, where it would cost every call.
        let seen = tracing::enabled!(tracing::Level::DEBUG)
            .then(|| (req.method().clone(), req.uri().path().to_owned()));
        let res = next.run(req).await;
        if let Some((method, path)) = seen {
            tracing::debug!(%method, path, status = res.status().as_u16(), "answered");
        }
        res
    }
    .instrument(span)
    .await
}

/// The id given to a request by the HTTP layer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestId(pub Uuid);

pub(crate) use types::ErrorBody;

/// A `201 Created` answer with its JSON body.
type Created<T> = (StatusCode, Json<T>);

/// An error answer of the admin API: `{"error": "…"}` with a fitting status.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the input is wrong; the message says how.
    #[error("{0}")]
    BadRequest(String),
    /// 401.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: authenticated, but the call is refused (a session call without its CSRF token).
    #[error("{0}")]
    Forbidden(String),
    /// 404.
    #[error("{0}")]
    NotFound(String),
    /// 409.
    #[error("{0}")]
    Conflict(String),
    /// 408: the body did not arrive within `--body-timeout-seconds`.
    #[error("{0}")]
    Timeout(String),
    /// 413.
    #[error("{0}")]
    TooLarge(String),
    /// 429 with `Retry-After` in seconds: too many failed sign-ins from the client's address.
    #[error("{message}")]
    SlowDown {
        /// What is refused and why.
        message: String,
        /// Seconds until the address may try again.
        retry_after: u64,
    },
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
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::SlowDown { retry_after, .. } => {
                let body = Json(ErrorBody {
                    error: self.to_string(),
                });
                return (
                    StatusCode::TOO_MANY_REQUESTS,
                    [(axum::http::header::RETRY_AFTER, retry_after.to_string())],
                    body,
                )
                    .into_response();
            }
            ApiError::Busy(_) => {
                let body = Json(ErrorBody {
                    error: self.to_string(),
                });
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
        (
            status,
            Json(ErrorBody {
                error: self.to_string(),
            }),
        )
            .into_response()
    }
}

/// A JSON body whose rejections share the error format and name what is wrong. It reads the
/// body whatever the `Content-Type`, because `curl -d` labels JSON as a form.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &S) -> Result<Self, Self::Rejection> {
        let bytes = limits::read(req.into_body()).await?;
        // No body, or `null` (what the document's optional bodies allow), is an empty object.
        let bytes: &[u8] =
            if bytes.iter().all(u8::is_ascii_whitespace) || bytes.trim_ascii() == b"null" {
                b"{}"
            } else {
                &bytes
            };
        // Every body is an object: serde would otherwise read a struct from an array too.
        if bytes.trim_ascii_start().starts_with(b"[") {
            return Err(ApiError::BadRequest(
                "invalid JSON body: expected an object, not an array".into(),
            ));
        }
        serde_json::from_slice(bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
    }
}

/// Query parameters whose rejections (a repeated or malformed parameter) share the error format
/// of every other answer instead of axum's plain-text one.
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> axum::extract::FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(q)| QueryParams(q))
            .map_err(|e| ApiError::BadRequest(e.body_text()))
    }
}

/// Parses an id from a path, naming what it should have been.
pub(crate) fn parse_id(raw: &str, what: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw)
        .map_err(|_| ApiError::NotFound(format!("{what} not found (malformed id {raw:?})")))
}

/// Lets a call through with the admin token (`Authorization: Bearer`), or with a dashboard
/// session cookie — then, unless it only reads, with the session's CSRF token as well.
async fn require_admin(
    Extension(settings): Extension<Arc<ApiSettings>>,
    req: Request,
    next: Next,
) -> Response {
    // The token is compared as its sha256 with `subtle`: a wrong token's answer takes the same
    // time however much of the real one it shares.
    if let Some(token) = crate::auth::keys::bearer(req.headers()) {
        let client = sign_in_guard::peer_of(req.extensions());
        // Checked before the token is compared, as at sign-in.
        if let Err(refused) = settings.sign_ins.check(client) {
            return refused.into_response();
        }
        if crate::util::secret_matches(token, &settings.admin_token_hash) {
            return next.run(req).await;
        }
        settings.sign_ins.failed(client, "admin API bearer token");
        return ApiError::Unauthorized("wrong admin token".into()).into_response();
    }
    let session = match settings.sessions.open(req.headers()).await {
        Ok(Some(session)) => session,
        Ok(None) => {
            return ApiError::Unauthorized(
                "missing admin token: send Authorization: Bearer <token>".into(),
            )
            .into_response();
        }
        Err(e) => return ApiError::from(e).into_response(),
    };
    let reads = matches!(*req.method(), Method::GET | Method::HEAD);
    if !reads && !Sessions::csrf_matches(&session, req.headers()) {
        return ApiError::Forbidden(format!(
            "missing or wrong CSRF token: a call made with the session cookie must send the \
             session's token (from GET /api/v1/session) in {}",
            session::CSRF_HEADER
        ))
        .into_response();
    }
    next.run(req).await
}
