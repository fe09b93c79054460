//! Admission through the real server: idempotency keys and provider delivery ids, per-webhook
//! rate limits (and their PATCH), keyed concurrency, and retention.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use crate::helpers::*;

/// POSTs `body` as JSON with extra headers; returns status, JSON body and headers.
async fn call(
    app: &TestApp,
    url: &str,
    headers: &[(&str, &[u8])],
    body: &str,
) -> (StatusCode, Value, HeaderMap) {
    let mut req = app
        .client
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_owned());
    for (name, value) in headers {
        req = req.header(
            *name,
            reqwest::header::HeaderValue::from_bytes(value).unwrap(),
        );
    }
    let res = req.send().await.unwrap();
    let (status, headers) = (res.status(), res.headers().clone());
    let text = res.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::Null),
        headers,
    )
}

async fn run_count(app: &TestApp, fleet: &str) -> usize {
    let (s, runs) = app.get(&format!("/fleets/{fleet}/runs?limit=500")).await;
    assert_eq!(s, StatusCode::OK, "{runs}");
    runs["runs"].as_array().unwrap().len()
}

/// A fleet and a webhook created with `settings`; returns (fleet id, url).
async fn fleet_with_settings(app: &TestApp, doc: Value, settings: Value) -> (String, String) {
    let project = app.project().await;
    let (s, fleet) = app.post(&format!("/projects/{project}/fleets"), doc).await;
    assert_eq!(s, StatusCode::CREATED, "{fleet}");
    let id = fleet["id"].as_str().unwrap().to_owned();
    let (s, hook) = app.post(&format!("/fleets/{id}/webhook"), settings).await;
    assert_eq!(s, StatusCode::CREATED, "{hook}");
    (id, hook["url"].as_str().unwrap().to_owned())
}

async fn patch(app: &TestApp, fleet: &str, body: Value) -> (StatusCode, Value) {
    app.admin(
        reqwest::Method::PATCH,
        &format!("/fleets/{fleet}/webhook"),
        Some(body),
    )
    .await
}

