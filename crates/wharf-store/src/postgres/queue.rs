//! [`Queue`] on PostgreSQL: the SQLite store's semantics, made safe between nodes.
//!
//! Lock order, which keeps these transactions free of deadlocks: a transaction takes fleet
//! advisory locks in ascending fleet order, and never waits for a run row while holding one
//! except for the held runs of a fleet whose lock it holds (which nobody else touches then).

use std::collections::{BTreeSet, HashMap};

use super::*;
use wharf_core::fleet::Policy;
use wharf_core::rules::Slot;
use wharf_core::rules::admission::{self, Needs, SlotState, Snapshot};
use wharf_core::rules::lifecycle::{self, Cancel, Expired};
use wharf_core::util::now_ms;

/// The (fleet, key) of each ended `queue`-policy run among rows with `fleet_id`, `serial` and
/// `concurrency_key`: where a held run may be released.
fn serial_slots(rows: &[PgRow]) -> StoreResult<BTreeMap<Uuid, BTreeSet<Option<String>>>> {
    let mut slots: BTreeMap<Uuid, BTreeSet<Option<String>>> = BTreeMap::new();
    for row in rows {
        if row.try_get::<bool, _>("serial")? {
            slots
                .entry(row.try_get("fleet_id")?)
                .or_default()
                .insert(row.try_get("concurrency_key")?);
        }
    }
    Ok(slots)
}

/// The candidates of a fair claim: each ready fleet's oldest ready runs (at most `$1`), with
/// the fleet's org, locked with `SKIP LOCKED` so that nodes claiming at once take different runs.
/// [`fair_pick`] then ranks them; those not taken are unlocked when the claim commits.
///
/// Every step is an index seek: the fleets with ready runs by skipping along
/// `runs_ready_by_fleet`, at most `$1` runs of each from it. A fleet's runs are looked up with
/// `fleet_id >= x AND fleet_id <= x` rather than `= x`, so that only `runs_ready_by_fleet` can
/// give them in `seq` order: with `= x`, the planner, which assumes a fleet's runs are spread
/// evenly, walks the primary key instead and reads the whole backlog of another fleet first.
const FAIR_CANDIDATES: &str = "WITH RECURSIVE
    ready(fleet_id) AS (
        (SELECT fleet_id FROM runs WHERE status = 'queued' AND NOT held
         ORDER BY fleet_id, seq LIMIT 1)
        UNION ALL
        SELECT (SELECT r.fleet_id FROM runs r WHERE r.status = 'queued' AND NOT r.held
                    AND r.fleet_id > ready.fleet_id ORDER BY r.fleet_id, r.seq LIMIT 1)
        FROM ready WHERE ready.fleet_id IS NOT NULL
    )
    SELECT c.seq, ready.fleet_id, COALESCE(p.org_id, ready.fleet_id) AS org
    FROM ready
    CROSS JOIN LATERAL (
        SELECT seq FROM runs
        WHERE fleet_id >= ready.fleet_id AND fleet_id <= ready.fleet_id
          AND status = 'queued' AND NOT held
        ORDER BY fleet_id, seq LIMIT $1 FOR UPDATE SKIP LOCKED) c
    LEFT JOIN fleets f ON f.id = ready.fleet_id
    LEFT JOIN projects p ON p.id = f.project_id";

/// Runs running per fleet (on every node), with the fleet's org; from `runs_leased`.
const BUSY: &str = "SELECT r.fleet_id, COALESCE(p.org_id, r.fleet_id) AS org, COUNT(*) AS n
    FROM runs r
    LEFT JOIN fleets f ON f.id = r.fleet_id
    LEFT JOIN projects p ON p.id = f.project_id
    WHERE r.status = 'running' GROUP BY 1, 2";

impl PostgresStore {
    /// Locks the fleets (ascending) and releases the next held run of each (fleet, key).
    async fn release_many(
        tx: &mut sqlx::PgConnection,
        slots: BTreeMap<Uuid, BTreeSet<Option<String>>>,
    ) -> StoreResult<()> {
        for (fleet_id, keys) in slots {
            lock_fleet(tx, fleet_id).await?;
            for key in keys {
                release_next(tx, fleet_id, key.as_deref()).await?;
            }
        }
        Ok(())
    }

