//! The wire types of the HTTP API: every documented request and response body, in one place.
//! The server builds its answers from them, the OpenAPI document is derived from them, and the
//! CLI reads answers into them. Field names are the contract: fields may be added, never renamed
//! or removed. Times are RFC 3339 strings with milliseconds, in UTC.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::util::rfc3339;

/// The domain's statuses, reasons and schemes, on the wire as they are stored (their schemas come
/// from the core's `openapi` feature).
pub use crate::auth::hmac::HmacScheme;
pub use crate::sandbox::{FailureReason, VesselStatus};
pub use crate::store::{DeliveryStatus, RunReason, RunStatus};

/// `GET /healthz`: `{"status": "ok"}` while the process serves HTTP.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    #[schema(example = "ok")]
    pub status: String,
}

/// The OpenAPI 3.1 document itself (see the OpenAPI specification for its shape).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(value_type = Object)]
pub struct OpenApiDocument(pub Value);

/// The id of the webhook call an answer is about.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RequestRef {
    /// The request id, also sent as header `x-request-id`.
    pub id: Uuid,
}

/// What a call queued: the run and where it belongs.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Queued {
    /// The fleet.
    pub fleet_id: Uuid,
    /// The fleet's project.
    pub project_id: Uuid,
    /// The project's org.
    pub org_id: Uuid,
    /// The run queued for the call.
    pub fleet_run_id: Uuid,
    /// For a replay: the run it replays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_of: Option<Uuid>,
}

/// `201` of a webhook call or a replay: the request and the run queued for it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Accepted {
    /// The request.
    pub request: RequestRef,
    /// The run.
    pub data: Queued,
}

/// `400` of a webhook call to an unknown, rotated-away or removed webhook: `data` is null.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UnknownWebhook {
    /// The request.
    pub request: RequestRef,
    /// Always null: nothing was queued.
    #[schema(value_type = Option<Queued>)]
    pub data: Option<Queued>,
}

/// A refused webhook call: what is wrong, with the request id when the call got that far.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct IngressError {
    /// The request; absent when the call was refused before it was given an id (a body or URL
    /// over its limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<RequestRef>,
    /// What is wrong.
    pub error: String,
}

/// `400` of a webhook call: an unknown webhook, or a malformed header or key.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum IngressBadRequest {
    /// Unknown, rotated-away or removed webhook.
    Unknown(UnknownWebhook),
    /// A malformed idempotency or delivery-id header, or an API key in the query string.
    Refused(IngressError),
}

/// One attempt to send a delivery.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeliveryAttempt {
    /// 1 for the first.
    pub attempt: u32,
    /// When it started.
    #[schema(format = DateTime)]
    pub at: String,
    /// The answer's status code; null when there was no answer.
    pub status_code: Option<u16>,
    /// Time until the answer was read, or until the attempt gave up.
    pub latency_ms: u64,
    /// The start of the answer's body, at most 4 KiB.
    pub response: Option<String>,
    /// What went wrong, when something did.
    pub error: Option<String>,
    /// The backoff ceiling for the pause after this attempt, when it is retried.
    pub backoff_ms: Option<u64>,
    /// The pause drawn (or `Retry-After`), when it is retried.
    pub retry_in_ms: Option<u64>,
}

/// A batch of a run's rows sent to one destination, with every attempt made.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Delivery {
    /// Delivery id.
    pub id: Uuid,
    /// The run whose rows it carries.
    pub run_id: Uuid,
    /// The fleet.
    pub fleet_id: Uuid,
    /// Destination name.
    pub destination: String,
    /// Batch number, 1 for the first.
    pub batch: u32,
    /// Batches of this destination in the run.
    pub batches: u32,
    /// Rows in the batch.
    pub rows: u32,
    /// HTTP method it is sent with.
    pub method: String,
    /// Where it is sent.
    pub url: String,
    /// Where it is.
    pub status: DeliveryStatus,
    /// Attempts so far, oldest first.
    pub attempts: Vec<DeliveryAttempt>,
    /// Attempts allowed before it fails.
    pub max_attempts: u32,
    /// When the next attempt is due; null once delivered or failed.
    #[schema(format = DateTime)]
    pub next_attempt_at: Option<String>,
    /// Created at.
    #[schema(format = DateTime)]
    pub created_at: String,
    /// Delivered or failed at.
    #[schema(format = DateTime)]
    pub finished_at: Option<String>,
}

