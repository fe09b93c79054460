//! Restart safety with the real binary: history survives, a run cut off by a crash is re-queued.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::binary::{Proc, start};

async fn post_webhook(url: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(url)
        .body("{}")
        .send()
        .await
        .unwrap()
}

async fn run_status(server: &Proc, run: &str) -> Value {
    server.get(&format!("/runs/{run}")).await.1
}

#[tokio::test]
async fn history_survives_and_a_crashed_run_is_requeued() {
    let data = tempfile::tempdir().unwrap();
    let server = start(data.path(), 0).await;
    // Restarts keep the address: the webhook URLs carry it.
    let port = server.port();
    // The first attempt hangs; a later attempt finishes at once.
    let script = "if run.attempt == 1 { loop {} } set_var(\"attempt\", run.attempt);";
    let doc = json!({"name": "slow", "vessels": [{"name": "v", "kind": "rhai", "source": script,
        "limits": {"fuel": 100000000000u64, "timeout_ms": 120000}}]});
    let (fleet_id, url) = server.fleet_with_hook(doc).await;
    let res = post_webhook(&url).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let run_id = res.json::<Value>().await.unwrap()["data"]["fleet_run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let started = Instant::now();
    while run_status(&server, &run_id).await["status"] != "running" {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "run never started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Crash: SIGKILL, no chance to clean up.
    server.kill();

    let server = start(data.path(), port).await;
    let started = Instant::now();
    let run = loop {
        let run = run_status(&server, &run_id).await;
        if run["status"] == "succeeded" {
            break run;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "re-queued run did not finish: {run}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(run["attempt"], 2, "{run}");
    assert_eq!(run["variables"]["attempt"], "2");
    // History and configuration survived: the fleet and its webhook still work.
    let (s, runs) = server.get(&format!("/fleets/{fleet_id}/runs")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(runs["runs"][0]["id"], run_id.as_str());
    let res = post_webhook(&url).await;
    assert_eq!(res.status(), StatusCode::CREATED);
}

/// A graceful stop with work still queued: nothing is lost, the queue drains after a restart, and
/// the first server's history is still there.
#[tokio::test]
async fn graceful_stop_leaves_queued_runs_for_the_next_start() {
    let app = crate::helpers::spawn_with(|c| c.workers = 1).await;
    let (_, url) = app
        .fleet_with_hook(crate::helpers::rhai_fleet(
            "let n = 0; while n < 20000 { n += 1; } set_var(\"n\", n);",
        ))
        .await;
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(app.trigger_ok(&url, "{}").await);
    }
    let data = app.stop().await;
    let app = crate::helpers::spawn_in(data, |_| {}).await;
    for id in &ids {
        let run = app.finished_run(id).await;
        assert_eq!(run["status"], "succeeded", "{run}");
        assert_eq!(run["variables"]["n"], "20000");
    }
}

/// A run that is in flight every time the node dies (as if it crashed the node) is not retried
/// forever: after `--max-attempts` lost attempts it is failed with reason `max_attempts`, and the
/// record keeps every lost attempt.
#[tokio::test]
async fn a_run_that_keeps_losing_its_node_fails_after_max_attempts() {
    let data = tempfile::tempdir().unwrap();
    let mut server = start(data.path(), 0).await;
    let port = server.port();
    let doc = json!({"name": "doomed", "vessels": [{"name": "v", "kind": "rhai", "source": "loop {}",
        "limits": {"fuel": 100000000000u64, "timeout_ms": 120000}}]});
    let (_, url) = server.fleet_with_hook(doc).await;
    let res = post_webhook(&url).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let run_id = res.json::<Value>().await.unwrap()["data"]["fleet_run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    for attempt in 1..=3 {
        let started = Instant::now();
        loop {
            let run = run_status(&server, &run_id).await;
            if run["status"] == "running" && run["attempt"] == attempt {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "attempt {attempt} never started: {run}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server.kill();
        server = start(data.path(), port).await;
    }
    let run = run_status(&server, &run_id).await;
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(run["reason"], "max_attempts", "{run}");
    assert_eq!(run["attempt"], 3, "{run}");
    let lost = run["lost_attempts"].as_array().unwrap();
    assert_eq!(lost.len(), 3, "{run}");
    assert!(lost.iter().all(|a| a["reason"] == "node_lost"), "{run}");
    // The node is healthy and takes new work.
    assert_eq!(post_webhook(&url).await.status(), StatusCode::CREATED);
}