fn retry_after(headers: &HeaderMap) -> u64 {
    headers["retry-after"].to_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_repeated_idempotency_key_returns_the_first_answer_without_a_second_run() {
    let app = spawn_app().await;
    let (fleet, url) = app.fleet_with_hook(rhai_fleet("1")).await;
    let key: &[(&str, &[u8])] = &[("idempotency-key", b"order-42")];
    let (s, first, h1) = call(&app, &url, key, r#"{"n":1}"#).await;
    assert_eq!(s, StatusCode::CREATED, "{first}");
    assert!(h1.get("idempotent-replayed").is_none());
    let (s, again, h2) = call(&app, &url, key, r#"{"n":2}"#).await;
    assert_eq!(s, StatusCode::CREATED, "{again}");
    assert_eq!(again, first, "same body: same request id and run id");
    assert_eq!(h2["x-request-id"], h1["x-request-id"]);
    assert_eq!(h2["idempotent-replayed"], "true");
    assert_eq!(run_count(&app, &fleet).await, 1);

    let (s, other, _) = call(&app, &url, &[("idempotency-key", b"order-43")], "{}").await;
    assert_eq!(s, StatusCode::CREATED);
    assert_ne!(other["data"]["fleet_run_id"], first["data"]["fleet_run_id"]);
    app.trigger_ok(&url, "{}").await;
    assert_eq!(
        run_count(&app, &fleet).await,
        3,
        "a new key and no key: new runs"
    );

    // The key belongs to the fleet: a rotated URL keeps it.
    let (s, hook) = app
        .post(&format!("/fleets/{fleet}/webhook/rotate"), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{hook}");
    let (s, rotated, _) = call(&app, hook["url"].as_str().unwrap(), key, "{}").await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(rotated, first);
    assert_eq!(run_count(&app, &fleet).await, 3);
}

#[tokio::test]
async fn twenty_simultaneous_repeats_make_one_run() {
    // No workers: the run stays queued, and nothing but the key stops a second one.
    let app = spawn_with(|c| c.workers = 0).await;
    let (fleet, url) = app.fleet_with_hook(rhai_fleet("1")).await;
    let calls = (0..20).map(|_| call(&app, &url, &[("idempotency-key", b"same")], "{}"));
    let answers = futures::future::join_all(calls).await;
    let first = &answers[0].1;
    for (status, body, headers) in &answers {
        assert_eq!(*status, StatusCode::CREATED, "{body}");
        assert_eq!(body, first);
        assert_eq!(
            headers["x-request-id"].to_str().unwrap(),
            first["request"]["id"].as_str().unwrap()
        );
    }
    assert_eq!(run_count(&app, &fleet).await, 1);
}

#[tokio::test]
async fn provider_delivery_ids_deduplicate_only_where_the_webhook_opted_in() {
    let app = spawn_app().await;
    let doc = rhai_fleet("1");
    let (gh, gh_url) =
        fleet_with_settings(&app, doc.clone(), json!({"deduplicate": "github"})).await;
    let delivery: &[(&str, &[u8])] =
        &[("x-github-delivery", b"72d3162e-cc78-11e3-81ab-4c9367dc0958")];
    let (_, first, _) = call(&app, &gh_url, delivery, "{}").await;
    let (s, again, _) = call(&app, &gh_url, delivery, "{}").await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(again, first);
    assert_eq!(run_count(&app, &gh).await, 1);
    // An explicit Idempotency-Key is its own key, even with the same value.
    call(
        &app,
        &gh_url,
        &[("idempotency-key", b"72d3162e-cc78-11e3-81ab-4c9367dc0958")],
        "{}",
    )
    .await;
    assert_eq!(run_count(&app, &gh).await, 2);

    let (sw, sw_url) = fleet_with_settings(
        &app,
        doc.clone(),
        json!({"deduplicate": "standard-webhooks"}),
    )
    .await;
    let msg: &[(&str, &[u8])] = &[("webhook-id", b"msg_2KWPBgLlAfxdpx2AI54pPJ85f4W")];
    let (_, first, _) = call(&app, &sw_url, msg, "{}").await;
    let (_, again, _) = call(&app, &sw_url, msg, "{}").await;
    assert_eq!(again, first);
    assert_eq!(run_count(&app, &sw).await, 1);

    let (custom, custom_url) = fleet_with_settings(
        &app,
        doc.clone(),
        json!({"deduplicate": {"header": "X-Delivery-Id"}}),
    )
    .await;
    call(&app, &custom_url, &[("x-delivery-id", b"d-1")], "{}").await;
    call(&app, &custom_url, &[("x-delivery-id", b"d-1")], "{}").await;
    assert_eq!(run_count(&app, &custom).await, 1);
    let (_, shown) = app.get(&format!("/fleets/{custom}")).await;
    assert_eq!(
        shown["webhook"]["deduplicate"],
        json!({"header": "x-delivery-id"})
    );

    // Not opted in: the same delivery id twice is two runs.
    let (plain, plain_url) = app.fleet_with_hook(doc).await;
    call(&app, &plain_url, delivery, "{}").await;
    call(&app, &plain_url, delivery, "{}").await;
    call(&app, &plain_url, msg, "{}").await;
    call(&app, &plain_url, msg, "{}").await;
    assert_eq!(run_count(&app, &plain).await, 4);
}

#[tokio::test]
async fn a_malformed_key_is_400_naming_the_header() {
    let app = spawn_app().await;
    let (fleet, url) =
        fleet_with_settings(&app, rhai_fleet("1"), json!({"deduplicate": "github"})).await;
    let long = vec![b'k'; 256];
    for (name, value, named) in [
        ("idempotency-key", long.as_slice(), "Idempotency-Key"),
        (
            "idempotency-key",
            b"caf\xc3\xa9".as_slice(),
            "Idempotency-Key",
        ),
        ("idempotency-key", b"".as_slice(), "Idempotency-Key"),
        (
            "x-github-delivery",
            b"\xff\xfe".as_slice(),
            "X-GitHub-Delivery",
        ),
    ] {
        let (s, body, headers) = call(&app, &url, &[(name, value)], "{}").await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
        assert!(body["error"].as_str().unwrap().contains(named), "{body}");
        assert_eq!(
            headers["x-request-id"].to_str().unwrap(),
            body["request"]["id"].as_str().unwrap()
        );
    }
    let max = vec![b'~'; 255];
    let (s, _, _) = call(&app, &url, &[("idempotency-key", max.as_slice())], "{}").await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(run_count(&app, &fleet).await, 1);
}

#[tokio::test]
async fn a_rate_limit_admits_n_calls_then_429_until_the_window_passes() {
    let app = spawn_app().await;
    let limit = json!({"requests": 2, "per_seconds": 1});
    let (fleet, url) =
        fleet_with_settings(&app, rhai_fleet("1"), json!({"rate_limit": limit})).await;
    let (_, shown) = app.get(&format!("/fleets/{fleet}")).await;
    assert_eq!(shown["webhook"]["rate_limit"], limit);
    assert_eq!(shown["webhook"]["deduplicate"], Value::Null);
    // Calls until one is refused: the two the bucket holds, and whatever it refilled (one per
    // half second) while they were answered, however slow the machine.
    let mut admitted = 0;
    let (s, body, headers) = loop {
        let (s, body, headers) = app.trigger(&url, "application/json", "{}").await;
        if s != StatusCode::CREATED || admitted == 100 {
            break (s, body, headers);
        }
        admitted += 1;
    };
    assert!(admitted >= 2, "the bucket holds two calls: {admitted}");
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(retry_after(&headers), 1);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("2 calls per second"),
        "{body}"
    );
    assert_eq!(
        run_count(&app, &fleet).await,
        admitted,
        "a refused call stores nothing"
    );
    // A second refills the whole bucket.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    app.trigger_ok(&url, "{}").await;
    app.trigger_ok(&url, "{}").await;
    assert_eq!(run_count(&app, &fleet).await, admitted + 2);
}

#[tokio::test]
async fn one_call_per_hour_refuses_the_second_and_still_does_after_a_restart() {
    let app = spawn_app().await;
    let (fleet, url) = fleet_with_settings(
        &app,
        rhai_fleet("1"),
        json!({"rate_limit": {"requests": 1, "per_seconds": 3600}}),
    )
    .await;
    app.trigger_ok(&url, "{}").await;
    let (s, body, headers) = app.trigger(&url, "application/json", "{}").await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(
        (3590..=3600).contains(&retry_after(&headers)),
        "{headers:?}"
    );
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("1 call per 3600 seconds")
    );

    let data = app.stop().await;
    let app = spawn_in(data, |_| {}).await;
    let path = &url[url.find("/webhooks/").unwrap()..];
    let (s, _, headers) = app.trigger(&app.url(path), "application/json", "{}").await;
    assert_eq!(
        s,
        StatusCode::TOO_MANY_REQUESTS,
        "the window survived the restart"
    );
    assert!((3590..=3600).contains(&retry_after(&headers)));
    assert_eq!(run_count(&app, &fleet).await, 1);
}

#[tokio::test]
async fn patch_changes_and_removes_the_limit_at_once() {
    let app = spawn_app().await;
    let (fleet, url) = fleet_with_settings(
        &app,
        rhai_fleet("1"),
        json!({"rate_limit": {"requests": 1, "per_seconds": 3600}}),
    )
    .await;
    app.trigger_ok(&url, "{}").await;
    let (s, _, _) = app.trigger(&url, "application/json", "{}").await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);

    let faster = json!({"requests": 2, "per_seconds": 60});
    let (s, hook) = patch(&app, &fleet, json!({"rate_limit": faster})).await;
    assert_eq!(s, StatusCode::OK, "{hook}");
    assert_eq!(hook["rate_limit"], faster);
    app.trigger_ok(&url, "{}").await;
    app.trigger_ok(&url, "{}").await;
    let (s, _, headers) = app.trigger(&url, "application/json", "{}").await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    assert!((29..=30).contains(&retry_after(&headers)), "{headers:?}");

    // Only what is given changes.
    let (s, hook) = patch(&app, &fleet, json!({"deduplicate": "github"})).await;
    assert_eq!(s, StatusCode::OK, "{hook}");
    assert_eq!(hook["rate_limit"], faster);
    assert_eq!(hook["deduplicate"], "github");

    let (s, hook) = patch(&app, &fleet, json!({"rate_limit": null})).await;
    assert_eq!(s, StatusCode::OK, "{hook}");
    assert_eq!(hook["rate_limit"], Value::Null);
    for _ in 0..5 {
        app.trigger_ok(&url, "{}").await;
    }
    let (_, shown) = app.get(&format!("/fleets/{fleet}")).await;
    assert_eq!(shown["webhook"]["rate_limit"], Value::Null);
    assert_eq!(shown["webhook"]["deduplicate"], "github");
}

#[tokio::test]
async fn bad_webhook_settings_are_400_naming_the_field() {
    let app = spawn_app().await;
    let project = app.project().await;
    let (_, fleet) = app
        .post(&format!("/projects/{project}/fleets"), rhai_fleet("1"))
        .await;
    let fleet = fleet["id"].as_str().unwrap().to_owned();
    let path = format!("/fleets/{fleet}/webhook");
    for (settings, named) in [
        (
            json!({"rate_limit": {"requests": 0, "per_seconds": 60}}),
            "rate_limit.requests",
        ),
        (
            json!({"rate_limit": {"requests": 1, "per_seconds": 0}}),
            "rate_limit.per_seconds",
        ),
        (
            json!({"rate_limit": {"requests": 1, "per_seconds": 2592001}}),
            "rate_limit.per_seconds",
        ),
        (
            json!({"rate_limit": {"requests": 1}}),
            "rate_limit.per_seconds",
        ),
        (json!({"rate_limit": 5}), "rate_limit"),
        (json!({"deduplicate": "gitlab"}), "deduplicate"),
        (
            json!({"deduplicate": {"header": "bad header"}}),
            "deduplicate.header",
        ),
    ] {
        let (s, body) = app.post(&path, settings.clone()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{settings}: {body}");
        assert!(body["error"].as_str().unwrap().contains(named), "{body}");
    }
    let (s, body) = patch(&app, &fleet, json!({"rate_limit": null})).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "no webhook yet: {body}");
    let (s, _) = app
        .post(
            &path,
            json!({"rate_limit": {"requests": 1, "per_seconds": 2592000}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "30 days is the longest window");
    let (s, body) = patch(
        &app,
        &fleet,
        json!({"rate_limit": {"requests": -1, "per_seconds": 1}}),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("rate_limit.requests"),
        "{body}"
    );
    let (s, body) = patch(&app, &fleet, json!({})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("nothing to change"),
        "{body}"
    );
    let (s, body) = patch(&app, &fleet, json!({"burst": 1})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(body["error"].as_str().unwrap().contains("burst"), "{body}");
}

/// A Rhai vessel that holds its worker for `ms` milliseconds and records the branch it saw.
fn busy_fleet(concurrency: Value, ms: u64) -> Value {
    json!({
        "name": "deploy",
        "variables": {"branch": "main"},
        "concurrency": concurrency,
        "vessels": [{"name": "deploy", "kind": "rhai",
            "source": format!("let t = timestamp(); while t.elapsed < {} {{}} set_var(\"seen\", vars.branch);", ms as f64 / 1000.0),
            "limits": {"fuel": 100000000000u64, "timeout_ms": 30000}}]
    })
}

#[tokio::test]
async fn keyed_queue_serialises_one_branch_and_lets_branches_overlap() {
    let app = spawn_with(|c| c.workers = 4).await;
    let keyed = json!({"policy": "queue", "key": "branch"});
    let (fleet, url) = app.fleet_with_hook(busy_fleet(keyed.clone(), 200)).await;
    let (_, shown) = app.get(&format!("/fleets/{fleet}")).await;
    assert_eq!(shown["concurrency"], keyed, "shown as written");

    let order = ["a", "b", "a", "b", "a"];
    let mut ids = Vec::new();
    for branch in order {
        ids.push(
            app.trigger_ok(&url, &json!({"branch": branch}).to_string())
                .await,
        );
    }
    let mut runs = Vec::new();
    for id in &ids {
        let run = app.finished_run(id).await;
        assert_eq!(run["status"], "succeeded", "{run}");
        runs.push(run);
    }
    let times = |r: &Value| {
        (
            r["started_at"].as_str().unwrap().to_owned(),
            r["finished_at"].as_str().unwrap().to_owned(),
        )
    };
    for branch in ["a", "b"] {
        let of: Vec<&Value> = runs
            .iter()
            .filter(|r| r["variables"]["seen"] == branch)
            .collect();
        assert_eq!(of.len(), order.iter().filter(|b| **b == branch).count());
        for pair in of.windows(2) {
            let ((_, ended), (started, _)) = (times(pair[0]), times(pair[1]));
            assert!(
                ended <= started,
                "branch {branch}: a run started at {started}, before the one before it ended at {ended}"
            );
        }
    }
    // The first runs of a and b were claimable together, and there are workers for both.
    let ((a_start, a_end), (b_start, b_end)) = (times(&runs[0]), times(&runs[1]));
    assert!(
        a_start < b_end && b_start < a_end,
        "a {a_start}..{a_end}, b {b_start}..{b_end}"
    );

    // Without the key in the body, the declared default is the key.
    let (s, body) = app
        .admin(
            reqwest::Method::PUT,
            &format!("/fleets/{fleet}"),
            Some(shown),
        )
        .await;
    assert_eq!(
        s,
        StatusCode::OK,
        "what GET returned can be PUT back: {body}"
    );
    let id = app.trigger_ok(&url, "{}").await;
    let run = app.finished_run(&id).await;
    assert_eq!(run["variables"]["seen"], "main");
}

#[tokio::test]
async fn keyed_reject_refuses_the_same_branch_only() {
    let app = spawn_with(|c| c.workers = 0).await;
    let (fleet, url) = app
        .fleet_with_hook(busy_fleet(json!({"policy": "reject", "key": "branch"}), 0))
        .await;
    let a = json!({"branch": "a"}).to_string();
    app.trigger_ok(&url, &a).await;
    let (s, body, headers) = app.trigger(&url, "application/json", a.clone()).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(headers.get("retry-after").is_some());
    app.trigger_ok(&url, &json!({"branch": "b"}).to_string())
        .await;
    app.trigger_ok(&url, "{}").await;
    assert_eq!(run_count(&app, &fleet).await, 3);

    // A key that is not a declared variable is refused at save.
    let project = app.project().await;
    let mut doc = busy_fleet(json!({"policy": "queue", "key": "env"}), 0);
    let (s, body) = app
        .post(&format!("/projects/{project}/fleets"), doc.clone())
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("\"env\" is not a declared variable"),
        "{body}"
    );
    doc["concurrency"] = json!({"policy": "serial", "key": "branch"});
    let (s, body) = app.post(&format!("/projects/{project}/fleets"), doc).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("concurrency.policy"),
        "{body}"
    );
}

/// Whether the SQLite file still holds these requests.
fn requests_left(app: &TestApp, ids: &[String]) -> usize {
    let db = rusqlite::Connection::open_with_flags(
        app.data.path().join("wharf.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    ids.iter()
        .map(|id| {
            db.query_row("SELECT COUNT(*) FROM requests WHERE id = ?1", [id], |r| {
                r.get::<_, i64>(0)
            })
            .unwrap() as usize
        })
        .sum()
}

#[tokio::test]
async fn retention_deletes_old_finished_runs_and_keeps_recent_and_unfinished_ones() {
    let app = spawn_with(|c| {
        c.workers = 2;
        c.retain = Some(Duration::from_secs(2));
        c.retain_every = Duration::from_millis(100);
    })
    .await;
    let (_, quick) = app.fleet_with_hook(rhai_fleet("0")).await;
    let (_, slow) = app.fleet_with_hook(busy_fleet(json!("queue"), 6000)).await;
    let mut old = Vec::new();
    for _ in 0..3 {
        old.push(app.trigger_ok(&quick, "{}").await);
    }
    let mut old_requests = Vec::new();
    for id in &old {
        let run = app.finished_run(id).await;
        old_requests.push(run["request"]["id"].as_str().unwrap().to_owned());
    }
    let running = app.trigger_ok(&slow, "{}").await;
    let held = app.trigger_ok(&slow, "{}").await;
    let run = app
        .wait_run(
            &running,
            |r| r["status"] == "running",
            Duration::from_secs(10),
        )
        .await;
    let unfinished_requests = vec![run["request"]["id"].as_str().unwrap().to_owned()];

    let started = Instant::now();
    loop {
        let (s, _) = app.get(&format!("/runs/{}", old[0])).await;
        if s == StatusCode::NOT_FOUND {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "old runs were never deleted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let recent = app.trigger_ok(&quick, "{}").await;
    app.finished_run(&recent).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    for id in &old {
        let (s, _) = app.get(&format!("/runs/{id}")).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
    }
    assert_eq!(
        requests_left(&app, &old_requests),
        0,
        "their requests went too"
    );
    let (s, run) = app.get(&format!("/runs/{recent}")).await;
    assert_eq!(s, StatusCode::OK, "younger than the age: kept");
    assert_eq!(run["status"], "succeeded", "{run}");
    // Older than the age by now, but not finished: kept, with their requests.
    let (_, r) = app.get(&format!("/runs/{running}")).await;
    assert_eq!(r["status"], "running", "{r}");
    let (_, h) = app.get(&format!("/runs/{held}")).await;
    assert_eq!(h["status"], "queued", "{h}");
    assert_eq!(requests_left(&app, &unfinished_requests), 1);
}
