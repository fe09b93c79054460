//! Several real `wharf serve` processes on one PostgreSQL database (`WHARF_TEST_DATABASE_URL`,
//! always set in `.ci/run`; without it these tests are skipped aloud, or fail under CI: see
//! [`crate::helpers::postgres_url`]).

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::binary::{Proc, start_with};

/// A database URL whose connections use a new, empty schema.
async fn fresh_database() -> Option<String> {
    let (schema, url) = crate::store::fresh_schema("wharf_nodes").await?;
    let sep = if url.contains('?') { '&' } else { '?' };
    Some(format!("{url}{sep}options=-c%20search_path%3D{schema}"))
}

async fn node(database: &str, data: &std::path::Path) -> Proc {
    node_with(database, data, &[]).await
}

async fn node_with(database: &str, data: &std::path::Path, extra: &[&str]) -> Proc {
    let database = database.to_owned();
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    start_with(data, 0, move |cmd| {
        cmd.args(["--database", &database, "--no-demo"])
            .args(&extra);
    })
    .await
}

async fn post(url: &str, body: String) -> (StatusCode, serde_json::Value) {
    let res = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("call answered");
    let status = res.status();
    (status, res.json().await.unwrap_or(serde_json::Value::Null))
}

/// The webhook URL `url` (made by any node) as served by `node`.
fn on(node: &Proc, url: &str) -> String {
    let path = &url[url.find("/webhooks/").expect("a webhook URL")..];
    format!("{}{path}", node.base)
}

#[tokio::test]
async fn two_nodes_share_the_work_and_run_every_call_exactly_once() {
    let Some(database) = fresh_database().await else {
        return;
    };
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = node(&database, da.path()).await;
    let b = node(&database, db.path()).await;
    let doc = json!({"name": "shared", "vessels": [{"name": "v", "kind": "rhai",
        "source": "set_var(\"n\", payload.n);"}]});
    let (fleet, url) = a.fleet_with_hook(doc).await;
    let targets = Arc::new([on(&a, &url), on(&b, &url)]);

    let client = reqwest::Client::new();
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..32usize {
        let (client, targets) = (client.clone(), targets.clone());
        tasks.spawn(async move {
            let mut ids = Vec::new();
            for i in (worker..2_000).step_by(32) {
                let res = client
                    .post(&targets[i % 2])
                    .header("content-type", "application/json")
                    .body(format!("{{\"n\": {i}}}"))
                    .send()
                    .await
                    .expect("call answered");
                assert_eq!(res.status(), StatusCode::CREATED);
                let body: serde_json::Value = res.json().await.unwrap();
                ids.push(body["data"]["fleet_run_id"].as_str().unwrap().to_owned());
            }
            ids
        });
    }
    let mut accepted = Vec::new();
    while let Some(ids) = tasks.join_next().await {
        accepted.extend(ids.unwrap());
    }
    assert_eq!(accepted.len(), 2_000);

    b.drained(&fleet, Duration::from_secs(60)).await;
    let runs = a.all_runs(&fleet).await;
    assert_eq!(runs.len(), 2_000, "one run per accepted call");
    let mut seen = std::collections::HashSet::new();
    for run in &runs {
        assert_eq!(run["status"], "succeeded", "{run}");
        // A second claim of the same run would have raised its attempt.
        assert_eq!(run["attempt"], 1, "claimed once: {run}");
        assert_eq!(run["lost_attempts"], json!([]), "{run}");
        assert!(seen.insert(run["variables"]["n"].as_str().unwrap().to_owned()));
    }
    assert_eq!(seen.len(), 2_000, "every call's own run");
}

