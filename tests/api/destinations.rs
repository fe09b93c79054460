//! Destinations (DESIGN §4b) through the real server, against a real receiver: an axum server
//! on a random port in the test that records every request and answers as scripted.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode as AxStatus, Uri};
use axum::response::{IntoResponse, Response};
use reqwest::StatusCode;
use serde_json::{Value, json};

use wharf::config::Config;

use crate::helpers::{TestApp, spawn_in, spawn_with};

/// What the receiver answers to one request.
#[derive(Clone, Copy, Debug)]
enum Reply {
    Status(u16),
    /// 429 with `Retry-After: <seconds>`.
    RetryAfter(u64),
    /// Never answers.
    Hang,
}

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Hit {
    method: String,
    path: String,
    headers: HashMap<String, String>,
    body: String,
    at: Instant,
}

#[derive(Clone, Default)]
struct Receiver {
    hits: Arc<Mutex<Vec<Hit>>>,
    /// Replies by path, used up in order; 200 once a path's are gone (or `always` for it).
    script: Arc<Mutex<HashMap<String, VecDeque<Reply>>>>,
    always: Arc<Mutex<HashMap<String, Reply>>>,
}

async fn receive(
    State(r): State<Receiver>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    r.hits.lock().unwrap().push(Hit {
        method: method.to_string(),
        path: path.clone(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
            .collect(),
        body: String::from_utf8_lossy(&body).into_owned(),
        at: Instant::now(),
    });
    let scripted = r
        .script
        .lock()
        .unwrap()
        .get_mut(&path)
        .and_then(VecDeque::pop_front);
    let reply = scripted
        .or_else(|| r.always.lock().unwrap().get(&path).copied())
        .unwrap_or(Reply::Status(200));
    match reply {
        Reply::Status(code) => (
            AxStatus::from_u16(code).unwrap(),
            format!("answer {code} {}", "x".repeat(5000)),
        )
            .into_response(),
        Reply::RetryAfter(secs) => (
            AxStatus::TOO_MANY_REQUESTS,
            [("retry-after", secs.to_string())],
            "slow down",
        )
            .into_response(),
        Reply::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            AxStatus::OK.into_response()
        }
    }
}

