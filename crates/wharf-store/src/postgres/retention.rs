//! [`Retention`] on PostgreSQL. Every node prunes; each batch takes its rows with
//! `FOR UPDATE SKIP LOCKED`, so pruners on several nodes split the work instead of waiting on
//! each other, and none of them waits on a row an admission or a worker holds.

use super::*;
use wharf_core::rules::retention::cutoffs;

#[async_trait]
impl Retention for PostgresStore {
    async fn prune(
        &self,
        finished_before: Option<i64>,
        now: i64,
        limit: usize,
    ) -> StoreResult<Pruned> {
        let limit = limit as i64;
        let mut pruned = Pruned::default();
        let cut = cutoffs(finished_before, now);
        let mut tx = self.pool.begin().await?;
        if let Some(cutoff) = cut.history {
            pruned.runs = delete(
                &mut tx,
                "DELETE FROM runs WHERE seq IN (SELECT seq FROM runs
                    WHERE finished_at < $1 AND status IN ('succeeded', 'failed', 'cancelled')
                    LIMIT $2 FOR UPDATE SKIP LOCKED)",
                cutoff,
                limit,
            )
            .await?;
            pruned.requests = delete(
                &mut tx,
                "DELETE FROM requests WHERE id IN (SELECT r.id FROM requests r
                    WHERE r.received_at < $1
                      AND NOT EXISTS (SELECT 1 FROM runs WHERE request_id = r.id)
                    LIMIT $2 FOR UPDATE SKIP LOCKED)",
                cutoff,
                limit,
            )
            .await?;
            pruned.deliveries = delete(
                &mut tx,
                "DELETE FROM deliveries WHERE id IN (SELECT d.id FROM deliveries d
                    WHERE d.created_at < $1
                      AND NOT EXISTS (SELECT 1 FROM runs WHERE id = d.run_id)
                    LIMIT $2 FOR UPDATE SKIP LOCKED)",
                cutoff,
                limit,
            )
            .await?;
        }
        pruned.keys = delete(
            &mut tx,
            "DELETE FROM idempotency_keys WHERE (fleet_id, key) IN
                (SELECT fleet_id, key FROM idempotency_keys WHERE created_at <= $1
                 LIMIT $2 FOR UPDATE SKIP LOCKED)",
            cut.keys,
            limit,
        )
        .await?;
        pruned.rate_states = delete(
            &mut tx,
            "DELETE FROM rate_limits WHERE fleet_id IN
                (SELECT fleet_id FROM rate_limits WHERE tat_us <= $1
                 LIMIT $2 FOR UPDATE SKIP LOCKED)",
            cut.rate_us,
            limit,
        )
        .await?;
        pruned.sessions = delete(
            &mut tx,
            "DELETE FROM revoked_sessions WHERE id_hash IN
                (SELECT id_hash FROM revoked_sessions WHERE until <= $1
                 LIMIT $2 FOR UPDATE SKIP LOCKED)",
            cut.sessions,
            limit,
        )
        .await?;
        tx.commit().await?;
        Ok(pruned)
    }
}

/// One bounded delete of a pruning pass: `sql` takes the cutoff as `$1` and the batch size as
/// `$2`; the rows deleted.
async fn delete(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    sql: &'static str,
    cutoff: i64,
    limit: i64,
) -> StoreResult<u64> {
    Ok(sqlx::query(sql)
        .bind(cutoff)
        .bind(limit)
        .execute(&mut **tx)
        .await?
        .rows_affected())
}