impl From<&crate::store::Delivery> for Delivery {
    fn from(d: &crate::store::Delivery) -> Self {
        Delivery {
            id: d.id,
            run_id: d.run_id,
            fleet_id: d.fleet_id,
            destination: d.destination.clone(),
            batch: d.batch,
            batches: d.batches,
            rows: d.rows,
            method: d.request.method.clone(),
            url: d.request.url.clone(),
            status: d.status,
            attempts: d
                .attempts
                .iter()
                .map(|a| DeliveryAttempt {
                    attempt: a.attempt,
                    at: rfc3339(a.at),
                    status_code: a.status_code,
                    latency_ms: a.latency_ms,
                    response: a.response.clone(),
                    error: a.error.clone(),
                    backoff_ms: a.backoff_ms,
                    retry_in_ms: a.retry_in_ms,
                })
                .collect(),
            max_attempts: d.request.max_attempts,
            next_attempt_at: d.next_attempt_at.map(rfc3339),
            created_at: rfc3339(d.created_at),
            finished_at: d.finished_at.map(rfc3339),
        }
    }
}

/// `GET /api/v1/runs/{run}/deliveries`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeliveryList {
    /// By destination and batch.
    pub deliveries: Vec<Delivery>,
}

/// Per destination of a run: deliveries delivered, pending and failed, and attempts made.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DestinationSummary {
    /// Destination name.
    pub name: String,
    /// Deliveries delivered.
    pub delivered: u64,
    /// Deliveries pending.
    pub pending: u64,
    /// Deliveries failed.
    pub failed: u64,
    /// Attempts made over all its deliveries.
    pub attempts: u64,
}

/// The error body of every admin call: `{"error": "<message>"}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What is wrong.
    pub error: String,
}

/// `{"name": …}`: the body that creates an org or a project.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NameBody {
    /// 1 to 128 characters, not all white space; trimmed.
    #[schema(min_length = 1, max_length = 128, pattern = r"\S")]
    pub name: String,
}

/// `201` of `POST /api/v1/orgs`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OrgCreated {
    /// Org id.
    pub id: Uuid,
    /// Its name.
    pub name: String,
}

/// `201` of `POST /api/v1/orgs/{org}/projects`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProjectCreated {
    /// Project id.
    pub id: Uuid,
    /// Its name.
    pub name: String,
    /// Its org.
    pub org_id: Uuid,
}

/// `201` of `POST /api/v1/orgs/{org}/api-keys`: the key, shown this once.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApiKeyCreated {
    /// Key id (to revoke it).
    pub id: Uuid,
    /// Its org.
    pub org_id: Uuid,
    /// The key's first characters, as lists show it.
    pub prefix: String,
    /// The key itself; stored hashed, never shown again.
    pub key: String,
}

/// An API key as lists show it: never the key itself.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApiKey {
    /// Key id.
    pub id: Uuid,
    /// Its org.
    pub org_id: Uuid,
    /// The key's first characters; null for a key made before prefixes were kept.
    pub prefix: Option<String>,
    /// Created at.
    #[schema(format = DateTime)]
    pub created_at: String,
    /// Last used at (at most about a minute late); null if never.
    #[schema(format = DateTime)]
    pub last_used_at: Option<String>,
    /// Revoked at; null while valid.
    #[schema(format = DateTime)]
    pub revoked_at: Option<String>,
}

/// `GET /api/v1/orgs/{org}/api-keys`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApiKeyList {
    /// Oldest first.
    pub api_keys: Vec<ApiKey>,
}

/// When an `hmac` webhook's secret was set, and when it stops being accepted.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SecretTimes {
    /// Set at.
    #[schema(format = DateTime)]
    pub created_at: String,
    /// Accepted until (a rotated-away secret in its grace period); null for the current one.
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
}

