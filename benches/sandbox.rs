//! Per-run cost of wharf's sandbox against the raw engine floor, measured in the same run.
//!
//! - Wasm: a trivial WASI command module (reads nothing, writes a line, returns) through
//!   `Sandbox::run` — fresh store, WASI context with the run's environment, limits, `_start`,
//!   outcome with output and variables collected — against the floor: the same engine settings,
//!   a cached `InstancePre`, a fresh `Store` with a bare WASI context, `_start`.
//! - Rhai: a script reading three fields of a 1 KB JSON payload and setting three variables,
//!   through `Sandbox::run` against the floor: a cached AST, `serde_json` → `Dynamic`, one
//!   `run_ast_with_scope` on a plain engine. And a loop of 200 integer additions and string
//!   appends against a plain engine with Rhai's fast operators on, which wharf turns off so that
//!   its sized `+` and `+=` are called.
//! - The allocator: an allocation and free of 64 bytes through wharf's counting allocator (which
//!   keeps each thread's heap count for Rhai's memory limit) against the system allocator.
//!
//! `cargo bench --bench sandbox`

#[path = "measure.rs"]
#[allow(dead_code)]
mod measure;

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use wasmtime::{Engine, Linker, Module, Store};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::{MemoryInputPipe, MemoryOutputPipe};
use wharf::sandbox::memory::CountingAlloc;
use wharf::sandbox::{
    Limits, RequestMeta, RunIds, Sandbox, SandboxConfig, VesselInput, VesselKind, VesselStatus,
    wasm::engine_config,
};

