//! Rhai vessels through the real server: limits end runs with typed reasons, the server goes on.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::*;

async fn run_script(app: &TestApp, script: &str, limits: serde_json::Value) -> serde_json::Value {
    let doc = json!({"name": "lim", "vessels": [{"name": "v", "kind": "rhai", "source": script, "limits": limits}]});
    let (_, url) = app.fleet_with_hook(doc).await;
    let run = app.finished_run(&app.trigger_ok(&url, "{}").await).await;
    run["vessels"][0].clone()
}

#[tokio::test]
async fn limits_end_runs_with_their_reason() {
    let app = spawn_app().await;
    let v = run_script(&app, "loop {}", json!({"fuel": 100000})).await;
    assert_eq!(
        (v["status"].as_str(), v["reason"].as_str()),
        (Some("failed"), Some("fuel_exhausted")),
        "{v}"
    );
    assert!(v["fuel_used"].as_u64().unwrap() >= 99_000);
    let v = run_script(
        &app,
        "let s = \"ab\"; loop { s += s; }",
        json!({"memory_bytes": 1048576}),
    )
    .await;
    assert_eq!(v["reason"], "memory_limit", "{v}");
    let v = run_script(&app, "fn f(n) { f(n + 1) } f(0)", json!({})).await;
    assert_eq!(v["reason"], "memory_limit", "{v}");
    assert!(v["error"].as_str().unwrap().contains("call depth"));
    let v = run_script(
        &app,
        "loop {}",
        json!({"fuel": 100000000000u64, "timeout_ms": 200}),
    )
    .await;
    assert_eq!(v["reason"], "timeout", "{v}");
    let v = run_script(
        &app,
        "loop { print(\"flood\") }",
        json!({"output_bytes": 4096}),
    )
    .await;
    assert_eq!(v["reason"], "output_limit", "{v}");
    assert!(v["stdout"].as_str().unwrap().len() <= 4096);
    let v = run_script(&app, "let x = 1;\nlet y = x.nope();", json!({})).await;
    assert_eq!(v["reason"], "script_error", "{v}");
    assert!(v["error"].as_str().unwrap().contains("line 2"), "{v}");
    // The server still takes calls.
    let (_, url) = app.fleet_with_hook(rhai_fleet("0")).await;
    assert_eq!(
        app.trigger(&url, "text/plain", "ok").await.0,
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn script_sees_request_run_and_emits_rows() {
    let app = spawn_app().await;
    let script = r#"
        set_var("method", request.method);
        set_var("ct", request.content_type);
        set_var("vessel", run.vessel);
        set_var("attempt", run.attempt);
        set_var("fleet", run.fleet_id);
        emit(#{data: #{sku: payload.sku}, operation: "added", primary_key: payload.sku});
        emit(#{plain: true});
        debug("to stderr");
        42
    "#;
    let (fleet, url) = app.fleet_with_hook(rhai_fleet(script)).await;
    let run = app
        .finished_run(&app.trigger_ok(&url, r#"{"sku":"A-1"}"#).await)
        .await;
    let v = &run["vessels"][0];
    assert_eq!(v["exit_code"], 42);
    assert_eq!(v["reason"], "exit_code");
    assert_eq!(v["variables"]["method"], "POST");
    assert_eq!(v["variables"]["ct"], "application/json");
    assert_eq!(v["variables"]["vessel"], "main");
    assert_eq!(v["variables"]["attempt"], "1");
    assert_eq!(v["variables"]["fleet"], fleet.as_str());
    assert_eq!(
        v["rows"],
        json!([{"data": {"sku": "A-1"}, "operation": "added", "primary_key": "A-1"}, {"data": {"plain": true}}])
    );
    assert!(v["stderr"].as_str().unwrap().contains("to stderr"));
}