/// A webhook's auth as the API shows it. Secrets are shown only in the answer that set them.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum WebhookAuth {
    /// Anyone with the URL.
    None,
    /// An API key of the fleet's org in `Authorization: Bearer`.
    Bearer,
    /// A signature of the raw body.
    Hmac {
        /// The signature scheme.
        scheme: HmacScheme,
        /// The secrets accepted now, the current one first.
        secrets: Vec<SecretTimes>,
    },
}

impl From<&crate::store::WebhookAuth> for WebhookAuth {
    fn from(auth: &crate::store::WebhookAuth) -> Self {
        use crate::store::WebhookAuth as A;
        match auth {
            A::None => WebhookAuth::None,
            A::Bearer => WebhookAuth::Bearer,
            A::Hmac(h) => WebhookAuth::Hmac {
                scheme: h.scheme,
                secrets: h
                    .secrets
                    .iter()
                    .map(|s| SecretTimes {
                        created_at: rfc3339(s.created_at),
                        expires_at: s.expires_at.map(rfc3339),
                    })
                    .collect(),
            },
        }
    }
}

/// A webhook's rate limit: `requests` calls per `per_seconds`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
pub struct RateLimit {
    /// Calls per window (the burst size).
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub requests: u32,
    /// The window, in seconds (at most 30 days).
    #[schema(minimum = 1, maximum = 2_592_000)]
    pub per_seconds: u32,
}

/// A provider whose delivery-id header deduplicates calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum DeduplicateProvider {
    /// GitHub's `X-GitHub-Delivery`.
    #[serde(rename = "github")]
    Github,
    /// The Standard Webhooks `webhook-id`.
    #[serde(rename = "standard-webhooks")]
    StandardWebhooks,
}

/// Which header identifies a delivery, for a webhook that deduplicates on it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Deduplicate {
    /// A provider's delivery-id header.
    Provider(DeduplicateProvider),
    /// Any other header (lower-cased); not one that carries a secret.
    Header {
        /// The header's name.
        #[schema(pattern = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")]
        header: String,
    },
}

impl From<&crate::admission::Deduplicate> for Deduplicate {
    fn from(d: &crate::admission::Deduplicate) -> Self {
        use crate::admission::Deduplicate as D;
        match d {
            D::GitHub => Deduplicate::Provider(DeduplicateProvider::Github),
            D::StandardWebhooks => Deduplicate::Provider(DeduplicateProvider::StandardWebhooks),
            D::Header(h) => Deduplicate::Header { header: h.clone() },
        }
    }
}

/// A fleet's webhook.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Webhook {
    /// The unguessable id in its URL (`wh_…`).
    pub id: String,
    /// The URL to call.
    pub url: String,
    /// The fleet it triggers.
    pub fleet_id: Uuid,
    /// How calls authenticate.
    pub auth: WebhookAuth,
    /// Its rate limit; null when none.
    pub rate_limit: Option<RateLimit>,
    /// The header calls are deduplicated by; null when none.
    pub deduplicate: Option<Deduplicate>,
    /// Created at.
    #[schema(format = DateTime)]
    pub created_at: String,
    /// The URL before the last rotation, while it is still accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_url: Option<String>,
    /// Until when the previous URL is accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub previous_url_until: Option<String>,
    /// An `hmac` secret set by this call, shown this once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// The `auth` of a webhook create or change: a mode, or `hmac` with its scheme.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum AuthSetting {
    /// `"none"` or `"bearer"`.
    Mode(PlainAuth),
    /// `{"mode": "none"}` or `{"mode": "bearer"}`.
    Plain {
        /// The mode.
        mode: PlainAuth,
    },
    /// `{"mode": "hmac", "scheme": …, "secret"?}`; the secret is generated when absent.
    Hmac {
        /// `hmac`.
        mode: HmacMode,
        /// The signature scheme.
        scheme: HmacScheme,
        /// The secret (in the scheme's format); generated, and shown once, when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        secret: Option<String>,
    },
}

/// A webhook auth mode without a secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PlainAuth {
    /// Anyone with the URL.
    None,
    /// An org API key.
    Bearer,
}

/// The `hmac` auth mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HmacMode {
    /// A signature of the raw body.
    Hmac,
}

