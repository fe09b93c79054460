//! [`Queue`] on SQLite. Every operation is one job on the writer thread, so it shares a
//! transaction with whatever else is being written, and each policy check happens inside the
//! transaction that acts on it.
//!
//! The `queue` policy is kept by the `held` flag rather than by a check at claim time: a run of
//! a `queue` fleet that arrives while another of the fleet's runs is queued or running is stored
//! held, and the end of the fleet's active run releases the oldest held one. Claims then walk
//! only claimable runs (the `runs_ready_by_fleet` partial index), whatever backlog a busy `queue` fleet
//! has, and one claim can take many runs without ever taking two of one `queue` fleet.
//!
//! A keyed policy is the same thing per (fleet, key value): every check and release matches the
//! run's `concurrency_key` too (`IS`, so that runs without a key match each other).

use rusqlite::{OptionalExtension, params};

use super::*;
use wharf_core::fleet::Policy;
use wharf_core::rules::Slot;
use wharf_core::rules::admission::{self, Needs, SlotState, Snapshot};
use wharf_core::rules::lifecycle::{self, Cancel, Expired};
use wharf_core::util::now_ms;

/// The oldest held run of a `queue` fleet (or of one key of it) becomes claimable: its
/// predecessor ended.
fn release_next(c: &Connection, fleet_id: &str, key: Option<&str>) -> StoreResult<()> {
    c.prepare_cached(
        "UPDATE runs SET held = 0 WHERE seq =
            (SELECT seq FROM runs WHERE fleet_id = ?1 AND concurrency_key IS ?2 AND held = 1
             ORDER BY seq LIMIT 1)",
    )?
    .execute(params![fleet_id, key])?;
    Ok(())
}

