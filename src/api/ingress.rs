//! `POST /webhooks/{id}`: accept any body, commit it with a queued run, answer `201`.
//!
//! Every answer carries the request id in its body and in `x-request-id`. The order of checks
//! is chosen so that cheap refusals come first and the body is only read for a live webhook.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use uuid::Uuid;

use super::AppState;
use super::types::{Accepted, IngressBadRequest, IngressError, Queued, RequestRef, UnknownWebhook};
use crate::auth::redact;
use crate::ingest::Refused;
use crate::sandbox::RequestMeta;
use crate::store::RequestRecord;

fn answer(request_id: Uuid, status: StatusCode, body: impl Serialize) -> Response {
    let mut res = (status, Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&request_id.to_string()) {
        res.headers_mut().insert("x-request-id", v);
    }
    res
}

fn error(request_id: Uuid, status: StatusCode, message: &str) -> Response {
    answer(
        request_id,
        status,
        IngressError {
            request: Some(RequestRef { id: request_id }),
            error: message.to_owned(),
        },
    )
}

/// Accepts a call of any body and content type, commits it with a queued run, answers `201`.
/// The id in the URL is the webhook's unguessable id; any other method answers `405`.
#[utoipa::path(post, path = "/webhooks/{webhook_id}", tag = "webhooks", security(()),
    params(("webhook_id" = String, Path, description = "The webhook's id (`wh_…`)")),
    request_body(content = super::types::RawBody, description = "Any body: JSON, form, text, binary or empty", content_type = "*/*"),
    responses(
        (status = 201, description = "Durably queued", body = Accepted),
        (status = 400, description = "Unknown, rotated-away (after its grace period) or removed webhook (`data` is null); a malformed idempotency or delivery-id header; or an API key in the query string", body = IngressBadRequest),
        (status = 401, description = "`Missing authorization header` or `Wrong authentication credentials` (bearer and hmac webhooks)", body = IngressError),
        (status = 405, description = "Not a POST (with `Allow: POST`)", body = IngressError),
        (status = 408, description = "Body not received within `--body-timeout-seconds`", body = IngressError),
        (status = 413, description = "Body over the limit", body = IngressError),
        (status = 414, description = "URL over `--max-url-bytes`", body = IngressError),
        (status = 431, description = "Too many headers, or a request head over `--max-header-bytes`"),
        (status = 429, description = "`reject` policy and a run is queued or running; the webhook's rate limit; or the fleet has `--max-queued-per-fleet` runs queued (with `Retry-After`)", body = IngressError),
        (status = 503, description = "Storage unavailable, or the data volume below `--min-free-disk` (with `Retry-After`)", body = IngressError)))]
pub(super) async fn ingress(
    State(s): State<AppState>,
    method: Method,
    Path(id): Path<String>,
    given_id: Option<axum::Extension<super::RequestId>>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let request_id = given_id.map_or_else(Uuid::now_v7, |id| id.0.0);
    let res = admit(&s, method, id, request_id, uri, headers, body).await;
    s.scheduler
        .metrics()
        .ingress_answered(res.status().as_u16());
    res
}

