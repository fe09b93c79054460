//! [`Queue`] on PostgreSQL: the SQLite store's semantics, made safe between nodes.
//!
//! Lock order, which keeps these transactions free of deadlocks: a transaction takes fleet
//! advisory locks in ascending fleet order, and never waits for a run row while holding one
//! except for the held runs of a fleet whose lock it holds (which nobody else touches then).

use std::collections::{BTreeSet, HashMap};

use super::*;
use crate::fleet::Concurrency;
use crate::util::now_ms;

impl PostgresStore {
    /// Locks the fleets (ascending) and releases each one's next held run.
    async fn release_many(tx: &mut sqlx::PgConnection, fleets: BTreeSet<Uuid>) -> StoreResult<()> {
        for fleet_id in fleets {
            lock_fleet(tx, fleet_id).await?;
            release_next(tx, fleet_id).await?;
        }
        Ok(())
    }
}

#[async_trait]
impl Queue for PostgresStore {
    fn work_signal(&self) -> Option<Arc<Notify>> {
        Some(self.work.clone())
    }

    fn is_shared(&self) -> bool {
        true
    }

    async fn enqueue(&self, batch: Vec<Ingest>) -> StoreResult<Vec<Admission>> {
        let mut tx = self.pool.begin().await?;
        let guarded: BTreeSet<Uuid> = batch
            .iter()
            .filter(|i| i.policy != Concurrency::Parallel)
            .map(|i| i.request.fleet_id)
            .collect();
        for fleet_id in &guarded {
            lock_fleet(&mut tx, *fleet_id).await?;
        }
        let mut out = Vec::with_capacity(batch.len());
        let mut claimable = false;
        for item in &batch {
            let r = &item.request;
            let held = match item.policy {
                Concurrency::Parallel => false,
                policy => {
                    let active: bool = sqlx::query_scalar(
                        "SELECT EXISTS (SELECT 1 FROM runs WHERE fleet_id = $1
                            AND status IN ('queued', 'running') AND (NOT $2 OR serial))",
                    )
                    .bind(r.fleet_id)
                    .bind(policy == Concurrency::Queue)
                    .fetch_one(&mut *tx)
                    .await?;
                    if active && policy == Concurrency::Reject {
                        out.push(Admission::Busy);
                        continue;
                    }
                    active
                }
            };
            sqlx::query(
                "INSERT INTO requests
                   (id, fleet_id, method, content_type, headers, query, body, body_size, received_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(r.id)
            .bind(r.fleet_id)
            .bind(&r.method)
            .bind(&r.content_type)
            .bind(serde_json::to_string(&r.headers)?)
            .bind(serde_json::to_string(&r.query)?)
            .bind(&r.body)
            .bind(r.body_size as i64)
            .bind(r.received_at)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO runs (id, fleet_id, request_id, status, serial, held, created_at)
                 VALUES ($1, $2, $3, 'queued', $4, $5, $6)",
            )
            .bind(item.run_id)
            .bind(r.fleet_id)
            .bind(r.id)
            .bind(item.policy == Concurrency::Queue)
            .bind(held)
            .bind(r.received_at)
            .execute(&mut *tx)
            .await?;
            claimable |= !held;
            out.push(Admission::Queued);
        }
        if claimable {
            notify(&mut tx, QUEUE_CHANNEL).await?;
        }
        // synchronous_commit is on by default: the commit is durable before it returns.
        tx.commit().await?;
        Ok(out)
    }