/// `POST /api/v1/fleets/{fleet}/webhook` (every field optional) and its `PATCH` (a field
/// given is changed, `null` removes it, an absent one stays).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// How calls authenticate; `none` when absent at create.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthSetting>,
    /// A rate limit; null removes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// Deduplicate calls on a provider's delivery-id header; null removes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deduplicate: Option<Deduplicate>,
}

/// A rotation of a webhook's URL or secret.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateBody {
    /// How long the old URL (or secret) keeps working, in seconds; at most 7 days.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole_number"
    )]
    #[schema(maximum = 604_800)]
    pub grace_seconds: Option<u64>,
    /// For a secret rotation: the new secret, else one is generated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// A rotation of a webhook's URL: `{}` or `{"grace_seconds": N}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateUrlBody {
    /// How long the old URL keeps working, in seconds; at most 7 days.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole_number"
    )]
    #[schema(maximum = 604_800)]
    pub grace_seconds: Option<u64>,
}

/// A whole number that JSON may write as `3.0`, as JSON Schema's `integer` allows.
fn whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    n.as_u64()
        .or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < u64::MAX as f64)
                .map(|f| f as u64)
        })
        .map(Some)
        .ok_or_else(|| serde::de::Error::custom(format!("expected a whole number, not {n}")))
}

/// `PATCH /api/v1/fleets/{fleet}/webhook`: a field given is changed, `null` removes it, an
/// absent one stays; at least one.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(min_properties = 1)]
pub struct WebhookPatch {
    /// How calls authenticate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthSetting>,
    /// A rate limit; null removes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// Deduplicate calls on a provider's delivery-id header; null removes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deduplicate: Option<Deduplicate>,
}

/// `POST /api/v1/runs/{run}/replay`: `{}`, or `{"from": "<vessel>"}` to resume.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayBody {
    /// Resume from this vessel: what is neither it nor downstream of it carries over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

/// The request of a run: its id, and with the single-run answer its details.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunRequest {
    /// Request id.
    pub id: Uuid,
    /// HTTP method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// The `Content-Type` header, empty when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// Received at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub received_at: Option<String>,
    /// Headers with lower-cased names; secrets redacted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, String>>,
    /// Query-string parameters; secrets redacted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<BTreeMap<String, String>>,
    /// Body size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_size: Option<u64>,
}

/// One earlier attempt of a vessel run.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VesselAttempt {
    /// Attempt number, 1 for the first.
    pub attempt: u32,
    /// `failed`, or `running` when its worker was lost.
    pub status: VesselStatus,
    /// Why it failed.
    pub reason: Option<FailureReason>,
    /// Exit status, if the vessel ended by itself.
    pub exit_code: Option<i32>,
    /// Error message.
    pub error: Option<String>,
    /// Started at.
    #[schema(format = DateTime)]
    pub started_at: Option<String>,
    /// How long it ran.
    pub duration_ms: f64,
}

/// One vessel's part of a run.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VesselRun {
    /// Vessel name.
    pub name: String,
    /// Its status (of the last attempt).
    pub status: VesselStatus,
    /// The exit status, when the vessel got to end by itself.
    pub exit_code: Option<i32>,
    /// Why it failed.
    pub reason: Option<FailureReason>,
    /// A human-readable error (trap message, script error with its position…).
    pub error: Option<String>,
    /// Variables the vessel set.
    pub variables: BTreeMap<String, String>,
    /// Rows the vessel emitted, as `{"data", "operation"?, "primary_key"?}`.
    #[schema(value_type = Vec<Object>)]
    pub rows: Vec<Value>,
    /// Captured standard output.
    pub stdout: String,
    /// Captured standard error.
    pub stderr: String,
    /// Instructions (Wasm) or operations (Rhai) used.
    pub fuel_used: u64,
    /// Wall-clock duration in milliseconds.
    pub duration_ms: f64,
    /// Attempt of this vessel the outcome is from, 1 for the first.
    pub attempt: u32,
    /// Earlier attempts that failed and were retried, or whose worker was lost.
    pub attempts: Vec<VesselAttempt>,
    /// When the (last) attempt started.
    #[schema(format = DateTime)]
    pub started_at: Option<String>,
    /// When it ended.
    #[schema(format = DateTime)]
    pub finished_at: Option<String>,
    /// Recorded by an earlier run (resume) or attempt, not run again; absent when false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub carried_over: bool,
}

