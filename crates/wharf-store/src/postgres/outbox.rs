//! [`Outbox`] on PostgreSQL: claims take due deliveries with `FOR UPDATE SKIP LOCKED` and a
//! fenced lease, so two nodes never send one delivery at once and never wait on each other.

use super::*;
use wharf_core::rules::delivery;
use wharf_core::util::now_ms;

/// Inserts deliveries (with their run ids) in the finishing transaction, in one statement.
pub(super) async fn insert(
    tx: &mut sqlx::PgConnection,
    deliveries: &[(Uuid, &NewDelivery)],
    now: i64,
) -> StoreResult<()> {
    if deliveries.is_empty() {
        return Ok(());
    }
    let mut requests = Vec::with_capacity(deliveries.len());
    for (_, d) in deliveries {
        requests.push(serde_json::to_string(&d.request)?);
    }
    sqlx::query(
        "INSERT INTO deliveries (id, run_id, fleet_id, destination, batch, batches, row_count,
                request, body, status, next_at, created_at)
         SELECT u.id, u.run_id, u.fleet_id, u.destination, u.batch, u.batches, u.row_count,
                u.request, u.body, 'pending', $10, $10
         FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::int8[], $6::int8[],
                     $7::int8[], $8::text[], $9::text[])
              AS u(id, run_id, fleet_id, destination, batch, batches, row_count, request, body)",
    )
    .bind(deliveries.iter().map(|(_, d)| d.id).collect::<Vec<_>>())
    .bind(deliveries.iter().map(|(r, _)| *r).collect::<Vec<_>>())
    .bind(
        deliveries
            .iter()
            .map(|(_, d)| d.fleet_id)
            .collect::<Vec<_>>(),
    )
    .bind(
        deliveries
            .iter()
            .map(|(_, d)| d.destination.clone())
            .collect::<Vec<_>>(),
    )
    .bind(
        deliveries
            .iter()
            .map(|(_, d)| i64::from(d.batch))
            .collect::<Vec<_>>(),
    )
    .bind(
        deliveries
            .iter()
            .map(|(_, d)| i64::from(d.batches))
            .collect::<Vec<_>>(),
    )
    .bind(
        deliveries
            .iter()
            .map(|(_, d)| i64::from(d.rows))
            .collect::<Vec<_>>(),
    )
    .bind(requests)
    .bind(
        deliveries
            .iter()
            .map(|(_, d)| d.body.clone())
            .collect::<Vec<_>>(),
    )
    .bind(now)
    .execute(tx)
    .await?;
    Ok(())
}

const COLUMNS: &str = "d.id, d.run_id, d.fleet_id, d.destination, d.batch, d.batches, \
    d.row_count, d.request, d.status, d.attempt_log, d.next_at, d.lease_token, d.created_at, \
    d.finished_at";

fn delivery_from(row: &PgRow, with_body: bool) -> StoreResult<Delivery> {
    let status: String = row.try_get("status")?;
    let status = DeliveryStatus::parse(&status)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown delivery status {status:?}")))?;
    let next_at: Option<i64> = row.try_get("next_at")?;
    Ok(Delivery {
        id: row.try_get("id")?,
        run_id: row.try_get("run_id")?,
        fleet_id: row.try_get("fleet_id")?,
        destination: row.try_get("destination")?,
        batch: row.try_get::<i64, _>("batch")? as u32,
        batches: row.try_get::<i64, _>("batches")? as u32,
        rows: row.try_get::<i64, _>("row_count")? as u32,
        status,
        attempts: serde_json::from_str(&row.try_get::<String, _>("attempt_log")?)?,
        next_attempt_at: if status == DeliveryStatus::Pending {
            next_at
        } else {
            None
        },
        request: serde_json::from_str(&row.try_get::<String, _>("request")?)?,
        body: if with_body {
            Some(row.try_get("body")?)
        } else {
            None
        },
        token: row.try_get::<Option<i64>, _>("lease_token")?.unwrap_or(0),
        created_at: row.try_get("created_at")?,
        finished_at: row.try_get("finished_at")?,
    })
}

