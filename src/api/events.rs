//! Live run events as Server-Sent Events: `GET /runs/{run}/events` and
//! `GET /fleets/{fleet}/events`.
//!
//! Event names: `status` (`{"status"}`: queued, running, then the run's end status), `vessel`
//! (a vessel started — `"status": "running"` — or ended, with its outcome), `log`
//! (`{"vessel","stream","text"}`, as the vessel writes it) and `end` (the run is over; a run's
//! stream then closes). Every event's data names its `run_id`.
//!
//! A client connecting late is first given what already happened: from this node's memory for
//! a run executing here (output included), otherwise from the store. A run executing on another
//! node of a shared store is followed by polling the store: its vessels appear as they end,
//! with their output.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{ApiError, AppState, ErrorBody, parse_id};
use crate::sandbox::{LogStream, VesselStatus};
use crate::scheduler::events::{RunEvent, log_json, vessel_json};
use crate::store::{RunFilter, RunRecord, RunStatus};

/// How often a stream looks at the store for what happens on other nodes.
const POLL: Duration = Duration::from_millis(500);

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(run_events))
        .routes(routes!(fleet_events))
}

type BoxedEvents = std::pin::Pin<Box<dyn Stream<Item = Result<Event, Infallible>> + Send>>;
type EventStream = Sse<axum::response::sse::KeepAliveStream<BoxedEvents>>;

/// A stream fed by a task: the task ends when the client goes away (its sends fail).
fn sse(rx: mpsc::Receiver<Event>) -> EventStream {
    let stream =
        futures_util::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|e| (Ok(e), rx)) },
        );
    let stream: BoxedEvents = Box::pin(stream);
    Sse::new(stream).keep_alive(KeepAlive::default())
}

fn event(kind: &str, data: &Value) -> Event {
    Event::default().event(kind).data(data.to_string())
}

/// A run's events, from what already happened to its end.
#[utoipa::path(get, path = "/runs/{run}/events", tag = "runs",
    params(("run" = uuid::Uuid, Path, description = "Run id")),
    responses((status = 200, description = "`text/event-stream`: `status`, `vessel`, `log` and `end` events", content_type = "text/event-stream", body = super::types::ServerSentEvent),
        (status = 404, body = ErrorBody)))]
async fn run_events(
    State(s): State<AppState>,
    Path(run): Path<String>,
) -> Result<EventStream, ApiError> {
    let id = parse_id(&run, "run")?;
    // Subscribed before anything is read, so nothing falls between what is read and what comes.
    let live = s.scheduler.events().subscribe();
    let (record, _) = s.store.run(id).await?;
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(async move {
        let mut follow = RunFollower::new(id);
        if follow.run(&s, record, live, &tx).await.is_err() {
            // The client went away.
        }
    });
    Ok(sse(rx))
}

/// Events of every run of a fleet, as they happen (no history).
#[utoipa::path(get, path = "/fleets/{fleet}/events", tag = "fleets",
    params(("fleet" = uuid::Uuid, Path, description = "Fleet id")),
    responses((status = 200, description = "`text/event-stream`: the run events of every run of the fleet", content_type = "text/event-stream", body = super::types::ServerSentEvent),
        (status = 404, body = ErrorBody)))]