    /// Whether a (fleet, key) has a queued or running run, and a `queue`-policy one.
    async fn slot_state(tx: &mut sqlx::PgConnection, slot: &Slot) -> StoreResult<SlotState> {
        let (fleet_id, key) = slot;
        let cond = key_is(key.as_deref(), 2);
        let sql = format!(
            "SELECT EXISTS (SELECT 1 FROM runs WHERE fleet_id = $1 AND {cond}
                    AND status IN ('queued', 'running')) AS any,
                    EXISTS (SELECT 1 FROM runs WHERE fleet_id = $1 AND {cond}
                    AND status IN ('queued', 'running') AND serial) AS serial"
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(fleet_id);
        if let Some(key) = key {
            query = query.bind(key);
        }
        let row = query.fetch_one(&mut *tx).await?;
        Ok(SlotState {
            active: row.try_get("any")?,
            serial: row.try_get("serial")?,
        })
    }

    /// What admission needs to decide a batch: one look at the database per kind of state, under
    /// the fleets' locks, so no other enqueue can change it before this one commits.
    async fn admission_snapshot(
        tx: &mut sqlx::PgConnection,
        needs: &Needs,
        now: i64,
    ) -> StoreResult<Snapshot> {
        let mut snapshot = Snapshot::default();
        if !needs.keys.is_empty() {
            let (fleets, keys): (Vec<Uuid>, Vec<String>) = needs.keys.iter().cloned().unzip();
            for row in sqlx::query(
                "SELECT k.fleet_id, k.key, k.request_id, k.run_id
                 FROM idempotency_keys k
                 JOIN UNNEST($1::uuid[], $2::text[]) AS u(fleet_id, key)
                   ON k.fleet_id = u.fleet_id AND k.key = u.key
                 WHERE k.created_at > $3",
            )
            .bind(&fleets)
            .bind(&keys)
            .bind(admission::keys_live_after(now))
            .fetch_all(&mut *tx)
            .await?
            {
                snapshot.seen.insert(
                    (row.try_get("fleet_id")?, row.try_get("key")?),
                    (row.try_get("request_id")?, row.try_get("run_id")?),
                );
            }
        }
        if !needs.backlogs.is_empty() {
            // Held runs count: they are queued.
            for row in sqlx::query(
                "SELECT fleet_id, COUNT(*) AS n FROM runs
                 WHERE fleet_id = ANY($1) AND status = 'queued' GROUP BY fleet_id",
            )
            .bind(needs.backlogs.keys().copied().collect::<Vec<_>>())
            .fetch_all(&mut *tx)
            .await?
            {
                let n: i64 = row.try_get("n")?;
                snapshot
                    .queued
                    .insert(row.try_get("fleet_id")?, u64::try_from(n).unwrap_or(0));
            }
        }
        if !needs.rate_limited.is_empty() {
            for row in
                sqlx::query("SELECT fleet_id, tat_us FROM rate_limits WHERE fleet_id = ANY($1)")
                    .bind(needs.rate_limited.iter().copied().collect::<Vec<_>>())
                    .fetch_all(&mut *tx)
                    .await?
            {
                snapshot
                    .rate
                    .insert(row.try_get("fleet_id")?, row.try_get("tat_us")?);
            }
        }
        for slot in &needs.slots {
            snapshot
                .slots
                .insert(slot.clone(), Self::slot_state(tx, slot).await?);
        }
        Ok(snapshot)
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
        let now = now_ms();
        // Every fleet whose calls are decided on stored state is locked first, in ascending
        // order, so that decisions about one fleet are serial across nodes.
        let needs = admission::needs(&batch);
        for fleet_id in &needs.guarded {
            lock_fleet(&mut tx, *fleet_id).await?;
        }
        let snapshot = Self::admission_snapshot(&mut tx, &needs, now).await?;
        let decided = admission::decide(&batch, &snapshot, now);
        let rows: Vec<(&Ingest, bool)> = decided
            .admitted
            .iter()
            .map(|a| (&batch[a.index], a.placed.held))
            .collect();
        let paced = decided.rate_states;
        if !rows.is_empty() {
            let mut headers = Vec::with_capacity(rows.len());
            let mut queries = Vec::with_capacity(rows.len());
            for (item, _) in &rows {
                headers.push(serde_json::to_string(&item.request.headers)?);
                queries.push(serde_json::to_string(&item.request.query)?);
            }
            let col = |f: fn(&RequestRecord) -> Uuid| {
                rows.iter().map(|(i, _)| f(&i.request)).collect::<Vec<_>>()
            };
            // Two statements for the whole batch, whatever its size.
            sqlx::query(
                "INSERT INTO requests
                   (id, fleet_id, method, content_type, headers, query, body, body_size, received_at)
                 SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[],
                                      $6::text[], $7::bytea[], $8::int8[], $9::int8[])",
            )
            .bind(col(|r| r.id))
            .bind(col(|r| r.fleet_id))
            .bind(rows.iter().map(|(i, _)| i.request.method.clone()).collect::<Vec<_>>())
            .bind(rows.iter().map(|(i, _)| i.request.content_type.clone()).collect::<Vec<_>>())
            .bind(headers)
            .bind(queries)
            .bind(rows.iter().map(|(i, _)| i.request.body.clone()).collect::<Vec<_>>())
            .bind(rows.iter().map(|(i, _)| i.request.body_size as i64).collect::<Vec<_>>())
            .bind(rows.iter().map(|(i, _)| i.request.received_at).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
            // WITH ORDINALITY keeps the batch's order in `seq`, which is the queue's order.
            sqlx::query(
                "INSERT INTO runs
                   (id, fleet_id, request_id, status, serial, held, created_at, concurrency_key)
                 SELECT id, fleet_id, request_id, 'queued', serial, held, created_at, key
                 FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::bool[], $5::bool[], $6::int8[],
                             $7::text[])
                      WITH ORDINALITY AS u(id, fleet_id, request_id, serial, held, created_at, key, n)
                 ORDER BY n",
            )
            .bind(rows.iter().map(|(i, _)| i.run_id).collect::<Vec<_>>())
            .bind(col(|r| r.fleet_id))
            .bind(col(|r| r.id))
            .bind(
                decided
                    .admitted
                    .iter()
                    .map(|a| a.placed.serial)
                    .collect::<Vec<_>>(),
            )
            .bind(rows.iter().map(|(_, held)| *held).collect::<Vec<_>>())
            .bind(
                rows.iter()
                    .map(|(i, _)| i.request.received_at)
                    .collect::<Vec<_>>(),
            )
            .bind(
                rows.iter()
                    .map(|(i, _)| i.concurrency_key.clone())
                    .collect::<Vec<_>>(),
            )
            .execute(&mut *tx)
            .await?;
            let keyed: Vec<&(&Ingest, bool)> =
                rows.iter().filter(|(i, _)| i.call_key.is_some()).collect();
            if !keyed.is_empty() {
                // Under the fleets' locks, a conflict can only be an expired key: replace it.
                sqlx::query(
                    "INSERT INTO idempotency_keys (fleet_id, key, request_id, run_id, created_at)
                     SELECT u.*, $5 FROM UNNEST($1::uuid[], $2::text[], $3::uuid[], $4::uuid[])
                          AS u(fleet_id, key, request_id, run_id)
                     ON CONFLICT (fleet_id, key) DO UPDATE SET request_id = excluded.request_id,
                        run_id = excluded.run_id, created_at = excluded.created_at",
                )
                .bind(
                    keyed
                        .iter()
                        .map(|(i, _)| i.request.fleet_id)
                        .collect::<Vec<_>>(),
                )
                .bind(
                    keyed
                        .iter()
                        .map(|(i, _)| i.call_key.clone())
                        .collect::<Vec<_>>(),
                )
                .bind(keyed.iter().map(|(i, _)| i.request.id).collect::<Vec<_>>())
                .bind(keyed.iter().map(|(i, _)| i.run_id).collect::<Vec<_>>())
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            if !paced.is_empty() {
                let (fleets, tats): (Vec<Uuid>, Vec<i64>) = paced.into_iter().unzip();
                sqlx::query(
                    "INSERT INTO rate_limits (fleet_id, tat_us)
                     SELECT * FROM UNNEST($1::uuid[], $2::int8[])
                     ON CONFLICT (fleet_id) DO UPDATE SET tat_us = excluded.tat_us",
                )
                .bind(fleets)
                .bind(tats)
                .execute(&mut *tx)
                .await?;
            }
            if rows.iter().any(|(_, held)| !held) {
                notify(&mut tx, QUEUE_CHANNEL).await?;
            }
        }
        // synchronous_commit is on by default: the commit is durable before it returns.
        tx.commit().await?;
        Ok(decided.answers)
    }

