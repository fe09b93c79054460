//! [`Retention`] on SQLite: each batch is one job on the writer thread, bounded so that the
//! ingest calls waiting behind it wait for a few milliseconds at most.

use super::*;
use wharf_core::rules::retention::cutoffs;

#[async_trait]
impl Retention for SqliteStore {
    async fn prune(
        &self,
        finished_before: Option<i64>,
        now: i64,
        limit: usize,
    ) -> StoreResult<Pruned> {
        self.write(move |c| {
            let mut pruned = Pruned::default();
            let cut = cutoffs(finished_before, now);
            if let Some(cutoff) = cut.history {
                pruned.runs = delete(
                    c,
                    "DELETE FROM runs WHERE seq IN (SELECT seq FROM runs
                            WHERE finished_at < ?1 AND status IN ('succeeded', 'failed', 'cancelled')
                            LIMIT {limit})",
                    cutoff,
                    limit,
                )?;
                // Runs first, in the same transaction: their requests go in this batch too.
                pruned.requests = delete(
                    c,
                    "DELETE FROM requests WHERE id IN (SELECT r.id FROM requests r
                            WHERE r.received_at < ?1
                              AND NOT EXISTS (SELECT 1 FROM runs WHERE request_id = r.id)
                            LIMIT {limit})",
                    cutoff,
                    limit,
                )?;
                pruned.deliveries = delete(
                    c,
                    "DELETE FROM deliveries WHERE id IN (SELECT d.id FROM deliveries d
                            WHERE d.created_at < ?1
                              AND NOT EXISTS (SELECT 1 FROM runs WHERE id = d.run_id)
                            LIMIT {limit})",
                    cutoff,
                    limit,
                )?;
            }
            pruned.keys = delete(
                c,
                "DELETE FROM idempotency_keys WHERE (fleet_id, key) IN
                        (SELECT fleet_id, key FROM idempotency_keys WHERE created_at <= ?1
                         LIMIT {limit})",
                cut.keys,
                limit,
            )?;
            pruned.rate_states = delete(
                c,
                "DELETE FROM rate_limits WHERE fleet_id IN
                        (SELECT fleet_id FROM rate_limits WHERE tat_us <= ?1 LIMIT {limit})",
                cut.rate_us,
                limit,
            )?;
            pruned.sessions = delete(
                c,
                "DELETE FROM revoked_sessions WHERE id_hash IN
                        (SELECT id_hash FROM revoked_sessions WHERE until <= ?1 LIMIT {limit})",
                cut.sessions,
                limit,
            )?;
            Ok(pruned)
        })
        .await
    }
}

/// One bounded delete of a pruning pass: `sql` takes the cutoff as `?1` and names the batch size
/// as `{limit}`, written into the text as in claims (a bound LIMIT makes SQLite re-prepare); the
/// rows deleted.
fn delete(c: &rusqlite::Connection, sql: &str, cutoff: i64, limit: usize) -> StoreResult<u64> {
    let sql = sql.replace("{limit}", &limit.to_string());
    Ok(c.prepare_cached(&sql)?.execute([cutoff])? as u64)
}
