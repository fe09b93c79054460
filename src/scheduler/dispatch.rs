//! The node's side of the queue: one dispatcher claims runs in batches, one renewer extends
//! every lease the node holds, one finisher records ended runs in batches, one reaper re-queues
//! runs whose worker was lost.
//!
//! A run's cost to the store is thereby shared with its neighbours: a claim statement takes as
//! many runs as there are free slots, a renewal covers every lease at once, and finishes that
//! end close together share a transaction. Executions are tokio tasks that only wait — on the
//! vessel threads and on the finisher — each under its own tracing span, attached with
//! `instrument` so that a span never outlives its run.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::Scheduler;
use super::execute::{self, Held, Slot};
use crate::sandbox::{RequestMeta, RunIds};
use crate::store::{Claimed, Finish, Lease, RunStatus};
use crate::util::now_ms;

/// Most ended runs recorded in one call.
const FINISH_BATCH: usize = 512;

/// What an execution hands to the finisher.
enum Ended {
    /// Record the run's end.
    Finished(Lease, Finish),
    /// Give the run back to the queue (shutdown).
    Released(Lease),
}

/// The tokens of one held run: `lost` stops its execution without a record (someone else holds
/// it now), `cancel` ends it as cancelled.
#[derive(Clone, Default)]
struct Tokens {
    lost: CancellationToken,
    cancel: CancellationToken,
}

/// Leases this node holds, each with the tokens that stop its execution.
#[derive(Default)]
pub(super) struct Leases(Mutex<HashMap<Lease, Tokens>>);

impl Leases {
    fn insert(&self, lease: Lease) -> Tokens {
        let tokens = Tokens::default();
        if let Ok(mut map) = self.0.lock() {
            map.insert(lease, tokens.clone());
        }
        tokens
    }

    fn remove(&self, lease: &Lease) {
        if let Ok(mut map) = self.0.lock() {
            map.remove(lease);
        }
    }

    fn all(&self) -> Vec<Lease> {
        self.0
            .lock()
            .map(|m| m.keys().copied().collect())
            .unwrap_or_default()
    }

    fn lose(&self, lease: &Lease) {
        if let Ok(map) = self.0.lock()
            && let Some(tokens) = map.get(lease)
        {
            tokens.lost.cancel();
        }
    }

    /// Cancels the run if this node holds it; true if it did.
    pub(super) fn cancel(&self, run_id: uuid::Uuid) -> bool {
        let Ok(map) = self.0.lock() else {
            return false;
        };
        let mut found = false;
        for (_, tokens) in map.iter().filter(|(l, _)| l.run_id == run_id) {
            tokens.cancel.cancel();
            found = true;
        }
        found
    }
}

