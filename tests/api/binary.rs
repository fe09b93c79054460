//! The real `wharf` binary as a child process on a port and data folder, for the tests that need
//! a process to kill, restart or watch (restart, crash, soak) rather than a server in the test's
//! own runtime.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::ADMIN_TOKEN;

/// A running `wharf serve`. Dropping it kills the process with SIGKILL, as a crash would.
pub struct Proc {
    child: Child,
    pub base: String,
    port: u16,
    client: reqwest::Client,
    /// What admin calls sign in with.
    token: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the binary quietly (`WHARF_LOG=warn`, no output kept) and waits until it answers.
/// `port` 0 lets the system pick one (see [`start_with`]); a restart passes the first start's
/// [`Proc::port`].
pub async fn start(data: &Path, port: u16) -> Proc {
    start_with(data, port, |_| {}).await
}

/// Like [`start`], with `tweak` changing the command before it is spawned: the log filter, where
/// stderr goes, more flags. The child binds `127.0.0.1:port` itself and the harness reads the
/// address from the line it prints, so with port 0 no other process can take the port between
/// choosing and binding it.
pub async fn start_with(data: &Path, port: u16, tweak: impl FnOnce(&mut Command)) -> Proc {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wharf"));
    cmd.args([
        "serve",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--data-dir",
    ])
    .arg(data)
    .env("WHARF_ADMIN_TOKEN", ADMIN_TOKEN)
    .env("WHARF_LOG", "warn")
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    tweak(&mut cmd);
    cmd.stdout(Stdio::piped());
    let mut child = cmd.spawn().expect("binary starts");
    let base = listening_on(child.stdout.take().expect("stdout is piped")).await;
    let port = base
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in the address the server printed: {base}"));
    let mut server = Proc {
        child,
        base,
        port,
        client: reqwest::Client::new(),
        token: ADMIN_TOKEN.to_owned(),
    };
    let started = Instant::now();
    while server
        .client
        .get(format!("{}/healthz", server.base))
        .send()
        .await
        .is_err()
    {
        // A server that exited (a store it cannot open) will never answer.
        assert!(server.alive(), "server exited while starting");
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "server did not come up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server
}

/// The base URL from the child's `wharf listening on <url>` line. A thread keeps reading the
/// pipe to its end, so the child never blocks writing to stdout.
async fn listening_on(stdout: std::process::ChildStdout) -> String {
    use std::io::BufRead as _;
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.strip_prefix("wharf listening on ") {
                let url = rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                if let Some(tx) = tx.take() {
                    let _ = tx.send(url);
                }
            }
        }
    });
    // The sender drops unused when stdout ends: the child exited before it listened.
    match tokio::time::timeout(Duration::from_secs(60), rx).await {
        Ok(Ok(url)) => url,
        Ok(Err(_)) => panic!("server exited before saying where it listens"),
        Err(_) => panic!("server did not say where it listens"),
    }
}

impl Proc {
    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Admin calls from now on sign in with `token` (a data folder's own, not the tests').
    pub fn signed_in_as(mut self, token: &str) -> Self {
        self.token = token.to_owned();
        self
    }

    /// The port the process bound, for a restart on the same address.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process id, to watch the process from `/proc`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, then reap: no chance to finish anything.
    pub fn kill(self) {
        drop(self);
    }

    /// An admin call under `/api/v1`; returns status and JSON body (Null when empty).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .client
            .request(method, format!("{}/api/v1{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.expect("admin call answered");
        (res.status(), res.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    /// POSTs `body` (as JSON) to a webhook URL, expects `201`; returns the run id.
    pub async fn trigger(&self, url: &str, body: &str) -> String {
        let res = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .expect("webhook call answered");
        assert_eq!(res.status(), StatusCode::CREATED);
        let body: Value = res.json().await.unwrap();
        body["data"]["fleet_run_id"].as_str().unwrap().to_owned()
    }

    /// The run once it has ended (neither queued nor running), within a minute.
    pub async fn finished(&self, id: &str) -> Value {
        let started = Instant::now();
        loop {
            let (s, run) = self.get(&format!("/runs/{id}")).await;
            assert_eq!(s, StatusCode::OK, "{run}");
            if !matches!(run["status"].as_str(), Some("queued" | "running")) {
                return run;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "run {id} did not end: {run}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts the process's peak resident memory afresh (`/proc/<pid>/clear_refs`).
    pub fn reset_peak(&self) {
        std::fs::write(format!("/proc/{}/clear_refs", self.pid()), "5").unwrap();
    }

    /// The process's peak resident memory since its last reset (`VmHWM`), in bytes.
    pub fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        kb * 1024
    }

    /// A new org and project, a fleet from `doc` in it and the fleet's webhook; returns (fleet
    /// id, webhook URL).
    pub async fn fleet_with_hook(&self, doc: Value) -> (String, String) {
        let (s, org) = self.post("/orgs", json!({"name": "o"})).await;
        assert_eq!(s, StatusCode::CREATED, "{org}");
        let (s, project) = self
            .post(
                &format!("/orgs/{}/projects", org["id"].as_str().unwrap()),
                json!({"name": "p"}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{project}");
        let (s, fleet) = self
            .post(
                &format!("/projects/{}/fleets", project["id"].as_str().unwrap()),
                doc,
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{fleet}");
        let id = fleet["id"].as_str().unwrap().to_owned();
        let (s, hook) = self.post(&format!("/fleets/{id}/webhook"), json!({})).await;
        assert_eq!(s, StatusCode::CREATED, "{hook}");
        (id, hook["url"].as_str().unwrap().to_owned())
    }

    /// Waits until the fleet has nothing queued or running, for at most `within`. The two
    /// statuses are read in two requests, and a run can move between them (re-queued from
    /// running to queued, claimed from queued to running), so it takes two idle passes in a row.
    pub async fn drained(&self, fleet: &str, within: Duration) {
        let started = Instant::now();
        let mut idle_passes = 0;
        loop {
            let mut busy = false;
            for status in ["queued", "running"] {
                let (s, page) = self
                    .get(&format!("/fleets/{fleet}/runs?status={status}&limit=1"))
                    .await;
                assert_eq!(s, StatusCode::OK, "{page}");
                busy |= !page["runs"].as_array().unwrap().is_empty();
            }
            idle_passes = if busy { 0 } else { idle_passes + 1 };
            if idle_passes == 2 {
                return;
            }
            assert!(
                started.elapsed() < within,
                "fleet {fleet} still has queued or running runs after {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every run of the fleet, newest first, paging with `next_before`.
    pub async fn all_runs(&self, fleet: &str) -> Vec<Value> {
        let mut runs = Vec::new();
        let mut path = format!("/fleets/{fleet}/runs?limit=500");
        // Bounded: a cursor that never ends would otherwise loop forever.
        for _ in 0..1_000 {
            let (s, page) = self.get(&path).await;
            assert_eq!(s, StatusCode::OK, "{page}");
            runs.extend(page["runs"].as_array().unwrap().iter().cloned());
            match page["next_before"].as_str() {
                Some(next) => path = format!("/fleets/{fleet}/runs?limit=500&before={next}"),
                None => return runs,
            }
        }
        panic!("more than 1,000 pages of runs");
    }
}
