//! Crash safety with the real binary: SIGKILL at a random moment while clients post webhooks,
//! five times over one data folder. Every call answered `201` before a kill has its run in the
//! store, and every one of those runs finishes after the restarts.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::binary::start_with;

const CYCLES: usize = 5;
const CLIENTS: usize = 16;

/// Posts to `url` until `stop`; returns the run id of every call answered in full with `201`.
async fn post_until(client: reqwest::Client, url: String, stop: Arc<AtomicBool>) -> Vec<String> {
    let mut ids = Vec::new();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let sent = client
            .post(&url)
            .header("content-type", "application/json")
            .body(format!(r#"{{"n":{n}}}"#))
            .send()
            .await;
        // A call cut off by the kill (no answer, or an answer not read to its end) was never
        // acknowledged: the caller would retry it, and nothing is promised about it.
        let Ok(res) = sent else {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        let status = res.status();
        let Ok(body) = res.bytes().await else {
            continue;
        };
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        assert_eq!(status, StatusCode::CREATED, "{body}");
        ids.push(body["data"]["fleet_run_id"].as_str().unwrap().to_owned());
    }
    ids
}

#[tokio::test]
async fn every_acknowledged_call_survives_sigkill_and_its_run_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // The first start picks a port; later ones keep it, since the webhook URL carries it.
    let mut port = 0;
    // Each start keeps its log, to read when something goes wrong.
    let start = |n: usize, port: u16| {
        let log = std::fs::File::create(dir.path().join(format!("wharf-{n}.log"))).unwrap();
        start_with(&data, port, move |cmd| {
            cmd.stderr(log);
        })
    };
    let mut fleet_and_url = None;
    let mut accepted = Vec::new();
    for cycle in 0..CYCLES {
        let server = start(cycle, port).await;
        port = server.port();
        let (_, url) = match &fleet_and_url {
            Some(f) => f,
            None => fleet_and_url.insert(
                server
                    .fleet_with_hook(crate::helpers::rhai_fleet(
                        r#"set_var("n", payload.n); print("ok");"#,
                    ))
                    .await,
            ),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let client = reqwest::Client::new();
        let clients: Vec<_> = (0..CLIENTS)
            .map(|_| tokio::spawn(post_until(client.clone(), url.clone(), stop.clone())))
            .collect();
        let ms = rand::random_range(100..=600);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        server.kill();
        stop.store(true, Ordering::Relaxed);
        let before = accepted.len();
        for c in clients {
            let ids = tokio::time::timeout(Duration::from_secs(30), c)
                .await
                .expect("a client stops within 30 s of the kill")
                .expect("client task");
            accepted.extend(ids);
        }
        eprintln!(
            "cycle {cycle}: killed after {ms} ms, {} calls acknowledged",
            accepted.len() - before
        );
    }
    assert!(!accepted.is_empty(), "no call was ever acknowledged");

    let server = start(CYCLES, port).await;
    let (fleet, _) = fleet_and_url.unwrap();
    server.drained(&fleet, Duration::from_secs(60)).await;
    // Every acknowledged run is stored and succeeded; checked by a few concurrent readers.
    let server = Arc::new(server);
    let mut checks = tokio::task::JoinSet::new();
    for chunk in accepted.chunks(accepted.len().div_ceil(8)) {
        let (server, chunk) = (server.clone(), chunk.to_vec());
        checks.spawn(async move {
            for id in chunk {
                let (s, run) = server.get(&format!("/runs/{id}")).await;
                assert_eq!(s, StatusCode::OK, "acknowledged run {id} is missing: {run}");
                assert_eq!(run["status"], "succeeded", "{run}");
            }
        });
    }
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(done) = checks.join_next().await {
            done.expect("check task");
        }
    })
    .await
    .expect("runs checked within 60 s");
    // The listing agrees: it holds every acknowledged run once (plus runs of calls cut off before
    // their answer was read), and all of them finished.
    let all = server.all_runs(&fleet).await;
    let listed: HashSet<&str> = all.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(listed.len(), all.len(), "a run listed twice");
    let acknowledged: HashSet<&str> = accepted.iter().map(String::as_str).collect();
    assert_eq!(
        acknowledged.len(),
        accepted.len(),
        "a run id answered twice"
    );
    assert!(
        acknowledged.is_subset(&listed),
        "an acknowledged run is not listed"
    );
    if let Some(bad) = all.iter().find(|r| r["status"] != "succeeded") {
        panic!("a run did not succeed: {bad}");
    }
}

/// A run whose worker is killed mid-way: the next attempt carries over what had ended, and the
/// vessel that was running has the lost attempt in its history.
#[tokio::test]
async fn a_run_taken_over_after_a_kill_carries_over_ended_vessels() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = start_with(&data, 0, |_| {}).await;
    let port = server.port();
    let doc = serde_json::json!({"name": "takeover", "vessels": [
        {"name": "a", "kind": "rhai", "source": "set_var(\"a_at\", `${timestamp()}`); print(\"a ran\")"},
        {"name": "b", "kind": "rhai", "source": "let t = timestamp(); while t.elapsed < 1.0 { }"},
        {"name": "c", "kind": "rhai", "source": "0"}
    ]});
    let (_, url) = server.fleet_with_hook(doc).await;
    let id = server.trigger(&url, "{}").await;
    // Wait until b is recorded as running (after its first 100 ms), then kill the node.
    let before = loop {
        let (_, run) = server.get(&format!("/runs/{id}")).await;
        let b_running = run["vessels"].as_array().is_some_and(|v| {
            v.iter()
                .any(|v| v["name"] == "b" && v["status"] == "running")
        });
        if b_running {
            break run;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    server.kill();
    let server = start_with(&data, port, |_| {}).await;
    let run = loop {
        let (_, run) = server.get(&format!("/runs/{id}")).await;
        if !matches!(run["status"].as_str(), Some("queued" | "running")) {
            break run;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["attempt"], 2);
    assert_eq!(run["lost_attempts"].as_array().unwrap().len(), 1);
    let (a, b) = (&run["vessels"][0], &run["vessels"][1]);
    assert_eq!(a["carried_over"], true, "{run}");
    assert_eq!(a["started_at"], before["vessels"][0]["started_at"]);
    assert_eq!(a["stdout"], "a ran\n");
    assert_eq!(b["status"], "succeeded");
    assert_eq!(b["attempt"], 2, "{b}");
    assert_eq!(b["attempts"][0]["reason"], "node_lost", "{b}");
    assert_eq!(b["attempts"][0]["attempt"], 1);
    assert_eq!(run["vessels"][2]["status"], "succeeded");
}