impl Scheduler {
    /// Runs the node's queue work until `shutdown` fires; then stops claiming, lets executions
    /// stop between vessels, hands their runs back, and returns once everything is recorded.
    pub async fn run(&self, shutdown: CancellationToken) {
        let inner = &self.inner;
        if inner.config.workers == 0 {
            shutdown.cancelled().await;
            return;
        }
        let (ended_tx, ended_rx) = mpsc::unbounded_channel();
        let finisher = tokio::spawn(finisher(self.clone(), ended_rx));
        let stop_background = CancellationToken::new();
        let renewer = tokio::spawn(renewer(self.clone(), stop_background.clone()));
        let reaper = tokio::spawn(reaper(self.clone(), stop_background.clone()));
        let cancels = tokio::spawn(cancel_listener(self.clone(), stop_background.clone()));

        let mut running = tokio::task::JoinSet::new();
        let slots = Arc::new(Semaphore::new(inner.config.workers + inner.config.prefetch));
        // The node-wide cap on claimed runs (`--max-running`): held for a run's whole life,
        // whichever lane its slot moves to.
        let cap = match inner.config.max_running {
            0 => Semaphore::MAX_PERMITS,
            n => n,
        };
        let running_cap = Arc::new(Semaphore::new(cap));
        let slow = Arc::new(Semaphore::new(inner.config.max_slow));
        // Work queued through other nodes of a shared store.
        let elsewhere = inner.store.work_signal();
        loop {
            // Wait for one free slot, then take every other free one: one claim for all.
            let first = tokio::select! {
                permit = slots.clone().acquire_owned() => permit,
                _ = shutdown.cancelled() => break,
            };
            let Ok(first) = first else { break };
            let first_cap = tokio::select! {
                permit = running_cap.clone().acquire_owned() => permit,
                _ = shutdown.cancelled() => break,
            };
            let Ok(first_cap) = first_cap else { break };
            let mut permits = vec![(first, first_cap)];
            while let Ok(p) = slots.clone().try_acquire_owned() {
                let Ok(c) = running_cap.clone().try_acquire_owned() else {
                    break;
                };
                permits.push((p, c));
            }
            let lease_until = now_ms() + inner.config.lease.as_millis() as i64;
            let started = std::time::Instant::now();
            let claimed = match inner
                .store
                .claim(&inner.config.node_id, permits.len(), lease_until)
                .await
            {
                Ok(c) => {
                    inner.config.metrics.claimed(started.elapsed());
                    c
                }
                Err(e) => {
                    tracing::error!(error = %e, "claiming runs failed");
                    Vec::new()
                }
            };
            let idle = claimed.len() < permits.len();
            for claim in claimed {
                let Some((permit, cap)) = permits.pop() else {
                    break;
                };
                let slot = Slot::new(permit, slow.clone());
                let tokens = inner.leases.insert(claim.lease);
                let span =
                    tracing::info_span!("run", run_id = %claim.run.id, attempt = claim.run.attempt);
                let (me, tx, stop) = (self.clone(), ended_tx.clone(), shutdown.clone());
                running.spawn(
                    async move {
                        me.execute(claim, slot, tokens, stop, tx).await;
                        drop(cap);
                    }
                    .instrument(span),
                );
            }
            drop(permits);
            // Reap finished executions so the set does not grow.
            while running.try_join_next().is_some() {}
            if idle {
                let others = async {
                    match &elsewhere {
                        Some(signal) => signal.notified().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = inner.wake.notified() => {}
                    _ = others => {}
                    _ = tokio::time::sleep(inner.config.poll) => {}
                    _ = shutdown.cancelled() => break,
                }
            }
        }
        while running.join_next().await.is_some() {}
        drop(ended_tx);
        let _ = finisher.await;
        stop_background.cancel();
        let _ = renewer.await;
        let _ = reaper.await;
        let _ = cancels.await;
    }

    /// Executes one claimed run and hands its end to the finisher.
    async fn execute(
        &self,
        claim: Claimed,
        slot: Slot,
        tokens: Tokens,
        shutdown: CancellationToken,
        ended: mpsc::UnboundedSender<Ended>,
    ) {
        let Tokens { lost, cancel } = tokens;
        let Claimed {
            lease,
            run,
            request,
            fleet,
        } = claim;
        let Some(fleet) = fleet else {
            let finish = Finish {
                status: RunStatus::Failed,
                variables: Default::default(),
                vessels: Vec::new(),
                error: Some("the fleet was deleted before the run started".into()),
                reason: Some(crate::store::RunReason::FleetDeleted),
                deliveries: Vec::new(),
            };
            self.inner
                .config
                .metrics
                .run_finished(run.fleet_id, finish.status);
            let _ = ended.send(Ended::Finished(lease, finish));
            return;
        };
        let meta = Arc::new(RequestMeta {
            id: request.id.to_string(),
            method: request.method,
            content_type: request.content_type,
            headers: request.headers,
            query: request.query,
        });
        let ids = RunIds {
            org_id: fleet.org_id.to_string(),
            project_id: fleet.project_id.to_string(),
            fleet_id: fleet.id.to_string(),
            fleet_run_id: run.id.to_string(),
            vessel: String::new(),
            attempt: run.attempt,
        };
        self.inner.events.begin(run.id, fleet.id, run.attempt);
        let held = Held {
            lease,
            lost: &lost,
            shutdown: &shutdown,
            slot: &slot,
            events: &self.inner.events,
        };
        // A cancel asked for before this claim (another node's, or during a restart).
        if run.cancel_requested {
            cancel.cancel();
        }
        let outcome = execute::execute_fleet(
            &self.context(),
            &fleet.spec,
            ids,
            meta,
            bytes::Bytes::from(request.body),
            run.vessels,
            &cancel,
            Some(held),
        )
        .await;
        let message = if lost.is_cancelled() {
            // Someone else holds the run now; whatever this attempt found is not to be written.
            self.inner.leases.remove(&lease);
            self.inner.events.end(lease.run_id, None);
            tracing::warn!("lease lost; this attempt's result is discarded");
            return;
        } else if outcome.interrupted {
            Ended::Released(lease)
        } else {
            self.inner
                .config
                .metrics
                .run_finished(run.fleet_id, outcome.status);
            let cancelled = outcome.status == RunStatus::Cancelled;
            let deliveries = match &self.inner.config.outbox {
                Some(hook) if !fleet.spec.destinations.is_empty() => {
                    // Every vessel's rows, in the fleet's (run) order.
                    let rows: Vec<serde_json::Value> = outcome
                        .vessels
                        .iter()
                        .flat_map(|v| v.outcome.rows.iter().cloned())
                        .collect();
                    crate::outbox::deliveries(
                        fleet.id,
                        &fleet.spec.destinations,
                        outcome.status,
                        &outcome.variables,
                        &rows,
                        &hook.secrets,
                    )
                }
                _ => Vec::new(),
            };
            Ended::Finished(
                lease,
                Finish {
                    status: outcome.status,
                    variables: outcome.variables,
                    vessels: outcome.vessels,
                    error: cancelled.then(|| "cancelled by request".to_owned()),
                    reason: cancelled.then_some(crate::store::RunReason::Cancelled),
                    deliveries,
                },
            )
        };
        let _ = ended.send(message);
    }
}

/// Records ended runs in batches: whatever ended while the previous batch was being written.
async fn finisher(scheduler: Scheduler, mut rx: mpsc::UnboundedReceiver<Ended>) {
    let inner = &scheduler.inner;
    let mut batch = Vec::with_capacity(FINISH_BATCH);
    while rx.recv_many(&mut batch, FINISH_BATCH).await > 0 {
        let mut finished = Vec::new();
        let mut released = Vec::new();
        for ended in batch.drain(..) {
            match ended {
                Ended::Finished(lease, finish) => finished.push((lease, finish)),
                Ended::Released(lease) => released.push(lease),
            }
        }
        if !finished.is_empty() {
            let leases: Vec<Lease> = finished.iter().map(|(l, _)| *l).collect();
            let statuses: Vec<&'static str> =
                finished.iter().map(|(_, f)| f.status.as_str()).collect();
            let run_statuses: Vec<RunStatus> = finished.iter().map(|(_, f)| f.status).collect();
            match with_retry(|| inner.store.finish(finished.clone())).await {
                Ok(held) => {
                    for (((lease, status), held), run_status) in
                        leases.iter().zip(statuses).zip(held).zip(&run_statuses)
                    {
                        if held {
                            tracing::info!(run_id = %lease.run_id, status, "run finished");
                            inner.events.end(lease.run_id, Some(*run_status));
                        } else {
                            inner.events.end(lease.run_id, None);
                            tracing::warn!(run_id = %lease.run_id, "lease lost before the finish; result discarded");
                        }
                    }
                }
                // The leases lapse and the runs are run again: at-least-once.
                Err(e) => {
                    tracing::error!(error = %e, runs = leases.len(), "recording finished runs failed")
                }
            }
            for lease in &leases {
                inner.leases.remove(lease);
                // Drops what is kept for late clients even when recording failed.
                inner.events.end(lease.run_id, None);
            }
        }
        if !released.is_empty() {
            if let Err(e) = with_retry(|| inner.store.release(&released)).await {
                tracing::error!(error = %e, "handing runs back failed; they are re-queued at next start");
            }
            for lease in &released {
                inner.leases.remove(lease);
                inner.events.end(lease.run_id, None);
            }
        }
        // An end can make a `queue` fleet's next run claimable.
        inner.wake.notify_one();
        if let Some(hook) = &inner.config.outbox {
            hook.wake.notify_one();
        }
    }
}

/// Extends every lease this node holds, in one call, a few times per lease period.
async fn renewer(scheduler: Scheduler, stop: CancellationToken) {
    let inner = &scheduler.inner;
    let every = inner.config.lease / 3;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return,
        }
        let leases = inner.leases.all();
        if leases.is_empty() {
            continue;
        }
        let until = now_ms() + inner.config.lease.as_millis() as i64;
        match inner
            .store
            .renew(&inner.config.node_id, &leases, until)
            .await
        {
            Ok(renewal) => {
                for lease in &renewal.lost {
                    tracing::warn!(run_id = %lease.run_id, "lease lost; stopping its execution");
                    inner.leases.lose(lease);
                }
                // A cancel whose signal this node missed.
                for lease in &renewal.cancelled {
                    inner.leases.cancel(lease.run_id);
                }
            }
            Err(e) => tracing::warn!(error = %e, "renewing leases failed"),
        }
    }
}

