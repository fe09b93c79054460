//! Scheduling through the real server: paths and parallel vessels, cancel, replay and resume,
//! retries, and the node-wide cap on running runs.

use std::time::Duration;

use base64::Engine as _;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

fn rhai(name: &str, source: &str) -> Value {
    json!({"name": name, "kind": "rhai", "source": source})
}

fn with(mut v: Value, extra: Value) -> Value {
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    v
}

/// A Rhai statement that keeps the vessel busy for `ms` milliseconds.
fn busy(ms: u64) -> String {
    format!(
        "let t = timestamp(); while t.elapsed < {} {{ }}",
        ms as f64 / 1000.0
    )
}

fn vessel<'a>(run: &'a Value, name: &str) -> &'a Value {
    run["vessels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no vessel {name} in {run}"))
}

fn time(v: &Value, field: &str) -> chrono::DateTime<chrono::FixedOffset> {
    chrono::DateTime::parse_from_rfc3339(
        v[field]
            .as_str()
            .unwrap_or_else(|| panic!("{field} in {v}")),
    )
    .unwrap()
}

/// build → deploy (success) | alert (failure) → report (always, after both).
fn converging() -> Value {
    json!({"name": "paths", "variables": {"fail": "no"}, "vessels": [
        rhai("build", "set_var(\"built\", \"yes\"); if vars.fail == \"yes\" { exit(1) }"),
        with(rhai("deploy", "set_var(\"deployed\", vars.built)"), json!({"needs": ["build"]})),
        with(rhai("alert", "set_var(\"alerted\", \"yes\")"), json!({"needs": ["build"], "when": "failure"})),
        with(rhai("report", "0"), json!({"needs": ["deploy", "alert"], "when": "always"})),
    ]})
}

