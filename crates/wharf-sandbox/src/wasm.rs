//! Wasm vessels: WASI preview-1 command modules under wasmtime.
//!
//! One `Engine` and `Linker` per process; a module is compiled once per sha256, pre-linked into
//! an `InstancePre`, cached in memory and serialized into the data folder so a restart does not
//! compile again. Each run gets a fresh `Store` with:
//! - fuel, for the deterministic budget and the `fuel_used` figure;
//! - an epoch deadline, for wall-clock time (a ticker thread advances the epoch every
//!   [`TICK`]; the callback compares the clock with the run's deadline), because fuel does not
//!   measure time. Epochs are only seen while guest code runs, so the WASI calls that can wait
//!   are wharf's own and stop at the same deadline (`hostcalls`);
//! - a resource limiter, so memory and tables cannot grow past the vessel's limit;
//! - in-memory stdin/stdout/stderr, no preopened directories, no sockets, and an environment
//!   made only of the run's variables and `WHARF_*` ids.
//!
//! The pooling allocator keeps instance slots warm between runs, which is most of the per-run
//! cost (see `BENCHMARKS.md`).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use wasmtime::{
    Caller, Config, Engine, InstanceAllocationStrategy, InstancePre, Linker, Module,
    PoolingAllocationConfig, ResourceLimiter, Store, Trap,
};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::{MemoryInputPipe, MemoryOutputPipe};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

use super::{
    CodeError, Collector, FailureReason, Limits, LogSink, LogStream, SandboxConfig, VesselInput,
    VesselOutcome, VesselStatus,
};

/// Period of the epoch ticker; timeouts are rounded up to it.
pub const TICK: Duration = Duration::from_millis(10);
/// Largest table a guest may grow to, in elements.
const MAX_TABLE_ELEMENTS: usize = 100_000;
/// Import modules a vessel may use.
const ALLOWED_MODULES: [&str; 2] = ["wasi_snapshot_preview1", "wharf"];
/// Functions of the `wharf` import module.
const WHARF_FUNCTIONS: [&str; 3] = ["set_var", "emit", "request"];

/// A guest's stdout or stderr: captured in memory up to the output limit, and copied to the
/// run's [`LogSink`] as it is written, so a long vessel's output can be watched while it runs.
#[derive(Clone)]
struct TeePipe {
    pipe: MemoryOutputPipe,
    live: Option<(LogSink, LogStream)>,
}

impl TeePipe {
    fn copy(&self, bytes: &[u8]) {
        if let Some((sink, stream)) = &self.live {
            sink.write(*stream, &String::from_utf8_lossy(bytes));
        }
    }
}

#[async_trait::async_trait]
impl OutputStream for TeePipe {
    fn write(&mut self, bytes: bytes::Bytes) -> Result<(), StreamError> {
        OutputStream::write(&mut self.pipe, bytes.clone())?;
        self.copy(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> Result<(), StreamError> {
        OutputStream::flush(&mut self.pipe)
    }
    fn check_write(&mut self) -> Result<usize, StreamError> {
        self.pipe.check_write()
    }
}

#[async_trait::async_trait]
impl Pollable for TeePipe {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for TeePipe {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let polled = std::pin::Pin::new(&mut self.pipe).poll_write(cx, buf);
        if let std::task::Poll::Ready(Ok(n)) = &polled {
            self.copy(&buf[..*n]);
        }
        polled
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.pipe).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.pipe).poll_shutdown(cx)
    }
}

impl IsTerminal for TeePipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for TeePipe {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

/// The error a cancelled run's epoch callback (or a host call it was waiting in) ends the
/// guest with.
#[derive(Debug)]
pub(super) struct Cancelled;

impl std::fmt::Display for Cancelled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the run was cancelled")
    }
}

impl std::error::Error for Cancelled {}

/// The error a host call ends the guest with when the run's deadline passes while it waits.
#[derive(Debug)]
pub(super) struct TimedOut;

