//! What operators' tools read: the OpenAPI document (every route in it, and valid), Prometheus
//! metrics that move with traffic, JSON logs carrying request and run ids.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{ADMIN_TOKEN, TestApp, rhai_fleet, spawn_app, spawn_with};

/// `/orgs/{org}` and `/orgs/{id}` name the same route.
fn shape(path: &str) -> String {
    let mut out = String::new();
    let mut in_param = false;
    for c in path.chars() {
        match c {
            '{' => {
                in_param = true;
                out.push_str("{}");
            }
            '}' => in_param = false,
            _ if in_param => {}
            _ => out.push(c),
        }
    }
    out
}

/// The paths axum holds, read from the router itself (its `Debug` lists every registered path).
fn router_paths(router: &axum::Router<wharf::api::AppState>) -> BTreeSet<String> {
    let debug = format!("{router:?}");
    let start = debug.find("paths: {").expect("the router lists its paths") + "paths: {".len();
    // The map ends at the first `}` outside a quoted path.
    let mut quoted = false;
    let end = start
        + debug[start..]
            .char_indices()
            .find(|&(_, c)| {
                quoted ^= c == '"';
                c == '}' && !quoted
            })
            .map(|(i, _)| i)
            .expect("the path map ends");
    debug[start..end]
        .split('"')
        .filter(|s| s.starts_with('/'))
        .map(shape)
        .collect()
}

#[test]
fn every_route_of_the_router_is_in_the_openapi_document_and_back() {
    let (router, doc) = wharf::api::documented();
    let routes = router_paths(&router);
    let documented: BTreeSet<String> = doc.paths.paths.keys().map(|p| shape(p)).collect();
    assert!(
        routes.len() > 15,
        "the router's paths were read: {routes:?}"
    );
    let undocumented: Vec<_> = routes.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "routes without an OpenAPI description (register them with routes! and #[utoipa::path]): {undocumented:?}"
    );
    let unrouted: Vec<_> = documented.difference(&routes).collect();
    assert!(
        unrouted.is_empty(),
        "documented but not routed: {unrouted:?}"
    );
}

/// Fills a path's parameters with ids that name nothing.
fn concrete(path: &str) -> String {
    let fake = uuid::Uuid::new_v4().to_string();
    let mut out = String::new();
    for part in path.split('/') {
        out.push('/');
        if part.starts_with('{') {
            out.push_str(if part.contains("webhook") {
                "wh_000000000000000000000000"
            } else {
                &fake
            });
        } else {
            out.push_str(part);
        }
    }
    out[1..].to_owned()
}

#[tokio::test]
async fn every_documented_operation_is_served() {
    let app = spawn_app().await;
    let (s, doc) = unauthenticated(&app, "/api/v1/openapi.json").await;
    assert_eq!(s, StatusCode::OK, "the document needs no token");
    let doc: Value = serde_json::from_str(&doc).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    let mut operations = 0;
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            let method: reqwest::Method = method.to_uppercase().parse().unwrap();
            let res = app
                .client
                .request(method.clone(), app.url(&concrete(path)))
                .bearer_auth(ADMIN_TOKEN)
                .json(&json!({}))
                .send()
                .await
                .unwrap();
            let status = res.status();
            let body = res.text().await.unwrap();
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            assert!(!body.contains("no such route"), "{method} {path}: {body}");
            assert!(status.as_u16() < 500, "{method} {path}: {status} {body}");
            operations += 1;
        }
    }
    assert!(operations > 20, "{operations} operations");
}

/// The served document passes `openapi-spec-validator` (installed by scripts/test.sh with pip).
#[tokio::test]
async fn the_served_document_is_valid_openapi_3_1() {
    let app = spawn_app().await;
    let (s, text) = unauthenticated(&app, "/api/v1/openapi.json").await;
    assert_eq!(s, StatusCode::OK);
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(
        doc["components"]["securitySchemes"]["admin_token"]["scheme"],
        "bearer"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, &text).unwrap();
    let attempts: [(&str, &[&str]); 2] = [
        ("openapi-spec-validator", &[]),
        ("python3", &["-m", "openapi_spec_validator"]),
    ];
    let mut tried = Vec::new();
    for (program, args) in attempts {
        let out = std::process::Command::new(program)
            .args(args)
            .arg(&file)
            .output();
        match out {
            Ok(out) if out.status.success() => return,
            Ok(out) => {
                let said = format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                // python3 without the module is not a verdict on the document.
                if said.contains("No module named") {
                    tried.push(format!("{program}: {said}"));
                    continue;
                }
                panic!("the OpenAPI document does not validate:\n{said}");
            }
            Err(e) => tried.push(format!("{program}: {e}")),
        }
    }
    panic!(
        "openapi-spec-validator could not be run ({}); install it with \
         `python3 -m pip install openapi-spec-validator` (scripts/test.sh does)",
        tried.join("; ")
    );
}

async fn unauthenticated(app: &TestApp, path: &str) -> (StatusCode, String) {
    let res = app.client.get(app.url(path)).send().await.unwrap();
    (res.status(), res.text().await.unwrap())
}

/// Samples of a scrape: `name{labels}` → value.
async fn scrape(app: &TestApp, url: &str, token: bool) -> BTreeMap<String, f64> {
    let mut req = app.client.get(url);
    if token {
        req = req.bearer_auth(ADMIN_TOKEN);
    }
    let res = req.send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.headers()[reqwest::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = res.text().await.unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').unwrap();
            (name.to_owned(), value.parse().unwrap())
        })
        .collect()
}

