//! The sandbox's host interface under random guests: wasm-smith builds modules that import any
//! WASI preview 1 function and any `wharf` function and export `_start` and a `memory`, and each
//! runs through `Sandbox::compile` and `Sandbox::run` — the path of a saved vessel and of
//! `wharf run` — under small limits. Every module is either refused at compile with a message or
//! runs to a typed outcome by its deadline; the process never panics or aborts; one run raises
//! the process's peak resident memory by less than the vessel's memory limit plus [`RUN_SLACK`];
//! and after a run the fuzzing thread holds on the heap what it held before, give or take
//! [`HELD_SLACK`].
#![no_main]

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use libfuzzer_sys::arbitrary::{Result as ArbitraryResult, Unstructured};
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};
use wasm_encoder::{
    CodeSection, EntityType, ExportKind, ExportSection, Function, FunctionSection, ImportSection,
    MemorySection, MemoryType, Module, TypeSection, ValType,
};
use wharf_sandbox::{
    CancelFlag, FailureReason, Limits, RequestMeta, RunIds, Sandbox, SandboxConfig, VesselInput,
    VesselKind, VesselStatus, memory,
};

/// The allocator that counts what each thread holds, as the server installs it, so a Rhai
/// vessel's memory limit and the leak check below see what a real run does.
#[global_allocator]
static ALLOCATOR: memory::CountingAlloc = memory::CountingAlloc;

/// The limits every generated vessel runs under: small, so that each run is short and a host
/// cost out of proportion to them stands out.
const LIMITS: Limits = Limits {
    fuel: 1_000_000,
    memory_bytes: 1 << 20,
    timeout_ms: 200,
    output_bytes: 64 << 10,
};

/// How far past its timeout a run may end: the epoch ticker's period and the scheduling noise
/// of a busy machine, far below the libFuzzer `-timeout` that catches an outright hang.
const DEADLINE_GRACE: Duration = Duration::from_secs(1);

/// What one run may add to the process's peak resident memory besides the guest's linear memory:
/// the store, the WASI context, output buffers of at most `output_bytes` each, host-call copies of
/// guest buffers (each at most the guest's memory) and what parsing them costs.
const RUN_SLACK: u64 = 16 << 20;

/// What the fuzzing thread may still hold after a run and its outcome are dropped: runs keep
/// nothing per run on the thread that ran them, beyond a little state wasmtime sets up once.
const HELD_SLACK: i64 = 256 << 10;

/// The engine and its caches, built once per process like a server's.
static SANDBOX: LazyLock<Sandbox> = LazyLock::new(|| {
    Sandbox::new(&SandboxConfig {
        cache_dir: None,
        cache_key: None,
        max_concurrent: 1,
    })
    .expect("the sandbox builds")
});

/// A module importing every function a vessel may import, with the signatures it links
/// against: wasm-smith draws the imports of each generated module from it.
static IMPORTS: LazyLock<Vec<u8>> = LazyLock::new(imports_module);

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(case) = Case::draw(&mut u) else {
        return;
    };
    check(case);
});

/// One generated vessel and what it is given.
struct Case {
    code: Vec<u8>,
    body: Vec<u8>,
    variables: BTreeMap<String, String>,
}

impl Case {
    fn draw(u: &mut Unstructured) -> ArbitraryResult<Case> {
        let body = u.arbitrary::<&[u8]>()?.iter().copied().take(4096).collect();
        let mut variables = BTreeMap::new();
        for i in 0..u.int_in_range(0..=3)? {
            variables.insert(format!("var_{i}"), u.arbitrary::<String>()?);
        }
        let config = wasm_smith::Config {
            available_imports: Some(IMPORTS.clone()),
            exports: Some(exports_module(u)?),
            // The one memory is the exported one, whose type the input draws; a second would
            // not fit the pooling allocator's slots.
            max_memories: 0,
            max_tables: 2,
            max_table_elements: 1_000,
            // Proposals wharf's engine is built without.
            gc_enabled: false,
            exceptions_enabled: false,
            threads_enabled: false,
            shared_everything_threads_enabled: false,
            ..wasm_smith::Config::default()
        };
        let code = wasm_smith::Module::new(config, u)?.to_bytes();
        Ok(Case {
            code,
            body,
            variables,
        })
    }
}