impl std::fmt::Display for TimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the run's deadline passed in a host call")
    }
}

impl std::error::Error for TimedOut {}

/// A compiled, pre-linked module.
pub struct WasmProgram {
    pre: InstancePre<HostState>,
}

/// Per-run state of a store.
pub(super) struct HostState {
    wasi: WasiP1Ctx,
    limiter: Limiter,
    collector: Collector,
    /// The request metadata as JSON, served by `wharf.request`.
    request_json: Vec<u8>,
    /// When the run's timeout passes; host calls that wait stop there.
    pub(super) deadline: Instant,
    /// The run's cancel flag, checked by host calls that wait.
    pub(super) cancel: super::CancelFlag,
    /// Zero of the guest's monotonic clock.
    pub(super) clock_origin: Instant,
}

/// Refuses growth past the vessel's limits and remembers that it did, so the run can be
/// reported as `memory_limit` rather than as the trap the refusal becomes.
struct Limiter {
    memory_bytes: usize,
    hit: bool,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            self.hit = true;
            return Err(wasmtime::format_err!(
                "linear memory of {desired} bytes is over the limit of {} bytes",
                self.memory_bytes
            ));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > MAX_TABLE_ELEMENTS {
            self.hit = true;
            return Err(wasmtime::format_err!(
                "table of {desired} elements is over the limit of {MAX_TABLE_ELEMENTS}"
            ));
        }
        Ok(true)
    }
}

/// The key compiled modules kept on disk are authenticated with (see `load_artifact`); its
/// bytes never appear in `Debug`.
#[derive(Clone)]
pub struct ArtifactKey(pub [u8; 32]);

impl std::fmt::Debug for ArtifactKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ArtifactKey([redacted])")
    }
}

/// Bytes of the HMAC-SHA256 that ends every artifact file.
const MAC_LEN: usize = 32;

/// Compiles and runs Wasm vessels; owns the engine and the module caches.
pub struct WasmRunner {
    engine: Engine,
    linker: Linker<HostState>,
    cache: moka::sync::Cache<String, Arc<WasmProgram>>,
    /// Where compiled modules are kept, and the key that vouches for them.
    disk: Option<(PathBuf, ArtifactKey)>,
    /// Artifacts found on disk that failed their check and were compiled again.
    rejected: AtomicU64,
    /// Modules compiled by Cranelift since start.
    compiled: AtomicU64,
    /// Modules loaded from the on-disk cache since start (a restart that did not recompile).
    loaded: AtomicU64,
}

