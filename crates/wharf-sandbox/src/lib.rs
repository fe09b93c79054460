//! The vessel contract: what a vessel gets, what it leaves, and the limits it runs under.
//!
//! The scheduler hands a [`VesselInput`] and a compiled [`Program`] to [`Sandbox::run`] and gets a
//! [`VesselOutcome`] back — whatever the guest did. A guest fault is an outcome with a typed
//! [`FailureReason`], never an error of the host. Runs are synchronous and CPU-bound: callers put
//! them on a thread of their own, off any async reactor.

mod hostcalls;
mod json_cost;
pub mod memory;
pub mod rhai;
pub mod wasm;

/// The counting allocator in this crate's own tests, as the server installs it for the whole
/// process: a Rhai vessel is held to its memory limit through it.
#[cfg(test)]
#[global_allocator]
static ALLOCATOR: memory::CountingAlloc = memory::CountingAlloc;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// The contract's data — kinds, statuses, reasons, outcomes, limits, payloads — is the domain's;
/// re-exported so that a runner and its callers name it from here.
pub use wharf_core::vessel::*;

/// Stops vessel runs from outside (a cancelled fleet run). Wasm checks it at every epoch tick
/// and Rhai in its progress callback, so a looping guest ends within a tick or so.
#[derive(Debug, Clone, Default)]
pub struct CancelFlag(Arc<std::sync::atomic::AtomicBool>);