#[tokio::test]
async fn converging_success_and_failure_paths() {
    let app = spawn_app().await;
    let (_, url) = app.fleet_with_hook(converging()).await;

    let run = app.finished_run(&app.trigger_ok(&url, "{}").await).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let statuses: Vec<&str> = ["build", "deploy", "alert", "report"]
        .iter()
        .map(|n| vessel(&run, n)["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["succeeded", "succeeded", "skipped", "succeeded"]);
    assert_eq!(run["variables"]["deployed"], "yes");

    // The failure path: deploy is skipped, alert handles the failure, report runs anyway.
    let run = app
        .finished_run(&app.trigger_ok(&url, r#"{"fail":"yes"}"#).await)
        .await;
    let statuses: Vec<&str> = ["build", "deploy", "alert", "report"]
        .iter()
        .map(|n| vessel(&run, n)["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["failed", "skipped", "succeeded", "succeeded"]);
    assert_eq!(
        run["status"], "succeeded",
        "alert handled build's failure: {run}"
    );
    assert_eq!(run["variables"]["alerted"], "yes");
}

#[tokio::test]
async fn an_unhandled_failure_fails_the_run_and_skipped_vessels_carry_the_failure_path() {
    let app = spawn_app().await;
    // a fails; b (success) is skipped; c (failure, after b) still sees the failure path; `side`
    // is a root of its own with an `always` vessel that is not downstream of a.
    let doc = json!({"name": "rule", "vessels": [
        rhai("a", "exit(4)"),
        rhai("b", "0"),
        with(rhai("c", "exit(5)"), json!({"when": "failure"})),
        with(rhai("side", "0"), json!({"needs": []})),
        with(rhai("tail", "0"), json!({"needs": ["side"], "when": "always"})),
    ]});
    let (_, url) = app.fleet_with_hook(doc).await;
    let run = app.finished_run(&app.trigger_ok(&url, "{}").await).await;
    assert_eq!(vessel(&run, "b")["status"], "skipped");
    assert_eq!(vessel(&run, "c")["status"], "failed", "{run}");
    assert_eq!(vessel(&run, "c")["exit_code"], 5);
    assert_eq!(vessel(&run, "tail")["status"], "succeeded");
    // c ran on the failure path but failed itself, and `tail` is not below a: unhandled.
    assert_eq!(run["status"], "failed", "{run}");
}

#[tokio::test]
async fn vessels_whose_needs_are_met_run_in_parallel() {
    let app = spawn_with(|c| c.workers = 2).await;
    let doc = json!({"name": "fan", "vessels": [
        with(rhai("left", &format!("{}; set_var(\"side\", \"left\"); set_var(\"l\", \"1\")", busy(200))), json!({"needs": []})),
        with(rhai("right", &format!("{}; set_var(\"side\", \"right\"); set_var(\"r\", \"1\")", busy(200))), json!({"needs": []})),
        with(rhai("join", "set_var(\"seen\", vars.side + vars.l + vars.r)"), json!({"needs": ["left", "right"]})),
    ]});
    let (_, url) = app.fleet_with_hook(doc).await;
    let run = app.finished_run(&app.trigger_ok(&url, "{}").await).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let (left, right) = (vessel(&run, "left"), vessel(&run, "right"));
    // Each started before the other ended: they ran at the same time.
    assert!(
        time(left, "started_at") < time(right, "finished_at")
            && time(right, "started_at") < time(left, "finished_at"),
        "left and right did not overlap: {run}"
    );
    let elapsed = time(&run, "finished_at") - time(&run, "started_at");
    assert!(
        elapsed.num_milliseconds() < 400,
        "two 200 ms vessels in parallel took {elapsed} of run time"
    );
    // Of two parallel branches setting `side`, the one written later wins, for the vessel
    // downstream of both and for the run.
    assert_eq!(run["variables"]["seen"], "right11");
    assert_eq!(run["variables"]["side"], "right");
}

#[tokio::test]
async fn a_vessel_sees_only_variables_from_upstream() {
    let app = spawn_app().await;
    let doc = json!({"name": "scope", "variables": {"x": "declared"}, "vessels": [
        with(rhai("a", "set_var(\"x\", \"from_a\")"), json!({"needs": []})),
        with(rhai("b", "set_var(\"b_saw\", vars.x)"), json!({"needs": []})),
        with(rhai("c", "set_var(\"c_saw\", vars.x)"), json!({"needs": ["a"]})),
    ]});
    let (_, url) = app.fleet_with_hook(doc).await;
    let run = app.finished_run(&app.trigger_ok(&url, "{}").await).await;
    assert_eq!(
        run["variables"]["b_saw"], "declared",
        "b is not below a: {run}"
    );
    assert_eq!(run["variables"]["c_saw"], "from_a");
}

const SPIN: &str =
    r#"(module (memory (export "memory") 1) (func (export "_start") (loop $l (br $l))))"#;

fn spin_wasm() -> Value {
    let bytes = wat::parse_str(SPIN).unwrap();
    json!({"name": "spin", "kind": "wasm",
           "wasm_base64": base64::engine::general_purpose::STANDARD.encode(bytes),
           "limits": {"fuel": 100_000_000_000u64, "timeout_ms": 60_000}})
}

async fn cancel_running(app: &TestApp, doc: Value) {
    let (_, url) = app.fleet_with_hook(doc).await;
    let id = app.trigger_ok(&url, "{}").await;
    app.wait_run(
        &id,
        |r| {
            r["vessels"]
                .as_array()
                .is_some_and(|v| v.iter().any(|v| v["status"] == "running"))
                || r["status"] == "running"
        },
        Duration::from_secs(10),
    )
    .await;
    // Let the guest get going.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (s, run) = app.post(&format!("/runs/{id}/cancel"), json!({})).await;
    assert_eq!(s, StatusCode::OK, "{run}");
    assert_eq!(run["status"], "cancelled", "{run}");
    assert_eq!(run["reason"], "cancelled");
    let v = &run["vessels"][0];
    assert_eq!(
        (v["status"].as_str(), v["reason"].as_str()),
        (Some("cancelled"), Some("cancelled")),
        "{run}"
    );
    assert_eq!(
        run["vessels"][1]["status"], "cancelled",
        "the pending vessel: {run}"
    );
    // The guest had a minute of time left: the cancel, not the timeout, ended it, before that
    // timeout would have.
    assert!(v["duration_ms"].as_f64().unwrap() < 60_000.0, "{v}");
    // A finished run cannot be cancelled.
    let (s, body) = app.post(&format!("/runs/{id}/cancel"), json!({})).await;
    assert_eq!(s, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("cancelled"),
        "{body}"
    );
}

#[tokio::test]
async fn cancel_stops_a_looping_wasm_vessel() {
    let app = spawn_app().await;
    cancel_running(
        &app,
        json!({"name": "w", "vessels": [spin_wasm(), rhai("after", "0")]}),
    )
    .await;
    assert_eq!(app.healthz().await, StatusCode::OK);
}

#[tokio::test]
async fn cancel_stops_a_looping_rhai_vessel() {
    let app = spawn_app().await;
    let looping = with(
        rhai("spin", "loop { }"),
        json!({"limits": {"fuel": 100_000_000_000u64, "timeout_ms": 60_000}}),
    );
    cancel_running(
        &app,
        json!({"name": "r", "vessels": [looping, rhai("after", "0")]}),
    )
    .await;
}

#[tokio::test]
async fn cancel_ends_a_queued_run_and_releases_the_next() {
    let app = spawn_app().await;
    let doc = json!({"name": "q", "concurrency": "queue", "vessels": [
        with(rhai("spin", "loop { }"), json!({"limits": {"fuel": 100_000_000_000u64, "timeout_ms": 60_000}}))
    ]});
    let (_, url) = app.fleet_with_hook(doc).await;
    let first = app.trigger_ok(&url, "{}").await;
    let second = app.trigger_ok(&url, "{}").await;
    let third = app.trigger_ok(&url, "{}").await;
    app.wait_run(
        &first,
        |r| r["status"] == "running",
        Duration::from_secs(10),
    )
    .await;
    let (s, run) = app.post(&format!("/runs/{second}/cancel"), json!({})).await;
    assert_eq!(s, StatusCode::OK, "{run}");
    assert_eq!(run["status"], "cancelled");
    assert_eq!(run["vessels"][0]["status"], "cancelled");
    assert!(run["started_at"].is_null(), "it never started: {run}");
    // Cancelling the running one lets the third (not the cancelled second) go.
    let (s, _) = app.post(&format!("/runs/{first}/cancel"), json!({})).await;
    assert_eq!(s, StatusCode::OK);
    app.wait_run(
        &third,
        |r| r["status"] == "running",
        Duration::from_secs(10),
    )
    .await;
    let (s, _) = app.post(&format!("/runs/{third}/cancel"), json!({})).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = app
        .post(&format!("/runs/{}/cancel", uuid::Uuid::now_v7()), json!({}))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn replay_runs_the_same_request_again() {
    let app = spawn_app().await;
    let doc = json!({"name": "r", "variables": {"who": "nobody"},
                     "vessels": [rhai("greet", "set_var(\"greeting\", `hello ${vars.who}`)")]});
    let (fleet, url) = app.fleet_with_hook(doc).await;
    let first = app.trigger_ok(&url, r#"{"who":"ada"}"#).await;
    let original = app.finished_run(&first).await;
    let (s, body) = app.post(&format!("/runs/{first}/replay"), json!({})).await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    assert_eq!(body["request"]["id"], original["request"]["id"]);
    assert_eq!(body["data"]["fleet_id"], fleet.as_str());
    assert_eq!(body["data"]["replay_of"], first.as_str());
    let again = body["data"]["fleet_run_id"].as_str().unwrap();
    assert_ne!(again, first);
    let replayed = app.finished_run(again).await;
    assert_eq!(replayed["status"], "succeeded");
    assert_eq!(replayed["replay_of"], first.as_str());
    assert_eq!(replayed["request"]["id"], original["request"]["id"]);
    assert_eq!(replayed["variables"]["greeting"], "hello ada");
    let (_, runs) = app.get(&format!("/fleets/{fleet}/runs")).await;
    assert_eq!(runs["runs"].as_array().unwrap().len(), 2);
    let (s, _) = app
        .post(&format!("/runs/{}/replay", uuid::Uuid::now_v7()), json!({}))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn resume_from_a_failed_vessel_after_fixing_the_fleet() {
    let app = spawn_app().await;
    let doc = |fixed: bool| {
        let check = if fixed {
            "set_var(\"checked\", vars.fetched)"
        } else {
            "exit(2)"
        };
        json!({"name": "pipeline", "vessels": [
            rhai("fetch", "print(\"fetching\"); set_var(\"fetched\", \"42\"); emit(#{id: 1})"),
            rhai("check", check),
            rhai("publish", "set_var(\"published\", vars.checked)"),
        ]})
    };
    let (fleet, url) = app.fleet_with_hook(doc(false)).await;
    let first = app.trigger_ok(&url, "{}").await;
    let broken = app.finished_run(&first).await;
    assert_eq!(broken["status"], "failed");
    assert_eq!(vessel(&broken, "publish")["status"], "skipped");

    // Unknown vessel names are refused, naming what exists.
    let (s, body) = app
        .post(&format!("/runs/{first}/replay"), json!({"from": "nope"}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("fetch, check, publish"),
        "{body}"
    );

    // Fix the bug, resume from the failed step.
    let mut fixed = doc(true);
    fixed["variables"] = json!({});
    let (s, body) = app
        .admin(
            reqwest::Method::PUT,
            &format!("/fleets/{fleet}"),
            Some(fixed),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let (s, body) = app
        .post(&format!("/runs/{first}/replay"), json!({"from": "check"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let resumed = app
        .finished_run(body["data"]["fleet_run_id"].as_str().unwrap())
        .await;
    assert_eq!(resumed["status"], "succeeded", "{resumed}");
    assert_eq!(resumed["resumed_from"], "check");
    let fetch = vessel(&resumed, "fetch");
    assert_eq!(fetch["carried_over"], true, "{resumed}");
    // Carried over as recorded, not run again.
    assert_eq!(fetch["started_at"], vessel(&broken, "fetch")["started_at"]);
    assert_eq!(fetch["rows"], json!([{"data": {"id": 1}}]));
    assert!(vessel(&resumed, "check").get("carried_over").is_none());
    assert_eq!(resumed["variables"]["checked"], "42");
    assert_eq!(resumed["variables"]["published"], "42");
}

#[tokio::test]
async fn retries_wait_longer_each_time_and_respect_exit_codes() {
    let app = spawn_app().await;
    let retry = json!({"max_attempts": 3, "backoff": "exponential", "base_ms": 150, "max_ms": 10000, "on_exit_codes": [75]});
    let doc = json!({"name": "flaky", "variables": {"code": "75"}, "vessels": [
        with(rhai("call", "exit(parse_int(vars.code))"), json!({"retry": retry}))
    ]});
    let (_, url) = app.fleet_with_hook(doc).await;
    let run = app.finished_run(&app.trigger_ok(&url, "{}").await).await;
    let v = vessel(&run, "call");
    assert_eq!(v["status"], "failed");
    assert_eq!(v["attempt"], 3, "{v}");
    let earlier = v["attempts"].as_array().unwrap();
    assert_eq!(earlier.len(), 2);
    assert_eq!(
        (
            earlier[0]["attempt"].as_u64(),
            earlier[1]["attempt"].as_u64()
        ),
        (Some(1), Some(2))
    );
    assert!(
        earlier
            .iter()
            .all(|a| a["reason"] == "exit_code" && a["exit_code"] == 75)
    );
    let starts = [
        time(&earlier[0], "started_at"),
        time(&earlier[1], "started_at"),
        time(v, "started_at"),
    ];
    let (gap1, gap2) = (starts[1] - starts[0], starts[2] - starts[1]);
    assert!(gap1.num_milliseconds() >= 150, "{gap1}");
    assert!(gap2 > gap1, "the pause grows: {gap1} then {gap2}");
    assert!(gap2.num_milliseconds() >= 300, "{gap2}");

    // An exit code not listed is not retried.
    let run = app
        .finished_run(&app.trigger_ok(&url, r#"{"code":"3"}"#).await)
        .await;
    let v = vessel(&run, "call");
    assert_eq!(
        (
            v["attempt"].as_u64(),
            v["attempts"].as_array().unwrap().len()
        ),
        (Some(1), 0)
    );
}

#[tokio::test]
async fn limits_are_retried_unless_told_not_to() {
    let app = spawn_app().await;
    let tight = json!({"fuel": 2000});
    let doc = json!({"name": "limits", "vessels": [
        with(rhai("burn", "let x = 0; while true { x += 1 }"),
             json!({"limits": tight, "retry": {"max_attempts": 2, "base_ms": 10}})),
        with(rhai("burn_once", "let x = 0; while true { x += 1 }"),
             json!({"needs": [], "limits": tight, "retry": {"max_attempts": 2, "base_ms": 10, "on_limits": false}})),
    ]});
    let (_, url) = app.fleet_with_hook(doc).await;
    let run = app.finished_run(&app.trigger_ok(&url, "{}").await).await;
    let burn = vessel(&run, "burn");
    assert_eq!(
        (burn["attempt"].as_u64(), burn["reason"].as_str()),
        (Some(2), Some("fuel_exhausted"))
    );
    assert_eq!(burn["attempts"][0]["reason"], "fuel_exhausted");
    assert_eq!(vessel(&run, "burn_once")["attempt"], 1);

    // Bad retry settings are refused at save, naming the field.
    let project = app.project().await;
    let bad = json!({"name": "x", "vessels": [with(rhai("a", "0"), json!({"retry": {"max_attempts": 1}}))]});
    let (s, body) = app.post(&format!("/projects/{project}/fleets"), bad).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("retry.max_attempts"),
        "{body}"
    );
}

#[tokio::test]
async fn max_running_caps_the_runs_a_node_executes_at_once() {
    let app = spawn_with(|c| {
        c.workers = 2;
        c.max_running = 1;
    })
    .await;
    let doc = json!({"name": "capped", "vessels": [rhai("work", &busy(150))]});
    let (_, url) = app.fleet_with_hook(doc).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(app.trigger_ok(&url, "{}").await);
    }
    let mut spans = Vec::new();
    for id in &ids {
        let run = app.finished_run(id).await;
        assert_eq!(run["status"], "succeeded");
        spans.push((time(&run, "started_at"), time(&run, "finished_at")));
    }
    spans.sort();
    for pair in spans.windows(2) {
        assert!(
            pair[1].0 >= pair[0].1,
            "runs overlapped under --max-running 1: {spans:?}"
        );
    }
}
