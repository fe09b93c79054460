//! The dashboard: static files from `ui/public/`, embedded in the binary at build time, served under
//! `/ui/`. Every path under `/ui/` that is not a file is the page itself (`index.html`), which
//! routes on the client and reads everything through the admin API — there is no second API.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use rust_embed::RustEmbed;

use super::AppState;

/// The files of `ui/public/`, compiled in (also in debug builds), so the binary is the whole
/// product.
#[derive(RustEmbed)]
#[folder = "ui/public/"]
struct Assets;

/// Scripts, styles and connections from this origin only; no inline script or style, no
/// framing. Stored bodies and logs are shown as text, and this makes any slip inert.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/") }))
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route(
            "/ui/",
            get(|headers: HeaderMap| async move { page(&headers) }),
        )
        .route("/ui/{*path}", get(asset))
}

async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Response {
    // Page routes (`runs/…`, `fleets/…`) have no dot in their last segment; files do.
    let is_file = path
        .rsplit('/')
        .next()
        .is_some_and(|last| last.contains('.'));
    if !is_file {
        return page(&headers);
    }
    serve(&path, &headers).unwrap_or_else(|| {
        (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "no such file",
        )
            .into_response()
    })
}

fn page(headers: &HeaderMap) -> Response {
    serve("index.html", headers).unwrap_or_else(|| {
        (StatusCode::NOT_FOUND, "the dashboard was not built in").into_response()
    })
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "json" => "application/json",
        _ => "application/octet-stream",
    }
}

/// One embedded file, revalidated by its hash on every load (`no-cache` + `ETag`): cheap, and a
/// new binary's page never mixes with an old one's script.
fn serve(path: &str, headers: &HeaderMap) -> Option<Response> {
    let file = Assets::get(path)?;
    let etag = format!("\"{}\"", hex::encode(&file.metadata.sha256_hash()[..12]));
    let common = [
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        ),
    ];
    let etag_value = HeaderValue::from_str(&etag).ok()?;
    if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes())
    {
        return Some(
            (
                StatusCode::NOT_MODIFIED,
                common,
                [(header::ETAG, etag_value)],
            )
                .into_response(),
        );
    }
    Some(
        (
            common,
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(content_type(path)),
                ),
                (header::ETAG, etag_value),
            ],
            file.data.into_owned(),
        )
            .into_response(),
    )
}