/// The `seq` of the (at most `max`) ready runs a fair claim takes, in the order
/// [`fair_pick`] ranks them.
///
/// Index-backed throughout: the fleets with ready runs are found by skipping along
/// `runs_ready_by_fleet` (one seek per fleet), at most `max` runs are read from each, and the
/// running counts come from `runs_leased`, which holds only running runs. The cost grows with
/// the number of fleets that have ready runs and the batch size, never with the length of a
/// backlog. The limits are part of the text, not parameters (see the oldest-first claim).
fn fair_choice(c: &Connection, max: usize) -> StoreResult<Vec<i64>> {
    let ready: Vec<(String, String)> = c
        .prepare_cached(
            "WITH RECURSIVE ready(fleet_id) AS (
                 SELECT (SELECT fleet_id FROM runs INDEXED BY runs_ready_by_fleet
                         WHERE status = 'queued' AND held = 0 ORDER BY fleet_id LIMIT 1)
                 UNION ALL
                 SELECT (SELECT r.fleet_id FROM runs r INDEXED BY runs_ready_by_fleet
                         WHERE r.status = 'queued' AND r.held = 0 AND r.fleet_id > ready.fleet_id
                         ORDER BY r.fleet_id LIMIT 1)
                 FROM ready WHERE ready.fleet_id IS NOT NULL
             )
             SELECT ready.fleet_id, COALESCE(p.org_id, ready.fleet_id) FROM ready
             LEFT JOIN fleets f ON f.id = ready.fleet_id
             LEFT JOIN projects p ON p.id = f.project_id
             WHERE ready.fleet_id IS NOT NULL",
        )?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    if ready.is_empty() {
        return Ok(Vec::new());
    }
    let mut busy_fleets = BTreeMap::new();
    let mut busy_orgs = BTreeMap::new();
    let mut busy = c.prepare_cached(
        "SELECT r.fleet_id, COALESCE(p.org_id, r.fleet_id), COUNT(*)
         FROM runs r INDEXED BY runs_leased
         LEFT JOIN fleets f ON f.id = r.fleet_id
         LEFT JOIN projects p ON p.id = f.project_id
         WHERE r.status = 'running' GROUP BY r.fleet_id",
    )?;
    let rows = busy.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    for row in rows {
        let (fleet, org, n) = row?;
        let n = u64::try_from(n).unwrap_or(0);
        busy_fleets.insert(fleet, n);
        *busy_orgs.entry(org).or_insert(0) += n;
    }
    // First a share of the batch from each fleet, one run more than an even split; a fleet
    // whose whole share was picked may deserve more (its rivals have more running), and only
    // such fleets are read again, up to the batch. A fleet that had runs left over does not:
    // its further runs rank after every run it had left, so the pick stays the same (bar ties
    // between equal turns). With many fleets this reads about a batch of runs, not a batch of
    // each.
    let share = max.div_ceil(ready.len()) + 1;
    let read = |fleets: &[(String, String)], limit: usize| -> StoreResult<Vec<Candidate<String>>> {
        let mut oldest = c.prepare_cached(&format!(
            "SELECT seq FROM runs INDEXED BY runs_ready_by_fleet
             WHERE fleet_id = ?1 AND status = 'queued' AND held = 0 ORDER BY seq LIMIT {limit}"
        ))?;
        let mut out = Vec::new();
        for (fleet, org) in fleets {
            for seq in oldest.query_map([fleet], |r| r.get::<_, i64>(0))? {
                out.push((seq?, fleet.clone(), org.clone()));
            }
        }
        Ok(out)
    };
    let mut candidates = read(&ready, share.min(max))?;
    let picked = fair_pick(candidates.clone(), &busy_fleets, &busy_orgs, max);
    if share >= max {
        return Ok(picked);
    }
    let chosen: std::collections::HashSet<i64> = picked.iter().copied().collect();
    let mut read_of: BTreeMap<&str, (usize, usize)> = BTreeMap::new(); // fleet → (read, picked)
    for (seq, fleet, _) in &candidates {
        let e = read_of.entry(fleet.as_str()).or_insert((0, 0));
        e.0 += 1;
        e.1 += usize::from(chosen.contains(seq));
    }
    let full: Vec<(String, String)> = ready
        .iter()
        .filter(|(fleet, _)| {
            read_of
                .get(fleet.as_str())
                .is_some_and(|(read, picked)| *read == share && picked == read)
        })
        .cloned()
        .collect();
    if full.is_empty() {
        return Ok(picked);
    }
    candidates.retain(|(_, fleet, _)| !full.iter().any(|(f, _)| f == fleet));
    candidates.extend(read(&full, max)?);
    Ok(fair_pick(candidates, &busy_fleets, &busy_orgs, max))
}

/// The first call's (request, run) ids, if the fleet saw `key` in the last 24 h.
fn seen_key(
    c: &Connection,
    fleet_id: &str,
    key: &str,
    now: i64,
) -> StoreResult<Option<(Uuid, Uuid)>> {
    Ok(c.prepare_cached(
        "SELECT request_id, run_id FROM idempotency_keys
         WHERE fleet_id = ?1 AND key = ?2 AND created_at > ?3",
    )?
    .query_row(
        params![fleet_id, key, admission::keys_live_after(now)],
        |r| Ok((uuid_at(r, "request_id")?, uuid_at(r, "run_id")?)),
    )
    .optional()?)
}

/// The fleet's rate-limit state (GCRA time, µs), if any.
fn rate_state(c: &Connection, fleet_id: &str) -> StoreResult<Option<i64>> {
    Ok(
        c.prepare_cached("SELECT tat_us FROM rate_limits WHERE fleet_id = ?1")?
            .query_row([fleet_id], |r| r.get(0))
            .optional()?,
    )
}

