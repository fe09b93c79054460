//! The vessel contract as data: the kinds of vessel, what one is told about its request, how it
//! ended and why, the limits it runs under and how its body is understood. The runners that
//! honour it live in `wharf-sandbox`; the store keeps these records without knowing either.

mod limits;
mod payload;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use limits::{Limits, LimitsDoc};
pub use payload::{JsonForm, Payload, PayloadKind, value_to_var};

/// The two kinds of vessel code.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VesselKind {
    /// A WASI preview-1 command module.
    Wasm,
    /// A Rhai script.
    Rhai,
}

impl VesselKind {
    /// The name used in fleet documents and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            VesselKind::Wasm => "wasm",
            VesselKind::Rhai => "rhai",
        }
    }
}

/// Why a vessel run failed. The names are part of the public contract.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureReason {
    /// The vessel ended with a non-zero exit status.
    ExitCode,
    /// The fuel budget (instructions or operations) ran out.
    FuelExhausted,
    /// Linear memory, tables, script data sizes or call depth went past their limit.
    MemoryLimit,
    /// The wall-clock timeout passed.
    Timeout,
    /// A Wasm trap (unreachable, out-of-bounds access, a bad pointer given to the host…).
    Trap,
    /// A Rhai script threw an error.
    ScriptError,
    /// Captured output, variables or rows went past their limit.
    OutputLimit,
    /// The run was cancelled.
    Cancelled,
    /// The worker running it died; the run was re-queued.
    NodeLost,
}

/// Facts about the webhook call, the same for every vessel of a run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RequestMeta {
    /// The request id.
    pub id: String,
    /// HTTP method (always POST for webhooks; dry runs may differ).
    pub method: String,
    /// The `Content-Type` header, empty when absent.
    pub content_type: String,
    /// Headers with lower-cased names; secrets are redacted.
    pub headers: BTreeMap<String, String>,
    /// Query-string parameters.
    pub query: BTreeMap<String, String>,
}

/// The ids a vessel can see about its own run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunIds {
    /// Org owning the fleet.
    pub org_id: String,
    /// Project holding the fleet.
    pub project_id: String,
    /// The fleet.
    pub fleet_id: String,
    /// The fleet run.
    pub fleet_run_id: String,
    /// This vessel's name.
    pub vessel: String,
    /// Attempt number of the fleet run, starting at 1.
    pub attempt: u32,
}

/// Which output a log line was written to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    /// Standard output (Rhai `print`).
    Stdout,
    /// Standard error (Rhai `debug`).
    Stderr,
}

/// Terminal status of one vessel run.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VesselStatus {
    /// Not started yet.
    Pending,
    /// Started, not finished.
    Running,
    /// Exit status 0.
    Succeeded,
    /// Any failure; see the reason.
    Failed,
    /// Not run because of its `when` condition.
    Skipped,
    /// Not run or stopped because the fleet run was cancelled.
    Cancelled,
}

/// What a vessel run leaves behind.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VesselOutcome {
    /// Succeeded or failed (the scheduler adds skipped and cancelled).
    pub status: VesselStatus,
    /// The exit status, when the vessel got to end by itself.
    pub exit_code: Option<i32>,
    /// Why it failed.
    pub reason: Option<FailureReason>,
    /// A human-readable error (trap message, script error with its position…).
    pub error: Option<String>,
    /// Variables the vessel set.
    pub variables: BTreeMap<String, String>,
    /// Rows the vessel emitted, as `{"data":…, "operation"?, "primary_key"?}`.
    pub rows: Vec<serde_json::Value>,
    /// Captured standard output (Rhai: `print`).
    pub stdout: String,
    /// Captured standard error (Rhai: `debug`).
    pub stderr: String,
    /// Instructions (Wasm) or operations (Rhai) used.
    pub fuel_used: u64,
    /// Wall-clock duration of the run in milliseconds.
    pub duration_ms: f64,
}

impl VesselOutcome {
    /// An outcome for a vessel that never got to run.
    pub fn not_run(
        status: VesselStatus,
        reason: Option<FailureReason>,
        error: Option<String>,
    ) -> Self {
        VesselOutcome {
            status,
            exit_code: None,
            reason,
            error,
            variables: BTreeMap::new(),
            rows: Vec::new(),
            stdout: String::new(),
            stderr: String::new(),
            fuel_used: 0,
            duration_ms: 0.0,
        }
    }
}