impl Receiver {
    /// Starts a receiver; returns it and its base URL.
    async fn start() -> (Receiver, String) {
        let r = Receiver::default();
        let app = axum::Router::new().fallback(receive).with_state(r.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (r, url)
    }

    fn script(&self, path: &str, replies: &[Reply]) {
        self.script
            .lock()
            .unwrap()
            .insert(path.to_owned(), replies.iter().copied().collect());
    }

    fn always(&self, path: &str, reply: Reply) {
        self.always.lock().unwrap().insert(path.to_owned(), reply);
    }

    fn hits(&self, path: &str) -> Vec<Hit> {
        self.hits
            .lock()
            .unwrap()
            .iter()
            .filter(|h| h.path == path)
            .cloned()
            .collect()
    }

    async fn wait_hits(&self, path: &str, n: usize, within: Duration) -> Vec<Hit> {
        let started = Instant::now();
        loop {
            let hits = self.hits(path);
            if hits.len() >= n {
                return hits;
            }
            assert!(
                started.elapsed() < within,
                "{path}: {} of {n} requests arrived",
                hits.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Deliveries may reach the test's receivers on this host: internal addresses are denied
/// unless allowed by name.
fn allow_local(c: &mut Config) {
    c.egress_allow = wharf::outbox::EgressPolicy::parse_list("127.0.0.1").unwrap();
}

/// A fleet emitting `rows` rows (row 0 with an operation and a primary key), with a declared
/// `branch` variable, sending to `destinations`.
fn fleet(rows: u32, destinations: Value) -> Value {
    let script = format!(
        "emit(#{{data: #{{n: 0}}, operation: \"added\", primary_key: \"k0\"}});
         for i in 1..{rows} {{ emit(#{{n: i}}); }}"
    );
    json!({"name": "out", "variables": {"branch": "main"},
        "vessels": [{"name": "v", "kind": "rhai", "source": script}],
        "destinations": destinations})
}

/// The run's deliveries once `done` holds for them.
async fn deliveries_when(
    app: &TestApp,
    run: &str,
    done: impl Fn(&[Value]) -> bool,
    within: Duration,
) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let (s, body) = app.get(&format!("/runs/{run}/deliveries")).await;
        assert_eq!(s, StatusCode::OK, "{body}");
        let list = body["deliveries"].as_array().unwrap().clone();
        if done(&list) {
            return list;
        }
        assert!(
            started.elapsed() < within,
            "deliveries did not get there: {list:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn all_status(list: &[Value], status: &str) -> bool {
    !list.is_empty() && list.iter().all(|d| d["status"] == status)
}

#[tokio::test]
async fn rows_are_sent_in_batches_with_exact_body_and_headers_and_secrets_stay_hidden() {
    let (recv, base) = Receiver::start().await;
    let app = spawn_with(allow_local).await;
    let dest = json!([{"name": "crm", "url": format!("{base}/hook/{{{{branch}}}}"),
        "authorization": "Bearer s3cret-token-{{branch}}", "api_key": "key-123",
        "headers": {"X-Source": "wharf-{{branch}}"},
        "sync_mode": "upsert", "batch_size": 2}]);
    let (fleet_id, url) = app.fleet_with_hook(fleet(5, dest)).await;

    // Secrets are never shown back; a document PUT back as read keeps them.
    let (s, doc) = app.get(&format!("/fleets/{fleet_id}")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(doc["destinations"][0]["authorization"], "set");
    assert_eq!(doc["destinations"][0]["api_key"], "set");
    assert!(!doc.to_string().contains("s3cret"), "{doc}");
    let (s, put) = app
        .admin(
            reqwest::Method::PUT,
            &format!("/fleets/{fleet_id}"),
            Some(doc.clone()),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{put}");
    assert_eq!(put["destinations"][0]["authorization"], "set");

    let run = app.trigger_ok(&url, "{}").await;
    let hits = recv
        .wait_hits("/hook/main", 3, Duration::from_secs(20))
        .await;
    let mut bodies: Vec<Value> = hits
        .iter()
        .map(|h| serde_json::from_str(&h.body).unwrap())
        .collect();
    bodies.sort_by_key(|b| b["rows"][0]["data"]["n"].as_i64());
    assert_eq!(
        bodies,
        [
            json!({"sync_mode": "upsert", "rows": [
                {"data": {"n": 0}, "operation": "added", "primary_key": "k0"},
                {"data": {"n": 1}}]}),
            json!({"sync_mode": "upsert", "rows": [{"data": {"n": 2}}, {"data": {"n": 3}}]}),
            json!({"sync_mode": "upsert", "rows": [{"data": {"n": 4}}]}),
        ]
    );
    for h in &hits {
        assert_eq!(h.method, "POST");
        assert_eq!(h.headers["content-type"], "application/json");
        assert_eq!(h.headers["authorization"], "Bearer s3cret-token-main");
        assert_eq!(h.headers["x-api-key"], "key-123");
        assert_eq!(h.headers["x-source"], "wharf-main");
        assert_eq!(
            h.headers["user-agent"],
            format!("wharf/{}", env!("CARGO_PKG_VERSION"))
        );
        assert!(!h.headers.contains_key("webhook-signature"));
    }
    let list = deliveries_when(
        &app,
        &run,
        |l| all_status(l, "delivered"),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(list.len(), 3);
    for d in &list {
        assert_eq!(d["destination"], "crm");
        assert_eq!(d["batches"], 3);
        assert_eq!(d["attempts"].as_array().unwrap().len(), 1);
        let a = &d["attempts"][0];
        assert_eq!(a["status_code"], 200);
        assert!(a["latency_ms"].is_u64());
        // The answer's body is kept up to 4 KiB.
        assert_eq!(a["response"].as_str().unwrap().len(), 4096);
        assert!(d["next_attempt_at"].is_null());
    }
    let (_, run_doc) = app.get(&format!("/runs/{run}")).await;
    assert_eq!(
        run_doc["destinations"],
        json!([{"name": "crm", "delivered": 3, "pending": 0, "failed": 0, "attempts": 3}])
    );
    let listed = list.iter().map(|d| d.to_string()).collect::<String>();
    assert!(!listed.contains("s3cret") && !listed.contains("key-123"));
    app.stop().await;
}

#[tokio::test]
async fn server_errors_are_retried_with_growing_backoff_until_delivered() {
    let (recv, base) = Receiver::start().await;
    recv.script(
        "/h",
        &[Reply::Status(500), Reply::Status(503), Reply::Status(500)],
    );
    let app = spawn_with(allow_local).await;
    let dest = json!([{"name": "d", "url": format!("{base}/h"), "max_attempts": 5,
        "backoff": {"base_ms": 100, "max_ms": 10000}}]);
    let (_, url) = app.fleet_with_hook(fleet(1, dest)).await;
    let run = app.trigger_ok(&url, "{}").await;
    let list = deliveries_when(
        &app,
        &run,
        |l| all_status(l, "delivered"),
        Duration::from_secs(20),
    )
    .await;
    let attempts = list[0]["attempts"].as_array().unwrap().clone();
    assert_eq!(attempts.len(), 4);
    let codes: Vec<u64> = attempts
        .iter()
        .map(|a| a["status_code"].as_u64().unwrap())
        .collect();
    assert_eq!(codes, [500, 503, 500, 200]);
    // The ceiling doubles; each pause is drawn under it (full jitter) and waited out.
    let ceilings: Vec<u64> = attempts[..3]
        .iter()
        .map(|a| a["backoff_ms"].as_u64().unwrap())
        .collect();
    assert_eq!(ceilings, [100, 200, 400]);
    let hits = recv.hits("/h");
    assert_eq!(hits.len(), 4);
    for i in 0..3 {
        let drawn = attempts[i]["retry_in_ms"].as_u64().unwrap();
        assert!(drawn <= ceilings[i]);
        let gap = hits[i + 1].at.duration_since(hits[i].at).as_millis() as u64;
        assert!(
            gap + 5 >= drawn,
            "gap {gap} ms is shorter than the pause {drawn} ms"
        );
    }
    // Every request of one delivery is the same body.
    assert!(hits.iter().all(|h| h.body == hits[0].body));
    app.stop().await;
}

#[tokio::test]
async fn retry_after_is_honoured_and_a_400_is_not_retried_until_retried_by_hand() {
    let (recv, base) = Receiver::start().await;
    recv.script("/slow", &[Reply::RetryAfter(1)]);
    recv.script("/bad", &[Reply::Status(400)]);
    let app = spawn_with(allow_local).await;
    let dest = json!([
        {"name": "slow", "url": format!("{base}/slow"), "backoff": {"base_ms": 10, "max_ms": 20}},
        {"name": "bad", "url": format!("{base}/bad"), "method": "PUT",
         "backoff": {"base_ms": 10, "max_ms": 20}},
        {"name": "patch", "url": format!("{base}/patch"), "method": "PATCH"}
    ]);
    let (_, url) = app.fleet_with_hook(fleet(2, dest)).await;
    let run = app.trigger_ok(&url, "{}").await;
    let done = |l: &[Value]| l.len() == 3 && l.iter().all(|d| d["status"] != "pending");
    let list = deliveries_when(&app, &run, done, Duration::from_secs(20)).await;
    let by = |name: &str| {
        list.iter()
            .find(|d| d["destination"] == name)
            .unwrap()
            .clone()
    };

    let slow = by("slow");
    assert_eq!(slow["status"], "delivered");
    assert_eq!(slow["attempts"][0]["status_code"], 429);
    assert_eq!(slow["attempts"][0]["retry_in_ms"], 1000);
    let hits = recv.hits("/slow");
    assert_eq!(hits.len(), 2);
    assert!(hits[1].at.duration_since(hits[0].at) >= Duration::from_millis(990));

    let bad = by("bad");
    assert_eq!(bad["status"], "failed");
    assert_eq!(bad["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(bad["attempts"][0]["status_code"], 400);
    assert!(
        bad["attempts"][0]["error"]
            .as_str()
            .unwrap()
            .contains("not retried")
    );
    assert_eq!(recv.hits("/bad").len(), 1);
    assert_eq!(recv.hits("/bad")[0].method, "PUT");
    assert_eq!(recv.hits("/patch")[0].method, "PATCH");
    assert_eq!(by("patch")["status"], "delivered");

    let (_, run_doc) = app.get(&format!("/runs/{run}")).await;
    let summary = run_doc["destinations"].as_array().unwrap();
    let bad_summary = summary.iter().find(|s| s["name"] == "bad").unwrap();
    assert_eq!(bad_summary["failed"], 1);

    // By hand: the failed one goes back to pending and is sent again (200 now).
    let id = bad["id"].as_str().unwrap();
    let (s, again) = app
        .post(&format!("/deliveries/{id}/retry"), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{again}");
    assert_eq!(again["status"], "pending");
    let list = deliveries_when(
        &app,
        &run,
        |l| all_status(l, "delivered"),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(list.len(), 3);
    assert_eq!(recv.hits("/bad").len(), 2);
    let (s, body) = app
        .post(&format!("/deliveries/{id}/retry"), json!({}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{body}");
    let (s, _) = app
        .post(
            &format!("/deliveries/{}/retry", uuid::Uuid::now_v7()),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    app.stop().await;
}

#[tokio::test]
async fn a_receiver_that_never_answers_times_out_is_retried_and_holds_up_no_one_else() {
    let (recv, base) = Receiver::start().await;
    recv.always("/hang", Reply::Hang);
    // Two slots in all, so one per destination: the hanging one keeps one busy.
    let app = spawn_with(|c| {
        allow_local(c);
        c.max_deliveries = 2;
    })
    .await;
    let dest = json!([
        {"name": "hang", "url": format!("{base}/hang"), "timeout_ms": 1000, "max_attempts": 2,
         "backoff": {"base_ms": 10, "max_ms": 10}, "batch_size": 1},
        {"name": "quick", "url": format!("{base}/quick"), "batch_size": 1}
    ]);
    let (_, url) = app.fleet_with_hook(fleet(3, dest)).await;
    let run = app.trigger_ok(&url, "{}").await;
    let quick = recv.wait_hits("/quick", 3, Duration::from_secs(30)).await;
    // The hanging destination sends one request at a time, so its second starts only once its
    // first has timed out. Had the quick one shared that slot, its batches would have queued
    // behind the hanging requests rather than all arrive while the first one hung.
    let hang = recv.wait_hits("/hang", 2, Duration::from_secs(30)).await;
    assert!(
        quick[2].at < hang[1].at,
        "the quick destination waited for the hanging one: {quick:#?} {hang:#?}"
    );
    let done = |l: &[Value]| {
        l.iter()
            .filter(|d| d["destination"] == "hang")
            .all(|d| d["status"] == "failed")
    };
    let list = deliveries_when(&app, &run, done, Duration::from_secs(60)).await;
    for d in list.iter().filter(|d| d["destination"] == "hang") {
        let attempts = d["attempts"].as_array().unwrap();
        assert_eq!(attempts.len(), 2, "{d}");
        for a in attempts {
            assert!(a["status_code"].is_null());
            assert!(
                a["error"].as_str().unwrap().contains("timeout_ms (1000)"),
                "{a}"
            );
            assert!(a["latency_ms"].as_u64().unwrap() >= 990);
        }
        assert!(
            attempts[1]["error"]
                .as_str()
                .unwrap()
                .contains("max_attempts")
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn signatures_verify_with_standard_webhooks_in_rust_and_python() {
    let (recv, base) = Receiver::start().await;
    recv.script("/signed", &[Reply::Status(500)]);
    let app = spawn_with(allow_local).await;
    let dest = json!([{"name": "s", "url": format!("{base}/signed"), "signing_secret": "generate",
        "backoff": {"base_ms": 10, "max_ms": 20}}]);
    let project = app.project().await;
    let (s, created) = app
        .post(&format!("/projects/{project}/fleets"), fleet(2, dest))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let secret = created["destinations"][0]["signing_secret"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(secret.starts_with("whsec_"), "{secret}");
    let fleet_id = created["id"].as_str().unwrap();
    let (_, doc) = app.get(&format!("/fleets/{fleet_id}")).await;
    assert_eq!(doc["destinations"][0]["signing_secret"], "set");
    let (_, hook) = app
        .post(&format!("/fleets/{fleet_id}/webhook"), json!({}))
        .await;
    app.trigger_ok(hook["url"].as_str().unwrap(), "{}").await;
    let hits = recv.wait_hits("/signed", 2, Duration::from_secs(20)).await;
    // One delivery: the same id on the retry.
    assert_eq!(hits[0].headers["webhook-id"], hits[1].headers["webhook-id"]);
    for h in &hits {
        let ts: i64 = h.headers["webhook-timestamp"].parse().unwrap();
        assert!((ts - wharf::util::now_ms() / 1000).abs() < 60);
        assert!(h.headers["webhook-signature"].starts_with("v1,"));
        // The receiver's check, in Rust.
        assert!(wharf::outbox::sign::verify(
            &secret,
            &h.headers["webhook-id"],
            ts,
            h.body.as_bytes(),
            &h.headers["webhook-signature"]
        ));
        assert!(!wharf::outbox::sign::verify(
            &secret,
            &h.headers["webhook-id"],
            ts,
            b"tampered",
            &h.headers["webhook-signature"]
        ));
        // And with the Standard Webhooks library from PyPI.
        let script = "import json, sys\nfrom standardwebhooks import Webhook\n\
            d = json.load(sys.stdin)\n\
            Webhook(d['secret']).verify(d['body'], d['headers'])\nprint('verified')\n";
        let input = json!({"secret": secret, "body": h.body, "headers": {
            "webhook-id": h.headers["webhook-id"],
            "webhook-timestamp": h.headers["webhook-timestamp"],
            "webhook-signature": h.headers["webhook-signature"]}});
        let mut child = std::process::Command::new("python3")
            .args(["-c", script])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("python3 runs");
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.to_string().as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains("verified"),
            "standardwebhooks refused the signature (pip install standardwebhooks): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn a_restart_resumes_a_waiting_retry_at_its_time_and_sends_no_delivered_batch_again() {
    let (recv, base) = Receiver::start().await;
    recv.script("/later", &[Reply::RetryAfter(3)]);
    let app = spawn_with(allow_local).await;
    let dest = json!([
        {"name": "ok", "url": format!("{base}/ok")},
        {"name": "later", "url": format!("{base}/later")}
    ]);
    let (_, url) = app.fleet_with_hook(fleet(1, dest)).await;
    let run = app.trigger_ok(&url, "{}").await;
    let waiting = |l: &[Value]| {
        l.len() == 2
            && l.iter()
                .any(|d| d["destination"] == "ok" && d["status"] == "delivered")
            && l.iter().any(|d| {
                d["destination"] == "later" && d["attempts"].as_array().unwrap().len() == 1
            })
    };
    deliveries_when(&app, &run, waiting, Duration::from_secs(20)).await;
    let data = app.stop().await;

    let app = spawn_in(data, allow_local).await;
    let list = deliveries_when(
        &app,
        &run,
        |l| all_status(l, "delivered"),
        Duration::from_secs(20),
    )
    .await;
    let later = list.iter().find(|d| d["destination"] == "later").unwrap();
    assert_eq!(later["attempts"].as_array().unwrap().len(), 2);
    let hits = recv.hits("/later");
    assert_eq!(hits.len(), 2);
    assert!(
        hits[1].at.duration_since(hits[0].at) >= Duration::from_millis(2990),
        "resumed before its time"
    );
    // Give a duplicate time to show up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        recv.hits("/ok").len(),
        1,
        "a delivered batch was sent again"
    );
    app.stop().await;
}

#[tokio::test]
async fn dry_run_shows_what_would_be_sent_without_sending() {
    let (recv, base) = Receiver::start().await;
    let app = spawn_with(|_| {}).await;
    let dest = json!([{"name": "crm", "url": format!("{base}/x/{{{{branch}}}}"), "batch_size": 2,
        "authorization": "Bearer hidden"}]);
    let (fleet_id, _) = app.fleet_with_hook(fleet(3, dest)).await;
    let (s, dry) = app
        .post(&format!("/fleets/{fleet_id}/dry-run"), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{dry}");
    let planned = dry["deliveries"].as_array().unwrap();
    assert_eq!(planned.len(), 2);
    assert_eq!(planned[0]["destination"], "crm");
    assert_eq!(planned[0]["method"], "POST");
    assert_eq!(planned[0]["url"], format!("{base}/x/main"));
    assert_eq!(planned[1]["batch"], 2);
    assert_eq!(planned[1]["body"]["rows"], json!([{"data": {"n": 2}}]));
    assert!(!dry.to_string().contains("hidden"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(recv.hits.lock().unwrap().is_empty());
    app.stop().await;
}

#[tokio::test]
async fn invalid_destinations_are_refused_naming_the_field() {
    let app = spawn_with(|_| {}).await;
    let project = app.project().await;
    for (dest, field) in [
        (json!({"name": "a", "url": "ftp://example.com"}), "url"),
        (
            json!({"name": "a", "url": "https://x", "method": "DELETE"}),
            "method",
        ),
        (
            json!({"name": "a", "url": "https://x", "on": "sometimes"}),
            "on",
        ),
        (
            json!({"name": "a", "url": "https://x", "batch_size": 0}),
            "batch_size",
        ),
        (json!({"name": "a", "url": "https://x/{{nope}}"}), "nope"),
        (
            json!({"name": "a", "url": "https://x", "authorization": "set"}),
            "authorization",
        ),
    ] {
        let (s, body) = app
            .post(
                &format!("/projects/{project}/fleets"),
                fleet(1, json!([dest])),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{field}: {body}");
        assert!(body.to_string().contains(field), "{field}: {body}");
    }
    app.stop().await;
}

#[tokio::test]
async fn an_egress_denied_address_is_refused_recorded_and_logged_without_secrets() {
    let (recv, base) = Receiver::start().await;
    let port = base.rsplit(':').next().unwrap().to_owned();
    let data = tempfile::tempdir().unwrap();
    let log_path = data.path().join("wharf.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let server = crate::binary::start_with(data.path(), 0, |cmd| {
        cmd.args(["--egress-deny", "127.0.0.0/8,::1/128"])
            .env("WHARF_LOG", "info")
            .stderr(log);
    })
    .await;
    let dest = json!([
        {"name": "literal", "url": format!("{base}/a"), "authorization": "Bearer very-secret-1"},
        {"name": "named", "url": format!("http://localhost:{port}/b"), "api_key": "very-secret-2"}
    ]);
    let (_, url) = server.fleet_with_hook(fleet(1, dest)).await;
    let run = server.trigger(&url, "{}").await;
    let started = Instant::now();
    let list = loop {
        let (_, body) = server.get(&format!("/runs/{run}/deliveries")).await;
        let list = body["deliveries"].as_array().cloned().unwrap_or_default();
        if list.len() == 2 && list.iter().all(|d| d["status"] == "failed") {
            break list;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{list:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for d in &list {
        let attempts = d["attempts"].as_array().unwrap();
        assert_eq!(attempts.len(), 1, "refused at once, not retried: {d}");
        let error = attempts[0]["error"].as_str().unwrap();
        assert!(error.contains("egress policy refused"), "{error}");
    }
    assert!(recv.hits.lock().unwrap().is_empty());
    drop(server);
    let text = std::fs::read_to_string(&log_path).unwrap();
    assert!(text.contains("egress policy refused"), "{text}");
    assert!(!text.contains("very-secret"), "a secret reached the log");
}

#[test]
fn wharf_run_shows_what_destinations_would_be_sent_and_sends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fleet.json");
    // Port 9 (discard): nothing listens, and nothing is sent anyway.
    let dest = json!([{"name": "crm", "url": "http://127.0.0.1:9/in/{{branch}}", "method": "PUT",
        "batch_size": 2, "authorization": "Bearer not-shown"}]);
    std::fs::write(&path, fleet(3, dest).to_string()).unwrap();
    let file = path.to_str().unwrap();
    let (code, stdout, stderr) = crate::examples::wharf(&["run", file]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("would send to crm (PUT http://127.0.0.1:9/in/main): batch 1/2, 2 rows"),
        "{stdout}"
    );
    assert!(stdout.contains("batch 2/2, 1 rows"), "{stdout}");
    let (code, stdout, _) = crate::examples::wharf(&["run", file, "--json"]);
    assert_eq!(code, 0);
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["deliveries"].as_array().unwrap().len(), 2);
    assert!(!stdout.contains("not-shown"));
}

/// A fleet with declared `variables` whose one vessel emits a row, sending to `destinations`.
fn fleet_with_vars(variables: Value, destinations: Value) -> Value {
    json!({"name": "steer", "variables": variables,
        "vessels": [{"name": "v", "kind": "rhai", "source": "emit(#{n: 1});"}],
        "destinations": destinations})
}

/// The run's deliveries once none is pending; each must be `failed` after one attempt whose
/// error contains `error`.
async fn failed_at_once(app: &TestApp, run: &str, n: usize, error: &str) {
    let done = |l: &[Value]| l.len() == n && l.iter().all(|d| d["status"] != "pending");
    let list = deliveries_when(app, run, done, Duration::from_secs(30)).await;
    for d in &list {
        assert_eq!(d["status"], "failed", "{d:#}");
        let attempts = d["attempts"].as_array().unwrap();
        assert_eq!(attempts.len(), 1, "refused at once: {d:#}");
        assert!(
            attempts[0]["status_code"].is_null(),
            "nothing answered: {d:#}"
        );
        let e = attempts[0]["error"].as_str().unwrap_or("");
        assert!(e.contains(error), "{}: {e}", d["destination"]);
    }
}

#[tokio::test]
async fn an_anonymous_caller_cannot_choose_the_host_or_climb_the_path() {
    let (recv, base) = Receiver::start().await;
    let port = base.rsplit(':').next().unwrap().to_owned();
    let app = spawn_with(allow_local).await;
    let project = app.project().await;
    // The host or port from a variable: a body key would choose where rows go. Refused at save.
    for (url, name) in [
        (format!("http://{{{{host}}}}:{port}/steal"), "host"),
        ("http://example.com:{{host}}/x".to_owned(), "host"),
        (format!("http://{{{{host}}}}.example:{port}/x"), "host"),
    ] {
        let doc = fleet_with_vars(
            json!({"host": "example.com"}),
            json!([{"name": "internal", "url": url}]),
        );
        let (s, body) = app.post(&format!("/projects/{project}/fleets"), doc).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{url}: {body}");
        let e = body["error"].as_str().unwrap_or_default();
        assert!(
            e.contains("destination internal: url") && e.contains(&format!("{{{{{name}}}}}")),
            "{url}: {e}"
        );
    }

    // A path variable is fine; a caller's `..` (or `.`) refuses the delivery, nothing is sent.
    let doc = fleet_with_vars(
        json!({"seg": "ok"}),
        json!([{"name": "p", "url": format!("{base}/a/{{{{seg}}}}/b"), "max_attempts": 3}]),
    );
    let (s, fleet) = app.post(&format!("/projects/{project}/fleets"), doc).await;
    assert_eq!(s, StatusCode::CREATED, "{fleet}");
    let fleet_id = fleet["id"].as_str().unwrap();
    let (s, hook) = app
        .post(
            &format!("/fleets/{fleet_id}/webhook"),
            json!({"auth": "none"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{hook}");
    let url = hook["url"].as_str().unwrap();
    for value in ["..", "."] {
        let run = app
            .trigger_ok(url, &json!({"seg": value}).to_string())
            .await;
        failed_at_once(&app, &run, 1, "path segment").await;
    }
    let run = app.trigger_ok(url, r#"{"seg":"x y"}"#).await;
    let done = |l: &[Value]| all_status(l, "delivered");
    deliveries_when(&app, &run, done, Duration::from_secs(20)).await;
    let paths: Vec<String> = recv
        .hits
        .lock()
        .unwrap()
        .iter()
        .map(|h| h.path.clone())
        .collect();
    assert_eq!(paths, ["/a/x%20y/b"], "only the plain value was sent");
    app.stop().await;
}

#[tokio::test]
async fn internal_addresses_are_denied_by_default_and_reached_when_allowed() {
    let (recv, base) = Receiver::start().await;
    let port = base.rsplit(':').next().unwrap().to_owned();
    let internal = [
        ("loopback", format!("http://127.0.0.1:{port}/loopback")),
        ("named", format!("http://localhost:{port}/named")),
        ("private", format!("http://10.0.0.1:{port}/private")),
        ("mapped", format!("http://[::ffff:127.0.0.1]:{port}/mapped")),
        ("nat64", format!("http://[64:ff9b::7f00:1]:{port}/nat64")),
        ("v6loopback", format!("http://[::1]:{port}/v6loopback")),
        (
            "metadata",
            "http://169.254.169.254/latest/meta-data/".to_owned(),
        ),
        (
            "aws6",
            "http://[fd00:ec2::254]/latest/meta-data/".to_owned(),
        ),
    ];
    let dests: Vec<Value> = internal
        .iter()
        .map(|(name, url)| json!({"name": name, "url": url, "max_attempts": 1, "timeout_ms": 2000}))
        .collect();
    let doc = fleet_with_vars(json!({}), Value::Array(dests));

    let app = spawn_with(|_| {}).await;
    let (_, url) = app.fleet_with_hook(doc.clone()).await;
    let run = app.trigger_ok(&url, "{}").await;
    failed_at_once(&app, &run, internal.len(), "egress policy refused").await;
    assert!(recv.hits.lock().unwrap().is_empty());
    app.stop().await;

    // Named by --egress-allow, this host's receiver is reached (by address and by name).
    let app = spawn_with(allow_local).await;
    let (_, url) = app.fleet_with_hook(doc).await;
    let run = app.trigger_ok(&url, "{}").await;
    let done =
        |l: &[Value]| l.len() == internal.len() && l.iter().all(|d| d["status"] != "pending");
    let list = deliveries_when(&app, &run, done, Duration::from_secs(30)).await;
    let status = |name: &str| {
        list.iter()
            .find(|d| d["destination"] == name)
            .map(|d| d["status"].as_str().unwrap().to_owned())
            .unwrap()
    };
    assert_eq!(status("loopback"), "delivered");
    assert_eq!(status("named"), "delivered");
    for still_denied in ["private", "v6loopback", "metadata", "aws6"] {
        assert_eq!(status(still_denied), "failed", "{still_denied}");
    }
    assert_eq!(recv.hits("/loopback").len(), 1);
    assert_eq!(recv.hits("/named").len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn proxy_variables_of_the_environment_are_ignored_and_egress_proxy_is_used() {
    // A listener standing in for a proxy: it records whatever reaches it and answers 200.
    let (proxy, proxy_base) = Receiver::start().await;
    let dest = json!([{"name": "out", "url": "http://wharf-egress-test.invalid/rows",
        "max_attempts": 1, "timeout_ms": 3000}]);
    let doc = fleet_with_vars(json!({}), dest);

    let data = tempfile::tempdir().unwrap();
    let server = crate::binary::start_with(data.path(), 0, |cmd| {
        for var in [
            "HTTP_PROXY",
            "http_proxy",
            "HTTPS_PROXY",
            "https_proxy",
            "ALL_PROXY",
        ] {
            cmd.env(var, &proxy_base);
        }
        cmd.env_remove("NO_PROXY").env_remove("no_proxy");
    })
    .await;
    let (_, url) = server.fleet_with_hook(doc.clone()).await;
    let run = server.trigger(&url, "{}").await;
    let started = Instant::now();
    loop {
        let (_, body) = server.get(&format!("/runs/{run}/deliveries")).await;
        let list = body["deliveries"].as_array().cloned().unwrap_or_default();
        if list.len() == 1 && list[0]["status"] != "pending" {
            assert_eq!(list[0]["status"], "failed", "{list:#?}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{list:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        proxy.hits.lock().unwrap().is_empty(),
        "a delivery went through the environment's proxy"
    );
    drop(server);

    // Given explicitly, the proxy carries every delivery.
    let app = spawn_with(|c| c.egress_proxy = Some(proxy_base.clone())).await;
    let (_, url) = app.fleet_with_hook(doc).await;
    let run = app.trigger_ok(&url, "{}").await;
    let done = |l: &[Value]| all_status(l, "delivered");
    deliveries_when(&app, &run, done, Duration::from_secs(20)).await;
    assert_eq!(proxy.hits("/rows").len(), 1);
    app.stop().await;
}
