//! Wasm vessels through the real server, from WAT compiled in the test: every hostile module is
//! contained with its typed reason while the server keeps answering.

use base64::Engine as _;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

const WASI: &str = "wasi_snapshot_preview1";

fn b64(wat_src: &str) -> String {
    let bytes = wat::parse_str(wat_src).expect("valid WAT");
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn wasm_vessel(name: &str, wat_src: &str, limits: Value) -> Value {
    json!({"name": name, "kind": "wasm", "wasm_base64": b64(wat_src), "limits": limits})
}

async fn run_one(app: &TestApp, wat_src: &str, limits: Value, body: &str) -> Value {
    let doc = json!({"name": "w", "vessels": [wasm_vessel("v", wat_src, limits)]});
    let (_, url) = app.fleet_with_hook(doc).await;
    let run = app.finished_run(&app.trigger_ok(&url, body).await).await;
    run["vessels"][0].clone()
}

fn exit_with(code: i32) -> String {
    format!(
        r#"(module (import "{WASI}" "proc_exit" (func $exit (param i32)))
            (memory (export "memory") 1)
            (func (export "_start") (call $exit (i32.const {code}))))"#
    )
}

const ECHO: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const 4096))
    (drop (call $read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
    (i32.store (i32.const 4) (i32.load (i32.const 8)))
    (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 12)))))"#;

/// Writes the whole environment (NUL-separated) to stdout, and sets `from_wasm`.
const ENV_DUMP: &str = r#"(module
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $sizes (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get" (func $get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (import "wharf" "set_var" (func $set_var (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 200) "from_wasmhello")
  (func (export "_start")
    (drop (call $sizes (i32.const 0) (i32.const 4)))
    (drop (call $get (i32.const 1024) (i32.const 8192)))
    (i32.store (i32.const 8) (i32.const 8192))
    (i32.store (i32.const 12) (i32.load (i32.const 4)))
    (drop (call $write (i32.const 1) (i32.const 8) (i32.const 1) (i32.const 16)))
    (drop (call $set_var (i32.const 200) (i32.const 9) (i32.const 209) (i32.const 5)))))"#;

const SPIN: &str =
    r#"(module (memory (export "memory") 1) (func (export "_start") (loop $l (br $l))))"#;

