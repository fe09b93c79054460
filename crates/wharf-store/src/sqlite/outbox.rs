//! [`Outbox`] on SQLite: deliveries are written in the run's finishing transaction; claims and
//! records are jobs on the writer thread like every other write.

use rusqlite::{OptionalExtension, params};

use wharf_core::rules::delivery;
use wharf_core::util::now_ms;

use super::*;

/// A delivery encoded for the writer: id, fleet, destination, batch, batches, rows, request
/// JSON, body.
pub(super) type Encoded = (String, String, String, u32, u32, u32, String, String);

/// Encodes deliveries off the writer thread.
pub(super) fn encode(deliveries: &[NewDelivery]) -> StoreResult<Vec<Encoded>> {
    deliveries
        .iter()
        .map(|d| {
            Ok((
                d.id.to_string(),
                d.fleet_id.to_string(),
                d.destination.clone(),
                d.batch,
                d.batches,
                d.rows,
                serde_json::to_string(&d.request)?,
                d.body.clone(),
            ))
        })
        .collect()
}

/// Inserts a run's deliveries, due at once.
pub(super) fn insert(c: &Connection, run_id: Uuid, rows: &[Encoded], now: i64) -> StoreResult<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut insert = c.prepare_cached(
        "INSERT INTO deliveries (id, run_id, fleet_id, destination, batch, batches, row_count,
                request, body, status, next_at, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'pending', ?10, ?10)",
    )?;
    let run = run_id.to_string();
    for (id, fleet, dest, batch, batches, count, request, body) in rows {
        insert.execute(params![
            id, run, fleet, dest, batch, batches, count, request, body, now
        ])?;
    }
    Ok(())
}

const COLUMNS: &str = "id, run_id, fleet_id, destination, batch, batches, row_count, request, \
    status, attempt_log, next_at, lease_token, created_at, finished_at";

fn delivery_from(row: &Row, with_body: bool) -> rusqlite::Result<Delivery> {
    let status: String = row.get("status")?;
    let status = DeliveryStatus::parse(&status).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            format!("unknown delivery status {status:?}").into(),
        )
    })?;
    Ok(Delivery {
        id: uuid_at(row, "id")?,
        run_id: uuid_at(row, "run_id")?,
        fleet_id: uuid_at(row, "fleet_id")?,
        destination: row.get("destination")?,
        batch: row.get("batch")?,
        batches: row.get("batches")?,
        rows: row.get("row_count")?,
        status,
        attempts: json_at(row, "attempt_log")?,
        next_attempt_at: if status == DeliveryStatus::Pending {
            row.get("next_at")?
        } else {
            None
        },
        request: json_at(row, "request")?,
        body: if with_body { row.get("body")? } else { None },
        token: row.get::<_, Option<i64>>("lease_token")?.unwrap_or(0),
        created_at: row.get("created_at")?,
        finished_at: row.get("finished_at")?,
    })
}

#[async_trait]
impl Outbox for SqliteStore {
    async fn claim_deliveries(
        &self,
        node: &str,
        max: usize,
        per_destination: usize,
        now: i64,
        lease_until: i64,
    ) -> StoreResult<Vec<Delivery>> {
        let node = node.to_owned();
        self.write(move |c| {
            let token: i64 = rand::random::<i64>() & i64::MAX;
            // Leased deliveries count against their destination's share (they rank first), so
            // a destination with slow sends in flight gets no more slots until they end.
            let mut claim = c.prepare_cached(&format!(
                "UPDATE deliveries SET lease_owner = ?1, lease_token = ?2, lease_until = ?3
                 WHERE id IN (
                    SELECT id FROM (
                        SELECT id, next_at, busy, row_number() OVER (
                            PARTITION BY fleet_id, destination ORDER BY busy DESC, next_at) AS rn
                        FROM (SELECT id, fleet_id, destination, next_at,
                                     (lease_until IS NOT NULL AND lease_until >= ?4) AS busy
                              FROM deliveries
                              WHERE status = 'pending'
                                AND (next_at <= ?4 OR (lease_until IS NOT NULL AND lease_until >= ?4))))
                    WHERE busy = 0 AND rn <= ?5
                    ORDER BY next_at LIMIT {max})
                 RETURNING {COLUMNS}, body"
            ))?;
            let claimed = claim
                .query_map(
                    params![node, token, lease_until, now, per_destination as i64],
                    |r| delivery_from(r, true),
                )?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(claimed)
        })
        .await
    }

