//! Guests inside host calls, through the real server: a Wasm guest asleep in `poll_oneoff` ends
//! by its timeout or its cancel while other fleets keep running; `wharf.emit` of a huge row or
//! `wharf.set_var` of a huge value leaves the host's peak memory within the vessel's own limit
//! (the real binary, watched from `/proc`); a compiled module on disk that was altered or
//! swapped is not loaded.

use std::time::Duration;

use base64::Engine as _;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::binary::start_with;
use crate::helpers::*;

fn b64(wat_src: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(wat::parse_str(wat_src).expect("valid WAT"))
}

fn wasm_doc(name: &str, wat_src: &str, limits: Value) -> Value {
    json!({"name": name, "vessels": [{"name": "v", "kind": "wasm", "wasm_base64": b64(wat_src), "limits": limits}]})
}

/// One relative monotonic-clock subscription of `u64::MAX` ns: userdata at 0, tag 0 (clock) at
/// 8, clock id 1 (monotonic) at 16, timeout -1 at 24, precision at 32, flags 0 at 40; the event
/// goes to 64 and the count to 128.
const SLEEPER: &str = r#"(module
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (i32.store (i32.const 16) (i32.const 1))
    (i64.store (i32.const 24) (i64.const -1))
    (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))))"#;

/// Sleeps 20 ms through `poll_oneoff` and exits with the errno if there is one, else with
/// 100 + 10 × the number of events + the event's type: 110 when all went well.
const NAP: &str = r#"(module
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start") (local $errno i32)
    (i64.store (i32.const 0) (i64.const 42))
    (i32.store (i32.const 16) (i32.const 1))
    (i64.store (i32.const 24) (i64.const 20000000))
    (local.set $errno (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))
    (if (local.get $errno) (then (call $exit (local.get $errno))))
    (if (i64.ne (i64.load (i32.const 64)) (i64.const 42)) (then (call $exit (i32.const 99))))
    (call $exit (i32.add (i32.add (i32.const 100)
      (i32.mul (i32.load (i32.const 128)) (i32.const 10)))
      (i32.load8_u (i32.const 74))))))"#;

async fn quick_run_finishes(app: &TestApp, within: Duration) {
    let (_, url) = app.fleet_with_hook(rhai_fleet("emit(#{ok: true});")).await;
    let run = app
        .wait_run(
            &app.trigger_ok(&url, "{}").await,
            |r| r["status"] == "succeeded",
            within,
        )
        .await;
    assert_eq!(run["status"], "succeeded", "{run}");
}

#[tokio::test]
async fn guests_asleep_in_poll_oneoff_end_by_their_timeout_and_others_keep_running() {
    // One core thread and one slow-lane thread: three sleepers hold more than every thread.
    let app = spawn_with(|c| {
        c.workers = 1;
        c.max_slow_vessels = 1;
    })
    .await;
    let (_, url) = app
        .fleet_with_hook(wasm_doc("sleep", SLEEPER, json!({"timeout_ms": 500})))
        .await;
    let mut runs = Vec::new();
    for _ in 0..3 {
        runs.push(app.trigger_ok(&url, "{}").await);
    }
    for id in &runs {
        let run = app.finished_run(id).await;
        let v = &run["vessels"][0];
        assert_eq!(v["reason"], "timeout", "{run}");
        // It slept until its timeout, which ended it.
        let took = v["duration_ms"].as_f64().unwrap();
        assert!(took >= 500.0, "slept {took} ms: {run}");
    }
    quick_run_finishes(&app, Duration::from_secs(10)).await;

    // A short sleep still works as WASI says: one clock event with its userdata.
    let (_, url) = app.fleet_with_hook(wasm_doc("nap", NAP, json!({}))).await;
    let run = app.finished_run(&app.trigger_ok(&url, "{}").await).await;
    assert_eq!(run["vessels"][0]["exit_code"], 110, "{run}");
}

