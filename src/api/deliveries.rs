//! Deliveries of a run's rows to its fleet's destinations (DESIGN §4b): listing a run's
//! deliveries with their attempts, and retrying a failed one by hand.

use axum::Json;
use axum::extract::{Path, State};

use super::types::{self, DeliveryList, DestinationSummary};
use super::{ApiError, AppState, ErrorBody, parse_id};
use crate::store::{Delivery, DeliveryStatus};
use crate::util::now_ms;

/// Per destination: deliveries delivered, pending and failed, and attempts made, in the order
/// the destinations first appear.
pub(super) fn destinations(deliveries: &[Delivery]) -> Vec<DestinationSummary> {
    let mut out: Vec<(String, [u64; 4])> = Vec::new();
    for d in deliveries {
        let i = match out.iter().position(|(n, _)| n == &d.destination) {
            Some(i) => i,
            None => {
                out.push((d.destination.clone(), [0; 4]));
                out.len() - 1
            }
        };
        let counts = &mut out[i].1;
        match d.status {
            DeliveryStatus::Delivered => counts[0] += 1,
            DeliveryStatus::Pending => counts[1] += 1,
            DeliveryStatus::Failed => counts[2] += 1,
        }
        counts[3] += d.attempts.len() as u64;
    }
    out.into_iter()
        .map(
            |(name, [delivered, pending, failed, attempts])| DestinationSummary {
                name,
                delivered,
                pending,
                failed,
                attempts,
            },
        )
        .collect()
}

/// The run's deliveries, by destination and batch, each with every attempt made.
#[utoipa::path(get, path = "/runs/{run}/deliveries", tag = "deliveries",
    params(("run" = uuid::Uuid, Path, description = "Run id")),
    responses((status = 200, body = DeliveryList),
        (status = 404, body = ErrorBody)))]
pub(super) async fn run_deliveries(
    State(s): State<AppState>,
    Path(run): Path<String>,
) -> Result<Json<DeliveryList>, ApiError> {
    let id = parse_id(&run, "run")?;
    s.store.run(id).await?;
    let deliveries = s.store.run_deliveries(id).await?;
    Ok(Json(DeliveryList {
        deliveries: deliveries.iter().map(types::Delivery::from).collect(),
    }))
}

/// Sends a failed delivery again: it goes back to pending, due now, for one more attempt (its
/// `max_attempts` used up, a failure of that attempt fails it again). `409` unless it is failed.
#[utoipa::path(post, path = "/deliveries/{id}/retry", tag = "deliveries",
    params(("id" = uuid::Uuid, Path, description = "Delivery id")),
    responses((status = 200, description = "The delivery, pending", body = types::Delivery),
        (status = 404, body = ErrorBody),
        (status = 409, description = "The delivery is not failed", body = ErrorBody)))]
pub(super) async fn retry_delivery(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<types::Delivery>, ApiError> {
    let id = parse_id(&id, "delivery")?;
    let d = s.store.retry_delivery(id, now_ms()).await?;
    s.scheduler.wake_deliveries();
    Ok(Json(types::Delivery::from(&d)))
}