async fn fleet_events(
    State(s): State<AppState>,
    Path(fleet): Path<String>,
) -> Result<EventStream, ApiError> {
    let fleet_id = parse_id(&fleet, "fleet")?;
    let mut live = s.scheduler.events().subscribe();
    s.store.fleet(fleet_id).await?;
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(async move {
        // Runs followed through this node's events; others through the store.
        let mut local: HashSet<Uuid> = HashSet::new();
        let mut seen: HashMap<Uuid, RunStatus> = HashMap::new();
        let filter = RunFilter {
            limit: 20,
            ..Default::default()
        };
        if let Ok(runs) = s.store.runs(fleet_id, &filter).await {
            seen.extend(runs.iter().map(|r| (r.id, r.status)));
        }
        let mut poll = tokio::time::interval(POLL);
        loop {
            tokio::select! {
                got = live.recv() => match got {
                    Ok(e) if e.fleet_id == fleet_id => {
                        local.insert(e.run_id);
                        if e.kind == "status" && let Some(st) = e.data["status"].as_str().and_then(RunStatus::parse) {
                            seen.insert(e.run_id, st);
                        }
                        if tx.send(event(e.kind, &e.data)).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = poll.tick() => {
                    let Ok(runs) = s.store.runs(fleet_id, &filter).await else { continue };
                    for r in runs.iter().rev().filter(|r| !local.contains(&r.id)) {
                        if seen.get(&r.id) == Some(&r.status) {
                            continue;
                        }
                        seen.insert(r.id, r.status);
                        let data = json!({"run_id": r.id, "status": r.status});
                        if tx.send(event("status", &data)).await.is_err() {
                            return;
                        }
                        if ended(r.status) && tx.send(event("end", &data)).await.is_err() {
                            return;
                        }
                    }
                }
                _ = tx.closed() => return,
            }
        }
    });
    Ok(sse(rx))
}

fn ended(status: RunStatus) -> bool {
    !matches!(status, RunStatus::Queued | RunStatus::Running)
}

/// What one run's stream has told its client.
struct RunFollower {
    id: Uuid,
    /// Last event of this node's hub passed on.
    last_seq: u64,
    /// Vessels whose events came from this node's hub (their output came live).
    live_vessels: HashSet<String>,
    /// Vessels reported as ended, with their attempt.
    ended: HashSet<(String, u32)>,
    status: Option<RunStatus>,
}

/// The client is gone.
struct Gone;

impl RunFollower {
    fn new(id: Uuid) -> Self {
        RunFollower {
            id,
            last_seq: 0,
            live_vessels: HashSet::new(),
            ended: HashSet::new(),
            status: None,
        }
    }

    async fn send(&self, tx: &mpsc::Sender<Event>, kind: &str, data: Value) -> Result<(), Gone> {
        tx.send(event(kind, &data)).await.map_err(|_| Gone)
    }

    /// Passes on one event of the hub; true at the run's end.
    async fn pass(&mut self, tx: &mpsc::Sender<Event>, e: &RunEvent) -> Result<bool, Gone> {
        if e.run_id != self.id || e.seq <= self.last_seq {
            return Ok(false);
        }
        self.last_seq = e.seq;
        if let Some(v) = e.data["vessel"].as_str() {
            self.live_vessels.insert(v.to_owned());
            if e.kind == "vessel" && e.data["status"] != "running" {
                let attempt = e.data["attempt"].as_u64().unwrap_or(1) as u32;
                self.ended.insert((v.to_owned(), attempt));
            }
        }
        if e.kind == "status" {
            self.status = e.data["status"].as_str().and_then(RunStatus::parse);
        }
        self.send(tx, e.kind, e.data.clone()).await?;
        Ok(e.kind == "end")
    }

    /// Tells what the store holds that the client has not been told; true once the run ended.
    async fn catch_up(&mut self, tx: &mpsc::Sender<Event>, run: &RunRecord) -> Result<bool, Gone> {
        if self.status != Some(run.status) && !ended(run.status) {
            self.status = Some(run.status);
            self.send(
                tx,
                "status",
                json!({"run_id": self.id, "status": run.status}),
            )
            .await?;
        }
        for v in &run.vessels {
            let done = !matches!(
                v.outcome.status,
                VesselStatus::Running | VesselStatus::Pending
            );
            if !done
                || self.live_vessels.contains(&v.name)
                || !self.ended.insert((v.name.clone(), v.attempt))
            {
                continue;
            }
            for (stream, text) in [
                (LogStream::Stdout, &v.outcome.stdout),
                (LogStream::Stderr, &v.outcome.stderr),
            ] {
                if !text.is_empty() {
                    let mut data = log_json(&v.name, stream, text);
                    data["run_id"] = json!(self.id);
                    self.send(tx, "log", data).await?;
                }
            }
            let mut data = vessel_json(v);
            data["run_id"] = json!(self.id);
            self.send(tx, "vessel", data).await?;
        }
        if ended(run.status) {
            let data = json!({"run_id": self.id, "status": run.status});
            self.send(tx, "status", data.clone()).await?;
            self.send(tx, "end", data).await?;
            return Ok(true);
        }
        Ok(false)
    }

    async fn run(
        &mut self,
        s: &AppState,
        record: RunRecord,
        mut live: broadcast::Receiver<Arc<RunEvent>>,
        tx: &mpsc::Sender<Event>,
    ) -> Result<(), Gone> {
        let events = s.scheduler.events().clone();
        match events.kept(self.id) {
            // Executing here: everything so far, output included, from memory.
            Some(kept) => {
                for e in &kept {
                    if self.pass(tx, e).await? {
                        return Ok(());
                    }
                }
            }
            None => {
                if self.catch_up(tx, &record).await? {
                    return Ok(());
                }
            }
        }
        let mut poll = tokio::time::interval(POLL);
        poll.tick().await;
        loop {
            tokio::select! {
                got = live.recv() => match got {
                    Ok(e) => {
                        if self.pass(tx, &e).await? {
                            return Ok(());
                        }
                    }
                    // Missed some: the store fills in at the next poll.
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return Ok(()),
                },
                _ = poll.tick() => {
                    // What the hub already carried goes first, so the store cannot end the
                    // stream ahead of it.
                    while let Ok(e) = live.try_recv() {
                        if self.pass(tx, &e).await? {
                            return Ok(());
                        }
                    }
                    // Only what this node's hub does not carry: a run executing elsewhere, or
                    // one that ended between the subscription and the first read.
                    if events.kept(self.id).is_none() {
                        let Ok((run, _)) = s.store.run(self.id).await else { continue };
                        if self.catch_up(tx, &run).await? {
                            return Ok(());
                        }
                    }
                }
                _ = tx.closed() => return Err(Gone),
            }
        }
    }
}