#[tokio::test]
async fn a_cancel_ends_a_guest_asleep_in_poll_oneoff_at_once() {
    let app = spawn_app().await;
    let (_, url) = app
        .fleet_with_hook(wasm_doc("sleep", SLEEPER, json!({"timeout_ms": 120_000})))
        .await;
    let id = app.trigger_ok(&url, "{}").await;
    app.wait_run(
        &id,
        |r| r["vessels"][0]["status"] == "running",
        Duration::from_secs(10),
    )
    .await;
    // Asleep, it holds one vessel thread; the node's other fleets go on.
    tokio::time::sleep(Duration::from_millis(200)).await;
    quick_run_finishes(&app, Duration::from_secs(10)).await;

    let (s, run) = app.post(&format!("/runs/{id}/cancel"), json!({})).await;
    assert_eq!(s, StatusCode::OK, "{run}");
    assert_eq!(run["status"], "cancelled", "{run}");
    // The cancel's own answer has the vessel ended, by the cancel and not its two-minute timeout.
    assert_eq!(run["vessels"][0]["status"], "cancelled", "{run}");
    assert_eq!(run["vessels"][0]["reason"], "cancelled", "{run}");
}

/// Fills memory with `[0,0,…,0]` of `bytes` bytes (odd) (doubling with `memory.copy`) and emits it,
/// exiting with 10 + what `emit` answered (8 for `-2`, the output limit).
fn emitter(bytes: u32) -> String {
    format!(
        r#"(module
  (import "wharf" "emit" (func $emit (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1024)
  (func (export "_start") (local $len i32) (local $total i32) (local $n i32)
    (local.set $total (i32.const {pairs}))
    (i32.store8 (i32.const 0) (i32.const 91))
    (i32.store16 (i32.const 1) (i32.const 0x2c30))
    (local.set $len (i32.const 2))
    (block $done (loop $l
      (br_if $done (i32.ge_u (local.get $len) (local.get $total)))
      (local.set $n (i32.sub (local.get $total) (local.get $len)))
      (if (i32.gt_u (local.get $n) (local.get $len)) (then (local.set $n (local.get $len))))
      (memory.copy (i32.add (i32.const 1) (local.get $len)) (i32.const 1) (local.get $n))
      (local.set $len (i32.add (local.get $len) (local.get $n)))
      (br $l)))
    (i32.store8 (local.get $total) (i32.const 93))
    (call $exit (i32.add (i32.const 10)
      (call $emit (i32.const 0) (i32.add (local.get $total) (i32.const 1)))))))"#,
        pairs = bytes - 1,
    )
}

/// Fills memory with `bytes` bytes of `a` and sets it as variable `x`, exiting with 10 + what
/// `set_var` answered.
fn setter(bytes: u32) -> String {
    format!(
        r#"(module
  (import "wharf" "set_var" (func $set (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1024)
  (data (i32.const 0) "x")
  (func (export "_start")
    (memory.fill (i32.const 16) (i32.const 97) (i32.const {bytes}))
    (call $exit (i32.add (i32.const 10)
      (call $set (i32.const 0) (i32.const 1) (i32.const 16) (i32.const {bytes}))))))"#
    )
}

const MIB: u64 = 1 << 20;

#[tokio::test]
async fn emitting_a_huge_row_or_variable_keeps_the_host_within_the_vessel_memory_limit() {
    let data = tempfile::tempdir().unwrap();
    let mut server = start_with(data.path(), 0, |_| {}).await;
    let limits = json!({"memory_bytes": 64 * MIB, "output_bytes": 16 * MIB, "fuel": 1_000_000_000u64, "timeout_ms": 30_000});
    // The reproduction: a 48 MiB array, three times the output limit. Then one just under the
    // output limit, whose values would take about sixteen times its text once parsed.
    // And a 48 MiB variable.
    let guests = [
        (48 * MIB as u32 + 1, emitter(48 * MIB as u32 + 1)),
        (15 * MIB as u32 + 1, emitter(15 * MIB as u32 + 1)),
        (48 * MIB as u32, setter(48 * MIB as u32)),
    ];
    for (bytes, guest) in guests {
        let (_, url) = server
            .fleet_with_hook(wasm_doc("emit", &guest, limits.clone()))
            .await;
        // Compile, warm the pooling allocator's slot and the server's buffers first.
        server.finished(&server.trigger(&url, "{}").await).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        server.reset_peak();
        let base = server.peak_rss();
        let run = server.finished(&server.trigger(&url, "{}").await).await;
        let rise = server.peak_rss().saturating_sub(base);
        eprintln!(
            "{bytes} bytes emitted or set: peak rose by {} KiB",
            rise / 1024
        );
        // The guest's own 64 MiB of linear memory lives in this process too; besides it, 8 MiB
        // covers the run's bookkeeping, its HTTP polls and allocator arenas.
        assert!(
            rise < 64 * MIB + 8 * MIB,
            "peak rose by {} MiB for a {} MiB row or variable",
            rise / MIB,
            bytes as u64 / MIB
        );
        let v = &run["vessels"][0];
        assert_eq!(v["reason"], "output_limit", "{run}");
        assert_eq!(v["exit_code"], 8, "answered `output limit`: {run}");
        assert!(server.alive());
    }
}

/// Exits with a fixed code, to tell two modules apart by their result.
fn exits_with(code: u32) -> String {
    format!(
        r#"(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start") (call $exit (i32.const {code}))))"#
    )
}

async fn metric(app: &TestApp, name: &str) -> f64 {
    let text = app
        .client
        .get(app.url("/api/v1/metrics"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from {text}"))
}

#[tokio::test]
async fn a_compiled_module_altered_on_disk_is_not_loaded() {
    let app = spawn_app().await;
    let (_, url_a) = app
        .fleet_with_hook(wasm_doc("a", &exits_with(3), json!({})))
        .await;
    let (_, url_b) = app
        .fleet_with_hook(wasm_doc("b", &exits_with(7), json!({})))
        .await;
    for url in [&url_a, &url_b] {
        app.finished_run(&app.trigger_ok(url, "{}").await).await;
    }
    let data = app.stop().await;
    let dir = data.path().join("modules");
    let artifacts: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .collect();
    assert_eq!(artifacts.len(), 2, "{artifacts:?}");
    let sha = |code: u32| wharf::util::sha256_hex(&wat::parse_str(exits_with(code)).unwrap());
    let (path_a, path_b) = (
        dir.join(format!("{}.cwasm", sha(3))),
        dir.join(format!("{}.cwasm", sha(7))),
    );
    // `a`'s artifact replaced by `b`'s, a valid artifact of another module; `b`'s with a byte of
    // its code flipped.
    std::fs::copy(&path_b, &path_a).unwrap();
    let mut bytes = std::fs::read(&path_b).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&path_b, &bytes).unwrap();

    let app = spawn_in(data, |_| {}).await;
    let on = |app: &TestApp, url: &str| {
        app.url(&format!(
            "/webhooks/{}",
            url.rsplit_once("/webhooks/").unwrap().1
        ))
    };
    for (url, code) in [(&url_a, 3), (&url_b, 7)] {
        let run = app
            .finished_run(&app.trigger_ok(&on(&app, url), "{}").await)
            .await;
        assert_eq!(run["vessels"][0]["exit_code"], code, "{run}");
    }
    assert_eq!(metric(&app, "wharf_wasm_modules_rejected_total").await, 2.0);
    assert_eq!(metric(&app, "wharf_wasm_modules_loaded_total").await, 0.0);
    // Recompiled and kept again: the next start loads both.
    assert_eq!(metric(&app, "wharf_wasm_modules_compiled_total").await, 2.0);
    let app = spawn_in(app.stop().await, |_| {}).await;
    for (url, code) in [(&url_a, 3), (&url_b, 7)] {
        let run = app
            .finished_run(&app.trigger_ok(&on(&app, url), "{}").await)
            .await;
        assert_eq!(run["vessels"][0]["exit_code"], code, "{run}");
    }
    assert_eq!(metric(&app, "wharf_wasm_modules_loaded_total").await, 2.0);
    assert_eq!(metric(&app, "wharf_wasm_modules_rejected_total").await, 0.0);
}