impl From<&crate::store::VesselRun> for VesselRun {
    fn from(v: &crate::store::VesselRun) -> Self {
        let o = &v.outcome;
        VesselRun {
            name: v.name.clone(),
            status: o.status,
            exit_code: o.exit_code,
            reason: o.reason,
            error: o.error.clone(),
            variables: o.variables.clone(),
            rows: o.rows.clone(),
            stdout: o.stdout.clone(),
            stderr: o.stderr.clone(),
            fuel_used: o.fuel_used,
            duration_ms: o.duration_ms,
            attempt: v.attempt,
            attempts: v
                .attempts
                .iter()
                .map(|a| VesselAttempt {
                    attempt: a.attempt,
                    status: a.status,
                    reason: a.reason,
                    exit_code: a.exit_code,
                    error: a.error.clone(),
                    started_at: a.started_at.clone(),
                    duration_ms: a.duration_ms,
                })
                .collect(),
            started_at: v.started_at.clone(),
            finished_at: v.finished_at.clone(),
            carried_over: v.carried_over,
        }
    }
}

/// A fleet run: status, request, effective variables, vessel runs with logs.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Run {
    /// Run id.
    pub id: Uuid,
    /// Its fleet.
    pub fleet_id: Uuid,
    /// Status.
    pub status: RunStatus,
    /// Attempt number, 1 for the first claim; 0 while never claimed.
    pub attempt: u32,
    /// Effective variables.
    pub variables: BTreeMap<String, String>,
    /// The request that caused it (details only in the single-run answer).
    pub request: RunRequest,
    /// Vessel runs so far.
    pub vessels: Vec<VesselRun>,
    /// A run-level error (fleet deleted, worker lost…).
    pub error: Option<String>,
    /// A typed run-level reason.
    pub reason: Option<RunReason>,
    /// Attempts whose worker was lost: `{"attempt","reason","node","started_at","lost_at"}`.
    #[schema(value_type = Vec<Object>)]
    pub lost_attempts: Vec<Value>,
    /// The run this one replays, if any.
    pub replay_of: Option<Uuid>,
    /// The vessel a resume restarted from, if this run is one.
    pub resumed_from: Option<String>,
    /// Whether a cancel was asked for while it ran.
    pub cancel_requested: bool,
    /// The value of its fleet's concurrency key variable, for a keyed policy.
    pub concurrency_key: Option<String>,
    /// Queued at.
    #[schema(format = DateTime)]
    pub created_at: String,
    /// Claimed at (latest attempt).
    #[schema(format = DateTime)]
    pub started_at: Option<String>,
    /// Finished at.
    #[schema(format = DateTime)]
    pub finished_at: Option<String>,
    /// Per destination, its deliveries (the single-run answer only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destinations: Option<Vec<DestinationSummary>>,
}

impl Run {
    /// A run as the API shows it; with its request record, the request's details too.
    pub fn new(
        run: &crate::store::RunRecord,
        request: Option<&crate::store::RequestRecord>,
    ) -> Self {
        let request = match request {
            Some(r) => RunRequest {
                id: r.id,
                method: Some(r.method.clone()),
                content_type: Some(r.content_type.clone()),
                received_at: Some(rfc3339(r.received_at)),
                headers: Some(r.headers.clone()),
                query: Some(r.query.clone()),
                body_size: Some(r.body_size),
            },
            None => RunRequest {
                id: run.request_id,
                method: None,
                content_type: None,
                received_at: None,
                headers: None,
                query: None,
                body_size: None,
            },
        };
        Run {
            id: run.id,
            fleet_id: run.fleet_id,
            status: run.status,
            attempt: run.attempt,
            variables: run.variables.clone(),
            request,
            vessels: run.vessels.iter().map(VesselRun::from).collect(),
            error: run.error.clone(),
            reason: run.reason,
            lost_attempts: run.lost_attempts.clone(),
            replay_of: run.replay_of,
            resumed_from: run.resumed_from.clone(),
            cancel_requested: run.cancel_requested,
            concurrency_key: run.concurrency_key.clone(),
            created_at: rfc3339(run.created_at),
            started_at: run.started_at.map(rfc3339),
            finished_at: run.finished_at.map(rfc3339),
            destinations: None,
        }
    }
}

