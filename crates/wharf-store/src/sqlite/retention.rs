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
            // The limit is in the text, as in claims: a bound LIMIT makes SQLite re-prepare.
            if let Some(cutoff) = cut.history {
                pruned.runs = c
                    .prepare_cached(&format!(
                        "DELETE FROM runs WHERE seq IN (SELECT seq FROM runs
                            WHERE finished_at < ?1 AND status IN ('succeeded', 'failed', 'cancelled')
                            LIMIT {limit})"
                    ))?
                    .execute([cutoff])? as u64;
                // Runs first, in the same transaction: their requests go in this batch too.
                pruned.requests = c
                    .prepare_cached(&format!(
                        "DELETE FROM requests WHERE id IN (SELECT r.id FROM requests r
                            WHERE r.received_at < ?1
                              AND NOT EXISTS (SELECT 1 FROM runs WHERE request_id = r.id)
                            LIMIT {limit})"
                    ))?
                    .execute([cutoff])? as u64;
                pruned.deliveries = c
                    .prepare_cached(&format!(
                        "DELETE FROM deliveries WHERE id IN (SELECT d.id FROM deliveries d
                            WHERE d.created_at < ?1
                              AND NOT EXISTS (SELECT 1 FROM runs WHERE id = d.run_id)
                            LIMIT {limit})"
                    ))?
                    .execute([cutoff])? as u64;
            }
            pruned.keys = c
                .prepare_cached(&format!(
                    "DELETE FROM idempotency_keys WHERE (fleet_id, key) IN
                        (SELECT fleet_id, key FROM idempotency_keys WHERE created_at <= ?1
                         LIMIT {limit})"
                ))?
                .execute([cut.keys])? as u64;
            pruned.rate_states = c
                .prepare_cached(&format!(
                    "DELETE FROM rate_limits WHERE fleet_id IN
                        (SELECT fleet_id FROM rate_limits WHERE tat_us <= ?1 LIMIT {limit})"
                ))?
                .execute([cut.rate_us])? as u64;
            pruned.sessions = c
                .prepare_cached(&format!(
                    "DELETE FROM revoked_sessions WHERE id_hash IN
                        (SELECT id_hash FROM revoked_sessions WHERE until <= ?1 LIMIT {limit})"
                ))?
                .execute([cut.sessions])? as u64;
            Ok(pruned)
        })
        .await
    }
}
