//! Executing one fleet run: the planner decides what may start, vessels that may start run at
//! once on vessel threads of their own, retries wait on a timer, a cancel stops running guests,
//! and progress is fenced by the lease.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio_util::sync::CancellationToken;

use super::events::Events;
use super::planner::{Plan, State};
use super::pool::{RunError, VesselPool};
use crate::fleet::{FleetSpec, Retry, VesselSpec};
use crate::sandbox::{
    CancelFlag, FailureReason, Limits, Payload, Program, RequestMeta, RunIds, Sandbox, VesselInput,
    VesselKind, VesselOutcome, VesselStatus, value_to_var,
};
use crate::store::{Code, Lease, Queue, RunStatus, VesselAttempt, VesselRun};
use crate::util::{now_ms, rfc3339};

/// How long past a vessel's timeout the executor still waits for its thread. The sandbox ends a
/// guest by its deadline itself (epoch checks, host calls that wait in slices); this backstop
/// holds when something it does not interrupt (a long call into a built-in, a stuck host call)
/// does not return.
pub const BACKSTOP_GRACE: Duration = Duration::from_secs(1);

/// What executing a fleet needs.
#[derive(Clone)]
pub struct RunContext {
    /// Where vessel code lives.
    pub code: Arc<dyn Code>,
    /// Where a claimed run's progress is written; `None` for dry runs, which hold no claim.
    pub queue: Option<Arc<dyn Queue>>,
    /// Compiles and runs vessels.
    pub sandbox: Arc<Sandbox>,
    /// Threads vessels run on.
    pub pool: VesselPool,
    /// When a running vessel gives its dispatch slot up (see [`Slot`]).
    pub slow_after: Duration,
    /// Vessel durations and fuel of real (not dry) runs.
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// The dispatch slot a claimed run holds. Quick runs hold a permit of the dispatcher's
/// semaphore; a run whose vessel has been running longer than `slow_after` trades it for a
/// permit of the slow lane, so a few slow guests cannot keep the node from claiming more work.
pub(crate) struct Slot {
    permit: Mutex<Option<OwnedSemaphorePermit>>,
    slow: Arc<tokio::sync::Semaphore>,
}

impl Slot {
    pub(crate) fn new(permit: OwnedSemaphorePermit, slow: Arc<tokio::sync::Semaphore>) -> Self {
        Slot {
            permit: Mutex::new(Some(permit)),
            slow,
        }
    }

    /// Moves the run to the slow lane, if the lane has room; otherwise it keeps its slot. A
    /// run already there keeps its place.
    fn mark_slow(&self) {
        let Ok(mut permit) = self.permit.lock() else {
            return;
        };
        let in_lane = permit
            .as_ref()
            .is_some_and(|p| Arc::ptr_eq(p.semaphore(), &self.slow));
        if !in_lane && let Ok(slow) = self.slow.clone().try_acquire_owned() {
            *permit = Some(slow);
        }
    }
}

/// A claimed run as its execution sees it.
pub(crate) struct Held<'a> {
    /// The claim; progress is fenced with it.
    pub lease: Lease,
    /// Fires when the lease was lost: stop, record nothing more.
    pub lost: &'a CancellationToken,
    /// Fires at shutdown: start nothing more and hand the run back.
    pub shutdown: &'a CancellationToken,
    /// The dispatch slot.
    pub slot: &'a Slot,
    /// Where the run's live events go.
    pub events: &'a Arc<Events>,
}

/// The result of executing a fleet.
#[derive(Debug, Clone)]
pub struct FleetOutcome {
    /// `Succeeded`, `Failed` or `Cancelled`.
    pub status: RunStatus,
    /// Effective variables at the end.
    pub variables: BTreeMap<String, String>,
    /// One entry per vessel, in the fleet's order.
    pub vessels: Vec<VesselRun>,
    /// Set when the run stopped early for shutdown or a lost lease (nothing to finish).
    pub interrupted: bool,
}