#[tokio::test]
async fn exit_codes_stdin_and_environment() {
    let app = spawn_app().await;
    let v = run_one(&app, &exit_with(0), json!({}), "{}").await;
    assert_eq!(
        (v["status"].as_str(), v["exit_code"].as_i64()),
        (Some("succeeded"), Some(0)),
        "{v}"
    );
    let v = run_one(&app, &exit_with(7), json!({}), "{}").await;
    assert_eq!(
        (
            v["status"].as_str(),
            v["exit_code"].as_i64(),
            v["reason"].as_str()
        ),
        (Some("failed"), Some(7), Some("exit_code"))
    );
    let v = run_one(&app, ECHO, json!({}), r#"{"echo":"me"}"#).await;
    assert_eq!(v["stdout"], r#"{"echo":"me"}"#, "{v}");
    assert_eq!(v["status"], "succeeded");
    assert!(v["fuel_used"].as_u64().unwrap() > 0);

    assert!(
        std::env::var_os("PATH").is_some(),
        "the host environment has PATH"
    );
    let doc = json!({"name": "env", "variables": {"abc": "123"}, "vessels": [wasm_vessel("dump", ENV_DUMP, json!({}))]});
    let (fleet, url) = app.fleet_with_hook(doc).await;
    let run_id = app.trigger_ok(&url, "{}").await;
    let run = app.finished_run(&run_id).await;
    let env: Vec<String> = run["vessels"][0]["stdout"]
        .as_str()
        .unwrap()
        .split('\0')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    for expected in [
        "abc=123".to_string(),
        format!("WHARF_FLEET_RUN_ID={run_id}"),
        format!("WHARF_FLEET_ID={fleet}"),
        "WHARF_VESSEL=dump".into(),
        "WHARF_ATTEMPT=1".into(),
        "WHARF_METHOD=POST".into(),
        "WHARF_CONTENT_TYPE=application/json".into(),
    ] {
        assert!(env.contains(&expected), "{expected} missing from {env:?}");
    }
    for key in ["WHARF_REQUEST_ID=", "WHARF_PROJECT_ID=", "WHARF_ORG_ID="] {
        assert!(env.iter().any(|e| e.starts_with(key)), "{key} missing");
    }
    assert!(
        !env.iter()
            .any(|e| e.starts_with("PATH=") || e.starts_with("HOME=")),
        "host env leaked: {env:?}"
    );
    assert_eq!(run["variables"]["from_wasm"], "hello");
}

#[tokio::test]
async fn hostile_modules_get_typed_reasons() {
    let app = spawn_app().await;
    let v = run_one(&app, SPIN, json!({"fuel": 100000}), "{}").await;
    assert_eq!(v["reason"], "fuel_exhausted", "{v}");
    assert_eq!(v["fuel_used"], 100000);
    let v = run_one(
        &app,
        SPIN,
        json!({"fuel": 100000000000u64, "timeout_ms": 200}),
        "{}",
    )
    .await;
    assert_eq!(v["reason"], "timeout", "{v}");
    let grow = r#"(module (memory (export "memory") 1)
        (func (export "_start") (loop $l (br_if $l (i32.ne (memory.grow (i32.const 1)) (i32.const -1))))))"#;
    let v = run_one(&app, grow, json!({"memory_bytes": 2097152}), "{}").await;
    assert_eq!(v["reason"], "memory_limit", "{v}");
    let v = run_one(
        &app,
        r#"(module (memory (export "memory") 1) (func (export "_start") unreachable))"#,
        json!({}),
        "{}",
    )
    .await;
    assert_eq!(v["reason"], "trap", "{v}");
    assert!(v["error"].as_str().unwrap().contains("unreachable"), "{v}");
    let flood = format!(
        r#"(module (import "{WASI}" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
            (memory (export "memory") 1)
            (data (i32.const 100) "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx")
            (func (export "_start")
              (i32.store (i32.const 0) (i32.const 100)) (i32.store (i32.const 4) (i32.const 64))
              (loop $l (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))) (br $l))))"#
    );
    let v = run_one(
        &app,
        &flood,
        json!({"fuel": 2000000, "output_bytes": 4096}),
        "{}",
    )
    .await;
    assert_eq!(v["reason"], "output_limit", "{v}");
    assert_eq!(v["stdout"].as_str().unwrap().len(), 4096);
    // No preopened directories: path_open on any fd fails inside the guest (errno as exit code).
    let open = format!(
        r#"(module (import "{WASI}" "path_open" (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
            (import "{WASI}" "proc_exit" (func $exit (param i32)))
            (memory (export "memory") 1) (data (i32.const 100) "etc/passwd")
            (func (export "_start")
              (call $exit (i32.add
                (call $open (i32.const 3) (i32.const 0) (i32.const 100) (i32.const 10) (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 200))
                (call $open (i32.const 0) (i32.const 0) (i32.const 100) (i32.const 10) (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 200))))))"#
    );
    let v = run_one(&app, &open, json!({}), "{}").await;
    assert_eq!(v["reason"], "exit_code", "{v}");
    assert!(
        v["exit_code"].as_i64().unwrap() > 1,
        "both opens must fail: {v}"
    );
    // A pointer outside memory given to the host traps the guest, not the host.
    let bad_ptr = r#"(module (import "wharf" "set_var" (func $s (param i32 i32 i32 i32) (result i32)))
        (memory (export "memory") 1)
        (func (export "_start") (drop (call $s (i32.const 65530) (i32.const 100) (i32.const 0) (i32.const 1)))))"#;
    let v = run_one(&app, bad_ptr, json!({}), "{}").await;
    assert_eq!(v["reason"], "trap", "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("outside guest memory"),
        "{v}"
    );
    let (_, url) = app.fleet_with_hook(rhai_fleet("0")).await;
    assert_eq!(
        app.trigger(&url, "text/plain", "still here").await.0,
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn bad_modules_are_refused_at_save_with_named_problems() {
    let app = spawn_app().await;
    let project = app.project().await;
    let path = format!("/projects/{project}/fleets");
    let doc = |vessel: Value| json!({"name": "bad", "vessels": [vessel]});
    let forbidden = r#"(module (import "env" "system" (func)) (import "wasi_snapshot_preview1" "sock_accept" (func (param i32 i32 i32) (result i32)))
        (import "wharf" "launch_missiles" (func)) (memory (export "memory") 1) (func (export "_start")))"#;
    let cases = [
        (
            doc(wasm_vessel("v", forbidden, json!({}))),
            vec!["env::system", "wharf::launch_missiles"],
        ),
        (
            doc(wasm_vessel(
                "v",
                r#"(module (memory (export "memory") 1) (func (export "main")))"#,
                json!({}),
            )),
            vec!["_start"],
        ),
        (
            doc(
                json!({"name": "v", "kind": "wasm", "wasm_base64": base64::engine::general_purpose::STANDARD.encode(b"definitely not wasm")}),
            ),
            vec!["not a valid WebAssembly module"],
        ),
        (
            doc(json!({"name": "v", "kind": "wasm", "wasm_base64": "@@@"})),
            vec!["base64"],
        ),
    ];
    for (d, needles) in cases {
        let (s, e) = app.post(&path, d).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
        let msg = e["error"].as_str().unwrap();
        for n in needles {
            assert!(msg.contains(n), "{msg:?} should name {n:?}");
        }
    }
    let big = base64::engine::general_purpose::STANDARD.encode(vec![0u8; (16 << 20) + 1]);
    let (s, e) = app
        .post(
            &path,
            doc(json!({"name": "v", "kind": "wasm", "wasm_base64": big})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(e["error"].as_str().unwrap().contains("16777217"), "{e}");
}

#[tokio::test]
async fn wasm_and_rhai_exchange_variables_in_one_run() {
    let app = spawn_app().await;
    let doc = json!({"name": "mixed", "vessels": [
        {"name": "first", "kind": "rhai", "source": "set_var(\"from_rhai\", \"hi\")"},
        wasm_vessel("middle", ENV_DUMP, json!({})),
        {"name": "last", "kind": "rhai", "source": "set_var(\"echo\", vars.from_wasm)"}
    ]});
    let (_, url) = app.fleet_with_hook(doc).await;
    let run = app.finished_run(&app.trigger_ok(&url, "{}").await).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert!(
        run["vessels"][1]["stdout"]
            .as_str()
            .unwrap()
            .contains("from_rhai=hi")
    );
    assert_eq!(run["variables"]["echo"], "hello");
}

#[tokio::test]
async fn request_metadata_is_readable_through_the_host_function() {
    let app = spawn_app().await;
    let reader = r#"(module
      (import "wharf" "request" (func $req (param i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
      (memory (export "memory") 1)
      (func (export "_start") (local $n i32)
        (local.set $n (call $req (i32.const 1024) (i32.const 0)))
        (drop (call $req (i32.const 1024) (local.get $n)))
        (i32.store (i32.const 0) (i32.const 1024)) (i32.store (i32.const 4) (local.get $n))
        (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;
    let doc = json!({"name": "meta", "vessels": [wasm_vessel("v", reader, json!({}))]});
    let (_, url) = app.fleet_with_hook(doc).await;
    let res = app
        .client
        .post(format!("{url}?page=2"))
        .header("x-github-event", "push")
        .body("{}")
        .send()
        .await
        .unwrap();
    let run_id = res.json::<Value>().await.unwrap()["data"]["fleet_run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let run = app.finished_run(&run_id).await;
    let meta: Value =
        serde_json::from_str(run["vessels"][0]["stdout"].as_str().unwrap()).expect("JSON metadata");
    assert_eq!(meta["method"], "POST");
    assert_eq!(meta["headers"]["x-github-event"], "push");
    assert_eq!(meta["query"]["page"], "2");
    assert_eq!(meta["id"], run["request"]["id"]);
}

#[tokio::test]
async fn spinning_guests_do_not_starve_a_benign_run_or_ingress() {
    let app = spawn_app().await;
    let spin = json!({"name": "spin", "vessels": [wasm_vessel("v", SPIN, json!({"fuel": 100000000000u64, "timeout_ms": 8000}))]});
    let (spin_fleet, spin_url) = app.fleet_with_hook(spin).await;
    let mut spinners = Vec::new();
    for _ in 0..8 {
        spinners.push(app.trigger_ok(&spin_url, "{}").await);
    }
    for id in &spinners {
        app.wait_run(
            id,
            |r| r["status"] == "running",
            std::time::Duration::from_secs(10),
        )
        .await;
    }
    assert_eq!(app.healthz().await, StatusCode::OK);
    let (_, url) = app
        .fleet_with_hook(
            json!({"name": "ok", "vessels": [wasm_vessel("v", &exit_with(0), json!({}))]}),
        )
        .await;
    let benign = app.finished_run(&app.trigger_ok(&url, "{}").await).await;
    assert_eq!(benign["status"], "succeeded");
    // The benign run finished while every spinner was still spinning.
    let (_, runs) = app
        .get(&format!("/fleets/{spin_fleet}/runs?status=running"))
        .await;
    assert_eq!(
        runs["runs"].as_array().unwrap().len(),
        8,
        "spinners should still be running"
    );
    for id in &spinners {
        let run = app.finished_run(id).await;
        assert_eq!(run["vessels"][0]["reason"], "timeout");
    }
}

async fn metric(app: &TestApp, name: &str) -> u64 {
    let res = app
        .client
        .get(app.url("/api/v1/metrics"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let text = res.text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("{name} missing from {text}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_restart_loads_compiled_modules_instead_of_compiling() {
    let app = spawn_app().await;
    let doc = json!({"name": "w", "vessels": [wasm_vessel("v", &exit_with(0), json!({}))]});
    let (_, url) = app.fleet_with_hook(doc).await;
    assert_eq!(metric(&app, "wharf_wasm_modules_compiled_total").await, 1);
    let run = app.finished_run(&app.trigger_ok(&url, "{}").await).await;
    assert_eq!(run["status"], "succeeded");
    let data = app.stop().await;

    let app = spawn_in(data, |_| {}).await;
    let hook = url.rsplit_once("/webhooks/").unwrap().1;
    let url = app.url(&format!("/webhooks/{hook}"));
    let run = app.finished_run(&app.trigger_ok(&url, "{}").await).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(metric(&app, "wharf_wasm_modules_compiled_total").await, 0);
    assert_eq!(metric(&app, "wharf_wasm_modules_loaded_total").await, 1);
}
