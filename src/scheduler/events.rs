//! Live run events, for the Server-Sent Events endpoints: a run's status, its vessels starting
//! and ending, and their output as it is written.
//!
//! Events of the runs this node executes go out on one broadcast channel, and each such run also
//! keeps its events so far in memory until it ends, so a client that connects late is first
//! given what already happened. Runs executing on other nodes of a shared store are followed
//! through the store instead (see `api::events`); their output arrives as each vessel ends.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::sandbox::{LogSink, LogStream};
use crate::store::{RunStatus, VesselRun};

/// Most events one run keeps for late clients; past it, output lines are no longer kept (they
/// stay in the vessel run's captured stdout/stderr).
const MAX_KEPT: usize = 10_000;

/// One event of one run.
#[derive(Debug, Clone)]
pub struct RunEvent {
    /// Increases with every event on this node; a client skips what it has seen.
    pub seq: u64,
    /// The run.
    pub run_id: Uuid,
    /// Its fleet.
    pub fleet_id: Uuid,
    /// `status`, `vessel`, `log` or `end`.
    pub kind: &'static str,
    /// The event's JSON, which also names the run.
    pub data: Value,
}

/// The node's event hub; cheap to share.
pub struct Events {
    tx: broadcast::Sender<Arc<RunEvent>>,
    seq: AtomicU64,
    /// Events so far of each run executing here, with its fleet.
    kept: Mutex<HashMap<Uuid, Kept>>,
}

/// A run's fleet and its events so far.
type Kept = (Uuid, Vec<Arc<RunEvent>>);

impl Default for Events {
    fn default() -> Self {
        Events {
            tx: broadcast::channel(4096).0,
            seq: AtomicU64::new(0),
            kept: Mutex::new(HashMap::new()),
        }
    }
}

impl Events {
    /// Every event published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<RunEvent>> {
        self.tx.subscribe()
    }

    /// The events so far of a run executing on this node, or `None` when it does not run here.
    pub fn kept(&self, run_id: Uuid) -> Option<Vec<Arc<RunEvent>>> {
        let kept = self.kept.lock().ok()?;
        kept.get(&run_id).map(|(_, events)| events.clone())
    }

    /// A run starts executing here.
    pub(crate) fn begin(&self, run_id: Uuid, fleet_id: Uuid, attempt: u32) {
        if let Ok(mut kept) = self.kept.lock() {
            kept.insert(run_id, (fleet_id, Vec::new()));
        }
        self.publish(
            run_id,
            "status",
            json!({"status": RunStatus::Running, "attempt": attempt}),
        );
    }

    /// A run this node executed has been recorded as ended (or handed back, with `None`).
    pub(crate) fn end(&self, run_id: Uuid, status: Option<RunStatus>) {
        if let Some(status) = status {
            self.publish(run_id, "status", json!({"status": status}));
            self.publish(run_id, "end", json!({"status": status}));
        }
        if let Ok(mut kept) = self.kept.lock() {
            kept.remove(&run_id);
        }
    }

    /// A vessel starts.
    pub(crate) fn vessel_started(&self, run_id: Uuid, vessel: &str, attempt: u32) {
        self.publish(
            run_id,
            "vessel",
            json!({"vessel": vessel, "status": "running", "attempt": attempt}),
        );
    }

    /// A vessel ended.
    pub(crate) fn vessel_ended(&self, run_id: Uuid, run: &VesselRun) {
        self.publish(run_id, "vessel", vessel_json(run));
    }

    /// Where a vessel's output goes as it is written.
    pub(crate) fn sink(self: &Arc<Self>, run_id: Uuid, vessel: &str) -> LogSink {
        let (events, vessel) = (self.clone(), vessel.to_owned());
        LogSink::new(move |stream, text| {
            events.publish(run_id, "log", log_json(&vessel, stream, text));
        })
    }

    fn publish(&self, run_id: Uuid, kind: &'static str, mut data: Value) {
        let Ok(mut kept) = self.kept.lock() else {
            return;
        };
        // Only runs executing here publish; anything else is late (the run was handed back).
        let Some((fleet_id, events)) = kept.get_mut(&run_id) else {
            return;
        };
        if let Some(map) = data.as_object_mut() {
            map.insert("run_id".into(), json!(run_id));
        }
        let event = Arc::new(RunEvent {
            seq: self.seq.fetch_add(1, Ordering::Relaxed) + 1,
            run_id,
            fleet_id: *fleet_id,
            kind,
            data,
        });
        if events.len() < MAX_KEPT || kind != "log" {
            events.push(event.clone());
        }
        // Sent under the lock, so `kept` and the channel agree on the order of events.
        let _ = self.tx.send(event);
    }
}

/// A `vessel` event for a vessel run that ended.
pub fn vessel_json(run: &VesselRun) -> Value {
    let o = &run.outcome;
    json!({
        "vessel": run.name, "status": o.status, "reason": o.reason, "exit_code": o.exit_code,
        "error": o.error, "attempt": run.attempt, "duration_ms": o.duration_ms,
        "carried_over": run.carried_over,
    })
}

/// A `log` event.
pub fn log_json(vessel: &str, stream: LogStream, text: &str) -> Value {
    json!({"vessel": vessel, "stream": stream, "text": text})
}