fn sample(samples: &BTreeMap<String, f64>, name: &str) -> f64 {
    *samples
        .get(name)
        .unwrap_or_else(|| panic!("{name} missing from {:#?}", samples.keys()))
}

#[tokio::test]
async fn metrics_move_with_traffic_and_need_the_token_but_on_the_metrics_address() {
    let app = spawn_with(|c| c.metrics_listen = Some("127.0.0.1:0".parse().unwrap())).await;
    let (fleet, url) = app.fleet_with_hook(rhai_fleet("let x = 1;")).await;
    let main = app.url("/metrics");
    let side = app.metrics_url.clone().expect("--metrics-listen is served");

    let res = app.client.get(&main).send().await.unwrap();
    assert_eq!(
        res.status(),
        StatusCode::UNAUTHORIZED,
        "no token, no metrics"
    );
    let res = app
        .client
        .get(&main)
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

    let before = scrape(&app, &main, true).await;
    let (s, _, _) = app
        .trigger(
            &app.url("/webhooks/wh_000000000000000000000000"),
            "text/plain",
            "x",
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let mut runs = Vec::new();
    for _ in 0..3 {
        runs.push(app.trigger_ok(&url, "{}").await);
    }
    for run in &runs {
        app.finished_run(run).await;
    }
    // The run's end is counted as the execution hands it over; the store write follows.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let after = scrape(&app, &side, false).await;
    let grew = |name: &str| sample(&after, name) - before.get(name).copied().unwrap_or(0.0);

    assert_eq!(grew(r#"wharf_ingress_requests_total{code="201"}"#), 3.0);
    assert_eq!(grew(r#"wharf_ingress_requests_total{code="400"}"#), 1.0);
    assert_eq!(
        grew(&format!(
            r#"wharf_runs_finished_total{{status="succeeded",fleet_id="{fleet}"}}"#
        )),
        3.0
    );
    assert_eq!(
        grew(r#"wharf_vessel_duration_seconds_count{kind="rhai"}"#),
        3.0
    );
    assert_eq!(grew(r#"wharf_vessel_fuel_used_count{kind="rhai"}"#), 3.0);
    assert!(grew(r#"wharf_vessel_fuel_used_sum{kind="rhai"}"#) > 0.0);
    assert!(grew("wharf_claim_seconds_count") >= 1.0);
    assert!(grew("wharf_ingest_commit_seconds_count") >= 1.0);
    assert_eq!(
        grew(r#"wharf_module_cache_hits_total{kind="rhai"}"#)
            + grew(r#"wharf_module_cache_misses_total{kind="rhai"}"#),
        3.0,
        "every vessel run looked its program up once"
    );
    assert_eq!(sample(&after, "wharf_queue_depth"), 0.0);
    assert_eq!(
        sample(&after, r#"wharf_claim_seconds_bucket{le="+Inf"}"#),
        sample(&after, "wharf_claim_seconds_count")
    );

    // The admin API's older address serves the same registry.
    let api = scrape(&app, &app.url("/api/v1/metrics"), true).await;
    assert!(api.contains_key("wharf_wasm_modules_compiled_total"));
    assert_eq!(
        sample(&api, r#"wharf_ingress_requests_total{code="201"}"#),
        sample(&after, r#"wharf_ingress_requests_total{code="201"}"#)
    );
}

#[tokio::test]
async fn queue_depth_and_age_are_read_from_the_store() {
    // An ingress-only node: calls are queued and nothing runs them.
    let app = spawn_with(|c| c.workers = 0).await;
    let (_, url) = app.fleet_with_hook(rhai_fleet("let x = 1;")).await;
    for _ in 0..2 {
        app.trigger_ok(&url, "{}").await;
    }
    let main = app.url("/metrics");
    let first = scrape(&app, &main, true).await;
    assert_eq!(sample(&first, "wharf_queue_depth"), 2.0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let later = scrape(&app, &main, true).await;
    let (a, b) = (
        sample(&first, "wharf_queue_oldest_age_seconds"),
        sample(&later, "wharf_queue_oldest_age_seconds"),
    );
    assert!(b >= 0.3 && b > a, "the oldest run ages: {a} then {b}");
}

#[tokio::test]
async fn json_logs_carry_request_and_run_ids() {
    let data = tempfile::tempdir().unwrap();
    let log = data.path().join("stderr.log");
    let server = crate::binary::start_with(&data.path().join("d"), 0, |cmd| {
        cmd.args(["--log-format", "json"])
            .env("WHARF_LOG", "info,wharf::api=debug")
            .stderr(std::fs::File::create(&log).unwrap());
    })
    .await;
    let (_, url) = server.fleet_with_hook(rhai_fleet("let x = 1;")).await;
    let res = reqwest::Client::new()
        .post(&url)
        .body("{}")
        .send()
        .await
        .unwrap();
    let request_id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    let body: Value = res.json().await.unwrap();
    let run_id = body["data"]["fleet_run_id"].as_str().unwrap().to_owned();
    let mut lines = Vec::new();
    for _ in 0..100 {
        lines = std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        if lines.iter().any(|l| l["run_id"] == run_id.as_str()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.kill();
    let with = |key: &str, id: &str| {
        lines
            .iter()
            .any(|l| l[key] == id || l["span"][key] == id || l["fields"][key] == id)
    };
    assert!(with("run_id", &run_id), "a line names the run: {lines:#?}");
    assert!(
        with("request_id", &request_id),
        "a line names the request: {lines:#?}"
    );
    assert!(
        lines
            .iter()
            .all(|l| l["level"].is_string() && l["timestamp"].is_string())
    );
}