impl WasmRunner {
    /// Builds the engine (pooling allocator sized for `max_concurrent` runs), the linker with
    /// WASI preview 1 and the `wharf` functions, and starts the epoch ticker.
    pub fn new(config: &SandboxConfig) -> anyhow::Result<Self> {
        let engine = match Engine::new(&engine_config(Some(config.max_concurrent))) {
            Ok(engine) => engine,
            Err(e) => {
                // Pooling reserves address space up front; where that is refused, run without it.
                tracing::warn!(error = %e, "pooling allocator unavailable; using on-demand allocation");
                Engine::new(&engine_config(None))
                    .map_err(|e| anyhow::anyhow!("creating the Wasm engine: {e}"))?
            }
        };
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |s: &mut HostState| &mut s.wasi)
            .map_err(|e| anyhow::anyhow!("linking WASI: {e}"))?;
        super::hostcalls::shadow_blocking_calls(&mut linker)
            .map_err(|e| anyhow::anyhow!("linking WASI: {e}"))?;
        add_wharf_functions(&mut linker)
            .map_err(|e| anyhow::anyhow!("linking wharf functions: {e}"))?;
        start_ticker(&engine);
        if let Some(dir) = &config.cache_dir {
            std::fs::create_dir_all(dir)?;
        }
        Ok(WasmRunner {
            engine,
            linker,
            cache: moka::sync::Cache::builder().max_capacity(1_000).build(),
            disk: config.cache_dir.clone().zip(config.cache_key.clone()),
            rejected: AtomicU64::new(0),
            compiled: AtomicU64::new(0),
            loaded: AtomicU64::new(0),
        })
    }

    /// Modules compiled, modules loaded from the disk cache, and artifacts on disk refused by
    /// their check, since start.
    pub fn counts(&self) -> (u64, u64, u64) {
        (
            self.compiled.load(Ordering::Relaxed),
            self.loaded.load(Ordering::Relaxed),
            self.rejected.load(Ordering::Relaxed),
        )
    }

    /// The cached program for a code hash.
    pub fn cached(&self, sha256: &str) -> Option<Arc<WasmProgram>> {
        self.cache.get(sha256)
    }

    /// Validates and compiles a module: it must be a valid module exporting a `_start`
    /// function and importing only WASI preview 1 and `wharf`.
    pub fn compile(&self, sha256: &str, code: &[u8]) -> Result<Arc<WasmProgram>, CodeError> {
        if let Some(p) = self.cache.get(sha256) {
            return Ok(p);
        }
        let module = match self.load_artifact(sha256) {
            Some(module) => {
                self.loaded.fetch_add(1, Ordering::Relaxed);
                module
            }
            None => {
                let started = Instant::now();
                let module = Module::new(&self.engine, code).map_err(|e| {
                    CodeError(format!(
                        "not a valid WebAssembly module: {}",
                        root_cause(&e)
                    ))
                })?;
                tracing::info!(
                    sha256,
                    ms = started.elapsed().as_millis() as u64,
                    "compiled Wasm module"
                );
                check_interface(&module)?;
                self.compiled.fetch_add(1, Ordering::Relaxed);
                self.store_artifact(sha256, &module);
                module
            }
        };
        check_interface(&module)?;
        let pre = self
            .linker
            .instantiate_pre(&module)
            .map_err(|e| CodeError(format!("module does not link: {}", root_cause(&e))))?;
        let program = Arc::new(WasmProgram { pre });
        self.cache.insert(sha256.to_owned(), program.clone());
        Ok(program)
    }

    fn artifact_path(&self, sha256: &str) -> Option<(PathBuf, &ArtifactKey)> {
        self.disk
            .as_ref()
            .map(|(dir, key)| (dir.join(format!("{sha256}.cwasm")), key))
    }

    /// A module from the on-disk cache, if present, vouched for by its MAC, and made by a
    /// compatible engine. An artifact is native code: one that does not carry a valid MAC for
    /// this module under this node's key (altered, truncated, written by someone else, or
    /// another module's artifact under this name) is refused and the module compiled again.
    fn load_artifact(&self, sha256: &str) -> Option<Module> {
        let (path, key) = self.artifact_path(sha256)?;
        // Read once: the bytes checked are the bytes loaded, whatever happens to the file.
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(sha256, error = %e, "cannot read a compiled Wasm module; recompiling");
                return None;
            }
        };
        let Some(code) = verified(key, sha256, &bytes) else {
            self.rejected.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                sha256,
                "compiled Wasm module on disk failed its integrity check; recompiling"
            );
            return None;
        };
        // A file from another wasmtime version or CPU is refused here and then recompiled.
        Engine::detect_precompiled(code)?;
        let started = Instant::now();
        // SAFETY: these bytes carry an HMAC-SHA256, under a key derived from this node's secret
        // key, that this process family wrote for exactly this module (`store_artifact`) and that
        // was checked above on this very buffer; wasmtime additionally checks that the engine
        // configuration and version match.
        #[allow(unsafe_code)]
        let loaded = unsafe { Module::deserialize(&self.engine, code) };
        match loaded {
            Ok(module) => {
                tracing::info!(
                    sha256,
                    us = started.elapsed().as_micros() as u64,
                    "loaded compiled Wasm module from disk"
                );
                Some(module)
            }
            Err(e) => {
                tracing::warn!(sha256, error = %e, "cached Wasm artifact unusable; recompiling");
                None
            }
        }
    }

    fn store_artifact(&self, sha256: &str, module: &Module) {
        let Some((path, key)) = self.artifact_path(sha256) else {
            return;
        };
        let result = module
            .serialize()
            .map_err(|e| e.to_string())
            .and_then(|mut bytes| {
                let mac = artifact_mac(key, sha256, &bytes);
                bytes.extend_from_slice(&mac);
                // Write then rename, so a crash never leaves a half-written artifact behind.
                let tmp = path.with_extension(format!("tmp-{}", uuid::Uuid::new_v4()));
                std::fs::write(&tmp, bytes)
                    .and_then(|_| std::fs::rename(&tmp, &path))
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = result {
            tracing::warn!(sha256, error = %e, "could not keep the compiled module on disk");
        }
    }

    /// Runs a module's `_start` on one input.
    pub fn run(&self, program: &WasmProgram, input: &VesselInput) -> VesselOutcome {
        let started = Instant::now();
        let limits = input.limits;
        let cap = limits.output_bytes as usize;
        let stdout = MemoryOutputPipe::new(cap);
        let stderr = MemoryOutputPipe::new(cap);
        let wasi = wasi_context(input, &stdout, &stderr, started);
        let deadline = started + Duration::from_millis(limits.timeout_ms);
        let state = HostState {
            wasi,
            limiter: Limiter {
                memory_bytes: limits.memory_bytes as usize,
                hit: false,
            },
            collector: Collector::new(limits.output_bytes, None),
            request_json: serde_json::to_vec(&*input.request).unwrap_or_default(),
            deadline,
            cancel: input.cancel.clone(),
            clock_origin: started,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        let _ = store.set_fuel(limits.fuel);
        // One callback per tick checks both the timeout and a cancel: a cancelled run stops
        // within a tick, at the cost of one callback per 10 ms of guest time. The timeout is
        // read from the clock, not counted in callbacks: time a guest spent in a host call
        // (where no callback runs) counts too.
        let cancel = input.cancel.clone();
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |ctx| {
            if cancel.is_cancelled() {
                return Err(wasmtime::Error::new(Cancelled));
            }
            // Past its output limit a guest can only spin on refused `set_var`/`emit` calls:
            // it is ended here, as Rhai ends it in its progress callback.
            if ctx.data().collector.overflowed {
                return Err(Trap::Interrupt.into());
            }
            if Instant::now() >= deadline {
                return Err(Trap::Interrupt.into());
            }
            Ok(wasmtime::UpdateDeadline::Continue(1))
        });

        let result = program.pre.instantiate(&mut store).and_then(|instance| {
            let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
            start.call(&mut store, ())
        });
        let fuel_used = limits.fuel.saturating_sub(store.get_fuel().unwrap_or(0));
        let state = store.into_data();
        let out_full = stdout.contents().len() >= cap || stderr.contents().len() >= cap;
        let (exit_code, reason, error) = judge(result, &state, out_full, limits);
        let collector = state.collector;
        VesselOutcome {
            status: if reason.is_none() {
                VesselStatus::Succeeded
            } else {
                VesselStatus::Failed
            },
            exit_code,
            reason,
            error,
            variables: collector.variables,
            rows: collector.rows,
            stdout: String::from_utf8_lossy(&stdout.contents()).into_owned(),
            stderr: String::from_utf8_lossy(&stderr.contents()).into_owned(),
            fuel_used,
            duration_ms: started.elapsed().as_secs_f64() * 1000.0,
        }
    }
}

/// The MAC of an artifact: HMAC-SHA256 over the module's sha256 and the artifact's bytes, so
/// that an artifact is good for the one module it was compiled from.
fn artifact_mac(key: &ArtifactKey, sha256: &str, code: &[u8]) -> [u8; MAC_LEN] {
    use hmac::Mac as _;
    let mut mac = artifact_hmac(key, sha256);
    mac.update(code);
    mac.finalize().into_bytes().into()
}

fn artifact_hmac(key: &ArtifactKey, sha256: &str) -> hmac::Hmac<sha2::Sha256> {
    use hmac::Mac as _;
    // Any key length is accepted by HMAC; this cannot fail.
    let mut mac = <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(&key.0)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(sha256.as_bytes());
    mac.update(&[0]);
    mac
}

/// The compiled code of an artifact file, if its MAC holds (checked in constant time).
fn verified<'a>(key: &ArtifactKey, sha256: &str, file: &'a [u8]) -> Option<&'a [u8]> {
    use hmac::Mac as _;
    let split = file.len().checked_sub(MAC_LEN)?;
    let (code, tag) = file.split_at(split);
    let mut mac = artifact_hmac(key, sha256);
    mac.update(code);
    mac.verify_slice(tag).ok().map(|()| code)
}