#[async_trait]
impl Outbox for PostgresStore {
    async fn claim_deliveries(
        &self,
        node: &str,
        max: usize,
        per_destination: usize,
        now: i64,
        lease_until: i64,
    ) -> StoreResult<Vec<Delivery>> {
        let token: i64 = rand::random::<i64>() & i64::MAX;
        // Leased deliveries rank first in their destination's window, so they count against its
        // share; rows another node is claiming right now are skipped, not waited for.
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "WITH ranked AS (
                SELECT id, busy, row_number() OVER (
                    PARTITION BY fleet_id, destination ORDER BY busy DESC, next_at) AS rn
                FROM (SELECT id, fleet_id, destination, next_at,
                             (lease_until IS NOT NULL AND lease_until >= $4) AS busy
                      FROM deliveries
                      WHERE status = 'pending'
                        AND (next_at <= $4 OR (lease_until IS NOT NULL AND lease_until >= $4))) w
             ),
             picked AS (
                SELECT d.id FROM deliveries d
                WHERE d.id IN (SELECT id FROM ranked WHERE NOT busy AND rn <= $5)
                  AND d.status = 'pending' AND d.next_at <= $4
                  AND (d.lease_until IS NULL OR d.lease_until < $4)
                ORDER BY d.next_at LIMIT $6
                FOR UPDATE SKIP LOCKED
             )
             UPDATE deliveries d SET lease_owner = $1, lease_token = $2, lease_until = $3
             FROM picked WHERE d.id = picked.id
             RETURNING {COLUMNS}, d.body"
        )))
        .bind(node)
        .bind(token)
        .bind(lease_until)
        .bind(now)
        .bind(per_destination as i64)
        .bind(max as i64)
        .fetch_all(&self.pool)
        .await?;
        let mut out = rows
            .iter()
            .map(|r| delivery_from(r, true))
            .collect::<StoreResult<Vec<_>>>()?;
        out.sort_by_key(|d| d.next_attempt_at);
        Ok(out)
    }

    async fn record_attempts(&self, records: Vec<AttemptRecord>) -> StoreResult<Vec<bool>> {
        let mut tx = self.pool.begin().await?;
        let now = now_ms();
        let mut out = Vec::with_capacity(records.len());
        for r in &records {
            let after = delivery::after_attempt(r.verdict, now);
            let done = sqlx::query(
                "UPDATE deliveries SET status = $1, next_at = $2, finished_at = $3,
                        attempts = attempts + 1,
                        attempt_log = (attempt_log::jsonb || jsonb_build_array($4::jsonb))::text,
                        lease_owner = NULL, lease_token = NULL, lease_until = NULL
                 WHERE id = $5 AND lease_token = $6 AND status = 'pending'",
            )
            .bind(after.status.as_str())
            .bind(after.next_at)
            .bind(after.finished_at)
            .bind(serde_json::to_string(&r.attempt)?)
            .bind(r.id)
            .bind(r.token)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            out.push(done == 1);
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn release_deliveries(&self) -> StoreResult<u64> {
        Ok(sqlx::query(
            "UPDATE deliveries SET lease_owner = NULL, lease_token = NULL, lease_until = NULL
             WHERE lease_token IS NOT NULL",
        )
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    async fn run_deliveries(&self, run_id: Uuid) -> StoreResult<Vec<Delivery>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM deliveries d WHERE d.run_id = $1 ORDER BY d.destination, d.batch"
        )))
        .bind(run_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| delivery_from(r, false)).collect()
    }

    async fn deliveries_with_legacy_seals(&self) -> StoreResult<Vec<Delivery>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM deliveries d
             WHERE d.status = 'pending' AND d.request LIKE '%\"v1:%'"
        )))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| delivery_from(r, false)).collect()
    }

    async fn set_delivery_request(&self, id: Uuid, request: &DeliveryRequest) -> StoreResult<()> {
        sqlx::query("UPDATE deliveries SET request = $2 WHERE id = $1")
            .bind(id)
            .bind(serde_json::to_string(request)?)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn retry_delivery(&self, id: Uuid, now: i64) -> StoreResult<Delivery> {
        let mut tx = self.pool.begin().await?;
        let status: Option<String> =
            sqlx::query_scalar("SELECT status FROM deliveries WHERE id = $1 FOR UPDATE")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        let status = status.ok_or(StoreError::NotFound("delivery"))?;
        let status = DeliveryStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("delivery status {status:?}")))?;
        let after = delivery::retry(id, status, now)
            .map_err(|refused| StoreError::Conflict(refused.to_string()))?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE deliveries d SET status = $2, next_at = $3, finished_at = $4
             WHERE d.id = $1 RETURNING {COLUMNS}"
        )))
        .bind(id)
        .bind(after.status.as_str())
        .bind(after.next_at)
        .bind(after.finished_at)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        delivery_from(&row, false)
    }
}