/// The declared variables, overridden by same-named top-level keys of a JSON-object body.
pub fn initial_variables(
    spec: &FleetSpec,
    content_type: &str,
    body: &[u8],
) -> BTreeMap<String, String> {
    let mut vars = spec.variables.clone();
    if vars.is_empty() {
        return vars;
    }
    let payload: Payload = Payload::<serde_json::Value>::parse(content_type, body);
    if let Some(obj) = payload.object() {
        for (name, value) in vars.iter_mut() {
            if let Some(v) = obj.get(name) {
                *value = value_to_var(v);
            }
        }
    }
    vars
}

/// Why a run stopped starting vessels before its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// Cancelled: running vessels are stopped, pending ones end as cancelled.
    Cancel,
    /// Shutdown or a lost lease: the run is handed back (or dropped) unfinished.
    Interrupt,
}

/// One fleet run in progress: the plan, each vessel's state and record.
struct Progress<'a> {
    spec: &'a FleetSpec,
    plan: Plan,
    initial: BTreeMap<String, String>,
    states: Vec<State>,
    runs: Vec<Option<VesselRun>>,
}

impl Progress<'_> {
    /// What vessel `i` sees: the initial variables, then those set by every vessel upstream of
    /// it, in the fleet's order — so of two parallel branches setting one name, the one written
    /// later wins, whatever finished first.
    fn variables_for(&self, i: usize) -> BTreeMap<String, String> {
        let mut vars = self.initial.clone();
        for (j, run) in self.runs.iter().enumerate() {
            if let Some(run) = run.as_ref().filter(|_| self.plan.is_upstream(j, i)) {
                vars.extend(run.outcome.variables.clone());
            }
        }
        vars
    }

    /// The run's variables: the initial ones, then every vessel's, in the fleet's order.
    fn variables(&self) -> BTreeMap<String, String> {
        let mut vars = self.initial.clone();
        for run in self.runs.iter().flatten() {
            vars.extend(run.outcome.variables.clone());
        }
        vars
    }

    /// The vessel runs recorded so far, in the fleet's order.
    fn recorded(&self) -> Vec<VesselRun> {
        self.runs.iter().flatten().cloned().collect()
    }

    /// Every vessel's record at the end; those that never started are `pending` → `skipped`
    /// or `cancelled` as `stop` says.
    fn finish(mut self, cancelled: bool) -> FleetOutcome {
        for (i, v) in self.spec.vessels.iter().enumerate() {
            if self.runs[i].is_none() {
                let outcome = if cancelled {
                    VesselOutcome::not_run(
                        VesselStatus::Cancelled,
                        Some(FailureReason::Cancelled),
                        None,
                    )
                } else {
                    VesselOutcome::not_run(VesselStatus::Skipped, None, None)
                };
                self.runs[i] = Some(VesselRun::not_run(&v.name, outcome));
            }
        }
        let status = if cancelled {
            RunStatus::Cancelled
        } else {
            self.plan.status(&self.states)
        };
        FleetOutcome {
            status,
            variables: self.variables(),
            vessels: self.runs.into_iter().flatten().collect(),
            interrupted: false,
        }
    }
}

