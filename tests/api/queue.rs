//! The queue engine seen from outside: the `reject` race, `queue` order, and slow vessels that
//! must not starve quick ones — each through the real server over HTTP.

use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{rhai_fleet, spawn_with};

#[tokio::test]
async fn simultaneous_calls_to_a_reject_fleet_give_one_201_and_the_rest_429() {
    // No workers: the accepted run stays queued, so every other call must see it.
    let app = spawn_with(|c| c.workers = 0).await;
    let mut doc = rhai_fleet("1");
    doc["concurrency"] = json!("reject");
    let (fleet, url) = app.fleet_with_hook(doc).await;
    let calls = (0..20).map(|_| app.trigger(&url, "application/json", "{}"));
    let answers = futures::future::join_all(calls).await;
    let created = answers
        .iter()
        .filter(|(s, _, _)| *s == StatusCode::CREATED)
        .count();
    let busy: Vec<_> = answers
        .iter()
        .filter(|(s, _, _)| *s == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    assert_eq!(created, 1, "{answers:?}");
    assert_eq!(busy.len(), 19, "{answers:?}");
    for (_, body, headers) in busy {
        assert!(headers.get("retry-after").is_some());
        assert!(
            body["error"].as_str().unwrap().contains("already"),
            "{body}"
        );
        assert!(body["request"]["id"].is_string());
    }
    let (_, runs) = app.get(&format!("/fleets/{fleet}/runs")).await;
    assert_eq!(
        runs["runs"].as_array().unwrap().len(),
        1,
        "refused calls stored no run"
    );
}

#[tokio::test]
async fn a_queue_fleet_runs_one_at_a_time_in_arrival_order() {
    let app = spawn_with(|c| c.workers = 4).await;
    let mut doc =
        rhai_fleet("let n = 0; while n < 3000 { n += 1; } set_var(\"seq\", payload.seq);");
    doc["concurrency"] = json!("queue");
    let (_, url) = app.fleet_with_hook(doc).await;
    let mut ids = Vec::new();
    for seq in 0..12 {
        ids.push(app.trigger_ok(&url, &format!("{{\"seq\": {seq}}}")).await);
    }
    let mut runs = Vec::new();
    for id in &ids {
        let run = app.finished_run(id).await;
        assert_eq!(run["status"], "succeeded", "{run}");
        runs.push(run);
    }
    for (i, pair) in runs.windows(2).enumerate() {
        let (a, b) = (&pair[0], &pair[1]);
        assert_eq!(a["variables"]["seq"], i.to_string());
        let (ended, started) = (
            a["finished_at"].as_str().unwrap(),
            b["started_at"].as_str().unwrap(),
        );
        assert!(
            ended <= started,
            "run {i} ended {ended}, run {} started {started}",
            i + 1
        );
    }
}

#[tokio::test]
async fn slow_vessels_do_not_starve_quick_ones() {
    // One vessel thread for quick work: without the slow lane, three guests spinning until
    // their timeout would hold every slot for seconds.
    let app = spawn_with(|c| c.workers = 1).await;
    let slow = json!({"name": "slow", "vessels": [{"name": "spin", "kind": "rhai",
        "source": "loop {}", "limits": {"fuel": 100000000000u64, "timeout_ms": 3000}}]});
    let (_, slow_url) = app.fleet_with_hook(slow).await;
    let (_, quick_url) = app
        .fleet_with_hook(rhai_fleet("set_var(\"ok\", \"yes\");"))
        .await;
    let mut slow_ids = Vec::new();
    for _ in 0..3 {
        slow_ids.push(app.trigger_ok(&slow_url, "{}").await);
    }
    // Let the slow runs start and pass the slow mark.
    for id in &slow_ids {
        app.wait_run(id, |r| r["status"] == "running", Duration::from_secs(10))
            .await;
    }
    let started = Instant::now();
    let quick = app.trigger_ok(&quick_url, "{}").await;
    let run = app.finished_run(&quick).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["variables"]["ok"], "yes");
    for id in &slow_ids {
        let (_, slow_run) = app.get(&format!("/runs/{id}")).await;
        assert_eq!(
            slow_run["status"],
            "running",
            "the quick run finished while the slow ones still ran (took {:?})",
            started.elapsed()
        );
    }
    for id in &slow_ids {
        let run = app.finished_run(id).await;
        assert_eq!(run["vessels"][0]["reason"], "timeout", "{run}");
    }
}

#[tokio::test]
async fn a_flooded_fleet_does_not_starve_another() {
    let app = spawn_with(|c| c.workers = 2).await;
    // A few milliseconds of work per run: 3,000 of them are a backlog of many seconds.
    let (flooded, a_url) = app
        .fleet_with_hook(rhai_fleet("let n = 0; while n < 10000 { n += 1; }"))
        .await;
    let (_, b_url) = app
        .fleet_with_hook(rhai_fleet("set_var(\"ok\", \"yes\");"))
        .await;
    let calls = futures::stream::iter(0..3000)
        .map(|_| app.trigger(&a_url, "application/json", "{}"))
        .buffer_unordered(32);
    let answers: Vec<_> = calls.collect().await;
    let mut a_runs: Vec<String> = answers
        .iter()
        .map(|(s, b, _)| {
            assert_eq!(*s, StatusCode::CREATED, "{b}");
            b["data"]["fleet_run_id"].as_str().unwrap().to_owned()
        })
        .collect();
    // Run ids are time-ordered: the last is the newest of the flood.
    a_runs.sort();
    let newest_a = a_runs.last().unwrap();
    let started = Instant::now();
    let b = app.trigger_ok(&b_url, "{}").await;
    let run = app
        .wait_run(&b, |r| r["status"] == "succeeded", Duration::from_secs(10))
        .await;
    let waited = started.elapsed();
    assert_eq!(run["variables"]["ok"], "yes");
    // Claimed oldest first, B could not have started before every earlier run of A.
    let (_, last_a) = app.get(&format!("/runs/{newest_a}")).await;
    assert_eq!(
        last_a["status"], "queued",
        "B waited {waited:?}: A's backlog was already drained"
    );
    let (_, queued) = app
        .get(&format!("/fleets/{flooded}/runs?status=queued&limit=500"))
        .await;
    let left = queued["runs"].as_array().unwrap().len();
    assert!(
        left >= 100,
        "A still has a backlog ({left}+ queued) after B's {waited:?}"
    );
}
