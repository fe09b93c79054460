//! Sandbox isolation proofs through the real server: real Wasm modules (WAT compiled here) and
//! real Rhai scripts try to reach the host — files, environment, sockets, memory, `eval`,
//! modules — and each attempt fails inside the guest or ends the run with its typed reason,
//! while the server keeps answering.

use base64::Engine as _;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

fn wasm_doc(wat_src: &str, variables: Value, limits: Value) -> Value {
    let bytes = wat::parse_str(wat_src).expect("valid WAT");
    let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
    json!({"name": "iso", "variables": variables,
        "vessels": [{"name": "v", "kind": "wasm", "wasm_base64": b64, "limits": limits}]})
}

async fn run_doc(app: &TestApp, doc: Value) -> Value {
    let (_, url) = app.fleet_with_hook(doc).await;
    let run = app.finished_run(&app.trigger_ok(&url, "{}").await).await;
    run["vessels"][0].clone()
}

async fn run_wasm(app: &TestApp, wat_src: &str, limits: Value) -> Value {
    run_doc(app, wasm_doc(wat_src, json!({}), limits)).await
}

async fn run_rhai(app: &TestApp, script: &str, limits: Value) -> Value {
    let doc = json!({"name": "iso", "vessels": [{"name": "v", "kind": "rhai", "source": script, "limits": limits}]});
    run_doc(app, doc).await
}

/// Resident memory of this process (the server runs in it), in bytes.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

async fn still_answers(app: &TestApp) {
    assert_eq!(app.healthz().await, StatusCode::OK);
    let (_, url) = app.fleet_with_hook(rhai_fleet("0")).await;
    assert_eq!(
        app.trigger(&url, "text/plain", "ok").await.0,
        StatusCode::CREATED
    );
}

/// Exits with 100 plus the number of calls that succeeded (errno 0), so that a run reaching
/// the end with every call refused exits with exactly 100.
const NO_FILES: &str = r#"(module
  (import "wasi_snapshot_preview1" "path_open" (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_prestat_get" (func $prestat (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "/etc/passwd")
  (data (i32.const 120) "etc/passwd")
  (data (i32.const 140) ".")
  (func (export "_start") (local $fd i32) (local $ok i32)
    (i32.store (i32.const 300) (i32.const 400))
    (i32.store (i32.const 304) (i32.const 64))
    (loop $l
      (local.set $ok (i32.add (local.get $ok) (i32.eqz
        (call $open (local.get $fd) (i32.const 0) (i32.const 100) (i32.const 11) (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 200)))))
      (local.set $ok (i32.add (local.get $ok) (i32.eqz
        (call $open (local.get $fd) (i32.const 0) (i32.const 120) (i32.const 10) (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 200)))))
      (local.set $ok (i32.add (local.get $ok) (i32.eqz
        (call $open (local.get $fd) (i32.const 0) (i32.const 140) (i32.const 1) (i32.const 2) (i64.const 0) (i64.const 0) (i32.const 0) (i32.const 200)))))
      (local.set $ok (i32.add (local.get $ok) (i32.eqz (call $prestat (local.get $fd) (i32.const 200)))))
      (if (i32.ge_u (local.get $fd) (i32.const 3))
        (then (local.set $ok (i32.add (local.get $ok) (i32.eqz
          (call $read (local.get $fd) (i32.const 300) (i32.const 1) (i32.const 208)))))))
      (local.set $fd (i32.add (local.get $fd) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $fd) (i32.const 32))))
    (call $exit (i32.add (i32.const 100) (local.get $ok)))))"#;

#[tokio::test]
async fn a_wasm_guest_cannot_open_host_files() {
    let app = spawn_app().await;
    let v = run_wasm(&app, NO_FILES, json!({})).await;
    assert_eq!(v["exit_code"], 100, "some file call succeeded: {v}");
    still_answers(&app).await;
}

