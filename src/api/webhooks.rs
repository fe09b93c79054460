//! Each fleet's webhook: its auth, settings, URL and secret rotations.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::types::{self, RotateBody, RotateUrlBody};
use super::{ApiError, AppState, Created, ErrorBody, JsonBody, parse_id};
use crate::admission::{Deduplicate, RateLimit};
use crate::auth::hmac::HmacScheme;
use crate::auth::secrets::{SealContext, Secret};
use crate::store::{HmacAuth, SealedSecret};
use crate::store::{Webhook, WebhookAuth, WebhookChange, WebhookSettings};
use crate::util::{now_ms, random_token, rfc3339};

/// The routes of fleets' webhooks.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_webhook, update_webhook, delete_webhook))
        .routes(routes!(rotate_webhook))
        .routes(routes!(rotate_webhook_secret))
}

/// A webhook as the API shows it. Secrets are shown only in the answer that set them.
pub(super) fn webhook_json(s: &AppState, w: &Webhook) -> types::Webhook {
    let previous = match (&w.previous_id, w.previous_until) {
        (Some(id), Some(until)) if until > now_ms() => Some((id, until)),
        _ => None,
    };
    types::Webhook {
        id: w.id.clone(),
        url: format!("{}/webhooks/{}", s.settings.public_url, w.id),
        fleet_id: w.fleet_id,
        auth: (&w.auth).into(),
        rate_limit: w.settings.rate_limit.map(|r| types::RateLimit {
            requests: r.requests,
            per_seconds: r.per_seconds,
        }),
        deduplicate: w.settings.deduplicate.as_ref().map(Into::into),
        created_at: rfc3339(w.created_at),
        previous_url: previous.map(|(id, _)| format!("{}/webhooks/{id}", s.settings.public_url)),
        previous_url_until: previous.map(|(_, until)| rfc3339(until)),
        secret: None,
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

/// The webhook with a secret set by this call, shown this once.
fn with_secret(mut hook: types::Webhook, secret: Option<Secret>) -> types::Webhook {
    hook.secret = secret.map(|s| s.expose().to_owned());
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
    request_body(content = Option<types::WebhookSettings>, description = "Every field optional"),
    params(("fleet" = uuid::Uuid, Path, description = "Fleet id")),
    responses((status = 201, description = "The webhook, with `secret` (shown this once) for hmac", body = types::Webhook),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "The fleet has a webhook", body = ErrorBody)))]
async fn create_webhook(
    State(s): State<AppState>,
    Path(fleet): Path<String>,
    JsonBody(body): JsonBody<WebhookBody>,
) -> Result<Created<types::Webhook>, ApiError> {
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
    request_body(content = types::WebhookPatch, description = "A field given is changed, `null` removes it (auth as at create; `secret` is in the answer when hmac is set)"),
    params(("fleet" = uuid::Uuid, Path, description = "Fleet id")),
    responses((status = 200, description = "The webhook", body = types::Webhook),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn update_webhook(
    State(s): State<AppState>,
    Path(fleet): Path<String>,
    JsonBody(body): JsonBody<WebhookPatch>,
) -> Result<Json<types::Webhook>, ApiError> {
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

/// Gives the fleet's webhook a new id and URL. The old URL answers 400 at once, or after
/// `grace_seconds` (at most 7 days) when given; a URL kept from an earlier rotation stops.
#[utoipa::path(post, path = "/fleets/{fleet}/webhook/rotate", tag = "webhooks",
    request_body(content = Option<RotateUrlBody>, description = "`{}` or `{\"grace_seconds\": N}`"),
    params(("fleet" = uuid::Uuid, Path, description = "Fleet id")),
    responses((status = 200, description = "The webhook with its new URL (and `previous_url`, `previous_url_until` during a grace period)", body = types::Webhook),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn rotate_webhook(
    State(s): State<AppState>,
    Path(fleet): Path<String>,
    JsonBody(body): JsonBody<RotateBody>,
) -> Result<Json<types::Webhook>, ApiError> {
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
    request_body(content = Option<RotateBody>, description = "`{\"grace_seconds\": N, \"secret\"?}`"),
    params(("fleet" = uuid::Uuid, Path, description = "Fleet id")),
    responses((status = 200, description = "The webhook, with the new `secret` shown this once", body = types::Webhook),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "The webhook's auth is not hmac", body = ErrorBody)))]
async fn rotate_webhook_secret(
    State(s): State<AppState>,
    Path(fleet): Path<String>,
    JsonBody(body): JsonBody<RotateBody>,
) -> Result<Json<types::Webhook>, ApiError> {
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