/// Stops runs this node holds when any node of a shared store cancels them.
async fn cancel_listener(scheduler: Scheduler, stop: CancellationToken) {
    let Some(mut signal) = scheduler.inner.store.cancel_signal() else {
        return;
    };
    loop {
        tokio::select! {
            got = signal.recv() => match got {
                Ok(run_id) => {
                    scheduler.inner.leases.cancel(run_id);
                }
                // Missed some: the renewer catches those within a third of the lease.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => return,
            },
            _ = stop.cancelled() => return,
        }
    }
}

/// Re-queues runs whose lease ran out (their worker died), a few times per lease period.
async fn reaper(scheduler: Scheduler, stop: CancellationToken) {
    let inner = &scheduler.inner;
    let every = (inner.config.lease / 3).max(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return,
        }
        match inner
            .store
            .requeue_expired(now_ms(), false, inner.config.max_attempts)
            .await
        {
            Ok(r) if r.requeued == 0 && r.failed == 0 => {}
            Ok(r) => {
                tracing::warn!(
                    requeued = r.requeued,
                    failed = r.failed,
                    "runs whose worker was lost: re-queued, or failed after max attempts"
                );
                scheduler.wake();
            }
            Err(e) => tracing::error!(error = %e, "re-queuing expired runs failed"),
        }
    }
}

/// One retry after a short pause: a store error under load is usually momentary.
async fn with_retry<T, F, Fut>(mut f: F) -> crate::store::StoreResult<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = crate::store::StoreResult<T>>,
{
    match f().await {
        Ok(v) => Ok(v),
        Err(e) => {
            tracing::warn!(error = %e, "store call failed; retrying once");
            tokio::time::sleep(Duration::from_millis(100)).await;
            f().await
        }
    }
}
