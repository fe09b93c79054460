//! Limits on what a client controls, checked before any handler runs: the request target's
//! length, and every request body's size and read time. Header count, head size and the header
//! timeout are the HTTP server's (see `server::serve_http`).
//!
//! Every body goes through [`bounded_body`], which picks the route's size limit, answers `413`
//! at once to a declared length past it, and wraps the body so that whoever reads it (the JSON
//! extractor, the dry run, ingress) gets an error past the limit or past
//! `--body-timeout-seconds` from the moment the headers were in. The wrapper reads nothing
//! itself: a route that checks credentials first (the admin API, ingress) still does so before
//! the body is read, and a request refused there never costs its body.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, Limited};

use super::{ApiError, ApiSettings, ErrorBody};

/// Largest sign-in body: `{"token": "…"}` needs a few hundred bytes.
pub const MAX_SIGN_IN_BODY: usize = 4 << 10;
/// Largest body of an admin call other than a fleet document (names, webhook settings,
/// rotations, replays).
pub const MAX_ADMIN_BODY: usize = 64 << 10;

/// Answers `414` to a request whose path and query string together exceed `--max-url-bytes`.
pub(super) async fn url_length(
    State(settings): State<Arc<ApiSettings>>,
    req: Request,
    next: Next,
) -> Response {
    let len = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if len > settings.max_url_bytes {
        let message = format!(
            "URL of {len} bytes is over the limit of {} bytes",
            settings.max_url_bytes
        );
        return (
            StatusCode::URI_TOO_LONG,
            axum::Json(ErrorBody { error: message }),
        )
            .into_response();
    }
    next.run(req).await
}

/// The size limit of a route's body, by its routed path.
fn body_limit(settings: &ApiSettings, method: &Method, path: Option<&str>) -> usize {
    match (method, path.unwrap_or("")) {
        (_, "/webhooks/{*id}" | "/api/v1/fleets/{fleet}/dry-run") => settings.max_body_bytes,
        (&Method::POST, "/api/v1/session") => MAX_SIGN_IN_BODY,
        (&Method::POST, "/api/v1/projects/{project}/fleets")
        | (&Method::PUT, "/api/v1/fleets/{fleet}") => settings.max_document_bytes,
        _ => MAX_ADMIN_BODY,
    }
}

/// Bounds the body of every routed request in size and in time (see the module's text). Ingress
/// answers its own `413` in its own shape, so only the wrapping applies to it here.
pub(super) async fn bounded_body(
    State(settings): State<Arc<ApiSettings>>,
    req: Request,
    next: Next,
) -> Response {
    let path = req
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str);
    let ingress = path == Some("/webhooks/{*id}");
    let limit = body_limit(&settings, req.method(), path);
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if !ingress && declared.is_some_and(|n| n > limit as u64) {
        return ApiError::TooLarge(format!("request body over the limit of {limit} bytes"))
            .into_response();
    }
    let (parts, body) = req.into_parts();
    let body = Body::new(Deadline {
        inner: Limited::new(body, limit),
        timer: Box::pin(tokio::time::sleep(settings.body_timeout)),
        after: settings.body_timeout,
        limit,
    });
    next.run(Request::from_parts(parts, body)).await
}

/// A body that fails once its deadline passes, whether or not bytes are still coming: a client
/// trickling one byte at a time is cut off as surely as one that stalls.
struct Deadline {
    inner: Limited<Body>,
    timer: Pin<Box<tokio::time::Sleep>>,
    after: Duration,
    limit: usize,
}

impl http_body::Body for Deadline {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BodyError>>> {
        if self.timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(BodyError::TimedOut(self.after))));
        }
        let limit = self.limit;
        Pin::new(&mut self.inner).poll_frame(cx).map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                BodyError::TooLarge(limit)
            } else {
                BodyError::Broken(e.to_string())
            }
        })
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Why a body could not be read.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum BodyError {
    /// Past the route's size limit (bytes).
    #[error("request body over the limit of {0} bytes")]
    TooLarge(usize),
    /// Not all in within `--body-timeout-seconds`.
    #[error("the body was not received within {} s", .0.as_secs())]
    TimedOut(Duration),
    /// The connection failed while the body was read.
    #[error("could not read the request body: {0}")]
    Broken(String),
}

impl BodyError {
    /// The status this error is answered with.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            BodyError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::TimedOut(_) => StatusCode::REQUEST_TIMEOUT,
            BodyError::Broken(_) => StatusCode::BAD_REQUEST,
        }
    }
}

impl From<BodyError> for ApiError {
    fn from(e: BodyError) -> Self {
        match e {
            BodyError::TooLarge(_) => ApiError::TooLarge(e.to_string()),
            BodyError::TimedOut(_) => ApiError::Timeout(e.to_string()),
            BodyError::Broken(_) => ApiError::BadRequest(e.to_string()),
        }
    }
}

/// Reads a whole body within the bounds [`bounded_body`] set on it.
pub(crate) async fn read(body: Body) -> Result<Bytes, BodyError> {
    match body.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) => {
            let inner = std::error::Error::source(&e);
            Err(match inner.and_then(|s| s.downcast_ref::<BodyError>()) {
                Some(known) => known.clone(),
                None => BodyError::Broken(e.to_string()),
            })
        }
    }
}

/// The whole body of a request as bytes, bounded as every body is; its rejections are the admin
/// API's `413`, `408` and `400`.
pub struct BodyBytes(pub Bytes);

impl<S: Send + Sync> axum::extract::FromRequest<S> for BodyBytes {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &S) -> Result<Self, Self::Rejection> {
        Ok(BodyBytes(read(req.into_body()).await?))
    }
}