    async fn claim(&self, node: &str, max: usize, lease_until: i64) -> StoreResult<Vec<Claimed>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE runs SET status = 'running', attempt = attempt + 1, lease_owner = $1,
                    lease_token = (random() * 9000000000000000000)::bigint, lease_until = $2,
                    started_at = $3, vessels = '[]'
             WHERE seq IN (SELECT seq FROM runs WHERE status = 'queued' AND NOT held
                           ORDER BY seq LIMIT $4 FOR UPDATE SKIP LOCKED)
             RETURNING seq, lease_token, {RUN_COLUMNS}"
        )))
        .bind(node)
        .bind(lease_until)
        .bind(now_ms())
        .bind(max as i64)
        .fetch_all(&mut *tx)
        .await?;
        let mut runs = rows
            .iter()
            .map(|row| {
                Ok((
                    row.try_get::<i64, _>("seq")?,
                    row.try_get::<i64, _>("lease_token")?,
                    run_from(row)?,
                ))
            })
            .collect::<StoreResult<Vec<_>>>()?;
        runs.sort_unstable_by_key(|(seq, _, _)| *seq);
        let request_ids: Vec<Uuid> = runs.iter().map(|(_, _, r)| r.request_id).collect();
        let fleet_ids: Vec<Uuid> = runs.iter().map(|(_, _, r)| r.fleet_id).collect();
        let mut requests: HashMap<Uuid, RequestRecord> = HashMap::new();
        for row in sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {REQUEST_COLUMNS}, body FROM requests WHERE id = ANY($1)"
        )))
        .bind(&request_ids)
        .fetch_all(&mut *tx)
        .await?
        {
            let body: Vec<u8> = row.try_get("body")?;
            let req = request_from(&row, body)?;
            requests.insert(req.id, req);
        }
        // Read fresh with the claim: another node may have replaced the fleet a moment ago.
        let mut fleets: HashMap<Uuid, Arc<Fleet>> = HashMap::new();
        for row in sqlx::query(sqlx::AssertSqlSafe(format!(
            "{FLEET_SELECT} WHERE f.id = ANY($1)"
        )))
        .bind(&fleet_ids)
        .fetch_all(&mut *tx)
        .await?
        {
            let fleet = fleet_from(&row)?;
            fleets.insert(fleet.id, Arc::new(fleet));
        }
        tx.commit().await?;
        runs.into_iter()
            .map(|(_, token, run)| {
                let request =
                    requests
                        .remove(&run.request_id)
                        .ok_or(StoreError::Corrupt(format!(
                            "run {} has no request",
                            run.id
                        )))?;
                Ok(Claimed {
                    lease: Lease {
                        run_id: run.id,
                        token,
                    },
                    fleet: fleets.get(&run.fleet_id).cloned(),
                    request,
                    run,
                })
            })
            .collect()
    }

    async fn renew(
        &self,
        node: &str,
        leases: &[Lease],
        lease_until: i64,
    ) -> StoreResult<Vec<Lease>> {
        let held: std::collections::HashSet<(Uuid, i64)> = sqlx::query(
            "UPDATE runs SET lease_until = $1 WHERE status = 'running' AND lease_owner = $2
             RETURNING id, lease_token",
        )
        .bind(lease_until)
        .bind(node)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| Ok((r.try_get("id")?, r.try_get("lease_token")?)))
        .collect::<StoreResult<_>>()?;
        Ok(leases
            .iter()
            .filter(|l| !held.contains(&(l.run_id, l.token)))
            .copied()
            .collect())
    }

    async fn progress(
        &self,
        lease: Lease,
        vars: &BTreeMap<String, String>,
        vessels: &[VesselRun],
    ) -> StoreResult<bool> {
        let n = sqlx::query(
            "UPDATE runs SET variables = $1, vessels = $2
             WHERE id = $3 AND lease_token = $4 AND status = 'running'",
        )
        .bind(serde_json::to_string(vars)?)
        .bind(serde_json::to_string(vessels)?)
        .bind(lease.run_id)
        .bind(lease.token)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    async fn finish(&self, done: Vec<(Lease, Finish)>) -> StoreResult<Vec<bool>> {
        let mut tx = self.pool.begin().await?;
        let now = now_ms();
        let mut out = Vec::with_capacity(done.len());
        let mut serial = BTreeSet::new();
        for (lease, f) in &done {
            let ended = sqlx::query(
                "UPDATE runs SET status = $1, variables = $2, vessels = $3, error = $4, reason = $5,
                        finished_at = $6, lease_owner = NULL, lease_token = NULL, lease_until = NULL
                 WHERE id = $7 AND lease_token = $8 AND status = 'running'
                 RETURNING fleet_id, serial",
            )
            .bind(f.status.as_str())
            .bind(serde_json::to_string(&f.variables)?)
            .bind(serde_json::to_string(&f.vessels)?)
            .bind(&f.error)
            .bind(&f.reason)
            .bind(now)
            .bind(lease.run_id)
            .bind(lease.token)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(row) = &ended
                && row.try_get::<bool, _>("serial")?
            {
                serial.insert(row.try_get::<Uuid, _>("fleet_id")?);
            }
            out.push(ended.is_some());
        }
        Self::release_many(&mut tx, serial).await?;
        tx.commit().await?;
        Ok(out)
    }

    async fn release(&self, leases: &[Lease]) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        for lease in leases {
            sqlx::query(
                "UPDATE runs SET status = 'queued', attempt = attempt - 1, lease_owner = NULL,
                        lease_token = NULL, lease_until = NULL, started_at = NULL, vessels = '[]'
                 WHERE id = $1 AND lease_token = $2 AND status = 'running'",
            )
            .bind(lease.run_id)
            .bind(lease.token)
            .execute(&mut *tx)
            .await?;
        }
        if !leases.is_empty() {
            notify(&mut tx, QUEUE_CHANNEL).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn requeue_expired(
        &self,
        now: i64,
        all: bool,
        max_attempts: u32,
    ) -> StoreResult<Requeued> {
        const LOST: &str = "lost_attempts = lost_attempts || jsonb_build_array(jsonb_build_object(
                'attempt', attempt, 'reason', 'node_lost', 'node', lease_owner,
                'started_at', started_at, 'lost_at', $1::bigint))";
        let mut tx = self.pool.begin().await?;
        let failed = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE runs SET status = 'failed', reason = 'max_attempts',
                error = 'max_attempts: ' || attempt || ' attempts ended without finishing (the worker was lost each time)',
                finished_at = $1, lease_owner = NULL, lease_token = NULL, lease_until = NULL, {LOST}
             WHERE status = 'running' AND ($2 OR lease_until < $1) AND attempt >= $3
             RETURNING fleet_id, serial"
        )))
        .bind(now)
        .bind(all)
        .bind(max_attempts as i32)
        .fetch_all(&mut *tx)
        .await?;
        let mut serial = BTreeSet::new();
        for row in &failed {
            if row.try_get::<bool, _>("serial")? {
                serial.insert(row.try_get::<Uuid, _>("fleet_id")?);
            }
        }
        Self::release_many(&mut tx, serial).await?;
        let requeued = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE runs SET status = 'queued', reason = 'node_lost',
                error = 'node_lost: the worker running attempt ' || attempt || ' stopped; re-queued',
                lease_owner = NULL, lease_token = NULL, lease_until = NULL, {LOST}
             WHERE status = 'running' AND ($2 OR lease_until < $1)"
        )))
        .bind(now)
        .bind(all)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if requeued > 0 {
            notify(&mut tx, QUEUE_CHANNEL).await?;
        }
        tx.commit().await?;
        Ok(Requeued {
            requeued,
            failed: failed.len() as u64,
        })
    }
}