/// A page of run history.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunPage {
    /// Runs, newest first, each as `GET /api/v1/runs/{run}` shows it minus the request details.
    pub runs: Vec<Run>,
    /// Pass as `before` for the next page; null on the last page.
    pub next_before: Option<Uuid>,
}

/// A fleet document (DESIGN §3): `name`, `variables`, `concurrency`, `limits`, `vessels`,
/// `destinations`. Code comes inline (`source`, `wasm_base64`) or by the `sha256` of stored
/// code. Checked by the server when saved; a refusal is a `400` naming the line or import.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(transparent)]
#[schema(value_type = Object)]
pub struct FleetDocument(pub serde_json::Map<String, Value>);

/// A fleet: its document (Rhai sources inline, Wasm by sha256), ids, webhook and times.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Fleet {
    /// The document, as saved.
    #[serde(flatten)]
    pub document: FleetDocument,
    /// Fleet id.
    pub id: Uuid,
    /// Its project.
    pub project_id: Uuid,
    /// The project's org.
    pub org_id: Uuid,
    /// Its webhook; null when it has none.
    pub webhook: Option<Webhook>,
    /// Created at.
    #[schema(format = DateTime)]
    pub created_at: String,
    /// Last replaced at.
    #[schema(format = DateTime)]
    pub updated_at: String,
}

/// What a dry run would record: `dry_run` (true), `fleet_id`, `status`, `variables`,
/// `request` and `vessels`, shaped as in a run.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(transparent)]
#[schema(value_type = Object)]
pub struct DryRunReport(pub Value);

/// A body of any content type and shape, taken as raw bytes (webhook calls, dry runs): its
/// schema allows anything.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RawBody(pub Vec<u8>);

impl utoipa::PartialSchema for RawBody {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::SchemaType::AnyValue)
            .description(Some("Any body: JSON, form, text, binary or empty"))
            .into()
    }
}

impl ToSchema for RawBody {}

/// Schemas of query parameters. The server reads an empty value as an absent one, so each
/// also allows `""`.
pub mod query {
    use utoipa::openapi::schema::{KnownFormat, OneOfBuilder, SchemaFormat};
    use utoipa::openapi::{ObjectBuilder, Ref, RefOr, Schema, Type};

    fn or_empty(schema: impl Into<RefOr<Schema>>) -> Schema {
        let empty = ObjectBuilder::new()
            .schema_type(Type::String)
            .max_length(Some(0));
        OneOfBuilder::new().item(schema).item(empty).into()
    }

    fn whole(min: i64, max: i64) -> ObjectBuilder {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(min))
            .maximum(Some(max))
    }

    /// An id.
    pub fn uuid() -> Schema {
        or_empty(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid))),
        )
    }

    /// Items per page.
    pub fn limit() -> Schema {
        or_empty(whole(1, i64::from(super::super::listing::MAX_LIMIT)))
    }

    /// A run status.
    pub fn run_status() -> Schema {
        or_empty(Ref::from_schema_name("RunStatus"))
    }

    /// The window of run statistics, in minutes.
    pub fn minutes() -> Schema {
        or_empty(whole(1, 10_080))
    }

    /// The bucket width of run statistics, in seconds.
    pub fn bucket_seconds() -> Schema {
        or_empty(whole(1, 86_400))
    }

    /// A byte count.
    pub fn bytes() -> Schema {
        or_empty(whole(1, i64::MAX))
    }
}

/// One event of a `text/event-stream` answer: its name (`status`, `vessel`, `log`, `end`) and
/// its data, a JSON object carrying `run_id`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ServerSentEvent {
    /// The event's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// Its data: a JSON object, as text.
    pub data: String,
    /// Its id, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}
