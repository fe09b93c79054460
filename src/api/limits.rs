//! Limits on the request target, checked before routing so that no handler sees an oversized
//! URL. Header count, head size and the header timeout are the HTTP server's (see
//! `server::serve_http`); the body's size and read time are checked by ingress.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::ApiSettings;

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
            axum::Json(json!({"error": message})),
        )
            .into_response();
    }
    next.run(req).await
}