    async fn record_attempts(&self, records: Vec<AttemptRecord>) -> StoreResult<Vec<bool>> {
        let encoded = records
            .iter()
            .map(|r| Ok(serde_json::to_value(&r.attempt)?))
            .collect::<StoreResult<Vec<_>>>()?;
        self.write(move |c| {
            let now = now_ms();
            let mut out = Vec::with_capacity(records.len());
            for (r, attempt) in records.iter().zip(encoded) {
                let log: Option<String> = c
                    .prepare_cached(
                        "SELECT attempt_log FROM deliveries
                         WHERE id = ?1 AND lease_token = ?2 AND status = 'pending'",
                    )?
                    .query_row(params![r.id.to_string(), r.token], |row| row.get(0))
                    .optional()?;
                let Some(log) = log else {
                    out.push(false);
                    continue;
                };
                let mut log: Vec<serde_json::Value> = serde_json::from_str(&log)?;
                log.push(attempt);
                let after = delivery::after_attempt(r.verdict, now);
                c.prepare_cached(
                    "UPDATE deliveries SET status = ?1, next_at = ?2, finished_at = ?3,
                            attempts = attempts + 1, attempt_log = ?4, lease_owner = NULL,
                            lease_token = NULL, lease_until = NULL
                     WHERE id = ?5",
                )?
                .execute(params![
                    after.status.as_str(),
                    after.next_at,
                    after.finished_at,
                    serde_json::to_string(&log)?,
                    r.id.to_string()
                ])?;
                out.push(true);
            }
            Ok(out)
        })
        .await
    }

    async fn release_deliveries(&self) -> StoreResult<u64> {
        self.write(|c| {
            Ok(c.prepare_cached(
                "UPDATE deliveries SET lease_owner = NULL, lease_token = NULL, lease_until = NULL
                 WHERE lease_token IS NOT NULL",
            )?
            .execute([])? as u64)
        })
        .await
    }

    async fn run_deliveries(&self, run_id: Uuid) -> StoreResult<Vec<Delivery>> {
        self.read(move |c| {
            let mut q = c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM deliveries WHERE run_id = ?1 ORDER BY destination, batch"
            ))?;
            let rows = q
                .query_map([run_id.to_string()], |r| delivery_from(r, false))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn deliveries_with_legacy_seals(&self) -> StoreResult<Vec<Delivery>> {
        self.read(|c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {COLUMNS} FROM deliveries
                 WHERE status = 'pending' AND request LIKE '%\"v1:%'"
            ))?;
            Ok(stmt
                .query_map([], |row| delivery_from(row, false))?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn set_delivery_request(&self, id: Uuid, request: &DeliveryRequest) -> StoreResult<()> {
        let request = serde_json::to_string(request)?;
        self.write(move |c| {
            c.execute(
                "UPDATE deliveries SET request = ?2 WHERE id = ?1",
                params![id.to_string(), request],
            )?;
            Ok(())
        })
        .await
    }

    async fn retry_delivery(&self, id: Uuid, now: i64) -> StoreResult<Delivery> {
        self.write(move |c| {
            let status: Option<String> = c
                .prepare_cached("SELECT status FROM deliveries WHERE id = ?1")?
                .query_row([id.to_string()], |r| r.get(0))
                .optional()?;
            let status = status.ok_or(StoreError::NotFound("delivery"))?;
            let status = DeliveryStatus::parse(&status)
                .ok_or_else(|| StoreError::Corrupt(format!("delivery status {status:?}")))?;
            let after = delivery::retry(id, status, now)
                .map_err(|refused| StoreError::Conflict(refused.to_string()))?;
            let d = c
                .prepare_cached(&format!(
                    "UPDATE deliveries SET status = ?2, next_at = ?3, finished_at = ?4
                     WHERE id = ?1 RETURNING {COLUMNS}"
                ))?
                .query_row(
                    params![
                        id.to_string(),
                        after.status.as_str(),
                        after.next_at,
                        after.finished_at
                    ],
                    |r| delivery_from(r, false),
                )?;
            Ok(d)
        })
        .await
    }
}