/// The engine settings every wharf engine uses (fuel, epochs, pooling with `pool_slots`); public
/// so that benchmarks measure the raw wasmtime floor on exactly the same settings.
pub fn engine_config(pool_slots: Option<u32>) -> Config {
    let mut config = Config::new();
    config
        .consume_fuel(true)
        .epoch_interruption(true)
        .max_wasm_stack(1 << 20);
    if let Some(slots) = pool_slots {
        // Slots for every concurrent run plus compiles and dry runs, each able to hold the
        // largest memory a fleet may ask for. Keeping a little memory resident between runs
        // avoids page faults that otherwise dominate a short run.
        let slots = slots.saturating_mul(2).max(16);
        let mut pool = PoolingAllocationConfig::default();
        pool.total_core_instances(slots)
            .total_memories(slots)
            .total_tables(slots)
            .max_memories_per_module(1)
            .max_tables_per_module(4)
            .max_memory_size(Limits::MAX.memory_bytes as usize)
            .linear_memory_keep_resident(2 << 20)
            .table_keep_resident(64 << 10);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    config
}

/// Advances the engine's epoch every [`TICK`] for as long as the engine lives.
fn start_ticker(engine: &Engine) {
    let weak = engine.weak();
    let _ = std::thread::Builder::new()
        .name("wasm-epoch".into())
        .spawn(move || {
            loop {
                std::thread::sleep(TICK);
                match weak.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => return,
                }
            }
        });
}

