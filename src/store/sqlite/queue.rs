//! [`Queue`] on SQLite. Every operation is one job on the writer thread, so it shares a
//! transaction with whatever else is being written, and each policy check happens inside the
//! transaction that acts on it.
//!
//! The `queue` policy is kept by the `held` flag rather than by a check at claim time: a run of
//! a `queue` fleet that arrives while another of the fleet's runs is queued or running is stored
//! held, and the end of the fleet's active run releases the oldest held one. Claims then walk
//! only claimable runs (the `runs_ready` partial index), whatever backlog a busy `queue` fleet
//! has, and one claim can take many runs without ever taking two of one `queue` fleet.

use rusqlite::params;

use super::*;
use crate::fleet::Concurrency;
use crate::util::now_ms;

/// The oldest held run of a `queue` fleet becomes claimable (its predecessor ended).
fn release_next(c: &Connection, fleet_id: &str) -> StoreResult<()> {
    c.prepare_cached(
        "UPDATE runs SET held = 0 WHERE seq =
            (SELECT seq FROM runs WHERE fleet_id = ?1 AND held = 1 ORDER BY seq LIMIT 1)",
    )?
    .execute([fleet_id])?;
    Ok(())
}

#[async_trait]
impl Queue for SqliteStore {
    async fn enqueue(&self, batch: Vec<Ingest>) -> StoreResult<Vec<Admission>> {
        // Encoding off the writer thread: it is the one thread every write waits for.
        let encoded = batch
            .iter()
            .map(|i| {
                Ok((
                    serde_json::to_string(&i.request.headers)?,
                    serde_json::to_string(&i.request.query)?,
                ))
            })
            .collect::<StoreResult<Vec<(String, String)>>>()?;
        self.writer
            .call(true, move |c| {
                let mut insert_request = c.prepare_cached(
                    "INSERT INTO requests
                       (id, fleet_id, method, content_type, headers, query, body, body_size, received_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )?;
                let mut insert_run = c.prepare_cached(
                    "INSERT INTO runs (id, fleet_id, request_id, status, serial, held, created_at)
                     VALUES (?1, ?2, ?3, 'queued', ?4, ?5, ?6)",
                )?;
                // Earlier calls of this batch are already inserted, so they count here too.
                let mut active = c.prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM runs WHERE fleet_id = ?1
                        AND status IN ('queued', 'running') AND (?2 = 0 OR serial = 1))",
                )?;
                let mut out = Vec::with_capacity(batch.len());
                for (item, (headers, query)) in batch.iter().zip(encoded) {
                    let r = &item.request;
                    let fleet_id = r.fleet_id.to_string();
                    let held = match item.policy {
                        Concurrency::Parallel => false,
                        Concurrency::Queue => active.query_row(params![fleet_id, 1], |x| x.get(0))?,
                        Concurrency::Reject => {
                            if active.query_row(params![fleet_id, 0], |x| x.get::<_, bool>(0))? {
                                out.push(Admission::Busy);
                                continue;
                            }
                            false
                        }
                    };
                    let request_id = r.id.to_string();
                    insert_request.execute(params![
                        request_id,
                        fleet_id,
                        r.method,
                        r.content_type,
                        headers,
                        query,
                        r.body,
                        r.body_size as i64,
                        r.received_at,
                    ])?;
                    insert_run.execute(params![
                        item.run_id.to_string(),
                        fleet_id,
                        request_id,
                        item.policy == Concurrency::Queue,
                        held,
                        r.received_at,
                    ])?;
                    out.push(Admission::Queued);
                }
                Ok(out)
            })
            .await
    }

    async fn claim(&self, node: &str, max: usize, lease_until: i64) -> StoreResult<Vec<Claimed>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let node = node.to_owned();
        let fleets = self.fleets.clone();
        self.write(move |c| {
            // The limit is part of the text, not a parameter: SQLite re-prepares a statement
            // whenever the value of a bound LIMIT changes (measured: every claim, ~14 % of the
            // writer's time). One cached statement per batch size instead; sizes are few.
            let mut claim = c.prepare_cached(&format!(
                "UPDATE runs SET status = 'running', attempt = attempt + 1, lease_owner = ?1,
                        lease_token = random(), lease_until = ?2, started_at = ?3
                 WHERE seq IN (SELECT seq FROM runs WHERE status = 'queued' AND held = 0
                               ORDER BY seq LIMIT {max})
                 RETURNING seq, lease_token, {RUN_COLUMNS}"
            ))?;
            let mut runs: Vec<(i64, i64, RunRecord)> = claim
                .query_map(params![node, lease_until, now_ms()], |row| {
                    Ok((row.get("seq")?, row.get("lease_token")?, run_from(row)?))
                })?
                .collect::<rusqlite::Result<_>>()?;
            runs.sort_unstable_by_key(|(seq, _, _)| *seq);
            let mut request = c.prepare_cached(&format!(
                "SELECT {REQUEST_COLUMNS}, body FROM requests WHERE id = ?1"
            ))?;
            let mut out = Vec::with_capacity(runs.len());
            for (_, token, run) in runs {
                let req = request.query_row([run.request_id.to_string()], |row| {
                    request_from(row, row.get("body")?)
                })?;
                let fleet = match fleets.get(&run.fleet_id) {
                    Some(f) => Some(f),
                    None => fleet_by_id(c, run.fleet_id)?.map(|f| {
                        let f = Arc::new(f);
                        fleets.insert(f.id, f.clone());
                        f
                    }),
                };
                out.push(Claimed {
                    lease: Lease {
                        run_id: run.id,
                        token,
                    },
                    run,
                    request: req,
                    fleet,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn renew(&self, node: &str, leases: &[Lease], lease_until: i64) -> StoreResult<Renewal> {
        let node = node.to_owned();
        let leases = leases.to_vec();
        self.write(move |c| {
            // One statement for every lease of the node; running runs are few, and the
            // `runs_leased` index holds exactly them.
            let held: std::collections::HashMap<(String, i64), bool> = c
                .prepare_cached(
                    "UPDATE runs SET lease_until = ?1 WHERE status = 'running' AND lease_owner = ?2
                     RETURNING id, lease_token, cancel_requested",
                )?
                .query_map(params![lease_until, node], |r| {
                    Ok(((r.get(0)?, r.get(1)?), r.get(2)?))
                })?
                .collect::<rusqlite::Result<_>>()?;
            Ok(renewal(&leases, |l| {
                held.get(&(l.run_id.to_string(), l.token)).copied()
            }))
        })
        .await
    }

    async fn progress(
        &self,
        lease: Lease,
        vars: &BTreeMap<String, String>,
        vessels: &[VesselRun],
    ) -> StoreResult<bool> {
        let (vars, vessels) = (
            serde_json::to_string(vars)?,
            serde_json::to_string(vessels)?,
        );
        self.write(move |c| {
            let n = c
                .prepare_cached(
                    "UPDATE runs SET variables = ?1, vessels = ?2
                     WHERE id = ?3 AND lease_token = ?4 AND status = 'running'",
                )?
                .execute(params![
                    vars,
                    vessels,
                    lease.run_id.to_string(),
                    lease.token
                ])?;
            Ok(n == 1)
        })
        .await
    }

    async fn finish(&self, done: Vec<(Lease, Finish)>) -> StoreResult<Vec<bool>> {
        // Encoding off the writer thread: it is the one thread every write waits for.
        let rows = done
            .into_iter()
            .map(|(lease, f)| {
                Ok((
                    lease,
                    f.status.as_str(),
                    serde_json::to_string(&f.variables)?,
                    serde_json::to_string(&f.vessels)?,
                    f.error,
                    f.reason,
                ))
            })
            .collect::<StoreResult<Vec<_>>>()?;
        self.write(move |c| {
            let mut finish = c.prepare_cached(
                "UPDATE runs SET status = ?1, variables = ?2, vessels = ?3, error = ?4, reason = ?5,
                        finished_at = ?6, lease_owner = NULL, lease_token = NULL, lease_until = NULL
                 WHERE id = ?7 AND lease_token = ?8 AND status = 'running'
                 RETURNING fleet_id, serial",
            )?;
            let now = now_ms();
            let mut out = Vec::with_capacity(rows.len());
            for (lease, status, vars, vessels, error, reason) in rows {
                let ended = finish
                    .query_map(
                        params![
                            status,
                            vars,
                            vessels,
                            error,
                            reason,
                            now,
                            lease.run_id.to_string(),
                            lease.token
                        ],
                        |r| Ok((r.get::<_, String>(0)?, r.get::<_, bool>(1)?)),
                    )?
                    .next()
                    .transpose()?;
                if let Some((fleet_id, true)) = &ended {
                    release_next(c, fleet_id)?;
                }
                out.push(ended.is_some());
            }
            Ok(out)
        })
        .await
    }

    async fn release(&self, leases: &[Lease]) -> StoreResult<()> {
        let leases = leases.to_vec();
        self.write(move |c| {
            // A graceful hand-back is not a lost attempt: the attempt number goes back down. A
            // `queue` fleet's run stays its active one (it is not held), so order is kept.
            let mut release = c.prepare_cached(
                "UPDATE runs SET status = 'queued', attempt = attempt - 1, lease_owner = NULL,
                        lease_token = NULL, lease_until = NULL, started_at = NULL
                 WHERE id = ?1 AND lease_token = ?2 AND status = 'running'",
            )?;
            for lease in &leases {
                release.execute(params![lease.run_id.to_string(), lease.token])?;
            }
            Ok(())
        })
        .await
    }

    async fn cancel(&self, run_id: Uuid, vessels: &[VesselRun]) -> StoreResult<CancelOutcome> {
        let vessels = serde_json::to_string(vessels)?;
        self.write(move |c| {
            let id = run_id.to_string();
            let row: Option<(String, String, bool, bool)> = c
                .prepare_cached("SELECT status, fleet_id, serial, held FROM runs WHERE id = ?1")?
                .query_map([&id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                .next()
                .transpose()?;
            let Some((status, fleet_id, serial, held)) = row else {
                return Err(StoreError::NotFound("run"));
            };
            match RunStatus::parse(&status) {
                Some(RunStatus::Queued) => {
                    c.prepare_cached(
                        "UPDATE runs SET status = 'cancelled', reason = 'cancelled',
                                error = 'cancelled before it started', vessels = ?2, held = 0,
                                finished_at = ?3
                         WHERE id = ?1",
                    )?
                    .execute(params![id, vessels, now_ms()])?;
                    if serial && !held {
                        release_next(c, &fleet_id)?;
                    }
                    Ok(CancelOutcome::Cancelled)
                }
                Some(RunStatus::Running) => {
                    c.prepare_cached("UPDATE runs SET cancel_requested = 1 WHERE id = ?1")?
                        .execute([&id])?;
                    Ok(CancelOutcome::Requested)
                }
                Some(done) => Ok(CancelOutcome::Finished(done)),
                None => Err(StoreError::Corrupt(format!("run status {status:?}"))),
            }
        })
        .await
    }

    async fn replay(&self, replay: Replay) -> StoreResult<Admission> {
        let carried = serde_json::to_string(&replay.carried)?;
        self.write(move |c| {
            let source: Option<(String, String)> = c
                .prepare_cached("SELECT fleet_id, request_id FROM runs WHERE id = ?1")?
                .query_map([replay.source.to_string()], |r| Ok((r.get(0)?, r.get(1)?)))?
                .next()
                .transpose()?;
            let Some((fleet_id, request_id)) = source else {
                return Err(StoreError::NotFound("run"));
            };
            let reject = replay.policy == Concurrency::Reject;
            let active = replay.policy != Concurrency::Parallel
                && c.prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM runs WHERE fleet_id = ?1
                        AND status IN ('queued', 'running') AND (?2 OR serial = 1))",
                )?
                .query_row(params![fleet_id, reject], |r| r.get::<_, bool>(0))?;
            if active && reject {
                return Ok(Admission::Busy);
            }
            c.prepare_cached(
                "INSERT INTO runs (id, fleet_id, request_id, status, serial, held, vessels,
                                   replay_of, resumed_from, created_at)
                 VALUES (?1, ?2, ?3, 'queued', ?4, ?5, ?6, ?7, ?8, ?9)",
            )?
            .execute(params![
                replay.run_id.to_string(),
                fleet_id,
                request_id,
                replay.policy == Concurrency::Queue,
                active,
                carried,
                replay.source.to_string(),
                replay.resumed_from,
                now_ms(),
            ])?;
            Ok(Admission::Queued)
        })
        .await
    }

    async fn requeue_expired(
        &self,
        now: i64,
        all: bool,
        max_attempts: u32,
    ) -> StoreResult<Requeued> {
        self.write(move |c| {
            const LOST: &str = "lost_attempts = json_insert(lost_attempts, '$[#]', json_object(
                    'attempt', attempt, 'reason', 'node_lost', 'node', lease_owner,
                    'started_at', started_at, 'lost_at', ?1))";
            let failed: Vec<(String, bool)> = c
                .prepare_cached(&format!(
                    "UPDATE runs SET status = 'failed', reason = 'max_attempts',
                        error = 'max_attempts: ' || attempt || ' attempts ended without finishing (the worker was lost each time)',
                        finished_at = ?1, lease_owner = NULL, lease_token = NULL, lease_until = NULL, {LOST}
                     WHERE status = 'running' AND (?2 OR lease_until < ?1) AND attempt >= ?3
                     RETURNING fleet_id, serial"
                ))?
                .query_map(params![now, all, max_attempts], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            for (fleet_id, _) in failed.iter().filter(|(_, serial)| *serial) {
                release_next(c, fleet_id)?;
            }
            let requeued = c
                .prepare_cached(&format!(
                    "UPDATE runs SET status = 'queued', reason = 'node_lost',
                        error = 'node_lost: the worker running attempt ' || attempt || ' stopped; re-queued',
                        lease_owner = NULL, lease_token = NULL, lease_until = NULL, {LOST}
                     WHERE status = 'running' AND (?2 OR lease_until < ?1)"
                ))?
                .execute(params![now, all])?;
            Ok(Requeued {
                requeued: requeued as u64,
                failed: failed.len() as u64,
            })
        })
        .await
    }
}
