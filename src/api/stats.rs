//! Figures for charts, and a run's request body as stored: what the dashboard draws and
//! previews, open to any admin client.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{ApiError, AppState, ErrorBody, QueryParams, parse_id};
use crate::store::{RunCount, RunStatus};
use crate::util::{now_ms, rfc3339};

/// Most buckets one answer may hold.
const MAX_BUCKETS: i64 = 1000;
/// Longest window: a week.
const MAX_MINUTES: i64 = 7 * 24 * 60;
/// Body bytes sent when `max_bytes` is not given.
const DEFAULT_BODY_BYTES: usize = 64 << 10;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(run_stats))
        .routes(routes!(run_body))
}

/// The window and resolution of run figures.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct StatsQuery {
    /// The window: runs created in the last this many minutes, 1 to 10080 (default 60).
    #[param(schema_with = super::types::query::minutes)]
    minutes: Option<String>,
    /// Width of one bucket in seconds, 1 to 86400 (default 60); at most 1000 buckets per window.
    #[param(schema_with = super::types::query::bucket_seconds)]
    bucket_seconds: Option<String>,
    /// Only this fleet's runs.
    #[param(schema_with = super::types::query::uuid)]
    fleet: Option<String>,
}

/// Runs in each status.
#[derive(Debug, Default, Clone, Copy, Serialize, ToSchema)]
pub(super) struct StatusCounts {
    queued: u64,
    running: u64,
    succeeded: u64,
    failed: u64,
    cancelled: u64,
}

impl StatusCounts {
    fn add(&mut self, status: RunStatus, n: u64) {
        match status {
            RunStatus::Queued => self.queued += n,
            RunStatus::Running => self.running += n,
            RunStatus::Succeeded => self.succeeded += n,
            RunStatus::Failed => self.failed += n,
            RunStatus::Cancelled => self.cancelled += n,
        }
    }
}

/// Runs created within one bucket, by their status now.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Bucket {
    /// Start of the bucket.
    start: String,
    #[serde(flatten)]
    counts: StatusCounts,
}

/// One fleet's runs in the window.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct FleetStats {
    fleet_id: Uuid,
    /// Runs created in the window.
    runs: u64,
    /// Of them, failed.
    failed: u64,
    /// Runs created per bucket, oldest bucket first.
    per_bucket: Vec<u64>,
    /// Failed runs per bucket, oldest bucket first.
    failed_per_bucket: Vec<u64>,
}

/// The queue now.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct QueueNow {
    /// Runs waiting to be claimed (or held by a `queue` policy).
    queued: u64,
    /// When the oldest of them was queued.
    oldest_queued_at: Option<String>,
}

/// Run figures over a window.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct RunStats {
    /// Start of the first bucket (the window, aligned down to a bucket boundary).
    from: String,
    /// Width of each bucket.
    bucket_seconds: i64,
    /// Every bucket of the window, oldest first, empty ones included.
    buckets: Vec<Bucket>,
    /// The whole window.
    totals: StatusCounts,
    /// Fleets that had runs in the window, busiest first.
    fleets: Vec<FleetStats>,
    /// The queue now (every fleet).
    queue: QueueNow,
}

fn number(raw: Option<&str>, name: &str, default: i64, max: i64) -> Result<i64, ApiError> {
    match raw.filter(|s| !s.is_empty()) {
        None => Ok(default),
        Some(raw) => raw
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| {
                ApiError::BadRequest(format!("{name} {raw:?} must be a number from 1 to {max}"))
            }),
    }
}

/// Runs per bucket and status over the last `minutes`, overall and per fleet, and the queue:
/// what charts of throughput and failure rate need, in one call.
#[utoipa::path(get, path = "/stats/runs", tag = "runs", params(StatsQuery),
    responses((status = 200, body = RunStats), (status = 400, body = ErrorBody)))]
async fn run_stats(
    State(s): State<AppState>,
    QueryParams(q): QueryParams<StatsQuery>,
) -> Result<Json<RunStats>, ApiError> {
    let minutes = number(q.minutes.as_deref(), "minutes", 60, MAX_MINUTES)?;
    let bucket_s = number(q.bucket_seconds.as_deref(), "bucket_seconds", 60, 86_400)?;
    let fleet = match q.fleet.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(raw) => Some(
            Uuid::parse_str(raw)
                .map_err(|_| ApiError::BadRequest(format!("fleet {raw:?} is not a fleet id")))?,
        ),
    };
    let bucket_ms = bucket_s * 1000;
    let now = now_ms();
    // Aligned to bucket boundaries, so that a chart refreshed a little later keeps its bars.
    let since = (now - minutes * 60_000).div_euclid(bucket_ms) * bucket_ms;
    let count = (now - since) / bucket_ms + 1;
    if count > MAX_BUCKETS {
        return Err(ApiError::BadRequest(format!(
            "{minutes} minutes in buckets of {bucket_s} s would be {count} buckets; at most \
             {MAX_BUCKETS}: choose wider buckets"
        )));
    }
    let counts = s.store.run_counts(since, bucket_ms, fleet).await?;
    let queue = s.store.queue_stats().await?;
    Ok(Json(shape(
        since,
        bucket_ms,
        count as usize,
        &counts,
        queue,
    )))
}