fn wasi_context(
    input: &VesselInput,
    stdout: &MemoryOutputPipe,
    stderr: &MemoryOutputPipe,
    origin: Instant,
) -> WasiP1Ctx {
    let ids = &input.ids;
    let mut b = WasiCtxBuilder::new();
    let tee = |pipe: &MemoryOutputPipe, stream| TeePipe {
        pipe: pipe.clone(),
        live: input.logs.clone().map(|sink| (sink, stream)),
    };
    b.stdin(MemoryInputPipe::new(input.body.clone()))
        .stdout(tee(stdout, LogStream::Stdout))
        .stderr(tee(stderr, LogStream::Stderr))
        .arg(&ids.vessel)
        .monotonic_clock(super::hostcalls::RunClock { origin });
    for (k, v) in &input.variables {
        b.env(k, v);
    }
    let attempt = ids.attempt.to_string();
    let fixed = [
        ("WHARF_REQUEST_ID", input.request.id.as_str()),
        ("WHARF_FLEET_RUN_ID", ids.fleet_run_id.as_str()),
        ("WHARF_FLEET_ID", ids.fleet_id.as_str()),
        ("WHARF_PROJECT_ID", ids.project_id.as_str()),
        ("WHARF_ORG_ID", ids.org_id.as_str()),
        ("WHARF_VESSEL", ids.vessel.as_str()),
        ("WHARF_ATTEMPT", attempt.as_str()),
        ("WHARF_METHOD", input.request.method.as_str()),
        ("WHARF_CONTENT_TYPE", input.request.content_type.as_str()),
    ];
    for (k, v) in fixed {
        b.env(k, v);
    }
    b.build_p1()
}