fn check(case: Case) {
    let sha256 = format!("{:x}", Sha256::digest(&case.code));
    let program = match SANDBOX.compile(VesselKind::Wasm, &sha256, &case.code) {
        Ok(program) => program,
        Err(refused) => {
            // A module wharf cannot take is refused when it is saved, with a reason.
            assert!(!refused.0.is_empty(), "a refusal without a message");
            return;
        }
    };
    let input = VesselInput {
        body: bytes::Bytes::from(case.body),
        request: Arc::new(RequestMeta {
            id: "fuzz".into(),
            method: "POST".into(),
            content_type: "application/json".into(),
            headers: BTreeMap::from([("content-type".into(), "application/json".into())]),
            query: BTreeMap::new(),
        }),
        ids: RunIds {
            vessel: "fuzz".into(),
            attempt: 1,
            ..RunIds::default()
        },
        variables: case.variables,
        limits: LIMITS,
        cancel: CancelFlag::default(),
        logs: None,
    };

    let held_before = memory::held();
    reset_peak_rss();
    let rss_before = status_kib("VmRSS:");
    let started = Instant::now();
    let outcome = SANDBOX.run(&program, &input);
    let took = started.elapsed();
    let peak_rise = status_kib("VmHWM:").saturating_sub(rss_before) * 1024;

    assert!(
        took <= Duration::from_millis(LIMITS.timeout_ms) + DEADLINE_GRACE,
        "the run took {took:?}, past its {} ms timeout: {outcome:?}",
        LIMITS.timeout_ms
    );
    match (outcome.status, outcome.reason) {
        (VesselStatus::Succeeded, None) => {
            assert_eq!(outcome.exit_code, Some(0), "{outcome:?}");
            assert!(outcome.error.is_none(), "{outcome:?}");
        }
        (VesselStatus::Failed, Some(FailureReason::ExitCode)) => {
            assert!(
                outcome.exit_code.is_some_and(|code| code != 0),
                "{outcome:?}"
            );
        }
        (
            VesselStatus::Failed,
            Some(
                FailureReason::FuelExhausted
                | FailureReason::MemoryLimit
                | FailureReason::Timeout
                | FailureReason::Trap
                | FailureReason::OutputLimit,
            ),
        ) => {
            assert!(
                outcome.error.as_deref().is_some_and(|e| !e.is_empty()),
                "a failure without a message: {outcome:?}"
            );
        }
        _ => panic!("not an outcome a Wasm run can have: {outcome:?}"),
    }
    assert!(outcome.fuel_used <= LIMITS.fuel, "{outcome:?}");
    let collected: usize = outcome
        .variables
        .iter()
        .map(|(name, value)| name.len() + value.len())
        .chain(outcome.rows.iter().map(|row| row.to_string().len()))
        .sum();
    assert!(
        collected as u64 <= LIMITS.output_bytes,
        "{collected} bytes of variables and rows kept past the output limit"
    );
    // Each stream is captured up to the output limit; an invalid UTF-8 byte is then shown as
    // U+FFFD, three bytes.
    for stream in [&outcome.stdout, &outcome.stderr] {
        assert!(stream.len() as u64 <= 3 * LIMITS.output_bytes);
    }
    assert!(
        peak_rise < LIMITS.memory_bytes + RUN_SLACK,
        "one run raised the peak resident memory by {peak_rise} bytes: {outcome:?}"
    );

    drop(outcome);
    drop(input);
    drop(program);
    let kept = memory::held().since(held_before).bytes;
    assert!(
        kept < HELD_SLACK,
        "the thread holds {kept} bytes more after the run than before it"
    );
}