impl CancelFlag {
    /// Asks every run holding this flag to stop.
    pub fn cancel(&self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether [`CancelFlag::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Receives a vessel's output as it is written, so it can be watched live; called on the vessel
/// thread with what was captured (never more than the output limit lets through).
#[derive(Clone)]
pub struct LogSink(Arc<LogFn>);

type LogFn = dyn Fn(LogStream, &str) + Send + Sync;

impl LogSink {
    /// A sink calling `f`.
    pub fn new(f: impl Fn(LogStream, &str) + Send + Sync + 'static) -> Self {
        LogSink(Arc::new(f))
    }

    fn write(&self, stream: LogStream, text: &str) {
        if !text.is_empty() {
            (self.0)(stream, text);
        }
    }
}

impl std::fmt::Debug for LogSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogSink")
    }
}

/// Everything a vessel run receives.
#[derive(Debug, Clone)]
pub struct VesselInput {
    /// The raw body, shared between the vessels of a run.
    pub body: bytes::Bytes,
    /// Request metadata.
    pub request: Arc<RequestMeta>,
    /// Ids of the run.
    pub ids: RunIds,
    /// Effective variables at this point of the run.
    pub variables: BTreeMap<String, String>,
    /// Limits for this vessel.
    pub limits: Limits,
    /// Set when the fleet run is cancelled.
    pub cancel: CancelFlag,
    /// Where output goes as it is written, besides the captured copy.
    pub logs: Option<LogSink>,
}

/// Code that cannot become a vessel: refused when a fleet is saved.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CodeError(pub String);

/// Compiled code, ready to run many times. Cheap to clone.
#[derive(Clone)]
pub enum Program {
    /// A compiled Rhai AST.
    Rhai(Arc<::rhai::AST>),
    /// A pre-linked Wasm module.
    Wasm(Arc<wasm::WasmProgram>),
}

/// Settings of the sandbox as a whole.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Where compiled Wasm artifacts are kept between restarts; `None` keeps them in memory only.
    pub cache_dir: Option<std::path::PathBuf>,
    /// The key that authenticates those artifacts (derived from the node's secret key); without
    /// one, nothing is kept on disk.
    pub cache_key: Option<wasm::ArtifactKey>,
    /// How many vessels may run at once (bounds the pooling allocator's slots).
    pub max_concurrent: u32,
}

/// Counters of the sandbox since start.
#[derive(Debug, Clone, Copy)]
pub struct SandboxStats {
    /// Wasm modules compiled by Cranelift.
    pub wasm_compiled: u64,
    /// Wasm modules loaded from the on-disk cache instead.
    pub wasm_loaded_from_disk: u64,
    /// Compiled Wasm modules on disk that failed their integrity check and were recompiled.
    pub wasm_artifacts_rejected: u64,
    /// Lookups of a compiled Wasm program found in the in-memory cache.
    pub wasm_cache_hits: u64,
    /// Lookups of a compiled Wasm program not found there.
    pub wasm_cache_misses: u64,
    /// Lookups of a compiled Rhai script found in the in-memory cache.
    pub rhai_cache_hits: u64,
    /// Lookups of a compiled Rhai script not found there.
    pub rhai_cache_misses: u64,
}

/// One per process: owns the Wasm engine and the caches of compiled code.
pub struct Sandbox {
    rhai: rhai::RhaiRunner,
    wasm: wasm::WasmRunner,
    /// Outcomes of [`Sandbox::cached`]: `[wasm, rhai]` hits and misses.
    lookups: [[AtomicU64; 2]; 2],
}

impl Sandbox {
    /// Builds the engines and caches.
    pub fn new(config: &SandboxConfig) -> anyhow::Result<Self> {
        Ok(Sandbox {
            rhai: rhai::RhaiRunner::new(),
            wasm: wasm::WasmRunner::new(config)?,
            lookups: Default::default(),
        })
    }

    /// Counters for `/metrics`: Wasm modules compiled and loaded from disk since start.
    pub fn stats(&self) -> SandboxStats {
        let (wasm_compiled, wasm_loaded_from_disk, wasm_artifacts_rejected) = self.wasm.counts();
        let [wasm, rhai] = self
            .lookups
            .each_ref()
            .map(|[hit, miss]| (hit.load(Relaxed), miss.load(Relaxed)));
        SandboxStats {
            wasm_compiled,
            wasm_loaded_from_disk,
            wasm_artifacts_rejected,
            wasm_cache_hits: wasm.0,
            wasm_cache_misses: wasm.1,
            rhai_cache_hits: rhai.0,
            rhai_cache_misses: rhai.1,
        }
    }

    /// A compiled program from the cache, if this code was compiled before.
    pub fn cached(&self, kind: VesselKind, sha256: &str) -> Option<Program> {
        let (found, i) = match kind {
            VesselKind::Wasm => (self.wasm.cached(sha256).map(Program::Wasm), 0),
            VesselKind::Rhai => (self.rhai.cached(sha256).map(Program::Rhai), 1),
        };
        self.lookups[i][usize::from(found.is_none())].fetch_add(1, Relaxed);
        found
    }

    /// Checks and compiles code, caching the result under its sha256. This is the validation a
    /// fleet's code passes when it is saved. Wasm compilation is CPU-heavy: call off the reactor.
    pub fn compile(
        &self,
        kind: VesselKind,
        sha256: &str,
        code: &[u8],
    ) -> Result<Program, CodeError> {
        match kind {
            VesselKind::Rhai => self.rhai.compile(sha256, code).map(Program::Rhai),
            VesselKind::Wasm => self.wasm.compile(sha256, code).map(Program::Wasm),
        }
    }

    /// Runs one vessel to its end. Blocking; never panics on guest behaviour.
    pub fn run(&self, program: &Program, input: &VesselInput) -> VesselOutcome {
        match program {
            Program::Rhai(ast) => self.rhai.run(ast, input),
            Program::Wasm(module) => self.wasm.run(module, input),
        }
    }
}

/// Collects what a vessel leaves while it runs, enforcing the output limit. Shared by both kinds
/// so that variables, rows and logs count against the same budget the same way.
#[derive(Debug, Default)]
pub(crate) struct Collector {
    pub(crate) variables: BTreeMap<String, String>,
    pub(crate) rows: Vec<serde_json::Value>,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
    used: u64,
    limit: u64,
    /// Set once anything was refused for size; the run then ends with `output_limit`.
    pub(crate) overflowed: bool,
    /// Live copy of what `log` captures.
    logs: Option<LogSink>,
}

/// Why a variable or row was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CollectError {
    #[error("{0}")]
    Invalid(String),
    #[error("output limit of {0} bytes reached")]
    Limit(u64),
}

impl Collector {
    pub(crate) fn new(limit: u64, logs: Option<LogSink>) -> Self {
        Collector {
            limit,
            logs,
            ..Default::default()
        }
    }

    fn charge(&mut self, bytes: usize) -> Result<(), CollectError> {
        self.used = self.used.saturating_add(bytes as u64);
        if self.used > self.limit {
            self.overflowed = true;
            return Err(CollectError::Limit(self.limit));
        }
        Ok(())
    }

    pub(crate) fn set_var(&mut self, name: &str, value: String) -> Result<(), CollectError> {
        wharf_core::fleet::check_variable_name(name).map_err(CollectError::Invalid)?;
        self.charge(name.len() + value.len())?;
        self.variables.insert(name.to_owned(), value);
        Ok(())
    }

    /// Takes a row in either accepted shape and stores the normal form.
    pub(crate) fn emit(&mut self, row: serde_json::Value) -> Result<(), CollectError> {
        self.emit_costing(row, 0)
    }

    /// Output bytes still free.
    pub(crate) fn remaining(&self) -> u64 {
        self.limit.saturating_sub(self.used)
    }

    /// Refuses something too large to be looked at: the run will end with `output_limit`.
    pub(crate) fn refuse(&mut self) -> CollectError {
        self.overflowed = true;
        CollectError::Limit(self.limit)
    }

    /// Like [`Collector::emit`], charging at least `held` bytes: what the row takes in memory
    /// (see `json_cost`), where that is more than its JSON text.
    pub(crate) fn emit_costing(
        &mut self,
        row: serde_json::Value,
        held: u64,
    ) -> Result<(), CollectError> {
        let serde_json::Value::Object(mut map) = row else {
            return Err(CollectError::Invalid("a row must be a JSON object".into()));
        };
        let row = if map.contains_key("data") {
            let mut out = serde_json::Map::new();
            out.insert("data".into(), map.remove("data").unwrap_or_default());
            for key in ["operation", "primary_key"] {
                if let Some(v) = map.remove(key).filter(|v| !v.is_null()) {
                    out.insert(key.into(), v);
                }
            }
            out
        } else {
            let mut out = serde_json::Map::new();
            out.insert("data".into(), serde_json::Value::Object(map));
            out
        };
        let row = serde_json::Value::Object(row);
        let text = json_text_len(&row);
        self.charge(usize::try_from(held.max(text)).unwrap_or(usize::MAX))?;
        self.rows.push(row);
        Ok(())
    }

    /// Appends to stdout or stderr; past the limit the text is cut and the run will fail.
    pub(crate) fn log(&mut self, to_stderr: bool, text: &str) {
        let room = self.limit.saturating_sub(self.used) as usize;
        let take = floor_char_boundary(text, room.min(text.len()));
        let target = if to_stderr {
            &mut self.stderr
        } else {
            &mut self.stdout
        };
        target.push_str(&text[..take]);
        if let Some(sink) = &self.logs {
            let stream = if to_stderr {
                LogStream::Stderr
            } else {
                LogStream::Stdout
            };
            sink.write(stream, &text[..take]);
        }
        let _ = self.charge(text.len());
    }
}

/// Length of a value's JSON text, found without building the text.
fn json_text_len(value: &serde_json::Value) -> u64 {
    struct Count(u64);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len() as u64;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing a `Value` to a writer that never fails cannot fail.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}
