//! Scheduling: workers claim queued runs from the store and execute fleets vessel by vessel.
//!
//! Workers are tokio tasks that only wait (on the store, on the vessel pool); the vessels
//! themselves run on the [`pool::VesselPool`] threads. A claimed run carries a lease that the
//! executing task renews; if this process dies, the lease runs out and another worker (or this
//! node after a restart) runs it again as the next attempt.

mod execute;
pub mod pool;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::fleet::{FleetDoc, FleetError, FleetSpec};
use crate::sandbox::{RequestMeta, RunIds, Sandbox, VesselKind};
use crate::store::{Store, StoreError};
pub use execute::{FleetOutcome, RunContext, execute_fleet};
pub use pool::VesselPool;

/// Settings of the scheduler.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Runs executed at once by this node.
    pub workers: usize,
    /// How long a claim holds before it counts as lost.
    pub lease: Duration,
    /// How often idle workers look at the queue without being woken (other nodes, expired leases).
    pub poll: Duration,
    /// This node's name in leases.
    pub node_id: String,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            workers: 16,
            lease: Duration::from_secs(30),
            poll: Duration::from_secs(1),
            node_id: format!("node-{}", uuid::Uuid::new_v4()),
        }
    }
}

/// The result of a dry run.
#[derive(Debug, Clone)]
pub struct DryRun {
    /// What executing the fleet gave.
    pub outcome: FleetOutcome,
    /// The answer of the dry-run endpoint (and of `wharf run --json`): `dry_run`, `fleet_id`,
    /// `status`, `variables`, `request`, `vessels`.
    pub report: serde_json::Value,
}

/// Why a fleet document was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// The document or its code is wrong (a 400).
    #[error(transparent)]
    Invalid(FleetError),
    /// The store failed.
    #[error(transparent)]
    Store(StoreError),
}

/// Handle to the scheduler; cheap to clone.
#[derive(Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    sandbox: Arc<Sandbox>,
    pool: VesselPool,
    wake: Notify,
    config: SchedulerConfig,
}

impl Scheduler {
    /// Builds the scheduler and its vessel pool (one thread per worker).
    pub fn new(
        store: Arc<dyn Store>,
        sandbox: Arc<Sandbox>,
        config: SchedulerConfig,
    ) -> std::io::Result<Self> {
        let pool = VesselPool::new(config.workers)?;
        Ok(Scheduler {
            inner: Arc::new(Inner {
                store,
                sandbox,
                pool,
                wake: Notify::new(),
                config,
            }),
        })
    }

    /// The vessel pool, for other callers of the sandbox (dry runs).
    pub fn pool(&self) -> &VesselPool {
        &self.inner.pool
    }

    /// The sandbox the workers use.
    pub fn sandbox(&self) -> &Arc<Sandbox> {
        &self.inner.sandbox
    }

    /// Checks a fleet document and everything its code must pass (syntax, validation, imports),
    /// compiling on the vessel pool so the cache is warm for the first run, then stores the code.
    pub async fn prepare_fleet(&self, doc: FleetDoc) -> Result<FleetSpec, PrepareError> {
        let inner = &self.inner;
        let mut parsed = doc.parse().map_err(PrepareError::Invalid)?;
        let inline: std::collections::HashSet<String> =
            parsed.code.iter().map(|c| c.sha256.clone()).collect();
        for vessel in parsed
            .spec
            .vessels
            .iter_mut()
            .filter(|v| !inline.contains(&v.sha256))
        {
            let code = match inner.store.code(&vessel.sha256).await {
                Ok(code) => code,
                Err(StoreError::NotFound(_)) => {
                    return Err(PrepareError::Invalid(FleetError(format!(
                        "vessel {}: no stored code has sha256 {}; send the code inline",
                        vessel.name, vessel.sha256
                    ))));
                }
                Err(e) => return Err(PrepareError::Store(e)),
            };
            vessel.size = code.len() as u64;
            self.check_code(&vessel.name, vessel.kind, &vessel.sha256, code)
                .await?;
        }
        for code in &parsed.code {
            self.check_code(&code.vessel, code.kind, &code.sha256, code.bytes.clone())
                .await?;
        }
        inner
            .store
            .put_code(&parsed.code)
            .await
            .map_err(PrepareError::Store)?;
        Ok(parsed.spec)
    }