/// Lets `VmHWM` restart from the current resident size (Linux ≥ 4.0), so that it shows the peak
/// of the next run alone.
fn reset_peak_rss() {
    std::fs::write("/proc/self/clear_refs", "5").expect("resetting the peak resident size");
}

/// A `kB` field of `/proc/self/status`.
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("reading /proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/self/status"))
}

/// `_start` taking and returning nothing, and a 32-bit `memory` whose size the input draws (up
/// to a little past the 1 MiB limit, with or without a maximum), as a vessel must export.
fn exports_module(u: &mut Unstructured) -> ArbitraryResult<Vec<u8>> {
    let minimum = u.int_in_range(0..=18)?;
    let maximum = if u.arbitrary()? {
        Some(u.int_in_range(minimum..=minimum + 20)?)
    } else {
        None
    };
    let mut types = TypeSection::new();
    types.ty().function([], []);
    let mut funcs = FunctionSection::new();
    funcs.function(0);
    let mut memories = MemorySection::new();
    memories.memory(MemoryType {
        minimum,
        maximum,
        memory64: false,
        shared: false,
        page_size_log2: None,
    });
    let mut exports = ExportSection::new();
    exports
        .export("_start", ExportKind::Func, 0)
        .export("memory", ExportKind::Memory, 0);
    let mut code = CodeSection::new();
    let mut body = Function::new([]);
    body.instructions().end();
    code.function(&body);
    let mut module = Module::new();
    module
        .section(&types)
        .section(&funcs)
        .section(&memories)
        .section(&exports)
        .section(&code);
    Ok(module.finish())
}

/// Every function of `wasi_snapshot_preview1`, read from wasmtime-wasi's own linker, and the
/// three `wharf` functions, as imports of one module.
fn imports_module() -> Vec<u8> {
    let engine = wasmtime::Engine::default();
    let mut linker = wasmtime::Linker::<wasmtime_wasi::p1::WasiP1Ctx>::new(&engine);
    wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |ctx| ctx).expect("WASI preview 1 links");
    let mut store = wasmtime::Store::new(&engine, wasmtime_wasi::WasiCtxBuilder::new().build_p1());
    let mut funcs: Vec<(String, String, Vec<ValType>, Vec<ValType>)> = linker
        .iter(&mut store)
        .filter_map(|(module, name, item)| {
            Some((module.to_owned(), name.to_owned(), item.into_func()?))
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|(module, name, func)| {
            let ty = func.ty(&store);
            let params = ty.params().map(value_type).collect();
            let results = ty.results().map(value_type).collect();
            (module, name, params, results)
        })
        .collect();
    assert!(
        funcs.iter().any(|f| f.1 == "poll_oneoff") && funcs.iter().any(|f| f.1 == "fd_read"),
        "WASI preview 1 was read from the linker"
    );
    use ValType::I32;
    for (name, params) in [
        ("set_var", vec![I32, I32, I32, I32]),
        ("emit", vec![I32, I32]),
        ("request", vec![I32, I32]),
    ] {
        funcs.push(("wharf".into(), name.into(), params, vec![I32]));
    }
    // The linker's order is a hash map's: sorted, every process offers the same module, and
    // a saved input means the same guest.
    funcs.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    let mut types = TypeSection::new();
    let mut imports = ImportSection::new();
    for (index, (module, name, params, results)) in funcs.into_iter().enumerate() {
        types.ty().function(params, results);
        imports.import(&module, &name, EntityType::Function(index as u32));
    }
    let mut module = Module::new();
    module.section(&types).section(&imports);
    module.finish()
}

fn value_type(ty: wasmtime::ValType) -> ValType {
    match ty {
        wasmtime::ValType::I32 => ValType::I32,
        wasmtime::ValType::I64 => ValType::I64,
        wasmtime::ValType::F32 => ValType::F32,
        wasmtime::ValType::F64 => ValType::F64,
        other => panic!("a host function takes {other:?}, which this target cannot offer"),
    }
}