/// Runs a fleet: every vessel whose `needs` have ended and whose `when` holds starts at once on
/// a vessel thread of its own. `recorded` is what earlier attempts or a resumed run left: its
/// ended vessel runs are carried over, and a vessel still `running` there was lost with its
/// worker (kept as a `node_lost` attempt). With `held` (a claimed run, not a dry run), progress
/// is recorded as vessels end; shutdown or a lost lease stops the run from starting more
/// (reported as interrupted). `cancel` stops running guests and ends the run as cancelled.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn execute_fleet(
    ctx: &RunContext,
    spec: &FleetSpec,
    ids: RunIds,
    meta: Arc<RequestMeta>,
    body: bytes::Bytes,
    recorded: Vec<VesselRun>,
    cancel: &CancellationToken,
    held: Option<Held<'_>>,
) -> FleetOutcome {
    let plan = Plan::new(spec);
    let n = plan.len();
    let mut run = Progress {
        spec,
        initial: initial_variables(spec, &meta.content_type, &body),
        states: vec![State::Pending; n],
        runs: vec![None; n],
        plan,
    };
    let mut lost: Vec<Vec<VesselAttempt>> = vec![Vec::new(); n];
    // In the fleet's order, so what a vessel needs is settled before it.
    for (i, vessel) in spec.vessels.iter().enumerate() {
        let Some(prev) = recorded.iter().find(|r| r.name == vessel.name) else {
            continue;
        };
        let status = prev.outcome.status;
        let needs_ended = vessel.needs.iter().all(|need| {
            spec.vessels
                .iter()
                .position(|v| &v.name == need)
                .is_some_and(|j| matches!(run.states[j], State::Ended { .. }))
        });
        match status {
            VesselStatus::Succeeded | VesselStatus::Failed | VesselStatus::Skipped
                if needs_ended =>
            {
                run.states[i] = run.plan.ended(&run.states, i, status);
                run.runs[i] = Some(VesselRun {
                    carried_over: true,
                    ..prev.clone()
                });
            }
            VesselStatus::Running => {
                lost[i] = prev.attempts.clone();
                lost[i].push(VesselAttempt {
                    attempt: prev.attempt,
                    status: VesselStatus::Running,
                    reason: Some(FailureReason::NodeLost),
                    exit_code: None,
                    error: Some("the worker running it was lost".into()),
                    started_at: prev.started_at.clone(),
                    duration_ms: 0.0,
                });
            }
            _ => {}
        }
    }

    if let Some(h) = held.as_ref() {
        for carried in run.runs.iter().flatten() {
            h.events.vessel_ended(h.lease.run_id, carried);
        }
    }
    let defaults = Limits::default().with(&spec.limits);
    let flag = CancelFlag::default();
    let (slow_tx, mut slow_rx) = mpsc::unbounded_channel::<()>();
    let mut running = FuturesUnordered::new();
    let mut stop = None;
    let never = CancellationToken::new();
    let held = held.as_ref();
    let (lost_token, shutdown) = match held {
        Some(h) => (h.lost, h.shutdown),
        None => (&never, &never),
    };
    loop {
        if stop.is_none() {
            for i in run.plan.step(&mut run.states) {
                let vessel = &spec.vessels[i];
                run.states[i] = State::Running;
                let earlier = std::mem::take(&mut lost[i]);
                let first = earlier.last().map_or(1, |a| a.attempt + 1);
                // Shown while it runs (and kept if this worker is lost, see above).
                run.runs[i] = Some(VesselRun {
                    attempt: first,
                    attempts: earlier.clone(),
                    started_at: Some(rfc3339(now_ms())),
                    ..VesselRun::not_run(
                        &vessel.name,
                        VesselOutcome::not_run(VesselStatus::Running, None, None),
                    )
                });
                let input = VesselInput {
                    body: body.clone(),
                    request: meta.clone(),
                    ids: RunIds {
                        vessel: vessel.name.clone(),
                        ..ids.clone()
                    },
                    variables: run.variables_for(i),
                    limits: defaults.with(&vessel.limits),
                    cancel: flag.clone(),
                    logs: held.map(|h| h.events.sink(h.lease.run_id, &vessel.name)),
                };
                let attempts = Attempts {
                    first,
                    earlier,
                    slow: slow_tx.clone(),
                };
                running.push(async move {
                    (
                        i,
                        run_with_retries(ctx, vessel, input, attempts, cancel, held).await,
                    )
                });
            }
        }
        if running.is_empty() {
            break;
        }
        tokio::select! {
            Some((i, mut ended)) = running.next() => {
                if stop == Some(Stop::Cancel) || ended.outcome.reason == Some(FailureReason::Cancelled) {
                    ended.outcome.status = VesselStatus::Cancelled;
                }
                if let Some(h) = held {
                    h.events.vessel_ended(h.lease.run_id, &ended);
                }
                run.states[i] = run.plan.ended(&run.states, i, ended.outcome.status);
                run.runs[i] = Some(ended);
                // After the last vessel the finish records the same, so that write is saved.
                let more = !run.plan.done(&run.states) && stop != Some(Stop::Cancel);
                if let Some(h) = held.filter(|_| more) {
                    record_progress(ctx, h, &run).await;
                }
            }
            Some(()) = slow_rx.recv() => {
                // A vessel running long: record that it runs, so that if this worker is lost
                // the next attempt knows (`node_lost` in its history).
                if let Some(h) = held {
                    record_progress(ctx, h, &run).await;
                }
            }
            _ = cancel.cancelled(), if stop.is_none() => {
                stop = Some(Stop::Cancel);
                flag.cancel();
            }
            _ = lost_token.cancelled(), if stop.is_none() => {
                // Someone else holds the run: nothing this attempt finds will be written.
                stop = Some(Stop::Interrupt);
                flag.cancel();
            }
            _ = shutdown.cancelled(), if stop.is_none() => {
                // Running vessels finish (within the grace period); nothing new starts.
                stop = Some(Stop::Interrupt);
            }
        }
    }
    drop(running);
    match stop {
        Some(Stop::Interrupt) if !run.plan.done(&run.states) || lost_token.is_cancelled() => {
            let vessels = run.recorded();
            FleetOutcome {
                status: RunStatus::Queued,
                variables: run.variables(),
                vessels,
                interrupted: true,
            }
        }
        Some(Stop::Cancel) => run.finish(true),
        _ => run.finish(false),
    }
}