/// Same counting as [`NO_FILES`], over the WASI socket calls on every fd up to 31.
const NO_SOCKETS: &str = r#"(module
  (import "wasi_snapshot_preview1" "sock_accept" (func $accept (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_recv" (func $recv (param i32 i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_send" (func $send (param i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_shutdown" (func $shutdown (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start") (local $fd i32) (local $ok i32)
    (i32.store (i32.const 300) (i32.const 400))
    (i32.store (i32.const 304) (i32.const 16))
    (loop $l
      (local.set $ok (i32.add (local.get $ok) (i32.eqz (call $accept (local.get $fd) (i32.const 0) (i32.const 200)))))
      (local.set $ok (i32.add (local.get $ok) (i32.eqz
        (call $recv (local.get $fd) (i32.const 300) (i32.const 1) (i32.const 0) (i32.const 204) (i32.const 208)))))
      (local.set $ok (i32.add (local.get $ok) (i32.eqz
        (call $send (local.get $fd) (i32.const 300) (i32.const 1) (i32.const 0) (i32.const 204)))))
      (local.set $ok (i32.add (local.get $ok) (i32.eqz (call $shutdown (local.get $fd) (i32.const 3)))))
      (local.set $fd (i32.add (local.get $fd) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $fd) (i32.const 32))))
    (call $exit (i32.add (i32.const 100) (local.get $ok)))))"#;

#[tokio::test]
async fn a_wasm_guest_cannot_use_sockets() {
    let app = spawn_app().await;
    // WASI preview 1 has no call that creates a socket; the ones that use one find none.
    let v = run_wasm(&app, NO_SOCKETS, json!({})).await;
    assert_eq!(v["exit_code"], 100, "some socket call succeeded: {v}");
    // Anything outside WASI and `wharf` (a libc `socket`, say) is refused when the fleet is saved.
    let project = app.project().await;
    let doc = wasm_doc(
        r#"(module (import "env" "socket" (func (param i32 i32 i32) (result i32)))
            (memory (export "memory") 1) (func (export "_start")))"#,
        json!({}),
        json!({}),
    );
    let (s, body) = app.post(&format!("/projects/{project}/fleets"), doc).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.to_string().contains("env::socket"), "{body}");
    still_answers(&app).await;
}

/// Writes the environment (NUL-separated) to stdout.
const ENV_DUMP: &str = r#"(module
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $sizes (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get" (func $get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (func (export "_start")
    (drop (call $sizes (i32.const 0) (i32.const 4)))
    (drop (call $get (i32.const 1024) (i32.const 8192)))
    (i32.store (i32.const 8) (i32.const 8192))
    (i32.store (i32.const 12) (i32.load (i32.const 4)))
    (drop (call $write (i32.const 1) (i32.const 8) (i32.const 1) (i32.const 16)))))"#;

#[tokio::test]
async fn a_wasm_guest_sees_only_the_variables_wharf_sets() {
    let app = spawn_app().await;
    let host: Vec<String> = std::env::vars().map(|(k, _)| k).collect();
    assert!(!host.is_empty());
    let v = run_doc(
        &app,
        wasm_doc(ENV_DUMP, json!({"declared": "yes"}), json!({})),
    )
    .await;
    let names: Vec<String> = v["stdout"]
        .as_str()
        .unwrap()
        .split('\0')
        .filter(|e| !e.is_empty())
        .map(|e| e.split('=').next().unwrap().to_owned())
        .collect();
    assert!(names.contains(&"declared".to_string()), "{names:?}");
    let wharf_set = [
        "WHARF_REQUEST_ID",
        "WHARF_FLEET_RUN_ID",
        "WHARF_FLEET_ID",
        "WHARF_PROJECT_ID",
        "WHARF_ORG_ID",
        "WHARF_VESSEL",
        "WHARF_ATTEMPT",
        "WHARF_METHOD",
        "WHARF_CONTENT_TYPE",
    ];
    for name in &names {
        assert!(
            name == "declared" || wharf_set.contains(&name.as_str()),
            "{name} is not set by wharf"
        );
    }
    for name in host.iter().filter(|h| !wharf_set.contains(&h.as_str())) {
        assert!(!names.contains(name), "host variable {name} leaked");
    }
}

