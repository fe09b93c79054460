//! Scheduling: the node claims queued runs from the store and executes fleets vessel by vessel.
//!
//! - `dispatch`: one dispatcher claiming in batches, one renewer for all leases, one finisher
//!   recording ends in batches, one reaper for runs whose worker died;
//! - [`planner`]: pure — which vessels may start, which are skipped, how the run ends;
//! - `execute`: one fleet run — parallel vessels, retries, cancel, fenced progress;
//! - [`pool`]: the vessel threads, sized to the cores, with a slow lane;
//! - [`runs`]: cancelling and replaying a run, for the admin API.
//!
//! Executions are tokio tasks that only wait; vessels run on the pool's threads. A claimed run
//! carries a fenced lease; if this process dies, the lease runs out and the run is attempted
//! again (up to `max_attempts`).

mod dispatch;
pub mod events;
mod execute;
pub mod planner;
pub mod pool;
pub mod runs;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::fleet::{FleetDoc, FleetError, FleetSpec};
use crate::sandbox::{RequestMeta, RunIds, Sandbox, VesselKind};
use crate::store::{Store, StoreError};
pub use execute::{FleetOutcome, RunContext, initial_variables};
pub use pool::{PoolSize, VesselPool};

/// Settings of the scheduler.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Vessel threads for quick vessels (and so runs executing at once); 0 runs nothing.
    pub workers: usize,
    /// Runs claimed beyond the free vessel threads, so a thread never waits for a claim.
    pub prefetch: usize,
    /// Extra threads (and runs) allowed for vessels running longer than `slow_after`.
    pub max_slow: usize,
    /// When a running vessel counts as slow.
    pub slow_after: Duration,
    /// How long a claim holds before it counts as lost.
    pub lease: Duration,
    /// How often an idle dispatcher looks at the queue without being woken.
    pub poll: Duration,
    /// This node's name in leases.
    pub node_id: String,
    /// Attempts after which a run whose worker keeps getting lost is failed.
    pub max_attempts: u32,
    /// Niceness of the vessel threads (see [`pool`]); 0 keeps them at normal priority.
    pub vessel_nice: u8,
    /// Most runs this node executes at once, whatever lane they are in; 0: no cap beyond the
    /// vessel threads, prefetch and slow lane.
    pub max_running: usize,
    /// Where claims, finished runs and vessel runs are counted.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// What creating deliveries at a run's end needs; `None`: runs create no deliveries (the
    /// local `wharf run`, which has no outbox).
    pub outbox: Option<crate::outbox::OutboxHook>,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        let workers = default_workers();
        SchedulerConfig {
            workers,
            prefetch: 32,
            max_slow: 32,
            slow_after: Duration::from_millis(100),
            lease: Duration::from_secs(30),
            poll: Duration::from_secs(1),
            node_id: format!("node-{}", uuid::Uuid::new_v4()),
            max_attempts: 3,
            vessel_nice: 0,
            max_running: 0,
            metrics: Arc::default(),
            outbox: None,
        }
    }
}

/// One vessel thread per core: vessels are CPU-bound, and more busy threads than cores only
/// adds contention (slow vessels get extra threads of their own, see [`pool`]).
pub fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
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

/// The org, project and fleet a dry run gives its vessels as their run's ids.
#[derive(Debug, Clone)]
pub struct FleetIds {
    /// The fleet's org.
    pub org_id: String,
    /// The fleet's project.
    pub project_id: String,
    /// The fleet.
    pub fleet_id: String,
}

impl FleetIds {
    /// The ids of a stored fleet.
    pub fn of(fleet: &crate::store::Fleet) -> Self {
        FleetIds {
            org_id: fleet.org_id.to_string(),
            project_id: fleet.project_id.to_string(),
            fleet_id: fleet.id.to_string(),
        }
    }