#[tokio::test]
async fn a_node_killed_mid_run_leaves_its_runs_to_the_other_after_the_lease() {
    let Some(database) = fresh_database().await else {
        return;
    };
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let lease = ["--lease-seconds", "2"];
    let start = |data: std::path::PathBuf| {
        let database = database.clone();
        async move {
            start_with(&data, 0, move |cmd| {
                cmd.args(["--database", &database, "--no-demo"]).args(lease);
            })
            .await
        }
    };
    let a = start(da.path().to_owned()).await;
    // Attempt 1 spins until its node dies; a later attempt ends at once.
    let doc = json!({"name": "lost", "vessels": [{"name": "v", "kind": "rhai",
        "source": "if run.attempt == 1 { loop {} } set_var(\"attempt\", run.attempt);",
        "limits": {"fuel": 100000000000u64, "timeout_ms": 120000}}]});
    let (_, url) = a.fleet_with_hook(doc).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(a.trigger(&url, "{}").await);
    }
    for id in &ids {
        let started = std::time::Instant::now();
        while a.get(&format!("/runs/{id}")).await.1["status"] != "running" {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "run {id} never started"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    a.kill();
    let b = start(db.path().to_owned()).await;
    for id in &ids {
        // Each run's own end: a run moves running → queued (re-queued) → running here, so
        // "nothing queued, nothing running" read in two requests could miss it in between.
        let started = std::time::Instant::now();
        let run = loop {
            let (_, run) = b.get(&format!("/runs/{id}")).await;
            if !matches!(run["status"].as_str(), Some("queued" | "running")) {
                break run;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "run {id} never ended: {run}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(run["status"], "succeeded", "{run}");
        assert_eq!(run["attempt"], 2, "{run}");
        assert_eq!(run["variables"]["attempt"], "2", "{run}");
        let lost = run["lost_attempts"].as_array().unwrap();
        assert_eq!(lost.len(), 1, "{run}");
        assert_eq!(lost[0]["reason"], "node_lost");
    }
}

#[tokio::test]
async fn a_queue_fleet_keeps_one_at_a_time_arrival_order_across_nodes() {
    let Some(database) = fresh_database().await else {
        return;
    };
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = node(&database, da.path()).await;
    let b = node(&database, db.path()).await;
    let doc = json!({"name": "serial", "concurrency": "queue", "vessels": [{"name": "v",
        "kind": "rhai", "source": "let n = 0; while n < 3000 { n += 1; } set_var(\"seq\", payload.seq);"}]});
    let (fleet, url) = a.fleet_with_hook(doc).await;
    let targets = [on(&a, &url), on(&b, &url)];
    let mut ids = Vec::new();
    // One after the other, alternating nodes: the order of the 201s is the arrival order.
    for seq in 0..12 {
        let (status, body) = post(&targets[seq % 2], format!("{{\"seq\": {seq}}}")).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        ids.push(body["data"]["fleet_run_id"].as_str().unwrap().to_owned());
    }
    a.drained(&fleet, Duration::from_secs(60)).await;
    let mut runs = Vec::new();
    for id in &ids {
        let (_, run) = b.get(&format!("/runs/{id}")).await;
        assert_eq!(run["status"], "succeeded", "{run}");
        runs.push(run);
    }
    for (i, pair) in runs.windows(2).enumerate() {
        assert_eq!(pair[0]["variables"]["seq"], i.to_string());
        let (ended, started) = (
            pair[0]["finished_at"].as_str().unwrap(),
            pair[1]["started_at"].as_str().unwrap(),
        );
        assert!(
            ended <= started,
            "run {i} ended {ended}, run {} started {started}",
            i + 1
        );
    }
}

#[tokio::test]
async fn a_reject_fleet_answers_429_from_either_node_while_a_run_is_in_flight() {
    let Some(database) = fresh_database().await else {
        return;
    };
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // No workers: the first accepted run stays queued, in flight, for the whole test.
    let a = node_with(&database, da.path(), &["--workers", "0"]).await;
    let b = node_with(&database, db.path(), &["--workers", "0"]).await;
    let doc = json!({"name": "once", "concurrency": "reject",
        "vessels": [{"name": "v", "kind": "rhai", "source": "1"}]});
    let (_, url) = a.fleet_with_hook(doc).await;
    let targets = [on(&a, &url), on(&b, &url)];
    let calls = (0..20).map(|i| post(&targets[i % 2], "{}".to_string()));
    let answers = futures::future::join_all(calls).await;
    let created = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::CREATED)
        .count();
    let refused = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!((created, refused), (1, 19), "{answers:?}");
    for target in &targets {
        let (status, _) = post(target, "{}".to_string()).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{target}");
    }
}

#[tokio::test]
async fn a_webhook_rotated_through_one_node_is_dead_on_the_other_too() {
    let Some(database) = fresh_database().await else {
        return;
    };
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = node(&database, da.path()).await;
    let b = node(&database, db.path()).await;
    let doc =
        json!({"name": "rotating", "vessels": [{"name": "v", "kind": "rhai", "source": "1"}]});
    let (fleet, url) = a.fleet_with_hook(doc).await;
    let old_on_b = on(&b, &url);
    // B resolves the webhook once, so it is in B's cache.
    assert_eq!(post(&old_on_b, "{}".into()).await.0, StatusCode::CREATED);
    let (status, hook) = a
        .post(&format!("/fleets/{fleet}/webhook/rotate"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{hook}");
    let started = std::time::Instant::now();
    loop {
        let (status, _) = post(&old_on_b, "{}".into()).await;
        if status == StatusCode::BAD_REQUEST {
            break;
        }
        assert_eq!(status, StatusCode::CREATED);
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the old URL still worked on the other node after 20 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let new_on_b = on(&b, hook["url"].as_str().unwrap());
    assert_eq!(post(&new_on_b, "{}".into()).await.0, StatusCode::CREATED);
}

#[tokio::test]
async fn an_ingress_node_queues_and_a_worker_node_without_a_listener_runs() {
    let Some(database) = fresh_database().await else {
        return;
    };
    let (di, dw) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let ingress = node_with(&database, di.path(), &["--role", "ingress"]).await;
    let doc = json!({"name": "split", "vessels": [{"name": "v", "kind": "rhai",
        "source": "set_var(\"n\", payload.n);"}]});
    let (fleet, url) = ingress.fleet_with_hook(doc).await;
    let mut ids = Vec::new();
    for n in 0..50 {
        let (status, body) = post(&url, format!("{{\"n\": {n}}}")).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        ids.push(body["data"]["fleet_run_id"].as_str().unwrap().to_owned());
    }
    // The ingress node runs nothing.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for id in &ids {
        assert_eq!(
            ingress.get(&format!("/runs/{id}")).await.1["status"],
            "queued"
        );
    }
    // A worker: no listener, so it is started by hand rather than waited for on /healthz. It is
    // given a port this test holds: a worker that tried to listen there would fail to start.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let mut worker = std::process::Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args([
            "serve",
            "--role",
            "worker",
            "--no-demo",
            "--database",
            &database,
        ])
        .args(["--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(dw.path())
        .env("WHARF_ADMIN_TOKEN", crate::helpers::ADMIN_TOKEN)
        .env("WHARF_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("worker starts");
    ingress.drained(&fleet, Duration::from_secs(30)).await;
    for id in &ids {
        let (_, run) = ingress.get(&format!("/runs/{id}")).await;
        assert_eq!(run["status"], "succeeded", "{run}");
    }
    // Binding a port another socket listens on fails, and the worker would exit on it.
    assert!(
        matches!(worker.try_wait(), Ok(None)),
        "the worker is still running on a port it was given but never bound: it listens on nothing"
    );
    let _ = worker.kill();
    let _ = worker.wait();
    drop(held);
}

#[tokio::test]
async fn a_worker_role_on_sqlite_is_refused_with_a_reason() {
    let data = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args(["serve", "--role", "worker", "--no-demo", "--data-dir"])
        .arg(data.path())
        .env("WHARF_ADMIN_TOKEN", crate::helpers::ADMIN_TOKEN)
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--role worker needs"), "{stderr}");
}

#[tokio::test]
async fn idempotency_keys_and_rate_limits_hold_across_nodes() {
    let Some(database) = fresh_database().await else {
        return;
    };
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = node_with(&database, da.path(), &["--workers", "0"]).await;
    let b = node_with(&database, db.path(), &["--workers", "0"]).await;
    let doc = json!({"name": "limited", "vessels": [{"name": "v", "kind": "rhai", "source": "0"}]});
    let (fleet, url) = a.fleet_with_hook(doc).await;
    let targets = [on(&a, &url), on(&b, &url)];
    // B resolves the webhook (no limit yet), so it is in B's cache.
    assert_eq!(post(&targets[1], "{}".into()).await.0, StatusCode::CREATED);

    // Simultaneous repeats through both nodes: one run, one answer.
    let client = reqwest::Client::new();
    let calls = (0..20).map(|i| {
        client
            .post(&targets[i % 2])
            .header("idempotency-key", "deploy-7")
            .body("{}")
            .send()
    });
    let mut run_ids = std::collections::HashSet::new();
    for res in futures::future::join_all(calls).await {
        let res = res.expect("call answered");
        assert_eq!(res.status(), StatusCode::CREATED);
        let body: serde_json::Value = res.json().await.unwrap();
        run_ids.insert(body["data"]["fleet_run_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(run_ids.len(), 1);
    assert_eq!(a.all_runs(&fleet).await.len(), 2);

    // A limit set through A binds B from its next call on.
    let (status, hook) = a
        .call(
            reqwest::Method::PATCH,
            &format!("/fleets/{fleet}/webhook"),
            Some(json!({"rate_limit": {"requests": 1, "per_seconds": 3600}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{hook}");
    let started = std::time::Instant::now();
    let mut admitted = 0;
    loop {
        // B may still admit under its cached, unlimited settings for a moment; once it sees
        // the limit, exactly one call passes and then none.
        match post(&targets[1], "{}".into()).await.0 {
            StatusCode::CREATED => admitted += 1,
            StatusCode::TOO_MANY_REQUESTS if admitted > 0 => break,
            other => assert_eq!(other, StatusCode::TOO_MANY_REQUESTS),
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the new limit did not reach the other node within 20 s"
        );
    }
    let calls = (0..10).map(|i| post(&targets[i % 2], "{}".to_string()));
    for (status, body) in futures::future::join_all(calls).await {
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    }
}

#[tokio::test]
async fn a_cancel_through_one_node_stops_the_run_on_another() {
    let Some(database) = fresh_database().await else {
        return;
    };
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // `a` runs nothing, so the run can only be on `b`.
    let a = node_with(&database, da.path(), &["--workers", "0"]).await;
    let b = node(&database, db.path()).await;
    let doc = json!({"name": "spin", "vessels": [{"name": "v", "kind": "rhai", "source": "loop { }",
        "limits": {"fuel": 100_000_000_000u64, "timeout_ms": 60_000}}]});
    let (_, url) = a.fleet_with_hook(doc).await;
    let (s, body) = post(&on(&a, &url), "{}".into()).await;
    assert_eq!(s, StatusCode::CREATED);
    let id = body["data"]["fleet_run_id"].as_str().unwrap().to_owned();
    loop {
        let (_, run) = a.get(&format!("/runs/{id}")).await;
        if run["status"] == "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (s, run) = a.post(&format!("/runs/{id}/cancel"), json!({})).await;
    assert_eq!(s, StatusCode::OK, "{run}");
    assert_eq!(
        run["status"], "cancelled",
        "b stopped it within the wait: {run}"
    );
    assert_eq!(run["vessels"][0]["reason"], "cancelled");
    drop(b);
}

#[tokio::test]
async fn an_api_key_revoked_through_one_node_is_refused_on_the_other_too() {
    let Some(database) = fresh_database().await else {
        return;
    };
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = node(&database, da.path()).await;
    let b = node(&database, db.path()).await;
    let doc = json!({"name": "keyed", "vessels": [{"name": "v", "kind": "rhai", "source": "1"}]});
    let (fleet, url) = a.fleet_with_hook(doc).await;
    let (_, f) = a.get(&format!("/fleets/{fleet}")).await;
    let org = f["org_id"].as_str().unwrap();
    let (s, _) = a
        .call(
            reqwest::Method::PATCH,
            &format!("/fleets/{fleet}/webhook"),
            Some(json!({"auth": "bearer"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (_, key) = a.post(&format!("/orgs/{org}/api-keys"), json!({})).await;
    let (id, key) = (key["id"].as_str().unwrap(), key["key"].as_str().unwrap());
    let on_b = on(&b, &url);
    let client = reqwest::Client::new();
    let call = || async {
        client
            .post(&on_b)
            .bearer_auth(key)
            .body("{}")
            .send()
            .await
            .unwrap()
            .status()
    };
    // B has the key in its cache.
    assert_eq!(call().await, StatusCode::CREATED);
    let (s, _) = a
        .call(reqwest::Method::DELETE, &format!("/api-keys/{id}"), None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let started = std::time::Instant::now();
    while call().await != StatusCode::UNAUTHORIZED {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the revoked key still worked on the other node after 20 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