/// Whether a (fleet, key) has a queued or running run, and a `queue`-policy one.
fn slot_state(c: &Connection, (fleet_id, key): &Slot) -> StoreResult<SlotState> {
    Ok(c.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM runs WHERE fleet_id = ?1 AND concurrency_key IS ?2
                    AND status IN ('queued', 'running')),
                    EXISTS (SELECT 1 FROM runs WHERE fleet_id = ?1 AND concurrency_key IS ?2
                    AND status IN ('queued', 'running') AND serial = 1)",
    )?
    .query_row(params![fleet_id.to_string(), key], |r| {
        Ok(SlotState {
            active: r.get(0)?,
            serial: r.get(1)?,
        })
    })?)
}

/// What admission needs to decide a batch, read in the writer's transaction.
fn admission_snapshot(c: &Connection, needs: &Needs, now: i64) -> StoreResult<Snapshot> {
    let mut snapshot = Snapshot::default();
    for (fleet_id, key) in &needs.keys {
        if let Some(first) = seen_key(c, &fleet_id.to_string(), key, now)? {
            snapshot.seen.insert((*fleet_id, key.clone()), first);
        }
    }
    // The count walks the fleet's backlog, so it stops at the cap.
    let mut backlog = c.prepare_cached(
        "SELECT COUNT(*) FROM (SELECT 1 FROM runs
            WHERE fleet_id = ?1 AND status = 'queued' LIMIT ?2)",
    )?;
    for (fleet_id, cap) in &needs.backlogs {
        let limit = i64::try_from(*cap).unwrap_or(i64::MAX);
        let n: i64 = backlog.query_row(params![fleet_id.to_string(), limit], |x| x.get(0))?;
        snapshot
            .queued
            .insert(*fleet_id, u64::try_from(n).unwrap_or(0));
    }
    for fleet_id in &needs.rate_limited {
        if let Some(tat) = rate_state(c, &fleet_id.to_string())? {
            snapshot.rate.insert(*fleet_id, tat);
        }
    }
    for slot in &needs.slots {
        snapshot.slots.insert(slot.clone(), slot_state(c, slot)?);
    }
    Ok(snapshot)
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
                let now = now_ms();
                let snapshot = admission_snapshot(c, &admission::needs(&batch), now)?;
                let decided = admission::decide(&batch, &snapshot, now);
                let mut insert_request = c.prepare_cached(
                    "INSERT INTO requests
                       (id, fleet_id, method, content_type, headers, query, body, body_size, received_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )?;
                let mut insert_run = c.prepare_cached(
                    "INSERT INTO runs
                       (id, fleet_id, request_id, status, serial, held, created_at, concurrency_key)
                     VALUES (?1, ?2, ?3, 'queued', ?4, ?5, ?6, ?7)",
                )?;
                for admit in &decided.admitted {
                    let item = &batch[admit.index];
                    let (headers, query) = &encoded[admit.index];
                    let r = &item.request;
                    let fleet_id = r.fleet_id.to_string();
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
                        admit.placed.serial,
                        admit.placed.held,
                        r.received_at,
                        item.concurrency_key,
                    ])?;
                    if let Some(call_key) = &item.call_key {
                        // Replaces an expired key's row, if one is left.
                        c.prepare_cached(
                            "INSERT OR REPLACE INTO idempotency_keys
                               (fleet_id, key, request_id, run_id, created_at)
                             VALUES (?1, ?2, ?3, ?4, ?5)",
                        )?
                        .execute(params![fleet_id, call_key, request_id, item.run_id.to_string(), now])?;
                    }
                }
                for (fleet_id, tat_us) in &decided.rate_states {
                    c.prepare_cached(
                        "INSERT INTO rate_limits (fleet_id, tat_us) VALUES (?1, ?2)
                         ON CONFLICT (fleet_id) DO UPDATE SET tat_us = excluded.tat_us",
                    )?
                    .execute(params![fleet_id.to_string(), tat_us])?;
                }
                Ok(decided.answers)
            })
            .await
    }

    async fn claim(&self, node: &str, max: usize, lease_until: i64) -> StoreResult<Vec<Claimed>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let node = node.to_owned();
        let fleets = self.fleets.clone();
        let order = self.claim_order;
        self.write(move |c| {
            let mut runs: Vec<(i64, i64, RunRecord)> = Vec::with_capacity(max);
            let read = |row: &rusqlite::Row<'_>| {
                Ok((row.get("seq")?, row.get("lease_token")?, run_from(row)?))
            };
            let now = now_ms();
            match order {
                ClaimOrder::Fair => {
                    let chosen = fair_choice(c, max)?;
                    if !chosen.is_empty() {
                        // One statement for the batch: the chosen runs as a JSON array.
                        let mut claim = c.prepare_cached(&format!(
                            "UPDATE runs SET status = 'running', attempt = attempt + 1,
                                    lease_owner = ?1, lease_token = random(), lease_until = ?2,
                                    started_at = ?3
                             WHERE seq IN (SELECT value FROM json_each(?4))
                               AND status = 'queued' AND held = 0
                             RETURNING seq, lease_token, {RUN_COLUMNS}"
                        ))?;
                        runs = claim
                            .query_map(
                                params![node, lease_until, now, serde_json::to_string(&chosen)?],
                                read,
                            )?
                            .collect::<rusqlite::Result<_>>()?;
                    }
                }
                ClaimOrder::OldestFirst => {
                    // The limit is part of the text, not a parameter: SQLite re-prepares a
                    // statement whenever the value of a bound LIMIT changes (measured: every
                    // claim, ~14 % of the writer's time). One cached statement per batch size
                    // instead; sizes are few.
                    let mut claim = c.prepare_cached(&format!(
                        "UPDATE runs SET status = 'running', attempt = attempt + 1,
                                lease_owner = ?1, lease_token = random(), lease_until = ?2,
                                started_at = ?3
                         WHERE seq IN (SELECT seq FROM runs WHERE status = 'queued' AND held = 0
                                       ORDER BY seq LIMIT {max})
                         RETURNING seq, lease_token, {RUN_COLUMNS}"
                    ))?;
                    runs = claim
                        .query_map(params![node, lease_until, now], read)?
                        .collect::<rusqlite::Result<_>>()?;
                }
            }
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
                    f.reason.map(RunReason::as_str),
                    super::outbox::encode(&f.deliveries)?,
                ))
            })
            .collect::<StoreResult<Vec<_>>>()?;
        self.write(move |c| {
            let mut finish = c.prepare_cached(
                "UPDATE runs SET status = ?1, variables = ?2, vessels = ?3, error = ?4, reason = ?5,
                        finished_at = ?6, lease_owner = NULL, lease_token = NULL, lease_until = NULL
                 WHERE id = ?7 AND lease_token = ?8 AND status = 'running'
                 RETURNING fleet_id, serial, concurrency_key",
            )?;
            let now = now_ms();
            let mut out = Vec::with_capacity(rows.len());
            for (lease, status, vars, vessels, error, reason, deliveries) in rows {
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
                        |r| {
                            Ok((
                                r.get::<_, String>(0)?,
                                r.get::<_, bool>(1)?,
                                r.get::<_, Option<String>>(2)?,
                            ))
                        },
                    )?
                    .next()
                    .transpose()?;
                if let Some((fleet_id, true, key)) = &ended {
                    release_next(c, fleet_id, key.as_deref())?;
                }
                if ended.is_some() {
                    super::outbox::insert(c, lease.run_id, &deliveries, now)?;
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
            let row: Option<(String, String, bool, bool, Option<String>)> = c
                .prepare_cached(
                    "SELECT status, fleet_id, serial, held, concurrency_key FROM runs WHERE id = ?1",
                )?
                .query_map([&id], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                })?
                .next()
                .transpose()?;
            let Some((status, fleet_id, serial, held, key)) = row else {
                return Err(StoreError::NotFound("run"));
            };
            let status = RunStatus::parse(&status)
                .ok_or_else(|| StoreError::Corrupt(format!("run status {status:?}")))?;
            let decision = lifecycle::cancel(status, serial, held);
            match decision {
                Cancel::End { release_next: next } => {
                    c.prepare_cached(
                        "UPDATE runs SET status = 'cancelled', reason = ?2, error = ?3, vessels = ?4,
                                held = 0, finished_at = ?5
                         WHERE id = ?1",
                    )?
                    .execute(params![
                        id,
                        lifecycle::CANCELLED,
                        lifecycle::CANCELLED_BEFORE_START,
                        vessels,
                        now_ms()
                    ])?;
                    if next {
                        release_next(c, &fleet_id, key.as_deref())?;
                    }
                }
                Cancel::Request => {
                    c.prepare_cached("UPDATE runs SET cancel_requested = 1 WHERE id = ?1")?
                        .execute([&id])?;
                }
                Cancel::Finished(_) => {}
            }
            Ok(decision.outcome())
        })
        .await
    }

    async fn replay(&self, replay: Replay) -> StoreResult<Admission> {
        let carried = serde_json::to_string(&replay.carried)?;
        self.write(move |c| {
            let source: Option<(String, String, Option<String>)> = c
                .prepare_cached(
                    "SELECT fleet_id, request_id, concurrency_key FROM runs WHERE id = ?1",
                )?
                .query_map([replay.source.to_string()], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?
                .next()
                .transpose()?;
            let Some((fleet_id, request_id, key)) = source else {
                return Err(StoreError::NotFound("run"));
            };
            let fleet = Uuid::parse_str(&fleet_id)
                .map_err(|e| StoreError::Corrupt(format!("fleet id {fleet_id:?}: {e}")))?;
            let state = match replay.policy {
                Policy::Parallel => SlotState::default(),
                _ => slot_state(c, &(fleet, key.clone()))?,
            };
            let placed = match lifecycle::replay(replay.policy, state) {
                Ok(placed) => placed,
                Err(answer) => return Ok(answer),
            };
            c.prepare_cached(
                "INSERT INTO runs (id, fleet_id, request_id, status, serial, held, vessels,
                                   replay_of, resumed_from, created_at, concurrency_key)
                 VALUES (?1, ?2, ?3, 'queued', ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?
            .execute(params![
                replay.run_id.to_string(),
                fleet_id,
                request_id,
                placed.serial,
                placed.held,
                carried,
                replay.source.to_string(),
                replay.resumed_from,
                now_ms(),
                key,
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
            let expired: Vec<Expired> = c
                .prepare_cached(
                    "SELECT id, attempt, lease_owner, started_at, fleet_id, serial, concurrency_key
                     FROM runs WHERE status = 'running' AND (?2 OR lease_until < ?1)",
                )?
                .query_map(params![now, all], |r| {
                    Ok(Expired {
                        run_id: uuid_at(r, "id")?,
                        attempt: r.get("attempt")?,
                        node: r.get("lease_owner")?,
                        started_at: r.get("started_at")?,
                        slot: (uuid_at(r, "fleet_id")?, r.get("concurrency_key")?),
                        serial: r.get("serial")?,
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
            let lost = lifecycle::lost(&expired, now, max_attempts);
            let mut write = c.prepare_cached(
                "UPDATE runs SET status = ?2, reason = ?3, error = ?4,
                        finished_at = COALESCE(?5, finished_at), lease_owner = NULL,
                        lease_token = NULL, lease_until = NULL,
                        lost_attempts = json_insert(lost_attempts, '$[#]', json(?6))
                 WHERE id = ?1",
            )?;
            for run in &lost.runs {
                write.execute(params![
                    run.run_id.to_string(),
                    run.status.as_str(),
                    run.reason,
                    run.error,
                    run.finished_at,
                    serde_json::to_string(&run.lost)?,
                ])?;
            }
            for (fleet_id, key) in &lost.release {
                release_next(c, &fleet_id.to_string(), key.as_deref())?;
            }
            Ok(lost.counts())
        })
        .await
    }
}