/// Imports only from the allowed modules and a `_start` export; the message lists every
/// offending import so a guest author can fix them all at once.
fn check_interface(module: &Module) -> Result<(), CodeError> {
    let bad: Vec<String> = module
        .imports()
        .filter(|i| {
            !ALLOWED_MODULES.contains(&i.module())
                || (i.module() == "wharf" && !WHARF_FUNCTIONS.contains(&i.name()))
        })
        .map(|i| format!("{}::{}", i.module(), i.name()))
        .collect();
    if !bad.is_empty() {
        return Err(CodeError(format!(
            "module imports {} — only wasi_snapshot_preview1 and wharf ({}) are available",
            bad.join(", "),
            WHARF_FUNCTIONS.join(", ")
        )));
    }
    match module.get_export("_start") {
        Some(wasmtime::ExternType::Func(f)) if f.params().len() == 0 && f.results().len() == 0 => {
            Ok(())
        }
        Some(_) => Err(CodeError(
            "export _start must be a function taking and returning nothing".into(),
        )),
        None => Err(CodeError(
            "module has no _start export: build it as a WASI command".into(),
        )),
    }
}

fn root_cause(e: &wasmtime::Error) -> String {
    format!("{e:#}")
}

type Judged = (Option<i32>, Option<FailureReason>, Option<String>);

fn judge(
    result: wasmtime::Result<()>,
    state: &HostState,
    out_full: bool,
    limits: Limits,
) -> Judged {
    let output_limit = || -> Judged {
        (
            None,
            Some(FailureReason::OutputLimit),
            Some(format!(
                "output limit of {} bytes reached",
                limits.output_bytes
            )),
        )
    };
    let code = match &result {
        Ok(()) => Some(0),
        Err(e) => e.downcast_ref::<wasmtime_wasi::I32Exit>().map(|x| x.0),
    };
    if out_full || state.collector.overflowed {
        let (_, reason, error) = output_limit();
        return (code, reason, error);
    }
    if let Some(code) = code {
        return if code == 0 {
            (Some(0), None, None)
        } else {
            (Some(code), Some(FailureReason::ExitCode), None)
        };
    }
    let Err(e) = result else {
        return (Some(0), None, None);
    };
    if e.downcast_ref::<TimedOut>().is_some() {
        return (
            None,
            Some(FailureReason::Timeout),
            Some(format!("timed out after {} ms", limits.timeout_ms)),
        );
    }
    if e.downcast_ref::<Cancelled>().is_some() {
        return (
            None,
            Some(FailureReason::Cancelled),
            Some("the run was cancelled".into()),
        );
    }
    if state.limiter.hit {
        return (None, Some(FailureReason::MemoryLimit), Some(root_cause(&e)));
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => (
            None,
            Some(FailureReason::FuelExhausted),
            Some(format!("fuel of {} instructions exhausted", limits.fuel)),
        ),
        Some(Trap::Interrupt) => (
            None,
            Some(FailureReason::Timeout),
            Some(format!("timed out after {} ms", limits.timeout_ms)),
        ),
        Some(Trap::StackOverflow) => (
            None,
            Some(FailureReason::MemoryLimit),
            Some("call stack exhausted".into()),
        ),
        _ => (None, Some(FailureReason::Trap), Some(root_cause(&e))),
    }
}

