//! `spawn_app()`: a real wharf server on a random port with its own data folder.

use std::io::Write as _;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use wharf::config::Config;

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789-abcdefghij";

/// `WHARF_TEST_DATABASE_URL`, the PostgreSQL database the PostgreSQL tests run against. Without
/// it a test has nothing to run against: under CI (`CI` set, or `WHARF_REQUIRE_POSTGRES=1`) that
/// is a failure, so a missing database cannot pass as a green run; elsewhere the test says on
/// stderr that it was skipped and returns.
pub fn postgres_url() -> Option<String> {
    if let Some(url) = std::env::var("WHARF_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
    {
        return Some(url);
    }
    let set =
        |name: &str| std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0" && v != "false");
    // libtest names each test's thread after the test.
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a PostgreSQL test");
    if set("CI") || set("WHARF_REQUIRE_POSTGRES") {
        panic!(
            "{test}: no PostgreSQL (WHARF_TEST_DATABASE_URL is unset) and CI or \
             WHARF_REQUIRE_POSTGRES requires it"
        );
    }
    // Straight to stderr: `eprintln!` is captured by the test harness and shown only on failure.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED: {test}: no PostgreSQL (set WHARF_TEST_DATABASE_URL)"
    );
    None
}

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub shutdown: CancellationToken,
    pub handle: tokio::task::JoinHandle<anyhow::Result<()>>,
    pub demo: Option<wharf::server::Demo>,
    pub data: tempfile::TempDir,
    /// `--metrics-listen`'s `/metrics` URL, when set.
    pub metrics_url: Option<String>,
}

pub async fn spawn_app() -> TestApp {
    spawn_with(|_| {}).await
}

pub async fn spawn_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
    spawn_in(tempfile::tempdir().expect("temp dir"), tweak).await
}

/// A server on an existing data folder (a restart).
pub async fn spawn_in(data: tempfile::TempDir, tweak: impl FnOnce(&mut Config)) -> TestApp {
    let mut config = Config::with_data_dir(data.path());
    config.admin_token = Some(ADMIN_TOKEN.into());
    config.grace_seconds = 2;
    tweak(&mut config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let prepared = wharf::server::prepare(config, Some(listener))
        .await
        .expect("server starts");
    let base = prepared.public_url.clone();
    let demo = prepared.demo.clone();
    let metrics_url = prepared.metrics_url.clone();
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(prepared.run(shutdown.clone()));
    TestApp {
        base,
        client: reqwest::Client::new(),
        shutdown,
        handle,
        demo,
        data,
        metrics_url,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// An admin call; returns status and JSON body (Null when empty).
    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .client
            .request(method, self.url(&format!("/api/v1{path}")))
            .bearer_auth(ADMIN_TOKEN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.expect("request sent");
        let status = res.status();
        let text = res.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.admin(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.admin(reqwest::Method::GET, path, None).await
    }

    /// A new org and project; returns the project id.
    pub async fn project(&self) -> String {
        let (s, org) = self.post("/orgs", json!({"name": "acme"})).await;
        assert_eq!(s, StatusCode::CREATED, "{org}");
        let (s, p) = self
            .post(
                &format!("/orgs/{}/projects", org["id"].as_str().unwrap()),
                json!({"name": "tools"}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{p}");
        p["id"].as_str().unwrap().to_owned()
    }

    /// Creates a fleet from a document and its webhook; returns (fleet id, webhook url).
    pub async fn fleet_with_hook(&self, doc: Value) -> (String, String) {
        let project = self.project().await;
        let (s, fleet) = self.post(&format!("/projects/{project}/fleets"), doc).await;
        assert_eq!(s, StatusCode::CREATED, "{fleet}");
        let id = fleet["id"].as_str().unwrap().to_owned();
        let (s, hook) = self.post(&format!("/fleets/{id}/webhook"), json!({})).await;
        assert_eq!(s, StatusCode::CREATED, "{hook}");
        (id, hook["url"].as_str().unwrap().to_owned())
    }

    /// The status `/healthz` answers.
    pub async fn healthz(&self) -> StatusCode {
        self.client
            .get(self.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status()
    }

    /// POSTs a body to a webhook URL.
    pub async fn trigger(
        &self,
        url: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> (StatusCode, Value, reqwest::header::HeaderMap) {
        let res = self
            .client
            .post(url)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        let (status, headers) = (res.status(), res.headers().clone());
        let text = res.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::Null),
            headers,
        )
    }

    /// Triggers and returns the fleet run id, asserting a 201.
    pub async fn trigger_ok(&self, url: &str, body: &str) -> String {
        let (s, b, _) = self.trigger(url, "application/json", body.to_owned()).await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        b["data"]["fleet_run_id"].as_str().unwrap().to_owned()
    }

    /// Polls a run until it leaves queued/running.
    pub async fn finished_run(&self, run_id: &str) -> Value {
        self.wait_run(
            run_id,
            |r| !matches!(r["status"].as_str(), Some("queued" | "running")),
            Duration::from_secs(30),
        )
        .await
    }

    pub async fn wait_run(
        &self,
        run_id: &str,
        done: impl Fn(&Value) -> bool,
        within: Duration,
    ) -> Value {
        let started = Instant::now();
        loop {
            let (s, run) = self.get(&format!("/runs/{run_id}")).await;
            assert_eq!(s, StatusCode::OK, "{run}");
            if done(&run) {
                return run;
            }
            assert!(
                started.elapsed() < within,
                "run {run_id} did not get there in time: {run}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub async fn stop(self) -> tempfile::TempDir {
        self.shutdown.cancel();
        self.handle.await.unwrap().unwrap();
        self.data
    }
}

/// A fleet document with one Rhai vessel.
pub fn rhai_fleet(script: &str) -> Value {
    json!({"name": "test", "vessels": [{"name": "main", "kind": "rhai", "source": script}]})
}

/// A route template of the OpenAPI document (`/api/v1/fleets/{fleet}`) as a path to call, each
/// parameter a nil UUID.
pub fn concrete_path(template: &str) -> String {
    template
        .split('/')
        .map(|seg| {
            if seg.starts_with('{') {
                "00000000-0000-0000-0000-000000000000"
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}