async fn admit(
    s: &AppState,
    method: Method,
    id: String,
    request_id: Uuid,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if method != Method::POST {
        let mut res = error(
            request_id,
            StatusCode::METHOD_NOT_ALLOWED,
            "only POST is accepted",
        );
        res.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return res;
    }
    let target = match s.ingress.resolve(&id).await {
        Ok(t) => t,
        Err(why) => return refused(request_id, why),
    };
    if let Err(why) = s.ingress.authorize(&target, uri.query(), &headers).await {
        return refused(request_id, why);
    }
    if let Err(why) = s.ingress.check_disk() {
        return refused(request_id, why);
    }

    let limit = s.settings.max_body_bytes;
    let too_large = || {
        error(
            request_id,
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("body over the limit of {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return too_large();
    }
    // A client trickling its body would hold the connection and its buffer for as long as it
    // likes: `limits::bounded_body` ends the read at the limit or at the body timeout.
    let body = match super::limits::read(body).await {
        Ok(b) => b,
        Err(super::limits::BodyError::TooLarge(_)) => return too_large(),
        Err(e) => return error(request_id, e.status(), &e.to_string()),
    };

    let signed_key = match s
        .ingress
        .verify_signature(&target, &headers, &body, &s.secrets)
    {
        Ok(key) => key,
        Err(why) => return refused(request_id, why),
    };

    let meta = describe(request_id, &method, &uri, &headers);
    let record = RequestRecord {
        id: request_id,
        fleet_id: target.webhook.fleet_id,
        method: meta.method,
        content_type: meta.content_type,
        headers: meta.headers,
        query: meta.query,
        body_size: body.len() as u64,
        body: body.to_vec(),
        received_at: crate::util::now_ms(),
    };
    let accepted = match s.ingress.admit(&target, record, signed_key).await {
        Ok(a) => a,
        Err(why) => return refused(request_id, why),
    };
    // A repeat is answered as the first call was, its request id included.
    let request_id = accepted.request_id;
    let mut res = answer(
        request_id,
        StatusCode::CREATED,
        Accepted {
            request: RequestRef { id: request_id },
            data: Queued {
                fleet_id: accepted.fleet_id,
                project_id: accepted.project_id,
                org_id: accepted.org_id,
                fleet_run_id: accepted.run_id,
                replay_of: None,
            },
        },
    );
    if accepted.repeated {
        res.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    res
}

/// The answer to a refused call.
fn refused(request_id: Uuid, why: Refused) -> Response {
    match why {
        Refused::UnknownWebhook => answer(
            request_id,
            StatusCode::BAD_REQUEST,
            IngressBadRequest::Unknown(UnknownWebhook {
                request: RequestRef { id: request_id },
                data: None,
            }),
        ),
        Refused::Busy { retry_after } => {
            let mut res = error(
                request_id,
                StatusCode::TOO_MANY_REQUESTS,
                "the fleet already has a run queued or running",
            );
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            res
        }
        Refused::RateLimited { retry_after, limit } => {
            let mut res = error(
                request_id,
                StatusCode::TOO_MANY_REQUESTS,
                &format!(
                    "rate limit of {} reached; retry after {retry_after} s",
                    limit.describe()
                ),
            );
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            res
        }
        Refused::BadKey(message) => error(request_id, StatusCode::BAD_REQUEST, &message),
        Refused::Unauthorized(why) => error(request_id, StatusCode::UNAUTHORIZED, why.message()),
        Refused::KeyInQuery => error(
            request_id,
            StatusCode::BAD_REQUEST,
            "an API key in the query string is refused (it would be logged on the way): \
             send it as Authorization: Bearer <key>",
        ),
        Refused::Unavailable => error(
            request_id,
            StatusCode::SERVICE_UNAVAILABLE,
            "storage unavailable, retry later",
        ),
        Refused::Backlogged {
            max_queued,
            retry_after,
        } => {
            let mut res = error(
                request_id,
                StatusCode::TOO_MANY_REQUESTS,
                &format!(
                    "the fleet has {max_queued} runs queued, its limit (--max-queued-per-fleet); \
                     retry after {retry_after} s"
                ),
            );
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            res
        }
        Refused::LowDisk { low, retry_after } => {
            let mut res = error(
                request_id,
                StatusCode::SERVICE_UNAVAILABLE,
                &format!(
                    "the server is low on disk space ({} free, below --min-free-disk of {}); \
                     nothing was stored, retry after {retry_after} s",
                    bytesize::ByteSize::b(low.free).display().iec(),
                    bytesize::ByteSize::b(low.min_free).display().iec(),
                ),
            );
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            res
        }
    }
}

/// What vessels see of a call: method, content type, headers (secrets redacted) and query.
pub(super) fn describe(id: Uuid, method: &Method, uri: &Uri, headers: &HeaderMap) -> RequestMeta {
    RequestMeta {
        id: id.to_string(),
        method: method.to_string(),
        content_type: headers
            .get(header::CONTENT_TYPE)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default(),
        headers: header_map(headers),
        query: uri
            .query()
            .map(|q| {
                form_urlencoded::parse(q.as_bytes())
                    .map(|(k, v)| {
                        let v = if redact::secret_query(&k, &v) {
                            redact::REDACTED.to_owned()
                        } else {
                            v.into_owned()
                        };
                        (k.into_owned(), v)
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// Headers with lower-cased names (as `http` gives them), repeated ones joined by `, `, and
/// secrets redacted.
fn header_map(headers: &HeaderMap) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in headers {
        let name = name.as_str();
        let value = if redact::secret_header(name) {
            redact::REDACTED.to_owned()
        } else {
            String::from_utf8_lossy(value.as_bytes()).into_owned()
        };
        out.entry(name.to_owned())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert(value);
    }
    out
}
