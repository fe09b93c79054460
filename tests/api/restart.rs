//! Restart safety with the real binary: history survives, a run cut off by a crash is re-queued.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::ADMIN_TOKEN;

struct Proc {
    child: Child,
    base: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start(data: &std::path::Path, port: u16) -> Proc {
    let child = Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(data)
        .env("WHARF_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("WHARF_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("binary starts");
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let started = Instant::now();
    while client.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "server did not come up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Proc { child, base }
}

async fn call(method: reqwest::Method, url: String, body: Option<Value>) -> (StatusCode, Value) {
    let mut req = reqwest::Client::new()
        .request(method, url)
        .bearer_auth(ADMIN_TOKEN);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.unwrap();
    (res.status(), res.json().await.unwrap_or(Value::Null))
}

async fn post_webhook(url: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(url)
        .body("{}")
        .send()
        .await
        .unwrap()
}

async fn run_status(base: &str, run: &str) -> Value {
    call(
        reqwest::Method::GET,
        format!("{base}/api/v1/runs/{run}"),
        None,
    )
    .await
    .1
}

#[tokio::test]
async fn history_survives_and_a_crashed_run_is_requeued() {
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = start(data.path(), port).await;
    let base = server.base.clone();
    let post = |path: &str, body: Value| {
        call(
            reqwest::Method::POST,
            format!("{base}/api/v1{path}"),
            Some(body),
        )
    };
    let (_, org) = post("/orgs", json!({"name": "o"})).await;
    let (_, project) = post(
        &format!("/orgs/{}/projects", org["id"].as_str().unwrap()),
        json!({"name": "p"}),
    )
    .await;
    // The first attempt hangs; a later attempt finishes at once.
    let script = "if run.attempt == 1 { loop {} } set_var(\"attempt\", run.attempt);";
    let doc = json!({"name": "slow", "vessels": [{"name": "v", "kind": "rhai", "source": script,
        "limits": {"fuel": 100000000000u64, "timeout_ms": 120000}}]});
    let (s, fleet) = post(
        &format!("/projects/{}/fleets", project["id"].as_str().unwrap()),
        doc,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{fleet}");
    let fleet_id = fleet["id"].as_str().unwrap().to_owned();
    let (_, hook) = post(&format!("/fleets/{fleet_id}/webhook"), json!({})).await;
    let url = hook["url"].as_str().unwrap().to_owned();
    let res = post_webhook(&url).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let run_id = res.json::<Value>().await.unwrap()["data"]["fleet_run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let started = Instant::now();
    while run_status(&base, &run_id).await["status"] != "running" {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "run never started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Crash: SIGKILL, no chance to clean up.
    drop(server);

    let server = start(data.path(), port).await;
    let started = Instant::now();
    let run = loop {
        let run = run_status(&server.base, &run_id).await;
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
    let (s, runs) = call(
        reqwest::Method::GET,
        format!("{}/api/v1/fleets/{fleet_id}/runs", server.base),
        None,
    )
    .await;
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