/// Writes a held run's progress; a lost lease stops the run.
async fn record_progress(ctx: &RunContext, h: &Held<'_>, run: &Progress<'_>) {
    let Some(queue) = &ctx.queue else {
        return;
    };
    match queue
        .progress(h.lease, &run.variables(), &run.recorded())
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!("lease lost: another claim holds this run; stopping");
            h.lost.cancel();
        }
        Err(e) => tracing::warn!(error = %e, "recording progress failed"),
    }
}

/// Attempt bookkeeping of one vessel run.
struct Attempts {
    /// Number of the first attempt made now (after attempts lost with an earlier worker).
    first: u32,
    /// Attempts made before.
    earlier: Vec<VesselAttempt>,
    /// Told once when the vessel has run long (see [`execute_fleet`]).
    slow: mpsc::UnboundedSender<()>,
}

/// Runs a vessel, and again after a pause while its `retry` allows. The pause is a timer, not
/// a vessel thread; the run's dispatch slot moves to the slow lane meanwhile.
async fn run_with_retries(
    ctx: &RunContext,
    vessel: &VesselSpec,
    input: VesselInput,
    attempts: Attempts,
    cancel: &CancellationToken,
    held: Option<&Held<'_>>,
) -> VesselRun {
    let Attempts {
        first,
        mut earlier,
        slow,
    } = attempts;
    let mut attempt = first;
    let mut tries = 1;
    loop {
        if let Some(h) = held {
            h.events
                .vessel_started(h.lease.run_id, &vessel.name, attempt);
        }
        let started = now_ms();
        let outcome =
            run_vessel(ctx, vessel.kind, &vessel.sha256, input.clone(), held, &slow).await;
        let retry = vessel
            .retry
            .as_ref()
            .filter(|r| tries < r.max_attempts && retryable(r, &outcome))
            .filter(|_| !cancel.is_cancelled());
        let Some(retry) = retry else {
            return VesselRun {
                name: vessel.name.clone(),
                outcome,
                attempt,
                attempts: earlier,
                started_at: Some(rfc3339(started)),
                finished_at: Some(rfc3339(now_ms())),
                carried_over: false,
            };
        };
        tracing::info!(
            vessel = %vessel.name,
            attempt,
            reason = ?outcome.reason,
            "vessel failed; retrying"
        );
        earlier.push(VesselAttempt {
            attempt,
            status: outcome.status,
            reason: outcome.reason,
            exit_code: outcome.exit_code,
            error: outcome.error.clone(),
            started_at: Some(rfc3339(started)),
            duration_ms: outcome.duration_ms,
        });
        if let Some(h) = held {
            h.slot.mark_slow();
        }
        tries += 1;
        attempt += 1;
        tokio::select! {
            _ = tokio::time::sleep(retry.pause(tries)) => {}
            _ = cancel.cancelled() => {}
        }
        if cancel.is_cancelled() {
            return VesselRun {
                name: vessel.name.clone(),
                outcome: VesselOutcome::not_run(
                    VesselStatus::Cancelled,
                    Some(FailureReason::Cancelled),
                    Some("cancelled while waiting to retry".into()),
                ),
                attempt,
                attempts: earlier,
                started_at: None,
                finished_at: Some(rfc3339(now_ms())),
                carried_over: false,
            };
        }
    }
}

