//! Webhook ingress: every status code of the contract, through the real server.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn accepted_call_is_201_with_ids_and_committed_run() {
    let app = spawn_app().await;
    let (fleet, url) = app
        .fleet_with_hook(rhai_fleet("set_var(\"seen\", body.len());"))
        .await;
    let (s, body, headers) = app.trigger(&url, "application/json", r#"{"a":1}"#).await;
    assert_eq!(s, StatusCode::CREATED);
    let rid = body["request"]["id"].as_str().unwrap();
    assert_eq!(headers["x-request-id"].to_str().unwrap(), rid);
    let data = &body["data"];
    assert_eq!(data["fleet_id"], fleet.as_str());
    for key in ["project_id", "org_id", "fleet_run_id"] {
        assert!(
            data[key].as_str().is_some_and(|s| s.len() == 36),
            "{key} in {body}"
        );
    }
    assert_eq!(
        body.as_object().unwrap().len(),
        2,
        "exactly request and data: {body}"
    );
    // Committed before the answer: the run is readable at once.
    let run_id = data["fleet_run_id"].as_str().unwrap();
    let (s, run) = app.get(&format!("/runs/{run_id}")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(run["request"]["id"], rid);
    let run = app.finished_run(run_id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["vessels"][0]["variables"]["seen"], "7");
}

#[tokio::test]
async fn any_body_shape_is_accepted() {
    let app = spawn_app().await;
    let (_, url) = app
        .fleet_with_hook(rhai_fleet("print(type_of(payload));"))
        .await;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("application/json", br#"{"x":[1,2]}"#.to_vec(), "map"),
        ("application/json", b"{broken".to_vec(), "string"),
        (
            "application/x-www-form-urlencoded",
            b"a=1&b=two".to_vec(),
            "map",
        ),
        ("text/plain", b"hello".to_vec(), "string"),
        (
            "application/octet-stream",
            vec![0xff, 0x00, 0xfe, 0x01],
            "blob",
        ),
        ("", Vec::new(), "string"),
    ];
    for (ct, body, expected) in cases {
        let (s, b, _) = app.trigger(&url, ct, body).await;
        assert_eq!(s, StatusCode::CREATED, "{ct}: {b}");
        let run = app
            .finished_run(b["data"]["fleet_run_id"].as_str().unwrap())
            .await;
        assert_eq!(run["status"], "succeeded", "{ct}: {run}");
        assert_eq!(run["vessels"][0]["stdout"], format!("{expected}\n"), "{ct}");
        assert_eq!(run["request"]["content_type"], ct);
    }
}

#[tokio::test]
async fn unknown_malformed_rotated_and_removed_ids_are_400_with_null_data() {
    let app = spawn_app().await;
    let (fleet, url) = app.fleet_with_hook(rhai_fleet("0")).await;
    let unknown = app.url("/webhooks/wh_AAAAAAAAAAAAAAAAAAAAAAAA");
    let malformed = app.url("/webhooks/not-an-id/extra");
    for target in [unknown.as_str(), malformed.as_str()] {
        let (s, b, h) = app.trigger(target, "application/json", "{}").await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{target}");
        assert!(b["data"].is_null() && b.get("data").is_some(), "{b}");
        assert_eq!(
            h["x-request-id"].to_str().unwrap(),
            b["request"]["id"].as_str().unwrap()
        );
    }
    // Used once before rotating, so a cached resolution of it must be dropped by the rotation.
    assert_eq!(
        app.trigger(&url, "text/plain", "x").await.0,
        StatusCode::CREATED
    );
    let (s, rotated) = app
        .post(&format!("/fleets/{fleet}/webhook/rotate"), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{rotated}");
    let new_url = rotated["url"].as_str().unwrap();
    assert_ne!(new_url, url);
    assert_eq!(
        app.trigger(&url, "text/plain", "x").await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        app.trigger(new_url, "text/plain", "x").await.0,
        StatusCode::CREATED
    );
    let (s, _) = app
        .admin(
            reqwest::Method::DELETE,
            &format!("/fleets/{fleet}/webhook"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(
        app.trigger(new_url, "text/plain", "x").await.0,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn other_methods_are_405_with_allow_post() {
    let app = spawn_app().await;
    let (_, url) = app.fleet_with_hook(rhai_fleet("0")).await;
    for method in [
        reqwest::Method::GET,
        reqwest::Method::PUT,
        reqwest::Method::DELETE,
    ] {
        let res = app
            .client
            .request(method.clone(), &url)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED, "{method}");
        assert_eq!(res.headers()["allow"], "POST");
        assert!(res.headers().contains_key("x-request-id"));
    }
}

#[tokio::test]
async fn body_over_the_limit_is_413() {
    let app = spawn_with(|c| c.max_body_bytes = 1024).await;
    let (fleet, url) = app.fleet_with_hook(rhai_fleet("0")).await;
    let (s, b, h) = app.trigger(&url, "text/plain", vec![b'x'; 1025]).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{b}");
    assert!(b["error"].as_str().unwrap().contains("1024"));
    assert!(h.contains_key("x-request-id"));
    // A streamed body without Content-Length is cut at the limit too.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        vec![Ok(vec![b'y'; 800]), Ok(vec![b'y'; 800])];
    let stream = reqwest::Body::wrap_stream(futures_stream(chunks));
    let res = app.client.post(&url).body(stream).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        app.trigger(&url, "text/plain", vec![b'x'; 1024]).await.0,
        StatusCode::CREATED
    );
    let (_, runs) = app.get(&format!("/fleets/{fleet}/runs")).await;
    assert_eq!(
        runs["runs"].as_array().unwrap().len(),
        1,
        "refused calls leave no run"
    );
}

fn futures_stream(
    chunks: Vec<Result<Vec<u8>, std::io::Error>>,
) -> impl futures_core::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    tokio_stream::iter(chunks)
}

#[tokio::test]
async fn reject_policy_answers_429_while_a_run_is_active() {
    let app = spawn_app().await;
    let mut doc = rhai_fleet("let t = timestamp(); while t.elapsed < 0.5 {} 0");
    doc["concurrency"] = json!("reject");
    let (_, url) = app.fleet_with_hook(doc).await;
    let first = app.trigger_ok(&url, "{}").await;
    let (s, b, h) = app.trigger(&url, "application/json", "{}").await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{b}");
    assert!(h.contains_key("retry-after"));
    app.finished_run(&first).await;
    assert_eq!(
        app.trigger(&url, "application/json", "{}").await.0,
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn secrets_in_headers_are_redacted_and_query_kept() {
    let app = spawn_app().await;
    let (_, url) = app
        .fleet_with_hook(rhai_fleet(
            "set_var(\"auth\", request.headers.authorization); set_var(\"q\", request.query.x)",
        ))
        .await;
    let res = app
        .client
        .post(format!("{url}?x=42"))
        .header("authorization", "Bearer super-secret")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let body: serde_json::Value = res.json().await.unwrap();
    let run = app
        .finished_run(body["data"]["fleet_run_id"].as_str().unwrap())
        .await;
    assert_eq!(run["request"]["headers"]["authorization"], "[redacted]");
    assert_eq!(run["variables"]["auth"], "[redacted]");
    assert_eq!(run["variables"]["q"], "42");
    assert!(!run.to_string().contains("super-secret"));
}

#[tokio::test]
async fn a_full_backlog_answers_429_with_retry_after_and_other_fleets_are_unaffected() {
    // No workers: every accepted call stays queued.
    let app = spawn_with(|c| {
        c.workers = 0;
        c.max_queued_per_fleet = 5;
    })
    .await;
    let (fleet, url) = app.fleet_with_hook(rhai_fleet("1")).await;
    // Simultaneous calls share commits; the cap is decided inside them, so none overshoots.
    let calls = (0..20).map(|_| app.trigger(&url, "application/json", "{}"));
    let answers = futures::future::join_all(calls).await;
    let created = answers
        .iter()
        .filter(|(s, _, _)| *s == StatusCode::CREATED)
        .count();
    assert_eq!(created, 5, "{answers:?}");
    for (s, body, headers) in answers.iter().filter(|(s, _, _)| *s != StatusCode::CREATED) {
        assert_eq!(*s, StatusCode::TOO_MANY_REQUESTS, "{body}");
        assert_eq!(headers["retry-after"], "5");
        let message = body["error"].as_str().unwrap();
        assert!(
            message.contains("5 runs queued") && message.contains("--max-queued-per-fleet"),
            "{message}"
        );
        assert!(body["request"]["id"].is_string());
    }
    let (_, runs) = app.get(&format!("/fleets/{fleet}/runs")).await;
    assert_eq!(
        runs["runs"].as_array().unwrap().len(),
        5,
        "refusals store nothing"
    );
    let (_, other) = app.fleet_with_hook(rhai_fleet("1")).await;
    let (s, body, _) = app.trigger(&other, "application/json", "{}").await;
    assert_eq!(
        s,
        StatusCode::CREATED,
        "another fleet is unaffected: {body}"
    );
}

#[tokio::test]
async fn low_free_disk_answers_503_with_retry_after_and_stores_nothing() {
    // A threshold no volume can meet stands in for a nearly full disk.
    let app = spawn_with(|c| c.min_free_disk = u64::MAX / 2).await;
    let (fleet, url) = app.fleet_with_hook(rhai_fleet("1")).await;
    let (s, body, headers) = app.trigger(&url, "application/json", "{}").await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(headers["retry-after"], "30");
    let message = body["error"].as_str().unwrap();
    assert!(
        message.contains("low on disk space") && message.contains("--min-free-disk"),
        "{message}"
    );
    let (_, runs) = app.get(&format!("/fleets/{fleet}/runs")).await;
    assert_eq!(runs["runs"].as_array().unwrap().len(), 0);
    // The admin API and health check still answer.
    assert_eq!(app.healthz().await, StatusCode::OK);
}
