//! Live run events over SSE through the real server: output arrives while the vessel still
//! runs, a late client is given what already happened, and a fleet's stream carries its runs.

use std::time::Duration;

use base64::Engine as _;
use futures::StreamExt;
use serde_json::{Value, json};

use crate::helpers::*;

/// Prints "first", spins with fuel to spare for a while, prints "second".
const SLOW_PRINTER: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "first\n")
  (data (i32.const 200) "second\n")
  (func $print (param $at i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $at))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
  (func (export "_start") (local $n i64)
    (call $print (i32.const 100) (i32.const 6))
    (local.set $n (i64.const 600000000))
    (loop $spin
      (local.set $n (i64.sub (local.get $n) (i64.const 1)))
      (br_if $spin (i64.ne (local.get $n) (i64.const 0))))
    (call $print (i32.const 200) (i32.const 7))))"#;

fn slow_fleet() -> Value {
    let wasm =
        base64::engine::general_purpose::STANDARD.encode(wat::parse_str(SLOW_PRINTER).unwrap());
    json!({"name": "live", "vessels": [
        {"name": "printer", "kind": "wasm", "wasm_base64": wasm,
         "limits": {"fuel": 100_000_000_000u64, "timeout_ms": 60_000}},
        {"name": "after", "kind": "rhai", "source": "print(\"done\")"}
    ]})
}

/// Reads SSE events off a response, calling `each` with (event, data) until it returns false
/// or the stream ends; returns every event seen.
async fn read_events(
    res: reqwest::Response,
    mut each: impl AsyncFnMut(&str, &Value) -> bool,
) -> Vec<(String, Value)> {
    let mut seen = Vec::new();
    let mut buf = String::new();
    let mut body = res.bytes_stream();
    'outer: while let Ok(Some(chunk)) =
        tokio::time::timeout(Duration::from_secs(30), body.next()).await
    {
        buf.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let mut kind = String::new();
            let mut data = String::new();
            for line in block.lines() {
                if let Some(k) = line.strip_prefix("event:") {
                    kind = k.trim().to_owned();
                } else if let Some(d) = line.strip_prefix("data:") {
                    data.push_str(d.trim_start());
                }
            }
            if kind.is_empty() {
                continue; // a keep-alive comment
            }
            let data: Value = serde_json::from_str(&data).unwrap_or(Value::Null);
            let go_on = each(&kind, &data).await;
            seen.push((kind, data));
            if !go_on {
                break 'outer;
            }
        }
    }
    seen
}

async fn open(app: &TestApp, path: &str) -> reqwest::Response {
    let res = app
        .client
        .get(app.url(&format!("/api/v1{path}")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    res
}

#[tokio::test]
async fn output_arrives_while_the_vessel_runs_and_a_late_client_gets_the_history() {
    let app = spawn_app().await;
    let (fleet, url) = app.fleet_with_hook(slow_fleet()).await;
    let fleet_stream = open(&app, &format!("/fleets/{fleet}/events")).await;
    let id = app.trigger_ok(&url, "{}").await;
    let res = open(&app, &format!("/runs/{id}/events")).await;
    let mut status_at_first_line = None;
    let seen = read_events(res, async |kind, data| {
        if kind == "log" && data["text"] == "first\n" && status_at_first_line.is_none() {
            let (_, run) = app.get(&format!("/runs/{id}")).await;
            status_at_first_line = Some(run["status"].as_str().unwrap().to_owned());
        }
        kind != "end"
    })
    .await;
    assert_eq!(
        status_at_first_line.as_deref(),
        Some("running"),
        "the first line came while the run ran: {seen:?}"
    );
    let kinds: Vec<&str> = seen.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds.last(), Some(&"end"), "{kinds:?}");
    let texts: Vec<&str> = seen
        .iter()
        .filter(|(k, _)| k == "log")
        .map(|(_, d)| d["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["first\n", "second\n", "done\n"]);
    let pos = |pred: &dyn Fn(&(String, Value)) -> bool| seen.iter().position(pred).unwrap();
    let first_line = pos(&|(k, d)| k == "log" && d["text"] == "first\n");
    let printer_end =
        pos(&|(k, d)| k == "vessel" && d["vessel"] == "printer" && d["status"] == "succeeded");
    assert!(first_line < printer_end, "{seen:?}");
    assert!(seen.iter().all(|(_, d)| d["run_id"] == id.as_str()));

    // A client connecting after the end gets what happened, then the stream closes.
    let late = read_events(
        open(&app, &format!("/runs/{id}/events")).await,
        async |_, _| true,
    )
    .await;
    let kinds: Vec<&str> = late.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds.last(), Some(&"end"), "{late:?}");
    let late_texts: Vec<&str> = late
        .iter()
        .filter(|(k, _)| k == "log")
        .map(|(_, d)| d["text"].as_str().unwrap())
        .collect();
    assert_eq!(late_texts, ["first\nsecond\n", "done\n"]);
    assert_eq!(
        late.iter()
            .filter(|(k, d)| k == "vessel" && d["status"] == "succeeded")
            .count(),
        2
    );

    // The fleet's stream carried the same run.
    let fleet_seen = read_events(fleet_stream, async |kind, _| kind != "end").await;
    assert!(
        fleet_seen
            .iter()
            .any(|(k, d)| k == "log" && d["text"] == "first\n" && d["run_id"] == id.as_str())
    );
    assert_eq!(fleet_seen.last().map(|(k, _)| k.as_str()), Some("end"));

    let res = app
        .client
        .get(app.url(&format!("/api/v1/runs/{}/events", uuid::Uuid::now_v7())))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
}