    async fn check_code(
        &self,
        vessel: &str,
        kind: VesselKind,
        sha256: &str,
        code: Vec<u8>,
    ) -> Result<(), PrepareError> {
        let (sandbox, sha) = (self.inner.sandbox.clone(), sha256.to_owned());
        let compiled = self
            .inner
            .pool
            .run(move || sandbox.compile(kind, &sha, &code).map(|_| ()))
            .await
            .map_err(|e| PrepareError::Invalid(FleetError(format!("vessel {vessel}: {e}"))))?;
        compiled.map_err(|e| PrepareError::Invalid(FleetError(format!("vessel {vessel}: {e}"))))
    }

    fn context(&self) -> RunContext {
        let inner = &self.inner;
        RunContext {
            store: inner.store.clone(),
            sandbox: inner.sandbox.clone(),
            pool: inner.pool.clone(),
            owner: inner.config.node_id.clone(),
            lease: inner.config.lease,
        }
    }

    /// Runs a fleet on a request without queuing or recording anything: what a run would record.
    /// The server's dry-run endpoint and `wharf run` both come through here, so a dry run takes
    /// exactly the path of a real one minus the store writes. `ids` names the fleet's org,
    /// project and fleet; the run id is fresh and the attempt is 1.
    pub async fn dry_run(
        &self,
        spec: &FleetSpec,
        ids: [String; 3],
        request: RequestMeta,
        body: bytes::Bytes,
    ) -> DryRun {
        let [org_id, project_id, fleet_id] = ids;
        let report_request = serde_json::json!({
            "id": request.id, "method": request.method, "content_type": request.content_type,
            "headers": request.headers, "query": request.query, "body_size": body.len(),
        });
        let ids = RunIds {
            org_id,
            project_id,
            fleet_id: fleet_id.clone(),
            fleet_run_id: uuid::Uuid::now_v7().to_string(),
            vessel: String::new(),
            attempt: 1,
        };
        let outcome = execute_fleet(
            &self.context(),
            spec,
            ids,
            Arc::new(request),
            body,
            None,
            None,
        )
        .await;
        let report = serde_json::json!({
            "dry_run": true,
            "fleet_id": fleet_id,
            "status": outcome.status,
            "variables": outcome.variables,
            "request": report_request,
            "vessels": outcome.vessels,
        });
        DryRun { outcome, report }
    }

    /// Tells an idle worker that a run was queued.
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// Runs the workers until `shutdown` fires; then stops claiming and returns once the runs in
    /// hand are finished or handed back.
    pub async fn run(&self, shutdown: CancellationToken) {
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..self.inner.config.workers {
            let me = self.clone();
            let shutdown = shutdown.clone();
            workers.spawn(async move { me.worker(shutdown).await });
        }
        let reaper = {
            let me = self.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move { me.reap_expired(shutdown).await })
        };
        while workers.join_next().await.is_some() {}
        let _ = reaper.await;
    }

    async fn worker(&self, shutdown: CancellationToken) {
        let inner = &self.inner;
        while !shutdown.is_cancelled() {
            let lease_until = crate::util::now_ms() + inner.config.lease.as_millis() as i64;
            match inner.store.claim(&inner.config.node_id, lease_until).await {
                Ok(Some(claimed)) => {
                    // Pass the baton: there may be more queued work for an idle colleague.
                    inner.wake.notify_one();
                    execute::execute_claimed(&self.context(), claimed, &shutdown).await;
                }
                Ok(None) => {
                    tokio::select! {
                        _ = inner.wake.notified() => {}
                        _ = tokio::time::sleep(inner.config.poll) => {}
                        _ = shutdown.cancelled() => {}
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "claiming a run failed");
                    tokio::select! {
                        _ = tokio::time::sleep(inner.config.poll) => {}
                        _ = shutdown.cancelled() => {}
                    }
                }
            }
        }
    }

    /// Re-queues runs whose lease ran out (their worker died), every few seconds.
    async fn reap_expired(&self, shutdown: CancellationToken) {
        let every = (self.inner.config.lease / 3).max(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.cancelled() => return,
            }
            match self
                .inner
                .store
                .requeue_expired(crate::util::now_ms(), false)
                .await
            {
                Ok(0) => {}
                Ok(n) => {
                    tracing::warn!(runs = n, "re-queued runs whose worker was lost");
                    self.wake();
                }
                Err(e) => tracing::error!(error = %e, "re-queuing expired runs failed"),
            }
        }
    }
}