const TRIVIAL_WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "ok\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 3))
    (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;

const SCRIPT: &str = r#"
set_var("repository", payload.repository.full_name);
set_var("pusher", payload.pusher.name);
set_var("branch", payload["ref"]);
"#;

/// A loop of integer additions and string appends: what fast operators are for.
const OPERATORS: &str = r#"
let s = "";
let n = 0;
for i in 0..200 { n += i * 2; s += "x"; }
set_var("n", n);
set_var("len", s.len);
"#;

/// A GitHub-style push payload of about 1 KB.
fn payload() -> Vec<u8> {
    let commits: Vec<_> = (0..4)
        .map(|i| serde_json::json!({"id": format!("{i:040}"), "message": "Fix the release script", "author": {"name": "alice", "email": "alice@example.com"}}))
        .collect();
    let body = serde_json::json!({
        "ref": "refs/heads/main", "before": "0".repeat(40), "after": "1".repeat(40),
        "repository": {"full_name": "acme/tools", "private": false, "html_url": "https://github.com/acme/tools"},
        "pusher": {"name": "alice", "email": "alice@example.com"},
        "commits": commits,
    });
    serde_json::to_vec(&body).unwrap()
}

fn input(body: &[u8]) -> VesselInput {
    VesselInput {
        body: bytes::Bytes::copy_from_slice(body),
        request: Arc::new(RequestMeta {
            id: uuid::Uuid::now_v7().to_string(),
            method: "POST".into(),
            content_type: "application/json".into(),
            headers: BTreeMap::from([("content-type".into(), "application/json".into())]),
            query: BTreeMap::new(),
        }),
        ids: RunIds {
            org_id: "o".into(),
            project_id: "p".into(),
            fleet_id: "f".into(),
            fleet_run_id: "r".into(),
            vessel: "v".into(),
            attempt: 1,
        },
        variables: BTreeMap::from([("branch".into(), "main".into())]),
        limits: Limits::default(),
        cancel: Default::default(),
        logs: None,
    }
}

fn main() {
    let body = payload();
    println!("payload: {} bytes", body.len());
    let sandbox = Sandbox::new(&SandboxConfig {
        cache_dir: None,
        cache_key: None,
        max_concurrent: 16,
    })
    .unwrap();
    let input = input(&body);

    // Wasm.
    let wasm = wat::parse_str(TRIVIAL_WAT).unwrap();
    let program = sandbox.compile(VesselKind::Wasm, "trivial", &wasm).unwrap();
    assert_eq!(
        sandbox.run(&program, &input).status,
        VesselStatus::Succeeded
    );
    let engine = Engine::new(&engine_config(Some(16))).unwrap();
    let mut linker: Linker<WasiP1Ctx> = Linker::new(&engine);
    wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |s| s).unwrap();
    let pre = linker
        .instantiate_pre(&Module::new(&engine, &wasm).unwrap())
        .unwrap();
    let floor = || {
        let wasi = WasiCtxBuilder::new()
            .stdin(MemoryInputPipe::new(body.clone()))
            .stdout(MemoryOutputPipe::new(4096))
            .build_p1();
        let mut store = Store::new(&engine, wasi);
        store.set_fuel(1_000_000).unwrap();
        store.set_epoch_deadline(1_000);
        let instance = pre.instantiate(&mut store).unwrap();
        instance
            .get_typed_func::<(), ()>(&mut store, "_start")
            .unwrap()
            .call(&mut store, ())
            .unwrap();
    };
    let (w, f) = measure::interleaved(
        15,
        2_000,
        || assert!(sandbox.run(&program, &input).exit_code == Some(0)),
        floor,
    );
    let mut met = measure::report("trivial Wasm vessel", w, "raw wasmtime", f, 1.5);

    // Rhai.
    let program = sandbox
        .compile(VesselKind::Rhai, "script", SCRIPT.as_bytes())
        .unwrap();
    let out = sandbox.run(&program, &input);
    assert_eq!(
        out.variables.get("repository").map(String::as_str),
        Some("acme/tools"),
        "{out:?}"
    );
    let mut engine = rhai::Engine::new();
    engine.set_max_operations(1_000_000);
    let vars = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
    let sink = vars.clone();
    engine.register_fn("set_var", move |k: &str, v: rhai::Dynamic| {
        sink.lock().unwrap().push((k.to_owned(), v.to_string()))
    });
    let ast = engine.compile(SCRIPT).unwrap();
    let text = std::str::from_utf8(&body).unwrap();
    let floor = || {
        let payload: rhai::Dynamic = serde_json::from_str(text).unwrap();
        let mut scope = rhai::Scope::new();
        scope.push_constant("payload", payload);
        engine.run_ast_with_scope(&mut scope, &ast).unwrap();
        vars.lock().unwrap().clear();
    };
    let (w, f) = measure::interleaved(
        15,
        2_000,
        || assert!(sandbox.run(&program, &input).exit_code == Some(0)),
        floor,
    );
    met &= measure::report("Rhai vessel on a 1 KB JSON payload", w, "raw Rhai", f, 1.5);

    // Operators and string growth: wharf turns Rhai's fast operators off and sizes `+`/`+=`
    // before they allocate, so a script made of them pays for that; the floor is a plain
    // engine with its fast operators on.
    let program = sandbox
        .compile(VesselKind::Rhai, "operators", OPERATORS.as_bytes())
        .unwrap();
    let out = sandbox.run(&program, &input);
    assert_eq!(
        out.variables.get("n").map(String::as_str),
        Some("39800"),
        "{out:?}"
    );
    let ast = engine.compile(OPERATORS).unwrap();
    let floor = || {
        engine.run_ast(&ast).unwrap();
        vars.lock().unwrap().clear();
    };
    let (w, f) = measure::interleaved(
        15,
        500,
        || assert!(sandbox.run(&program, &input).exit_code == Some(0)),
        floor,
    );
    met &= measure::report(
        "Rhai vessel of 200 additions and appends",
        w,
        "raw Rhai, fast operators",
        f,
        1.5,
    );

    let (c, s) = measure::interleaved(
        15,
        1_000_000,
        || alloc_and_free(&CountingAlloc),
        || alloc_and_free(&System),
    );
    met &= measure::report("64-byte allocation and free", c, "system", s, 1.25);
    println!(
        "sandbox targets: {}",
        if met { "all met" } else { "NOT all met" }
    );
}

const LAYOUT: Layout = match Layout::from_size_align(64, 8) {
    Ok(l) => l,
    Err(_) => panic!("a valid layout"),
};

/// One 64-byte allocation and free through `allocator`, called directly.
#[allow(unsafe_code)]
fn alloc_and_free(allocator: &impl GlobalAlloc) {
    // SAFETY: a non-zero layout; the pointer is freed with the allocator and layout it came from.
    unsafe {
        let p = allocator.alloc(LAYOUT);
        std::hint::black_box(p);
        allocator.dealloc(p, LAYOUT);
    }
}