/// The `wharf` import module. Every pointer and length comes from the guest and is checked
/// against its memory; a bad one traps the guest, never the host.
fn add_wharf_functions(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "wharf",
        "set_var",
        |mut caller: Caller<'_, HostState>,
         name_ptr: i32,
         name_len: i32,
         val_ptr: i32,
         val_len: i32|
         -> wasmtime::Result<i32> {
            // Sized before anything is copied out of the guest.
            let wanted = u64::from(name_len as u32) + u64::from(val_len as u32);
            if wanted > caller.data().collector.remaining() {
                caller.data_mut().collector.refuse();
                return Ok(-2);
            }
            let name = guest_bytes(&mut caller, name_ptr, name_len)?;
            let value = guest_bytes(&mut caller, val_ptr, val_len)?;
            let (Ok(name), Ok(value)) = (String::from_utf8(name), String::from_utf8(value)) else {
                return Ok(-1);
            };
            Ok(match caller.data_mut().collector.set_var(&name, value) {
                Ok(()) => 0,
                Err(super::CollectError::Invalid(_)) => -1,
                Err(super::CollectError::Limit(_)) => -2,
            })
        },
    )?;
    linker.func_wrap(
        "wharf",
        "emit",
        |mut caller: Caller<'_, HostState>, ptr: i32, len: i32| -> wasmtime::Result<i32> {
            // Sized, then measured, then parsed: a row's text is read in place, and it becomes
            // values only once what they will take in memory has been charged.
            if u64::from(len as u32) > caller.data().collector.remaining() {
                caller.data_mut().collector.refuse();
                return Ok(-2);
            }
            let memory = guest_memory(&mut caller)?;
            let (mem, state) = memory.data_and_store_mut(&mut caller);
            let start = ptr as u32 as usize;
            let text = mem
                .get(start..start.saturating_add(len as u32 as usize))
                .ok_or_else(|| {
                    wasmtime::format_err!("pointer {ptr} with length {len} is outside guest memory")
                })?;
            let Ok(held) = super::json_cost::parsed_cost(text) else {
                return Ok(-1);
            };
            if held > state.collector.remaining() {
                state.collector.refuse();
                return Ok(-2);
            }
            let Ok(row) = serde_json::from_slice::<serde_json::Value>(text) else {
                return Ok(-1);
            };
            Ok(match state.collector.emit_costing(row, held) {
                Ok(()) => 0,
                Err(super::CollectError::Invalid(_)) => -1,
                Err(super::CollectError::Limit(_)) => -2,
            })
        },
    )?;
    linker.func_wrap(
        "wharf",
        "request",
        |mut caller: Caller<'_, HostState>, ptr: i32, len: i32| -> wasmtime::Result<i32> {
            let needed = caller.data().request_json.len();
            if (len.max(0) as usize) < needed {
                return Ok(needed as i32);
            }
            let memory = guest_memory(&mut caller)?;
            let (mem, state) = memory.data_and_store_mut(&mut caller);
            let start = ptr as u32 as usize;
            let dest = mem.get_mut(start..start + needed).ok_or_else(|| {
                wasmtime::format_err!(
                    "wharf.request: buffer {ptr}+{needed} is outside guest memory"
                )
            })?;
            dest.copy_from_slice(&state.request_json);
            Ok(needed as i32)
        },
    )?;
    Ok(())
}

pub(super) fn guest_memory(
    caller: &mut Caller<'_, HostState>,
) -> wasmtime::Result<wasmtime::Memory> {
    match caller.get_export("memory") {
        Some(wasmtime::Extern::Memory(m)) => Ok(m),
        _ => Err(wasmtime::format_err!(
            "the module exports no memory named \"memory\""
        )),
    }
}

fn guest_bytes(
    caller: &mut Caller<'_, HostState>,
    ptr: i32,
    len: i32,
) -> wasmtime::Result<Vec<u8>> {
    let memory = guest_memory(caller)?;
    let (start, len) = (ptr as u32 as usize, len as u32 as usize);
    memory
        .data(&*caller)
        .get(start..start.saturating_add(len))
        .map(<[u8]>::to_vec)
        .ok_or_else(|| {
            wasmtime::format_err!("pointer {ptr} with length {len} is outside guest memory")
        })
}