fn shape(
    since: i64,
    bucket_ms: i64,
    count: usize,
    counts: &[RunCount],
    queue: crate::store::QueueStats,
) -> RunStats {
    let mut buckets: Vec<StatusCounts> = vec![StatusCounts::default(); count];
    let mut totals = StatusCounts::default();
    let mut fleets: BTreeMap<Uuid, FleetStats> = BTreeMap::new();
    for c in counts {
        let Some(i) = usize::try_from(c.bucket).ok().filter(|i| *i < count) else {
            continue;
        };
        buckets[i].add(c.status, c.count);
        totals.add(c.status, c.count);
        let fleet = fleets.entry(c.fleet_id).or_insert_with(|| FleetStats {
            fleet_id: c.fleet_id,
            runs: 0,
            failed: 0,
            per_bucket: vec![0; count],
            failed_per_bucket: vec![0; count],
        });
        fleet.runs += c.count;
        fleet.per_bucket[i] += c.count;
        if c.status == RunStatus::Failed {
            fleet.failed += c.count;
            fleet.failed_per_bucket[i] += c.count;
        }
    }
    let mut fleets: Vec<FleetStats> = fleets.into_values().collect();
    fleets.sort_by(|a, b| b.runs.cmp(&a.runs).then(a.fleet_id.cmp(&b.fleet_id)));
    RunStats {
        from: rfc3339(since),
        bucket_seconds: bucket_ms / 1000,
        buckets: buckets
            .into_iter()
            .enumerate()
            .map(|(i, counts)| Bucket {
                start: rfc3339(since + i as i64 * bucket_ms),
                counts,
            })
            .collect(),
        totals,
        fleets,
        queue: QueueNow {
            queued: queue.queued,
            oldest_queued_at: queue.oldest_queued_at.map(rfc3339),
        },
    }
}

/// How much of a body to send.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct BodyQuery {
    /// At most this many bytes from the start (default 65536).
    #[param(schema_with = super::types::query::bytes)]
    max_bytes: Option<String>,
}

/// The body of a run's request as it was received (up to `max_bytes`). Always sent as
/// `application/octet-stream` with `nosniff` and as an attachment, whatever the caller labelled
/// it: a stored body is untrusted content and must never render as a page of this origin.
/// `x-body-size` gives the whole body's size.
#[utoipa::path(get, path = "/runs/{run}/body", tag = "runs", params(
        ("run" = uuid::Uuid, Path, description = "Run id"), BodyQuery),
    responses((status = 200, description = "The body's bytes", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn run_body(
    State(s): State<AppState>,
    Path(run): Path<String>,
    QueryParams(q): QueryParams<BodyQuery>,
) -> Result<Response, ApiError> {
    let run = parse_id(&run, "run")?;
    let limit = s.settings.max_body_bytes.max(1) as i64;
    let max = number(
        q.max_bytes.as_deref(),
        "max_bytes",
        DEFAULT_BODY_BYTES as i64,
        i64::MAX,
    )?
    .min(limit) as usize;
    let preview = s.store.body_preview(run, max).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{run}.body\""),
            ),
            (
                header::HeaderName::from_static("x-body-size"),
                preview.body_size.to_string(),
            ),
        ],
        preview.bytes,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_land_in_their_buckets_overall_and_per_fleet() {
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let c = |fleet_id, bucket, status, count| RunCount {
            fleet_id,
            bucket,
            status,
            count,
        };
        let counts = [
            c(a, 0, RunStatus::Succeeded, 3),
            c(a, 2, RunStatus::Failed, 1),
            c(b, 2, RunStatus::Succeeded, 5),
            c(b, 9, RunStatus::Succeeded, 7), // outside the window: ignored
        ];
        let stats = shape(60_000, 60_000, 3, &counts, Default::default());
        assert_eq!(stats.buckets.len(), 3);
        assert_eq!(stats.buckets[0].start, rfc3339(60_000));
        assert_eq!(stats.buckets[2].start, rfc3339(180_000));
        assert_eq!(stats.buckets[0].counts.succeeded, 3);
        assert_eq!(stats.buckets[1].counts.succeeded, 0);
        assert_eq!(stats.buckets[2].counts.failed, 1);
        assert_eq!(stats.totals.succeeded, 8);
        assert_eq!(stats.fleets[0].fleet_id, b, "busiest first");
        assert_eq!(stats.fleets[1].per_bucket, vec![3, 0, 1]);
        assert_eq!(stats.fleets[1].failed_per_bucket, vec![0, 0, 1]);
        assert_eq!(stats.fleets[1].failed, 1);
    }
}