    /// `local` for each: a fleet run by `wharf run` belongs to no org or project.
    pub fn local() -> Self {
        let local = || "local".to_owned();
        FleetIds {
            org_id: local(),
            project_id: local(),
            fleet_id: local(),
        }
    }
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
    leases: dispatch::Leases,
    events: Arc<events::Events>,
}

impl Scheduler {
    /// Builds the scheduler and its vessel pool. The sandbox must allow
    /// [`Scheduler::max_vessels`] vessels at once.
    pub fn new(
        store: Arc<dyn Store>,
        sandbox: Arc<Sandbox>,
        config: SchedulerConfig,
    ) -> std::io::Result<Self> {
        let pool = VesselPool::new(PoolSize {
            // Fleet checks at save time compile on the pool, even on an ingress-only node.
            core: config.workers.max(1),
            max_slow: config.max_slow,
            slow_after: config.slow_after,
            nice: config.vessel_nice,
        })?;
        Ok(Scheduler {
            inner: Arc::new(Inner {
                store,
                sandbox,
                pool,
                wake: Notify::new(),
                config,
                leases: dispatch::Leases::default(),
                events: Arc::default(),
            }),
        })
    }

    /// The most vessels that can run at once under `config` (core threads and the slow lane).
    pub fn max_vessels(config: &SchedulerConfig) -> usize {
        config.workers.max(1) + config.max_slow
    }

    /// The vessel pool, for other callers of the sandbox (dry runs).
    pub fn pool(&self) -> &VesselPool {
        &self.inner.pool
    }

    /// The metrics this scheduler records into (and ingress and the API share).
    pub fn metrics(&self) -> &Arc<crate::metrics::Metrics> {
        &self.inner.config.metrics
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
            slow_after: inner.config.slow_after,
            metrics: inner.config.metrics.clone(),
        }
    }

    /// Runs a fleet on a request without queuing or recording anything: what a run would record.
    /// The server's dry-run endpoint and `wharf run` both come through here, so a dry run takes
    /// exactly the path of a real one minus the store writes. The run id is fresh and the
    /// attempt is 1.
    pub async fn dry_run(
        &self,
        spec: &FleetSpec,
        ids: FleetIds,
        request: RequestMeta,
        body: bytes::Bytes,
    ) -> DryRun {
        let FleetIds {
            org_id,
            project_id,
            fleet_id,
        } = ids;
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
        let outcome = execute::execute_fleet(
            &self.context(),
            spec,
            ids,
            Arc::new(request),
            body,
            Vec::new(),
            &tokio_util::sync::CancellationToken::new(),
            None,
        )
        .await;
        // What the destinations would be sent; nothing is.
        let rows: Vec<serde_json::Value> = outcome
            .vessels
            .iter()
            .flat_map(|v| v.outcome.rows.iter().cloned())
            .collect();
        let deliveries: Vec<_> = crate::outbox::plan(
            &spec.destinations,
            outcome.status,
            &outcome.variables,
            &rows,
        )
        .into_iter()
        .map(|(_, planned)| planned)
        .collect();
        let report = serde_json::json!({
            "dry_run": true,
            "fleet_id": fleet_id,
            "status": outcome.status,
            "variables": outcome.variables,
            "request": report_request,
            "vessels": outcome.vessels,
            "deliveries": deliveries,
        });
        DryRun { outcome, report }
    }

    /// Live events of the runs this node executes.
    pub fn events(&self) -> &Arc<events::Events> {
        &self.inner.events
    }

    /// Tells this node's delivery worker that deliveries became due (a retry by hand).
    pub fn wake_deliveries(&self) {
        if let Some(hook) = &self.inner.config.outbox {
            hook.wake.notify_one();
        }
    }

    /// Tells an idle worker that a run was queued.
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// Stops a run this node is executing (after the store recorded the cancel); true if this
    /// node holds it. Other nodes learn through the store's cancel signal.
    pub fn cancel_local(&self, run_id: uuid::Uuid) -> bool {
        self.inner.leases.cancel(run_id)
    }
}
