//! Soak with the real binary at its default log level: thousands of webhook calls from many
//! concurrent clients; every one is accepted and its run succeeds, the process stays up, and no
//! log line grows without bound.
//!
//! The regression this guards: run spans entered with a guard held across awaits nested inside
//! one another without end, so every log line carried all earlier runs' fields; lines grew to
//! megabytes and the server died. It showed only at the default (info) level and under load.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::binary::start_with;

const CALLS: usize = 3_000;
const CLIENTS: usize = 64;
/// Far above any sane log line, far below what the nesting bug produced within seconds.
const MAX_LOG_LINE: usize = 4 * 1024;

#[tokio::test]
async fn thousands_of_concurrent_calls_all_succeed_and_log_lines_stay_short() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("wharf.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut server = start_with(&dir.path().join("data"), 0, |cmd| {
        // No WHARF_LOG at all: the default filter, as users run it.
        cmd.env_remove("WHARF_LOG").arg("--no-demo").stderr(log);
    })
    .await;
    let script = r#"set_var("order", payload.id); set_var("total", payload.total); print(`order ${payload.id}`);"#;
    let (fleet, url) = server
        .fleet_with_hook(crate::helpers::rhai_fleet(script))
        .await;

    // 64 clients share one HTTP client (its pool keeps their connections) and take call numbers
    // from one counter until all are sent.
    let client = reqwest::Client::new();
    let next = Arc::new(AtomicUsize::new(0));
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..CLIENTS {
        let (client, url, next) = (client.clone(), url.clone(), next.clone());
        clients.spawn(async move {
            let mut ids = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= CALLS {
                    return ids;
                }
                let res = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(format!(r#"{{"id":"order-{i}","total":{i}}}"#))
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("call {i} got no answer: {e}"));
                let status = res.status();
                let body: Value = res.json().await.unwrap_or(Value::Null);
                assert_eq!(status, StatusCode::CREATED, "call {i}: {body}");
                ids.push(body["data"]["fleet_run_id"].as_str().unwrap().to_owned());
            }
        });
    }
    let accepted = tokio::time::timeout(Duration::from_secs(120), async {
        let mut ids = HashSet::new();
        while let Some(done) = clients.join_next().await {
            ids.extend(done.expect("client task"));
        }
        ids
    })
    .await
    .expect("all calls answered within 120 s");
    assert_eq!(accepted.len(), CALLS, "every call got its own run id");

    assert!(server.alive(), "the server died under load");
    let health = client
        .get(format!("{}/healthz", server.base))
        .send()
        .await
        .expect("healthz answers");
    assert_eq!(health.status(), StatusCode::OK);

    server.drained(&fleet, Duration::from_secs(120)).await;
    let runs = server.all_runs(&fleet).await;
    let listed: HashSet<String> = runs
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(runs.len(), CALLS, "one run per call, none twice");
    assert_eq!(listed, accepted, "the listed runs are the accepted ones");
    if let Some(bad) = runs.iter().find(|r| r["status"] != "succeeded") {
        panic!("a run did not succeed: {bad}");
    }
    // The vessel really ran: one run in full.
    let (s, run) = server
        .get(&format!("/runs/{}", runs[0]["id"].as_str().unwrap()))
        .await;
    assert_eq!(s, StatusCode::OK, "{run}");
    let order = run["variables"]["order"].as_str().unwrap();
    assert!(order.starts_with("order-"), "{run}");
    assert_eq!(run["vessels"][0]["stdout"], format!("order {order}\n"));

    server.kill();
    let log = std::fs::read(&log_path).unwrap();
    let (lines, longest) = log
        .split(|&b| b == b'\n')
        .fold((0, 0), |(n, m), line| (n + 1, m.max(line.len())));
    assert!(
        longest <= MAX_LOG_LINE,
        "a log line of {longest} bytes (of {lines} lines, {} bytes in all)",
        log.len()
    );
}