/// Whether a failed outcome is one `retry` attempts again.
fn retryable(retry: &Retry, outcome: &VesselOutcome) -> bool {
    if outcome.status != VesselStatus::Failed {
        return false;
    }
    match outcome.reason {
        Some(FailureReason::ExitCode) => match (&retry.on_exit_codes, outcome.exit_code) {
            (None, _) => true,
            (Some(codes), Some(code)) => codes.contains(&code),
            (Some(_), None) => false,
        },
        Some(FailureReason::Cancelled) | Some(FailureReason::NodeLost) => false,
        _ => retry.on_limits,
    }
}

/// Loads (or takes from the cache) a vessel's program and runs it on the pool.
async fn run_vessel(
    ctx: &RunContext,
    kind: VesselKind,
    sha256: &str,
    input: VesselInput,
    held: Option<&Held<'_>>,
    slow: &mpsc::UnboundedSender<()>,
) -> VesselOutcome {
    let program = match load_program(ctx, kind, sha256).await {
        Ok(p) => p,
        Err(e) => {
            return VesselOutcome::not_run(
                VesselStatus::Failed,
                Some(FailureReason::Trap),
                Some(e),
            );
        }
    };
    let sandbox = ctx.sandbox.clone();
    let timeout_ms = input.limits.timeout_ms;
    // When the vessel got a thread: time spent waiting for one is not slowness of the vessel.
    let started = Arc::new(std::sync::OnceLock::<Instant>::new());
    let job = ctx.pool.run_within(
        {
            let started = started.clone();
            move || {
                let _ = started.set(Instant::now());
                sandbox.run(&program, &input)
            }
        },
        Duration::from_millis(timeout_ms) + BACKSTOP_GRACE,
    );
    tokio::pin!(job);
    let result = match held {
        None => job.await,
        Some(h) => loop {
            let mark = started.get().map_or(Instant::now(), |t| *t) + ctx.slow_after;
            tokio::select! {
                result = &mut job => break result,
                _ = tokio::time::sleep_until(mark.into()) => {
                    if started.get().is_some_and(|t| t.elapsed() >= ctx.slow_after) {
                        h.slot.mark_slow();
                        let _ = slow.send(());
                        break job.await;
                    }
                }
            }
        },
    };
    match result {
        Ok(outcome) => {
            if held.is_some() {
                ctx.metrics.observe_vessel(kind, &outcome);
            }
            outcome
        }
        Err(RunError::Overran { limit, replaced }) => {
            tracing::error!(
                ?limit,
                replaced,
                "a vessel ran past its timeout and grace; the host stopped waiting for it"
            );
            ctx.metrics.vessel_abandoned();
            let mut outcome = VesselOutcome::not_run(
                VesselStatus::Failed,
                Some(FailureReason::Timeout),
                Some(format!(
                    "timed out after {timeout_ms} ms; the vessel did not stop within {} ms more, so the host stopped waiting for it",
                    BACKSTOP_GRACE.as_millis()
                )),
            );
            outcome.duration_ms = limit.as_secs_f64() * 1000.0;
            outcome
        }
        Err(RunError::Panicked(panic)) => {
            tracing::error!(error = %panic, "a vessel run panicked");
            VesselOutcome::not_run(
                VesselStatus::Failed,
                Some(FailureReason::Trap),
                Some("internal error in the sandbox".into()),
            )
        }
    }
}

/// The compiled program for some code: from the cache, or fetched and compiled on the pool.
pub(crate) async fn load_program(
    ctx: &RunContext,
    kind: VesselKind,
    sha256: &str,
) -> Result<Program, String> {
    if let Some(p) = ctx.sandbox.cached(kind, sha256) {
        return Ok(p);
    }
    let code = ctx
        .code
        .code(sha256)
        .await
        .map_err(|e| format!("could not load the vessel's code: {e}"))?;
    let (sandbox, sha) = (ctx.sandbox.clone(), sha256.to_owned());
    ctx.pool
        .run(move || sandbox.compile(kind, &sha, &code))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("the vessel's code does not compile: {e}"))
}