    async fn claim(&self, node: &str, max: usize, lease_until: i64) -> StoreResult<Vec<Claimed>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let mut tx = self.pool.begin().await?;
        let mut candidates = Vec::new();
        for row in sqlx::query(FAIR_CANDIDATES)
            .bind(max as i64)
            .fetch_all(&mut *tx)
            .await?
        {
            candidates.push((
                row.try_get::<i64, _>("seq")?,
                row.try_get::<Uuid, _>("fleet_id")?,
                row.try_get::<Uuid, _>("org")?,
            ));
        }
        let mut busy_fleets = BTreeMap::new();
        let mut busy_orgs = BTreeMap::new();
        if !candidates.is_empty() {
            for row in sqlx::query(BUSY).fetch_all(&mut *tx).await? {
                let n = u64::try_from(row.try_get::<i64, _>("n")?).unwrap_or(0);
                busy_fleets.insert(row.try_get::<Uuid, _>("fleet_id")?, n);
                *busy_orgs.entry(row.try_get::<Uuid, _>("org")?).or_insert(0) += n;
            }
        }
        let chosen = fair_pick(candidates, &busy_fleets, &busy_orgs, max);
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE runs SET status = 'running', attempt = attempt + 1, lease_owner = $1,
                    lease_token = (random() * 9000000000000000000)::bigint, lease_until = $2,
                    started_at = $3
             WHERE seq = ANY($4) AND status = 'queued' AND NOT held
             RETURNING seq, lease_token, {RUN_COLUMNS}"
        )))
        .bind(node)
        .bind(lease_until)
        .bind(now_ms())
        .bind(&chosen)
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
                // Replays share their request, so one batch may claim two runs of it.
                let request = requests
                    .get(&run.request_id)
                    .cloned()
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

    async fn renew(&self, node: &str, leases: &[Lease], lease_until: i64) -> StoreResult<Renewal> {
        let held: HashMap<(Uuid, i64), bool> = sqlx::query(
            "UPDATE runs SET lease_until = $1 WHERE status = 'running' AND lease_owner = $2
             RETURNING id, lease_token, cancel_requested",
        )
        .bind(lease_until)
        .bind(node)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| {
            Ok((
                (r.try_get("id")?, r.try_get("lease_token")?),
                r.try_get("cancel_requested")?,
            ))
        })
        .collect::<StoreResult<_>>()?;
        Ok(renewal(leases, |l| held.get(&(l.run_id, l.token)).copied()))
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
        if done.is_empty() {
            return Ok(Vec::new());
        }
        let mut vars = Vec::with_capacity(done.len());
        let mut vessels = Vec::with_capacity(done.len());
        for (_, f) in &done {
            vars.push(serde_json::to_string(&f.variables)?);
            vessels.push(serde_json::to_string(&f.vessels)?);
        }
        let mut tx = self.pool.begin().await?;
        // One statement for the batch; a row is written only where its lease is still held.
        let ended = sqlx::query(
            "UPDATE runs r SET status = u.status, variables = u.variables, vessels = u.vessels,
                    error = u.error, reason = u.reason, finished_at = $8, lease_owner = NULL,
                    lease_token = NULL, lease_until = NULL
             FROM UNNEST($1::uuid[], $2::int8[], $3::text[], $4::text[], $5::text[], $6::text[],
                         $7::text[]) AS u(id, token, status, variables, vessels, error, reason)
             WHERE r.id = u.id AND r.lease_token = u.token AND r.status = 'running'
             RETURNING r.id, r.fleet_id, r.serial, r.concurrency_key",
        )
        .bind(done.iter().map(|(l, _)| l.run_id).collect::<Vec<_>>())
        .bind(done.iter().map(|(l, _)| l.token).collect::<Vec<_>>())
        .bind(
            done.iter()
                .map(|(_, f)| f.status.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(vars)
        .bind(vessels)
        .bind(
            done.iter()
                .map(|(_, f)| f.error.clone())
                .collect::<Vec<_>>(),
        )
        .bind(
            done.iter()
                .map(|(_, f)| f.reason.map(RunReason::as_str))
                .collect::<Vec<_>>(),
        )
        .bind(now_ms())
        .fetch_all(&mut *tx)
        .await?;
        let mut finished = std::collections::HashSet::new();
        for row in &ended {
            finished.insert(row.try_get::<Uuid, _>("id")?);
        }
        let serial = serial_slots(&ended)?;
        Self::release_many(&mut tx, serial).await?;
        let deliveries: Vec<(Uuid, &NewDelivery)> = done
            .iter()
            .filter(|(l, _)| finished.contains(&l.run_id))
            .flat_map(|(l, f)| f.deliveries.iter().map(move |d| (l.run_id, d)))
            .collect();
        super::outbox::insert(&mut tx, &deliveries, now_ms()).await?;
        tx.commit().await?;
        Ok(done
            .iter()
            .map(|(l, _)| finished.contains(&l.run_id))
            .collect())
    }

    async fn release(&self, leases: &[Lease]) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        for lease in leases {
            sqlx::query(
                "UPDATE runs SET status = 'queued', attempt = attempt - 1, lease_owner = NULL,
                        lease_token = NULL, lease_until = NULL, started_at = NULL
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

    async fn cancel(&self, run_id: Uuid, vessels: &[VesselRun]) -> StoreResult<CancelOutcome> {
        let vessels = serde_json::to_string(vessels)?;
        let mut tx = self.pool.begin().await?;
        // The fleet's lock comes before the run's row (the lock order of this module), so the
        // fleet is read first without locking.
        let row = sqlx::query("SELECT fleet_id, serial, concurrency_key FROM runs WHERE id = $1")
            .bind(run_id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound("run"))?;
        let (fleet_id, serial): (Uuid, bool) = (row.try_get("fleet_id")?, row.try_get("serial")?);
        let key: Option<String> = row.try_get("concurrency_key")?;
        if serial {
            lock_fleet(&mut tx, fleet_id).await?;
        }
        let row = sqlx::query("SELECT status, held FROM runs WHERE id = $1 FOR UPDATE")
            .bind(run_id)
            .fetch_one(&mut *tx)
            .await?;
        let status: String = row.try_get("status")?;
        let status = RunStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("run status {status:?}")))?;
        let decision = lifecycle::cancel(status, serial, row.try_get("held")?);
        match decision {
            Cancel::End { release_next: next } => {
                sqlx::query(
                    "UPDATE runs SET status = 'cancelled', reason = $2, error = $3, vessels = $4,
                            held = FALSE, finished_at = $5
                     WHERE id = $1",
                )
                .bind(run_id)
                .bind(lifecycle::CANCELLED)
                .bind(lifecycle::CANCELLED_BEFORE_START)
                .bind(vessels)
                .bind(now_ms())
                .execute(&mut *tx)
                .await?;
                if next {
                    release_next(&mut tx, fleet_id, key.as_deref()).await?;
                }
            }
            Cancel::Request => {
                sqlx::query("UPDATE runs SET cancel_requested = TRUE WHERE id = $1")
                    .bind(run_id)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(CANCEL_CHANNEL)
                    .bind(run_id.to_string())
                    .execute(&mut *tx)
                    .await?;
            }
            Cancel::Finished(_) => {}
        }
        tx.commit().await?;
        Ok(decision.outcome())
    }

    fn cancel_signal(&self) -> Option<tokio::sync::broadcast::Receiver<Uuid>> {
        Some(self.cancels.subscribe())
    }

    async fn replay(&self, replay: Replay) -> StoreResult<Admission> {
        let carried = serde_json::to_string(&replay.carried)?;
        let mut tx = self.pool.begin().await?;
        let row =
            sqlx::query("SELECT fleet_id, request_id, concurrency_key FROM runs WHERE id = $1")
                .bind(replay.source)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or(StoreError::NotFound("run"))?;
        let (fleet_id, request_id): (Uuid, Uuid) =
            (row.try_get("fleet_id")?, row.try_get("request_id")?);
        let key: Option<String> = row.try_get("concurrency_key")?;
        let state = if replay.policy == Policy::Parallel {
            SlotState::default()
        } else {
            lock_fleet(&mut tx, fleet_id).await?;
            Self::slot_state(&mut tx, &(fleet_id, key.clone())).await?
        };
        let placed = match lifecycle::replay(replay.policy, state) {
            Ok(placed) => placed,
            Err(answer) => return Ok(answer),
        };
        let held = placed.held;
        sqlx::query(
            "INSERT INTO runs (id, fleet_id, request_id, status, serial, held, vessels, replay_of,
                               resumed_from, created_at, concurrency_key)
             VALUES ($1, $2, $3, 'queued', $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(replay.run_id)
        .bind(fleet_id)
        .bind(request_id)
        .bind(placed.serial)
        .bind(held)
        .bind(carried)
        .bind(replay.source)
        .bind(&replay.resumed_from)
        .bind(now_ms())
        .bind(&key)
        .execute(&mut *tx)
        .await?;
        if !held {
            notify(&mut tx, QUEUE_CHANNEL).await?;
        }
        tx.commit().await?;
        Ok(Admission::Queued)
    }

    async fn requeue_expired(
        &self,
        now: i64,
        all: bool,
        max_attempts: u32,
    ) -> StoreResult<Requeued> {
        let mut tx = self.pool.begin().await?;
        // The expired runs are locked before any fleet is (the lock order of this module).
        let mut expired = Vec::new();
        for row in sqlx::query(
            "SELECT id, attempt, lease_owner, started_at, fleet_id, serial, concurrency_key
             FROM runs WHERE status = 'running' AND ($2 OR lease_until < $1)
             ORDER BY seq FOR UPDATE",
        )
        .bind(now)
        .bind(all)
        .fetch_all(&mut *tx)
        .await?
        {
            expired.push(Expired {
                run_id: row.try_get("id")?,
                attempt: u32::try_from(row.try_get::<i32, _>("attempt")?).unwrap_or(0),
                node: row.try_get("lease_owner")?,
                started_at: row.try_get("started_at")?,
                slot: (row.try_get("fleet_id")?, row.try_get("concurrency_key")?),
                serial: row.try_get("serial")?,
            });
        }
        let lost = lifecycle::lost(&expired, now, max_attempts);
        if !lost.runs.is_empty() {
            let mut entries = Vec::with_capacity(lost.runs.len());
            for run in &lost.runs {
                entries.push(serde_json::to_string(&run.lost)?);
            }
            sqlx::query(
                "UPDATE runs r SET status = u.status, reason = u.reason, error = u.error,
                        finished_at = COALESCE(u.finished_at, r.finished_at), lease_owner = NULL,
                        lease_token = NULL, lease_until = NULL,
                        lost_attempts = r.lost_attempts || jsonb_build_array(u.lost::jsonb)
                 FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::int8[], $6::text[])
                      AS u(id, status, reason, error, finished_at, lost)
                 WHERE r.id = u.id",
            )
            .bind(lost.runs.iter().map(|r| r.run_id).collect::<Vec<_>>())
            .bind(
                lost.runs
                    .iter()
                    .map(|r| r.status.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(lost.runs.iter().map(|r| r.reason).collect::<Vec<_>>())
            .bind(
                lost.runs
                    .iter()
                    .map(|r| r.error.clone())
                    .collect::<Vec<_>>(),
            )
            .bind(lost.runs.iter().map(|r| r.finished_at).collect::<Vec<_>>())
            .bind(entries)
            .execute(&mut *tx)
            .await?;
        }
        let mut release: BTreeMap<Uuid, BTreeSet<Option<String>>> = BTreeMap::new();
        for (fleet_id, key) in lost.release.iter().cloned() {
            release.entry(fleet_id).or_default().insert(key);
        }
        Self::release_many(&mut tx, release).await?;
        let counts = lost.counts();
        if counts.requeued > 0 {
            notify(&mut tx, QUEUE_CHANNEL).await?;
        }
        tx.commit().await?;
        Ok(counts)
    }
}