/// Calls `wharf.<call>` forever, ignoring what it answers.
fn flood(call: &str) -> String {
    let body = match call {
        "set_var" => {
            "(drop (call $f (i32.const 100) (i32.const 1) (i32.const 1000) (i32.const 4096)))"
        }
        "emit" => "(drop (call $f (i32.const 200) (i32.const 12)))",
        _ => "(drop (call $f (i32.const 8192) (i32.const 4096)))",
    };
    let sig = match call {
        "set_var" => "(param i32 i32 i32 i32) (result i32)",
        _ => "(param i32 i32) (result i32)",
    };
    format!(
        r#"(module (import "wharf" "{call}" (func $f {sig}))
            (memory (export "memory") 1)
            (data (i32.const 100) "a")
            (data (i32.const 200) "{{\"data\":\"x\"}}")
            (func (export "_start") (loop $l {body} (br $l))))"#
    )
}

#[tokio::test]
async fn wasm_host_calls_in_a_loop_cannot_exhaust_host_memory() {
    let app = spawn_app().await;
    let before = rss_bytes();
    for call in ["set_var", "emit"] {
        let v = run_wasm(
            &app,
            &flood(call),
            json!({"fuel": 100000000000u64, "timeout_ms": 20000, "output_bytes": 65536}),
        )
        .await;
        assert_eq!(v["reason"], "output_limit", "{call}: {v}");
        // Ended by the limit, before its 20 s timeout would have.
        assert!(v["duration_ms"].as_f64().unwrap() < 20_000.0, "{call}: {v}");
        let kept = serde_json::to_string(&v["variables"]).unwrap().len()
            + serde_json::to_string(&v["rows"]).unwrap().len();
        assert!(kept < 2 * 65536, "{call} kept {kept} bytes");
    }
    // `request` copies into guest memory and keeps nothing: only fuel or time ends it.
    let v = run_wasm(&app, &flood("request"), json!({"fuel": 5000000})).await;
    assert_eq!(v["reason"], "fuel_exhausted", "{v}");
    let grown = rss_bytes().saturating_sub(before);
    assert!(grown < 256 << 20, "host memory grew by {grown} bytes");
    still_answers(&app).await;
}

#[tokio::test]
async fn a_rhai_script_has_no_file_module_network_or_eval() {
    let app = spawn_app().await;
    let project = app.project().await;
    for (script, hint) in [
        (
            r#"let f = open_file("/etc/passwd"); f.read_string()"#,
            "open_file",
        ),
        (
            r#"import "std/fs" as fs; fs::read("/etc/passwd")"#,
            "std/fs",
        ),
        (r#"http_get("http://127.0.0.1:1/")"#, "http_get"),
        (r#"let s = "/etc/passwd"; read_file(s)"#, "read_file"),
        (r#"eval("40 + 2")"#, "eval"),
        (r#"let f = Fn("ev" + "al"); f.call("40 + 2")"#, "eval"),
    ] {
        // Refused when saved, or failing when run: never reaching the host.
        let doc =
            json!({"name": "iso", "vessels": [{"name": "v", "kind": "rhai", "source": script}]});
        let (s, body) = app.post(&format!("/projects/{project}/fleets"), doc).await;
        if s == StatusCode::BAD_REQUEST {
            continue;
        }
        assert_eq!(s, StatusCode::CREATED, "{body}");
        let v = run_rhai(&app, script, json!({})).await;
        assert_eq!(v["reason"], "script_error", "{script}: {v}");
        assert!(v["error"].as_str().unwrap().contains(hint), "{script}: {v}");
    }
    still_answers(&app).await;
}

#[tokio::test]
async fn rhai_resource_bombs_end_with_their_reason() {
    let app = spawn_app().await;
    // The smallest memory allowed: 1024 elements per array or map, so that sizes are reached
    // before time is (each size check walks the collection).
    let mem = json!({"memory_bytes": 65536, "timeout_ms": 3000});
    for (script, reason) in [
        (r#"let s = "ab"; loop { s += s; }"#, "memory_limit"),
        ("let a = [1]; loop { a += a; }", "memory_limit"),
        ("let a = []; loop { a.push(1); }", "memory_limit"),
        ("let a = []; loop { a = [a]; }", "memory_limit"),
        (
            "let m = #{}; let i = 0; loop { let n = #{}; n[`k${i}`] = i; m += n; i += 1; }",
            "memory_limit",
        ),
        // Rhai does not check the map's size when an index assignment adds a key; the heap the
        // script holds is counted instead.
        (
            "let m = #{}; let i = 0; loop { m[`k${i}`] = i; i += 1; }",
            "memory_limit",
        ),
        // Many values, each under every size limit of Rhai's: a 60,000-byte string per call.
        (
            "fn f(n) { let s = \"x\"; s.pad(60000, 'y'); if n < 40 { f(n + 1) } else { loop {} } } f(0)",
            "memory_limit",
        ),
        ("fn f(n) { f(n + 1) } f(0)", "memory_limit"),
        (
            r#"fn f(x) { x } let a = 0; loop { a = Fn("f").curry(take(a)); }"#,
            "memory_limit",
        ),
        (r#"let b = blob(10); loop { b += b; }"#, "memory_limit"),
        (r#"loop { print("x") }"#, "output_limit"),
        (
            r#"let i = 0; loop { set_var(`v${i}`, "x"); i += 1; }"#,
            "output_limit",
        ),
        (r#"loop { emit(#{data: "x"}) }"#, "output_limit"),
    ] {
        let v = run_rhai(&app, script, mem.clone()).await;
        assert_eq!(v["reason"], reason, "{script}: {v}");
    }
    still_answers(&app).await;
}

#[tokio::test]
async fn a_rhai_script_is_held_to_its_memory_limit_as_a_whole() {
    let app = spawn_app().await;
    // A map grown one key at a time passes every check Rhai makes itself; at the default
    // 16 MiB it is stopped by the heap count long before its 30 s timeout.
    let v = run_rhai(
        &app,
        "let m = #{}; let i = 0; loop { m[`k${i}`] = i; i += 1; }",
        json!({"timeout_ms": 30000}),
    )
    .await;
    assert_eq!(v["reason"], "memory_limit", "{v}");
    let error = v["error"].as_str().unwrap();
    assert!(
        error.contains("held more than its memory limit of 16777216 bytes"),
        "{error}"
    );
    // Before its 30 s timeout would have ended it.
    assert!(v["duration_ms"].as_f64().unwrap() < 30_000.0, "{v}");

    // An honest script over the largest body a webhook takes (just under 1 MiB of JSON) keeps
    // working at the default limits: it walks the payload, copies parts of it, and its output
    // (variables, rows, lines) is not counted as its memory.
    let items: Vec<Value> = (0..9_000)
        .map(|i| json!({"id": i, "name": format!("item-{i:05}"), "tags": ["a", "b"], "price": i as f64 / 7.0}))
        .collect();
    let body = serde_json::to_string(&json!({ "items": items })).unwrap();
    assert!(
        body.len() > 600_000 && body.len() < 1_048_576,
        "{}",
        body.len()
    );
    let script = r#"
        let by_tag = #{};
        let total = 0.0;
        let copy = payload.items;
        for item in copy {
            total += item.price;
            for t in item.tags { by_tag[t] = (by_tag[t] ?? 0) + 1; }
            if item.id % 1000 == 0 { emit(item); print(item.name); }
        }
        set_var("count", copy.len());
        set_var("a_tags", by_tag.a);
        set_var("summary", #{ total: total.to_int(), items: copy.len() });
    "#;
    let (_, url) = app
        .fleet_with_hook(
            json!({"name": "big", "vessels": [{"name": "v", "kind": "rhai", "source": script}]}),
        )
        .await;
    let (status, answer, _) = app.trigger(&url, "application/json", body).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let run = app
        .finished_run(answer["data"]["fleet_run_id"].as_str().unwrap())
        .await;
    let vessel = &run["vessels"][0];
    assert_eq!(vessel["status"], "succeeded", "{vessel}");
    assert_eq!(run["variables"]["count"], "9000", "{run}");
    assert_eq!(run["variables"]["a_tags"], "9000", "{run}");
    assert_eq!(vessel["rows"].as_array().unwrap().len(), 9, "{vessel}");
    still_answers(&app).await;
}

#[tokio::test]
async fn deeply_nested_rhai_values_cannot_overflow_a_stack() {
    let app = spawn_app().await;
    // Nesting by `take` costs one operation a level, and a curried function pointer has no size
    // check of Rhai's: past the cap on held values the run ends, before anything walks the nest
    // (dropping it took the process down with it before the cap).
    let v = run_rhai(
        &app,
        r#"fn f(x) { x } let a = 0; loop { a = Fn("f").curry(take(a)); }"#,
        json!({"timeout_ms": 30000}),
    )
    .await;
    assert_eq!(v["reason"], "memory_limit", "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("separate values"),
        "{v}"
    );

    // 20,000 levels of arrays, printed: formatting takes ~1.5 KiB of stack a level, which a
    // 16 MiB vessel stack did not have.
    let v = run_rhai(
        &app,
        "let a = 0; for i in 0..20000 { a = [take(a)]; } let s = `${a}`; print(s.len);",
        json!({"timeout_ms": 60000}),
    )
    .await;
    assert_eq!(v["status"], "succeeded", "{v}");
    assert_eq!(v["stdout"], "40001\n", "{v}");

    // A row goes on to other threads: one nested deeper than a JSON body may be is refused.
    let v = run_rhai(
        &app,
        "let a = 0; for i in 0..200 { a = [a]; } emit(#{deep: a});",
        json!({}),
    )
    .await;
    assert_eq!(v["reason"], "script_error", "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("nested deeper than 128"),
        "{v}"
    );
    assert_eq!(v["rows"].as_array().map_or(0, Vec::len), 0, "{v}");
    still_answers(&app).await;
}

#[tokio::test]
async fn one_rhai_call_cannot_allocate_past_the_memory_limit() {
    let app = spawn_app().await;
    // Each built-in works out the size of what it would make before making it: a `replace`
    // that squares a string (a terabyte for the second one, which aborted the process) and a
    // map of one shared string written out through `set_var`, `emit`, interpolation, `print`,
    // `+` and `to_json` each end the run with `memory_limit`, naming what was refused.
    for (name, script, refused) in crate::peak_rhai::reproductions() {
        let v = run_rhai(&app, &script, json!({})).await;
        assert_eq!(v["reason"], "memory_limit", "{name}: {v}");
        let error = v["error"].as_str().unwrap();
        assert!(
            error.contains(refused) && error.contains("bytes left of the memory limit"),
            "{name}: {error}"
        );
    }
    // The same calls within the limit still work, and give what Rhai's own functions give.
    let v = run_rhai(
        &app,
        r#"let s = "ab"; s.replace("a", "xyz"); let p = "1"; p.pad(4, '0');
           let m = #{b: [1, "two"], a: ()}; let parts = "a,b".split(",");
           set_var("out", `${s} ${p} ${m} ${parts} ${m.to_json()} ${"hé".to_chars()}`);
           set_var("m", m); emit(m); print(m); 0"#,
        json!({}),
    )
    .await;
    assert_eq!(v["status"], "succeeded", "{v}");
    let run_vars = &v["variables"];
    assert_eq!(
        run_vars["out"],
        r#"xyzb 1000 #{"a": (), "b": [1, "two"]} ["a", "b"] {"a":null,"b":[1,"two"]} ['h', 'é']"#,
        "{v}"
    );
    assert_eq!(run_vars["m"], r#"{"a":null,"b":[1,"two"]}"#, "{v}");
    still_answers(&app).await;
}
