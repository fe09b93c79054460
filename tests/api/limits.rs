//! Limits on what a client controls, through the real server: every one is answered with a 4xx
//! or a closed connection, never a 500 or a crash, and the server keeps answering.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

/// A JSON array nested `depth` deep: `[[[…]]]`.
pub fn deep_array(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

/// Reads from a raw connection until the server closes it or `within` passes; returns what was
/// read and whether the connection was closed.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> (String, bool) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&got).into_owned(), true),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), false),
        }
    }
}

fn host(app: &TestApp) -> String {
    app.base.trim_start_matches("http://").to_owned()
}

#[tokio::test]
async fn header_count_header_size_and_url_length_have_their_4xx() {
    let app = spawn_with(|c| {
        c.max_header_count = 20;
        c.max_header_bytes = 16 << 10;
        c.max_url_bytes = 1024;
    })
    .await;
    let (_, url) = app.fleet_with_hook(rhai_fleet("0")).await;
    let client = reqwest::Client::new();

    let mut many = client.post(&url).body("{}");
    for i in 0..40 {
        many = many.header(format!("x-h-{i}"), "v");
    }
    assert_eq!(
        many.send().await.unwrap().status(),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );

    let big = client
        .post(&url)
        .header("x-big", "a".repeat(20 << 10))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(big.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);

    let long = client
        .post(format!("{url}?q={}", "a".repeat(2000)))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(long.status(), StatusCode::URI_TOO_LONG);
    let body: Value = long.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("limit of 1024 bytes"),
        "{body}"
    );
    // The admin API is behind the same limit.
    let long_admin = client
        .get(app.url(&format!("/api/v1/orgs?x={}", "a".repeat(2000))))
        .send()
        .await
        .unwrap();
    assert_eq!(long_admin.status(), StatusCode::URI_TOO_LONG);

    // Within every limit, the same call is taken.
    let ok = client
        .post(format!("{url}?q=short"))
        .header("x-h", "v")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn a_100000_deep_json_body_is_kept_as_a_string() {
    let app = spawn_app().await;
    let (_, url) = app
        .fleet_with_hook(rhai_fleet(
            r#"set_var("kind", type_of(payload)); set_var("len", payload.len());"#,
        ))
        .await;
    for body in [
        deep_array(100_000),
        format!("{}1{}", r#"{"a":"#.repeat(100_000), "}".repeat(100_000)),
    ] {
        let run_id = app.trigger_ok(&url, &body).await;
        let run = app.finished_run(&run_id).await;
        assert_eq!(run["status"], "succeeded", "{run}");
        assert_eq!(run["variables"]["kind"], "string", "{run}");
        assert_eq!(
            run["variables"]["len"],
            body.len().to_string(),
            "the body is given whole"
        );
    }
    // Nesting that serde_json accepts (up to 127 levels) is still structured.
    let run_id = app.trigger_ok(&url, &deep_array(100)).await;
    let run = app.finished_run(&run_id).await;
    assert_eq!(run["variables"]["kind"], "array", "{run}");
    assert_eq!(app.healthz().await, StatusCode::OK);
}

#[tokio::test]
async fn a_client_trickling_headers_is_disconnected() {
    let app = spawn_with(|c| c.header_timeout_seconds = 1).await;
    let mut stream = TcpStream::connect(host(&app)).await.unwrap();
    stream
        .write_all(b"POST /webhooks/wh_x HTTP/1.1\r\nhost: a\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    // One more header byte every 200 ms: never a whole head.
    let trickle = async {
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if stream.write_all(b"x").await.is_err() {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(1500), trickle).await;
    let (_, closed) = read_until_closed(&mut stream, Duration::from_secs(3)).await;
    // Without the header timeout the server would wait for the head for as long as it trickles.
    assert!(
        closed,
        "the connection is still open after {:?}",
        started.elapsed()
    );
    assert_eq!(app.healthz().await, StatusCode::OK);
}

#[tokio::test]
async fn a_client_trickling_its_body_gets_408() {
    let app = spawn_with(|c| c.body_timeout_seconds = 1).await;
    let (_, url) = app.fleet_with_hook(rhai_fleet("0")).await;
    let path = url.trim_start_matches(&app.base).to_owned();
    let mut stream = TcpStream::connect(host(&app)).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: a\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{{\"a\":"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let (answer, _) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(
        answer.starts_with("HTTP/1.1 408"),
        "after {:?}: {answer}",
        started.elapsed()
    );
    assert!(answer.contains("not received within 1 s"), "{answer}");
    assert!(started.elapsed() >= Duration::from_millis(900));
}

#[tokio::test]
async fn connections_beyond_the_maximum_wait_until_one_closes() {
    let app = spawn_with(|c| c.max_connections = 2).await;
    // Two connections that hold their slot: an unfinished request head each.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(host(&app)).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
        held.push(s);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let fresh = || {
        reqwest::Client::builder()
            .timeout(Duration::from_millis(800))
            .build()
            .unwrap()
    };
    let third = fresh().get(app.url("/healthz")).send().await;
    assert!(
        third.as_ref().is_err_and(|e| e.is_timeout()),
        "a third connection was served: {third:?}"
    );
    drop(held.pop());
    let started = Instant::now();
    loop {
        if let Ok(res) = fresh().get(app.url("/healthz")).send().await {
            assert_eq!(res.status(), StatusCode::OK);
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "never served");
    }
}

#[test]
fn wharf_run_keeps_a_100000_deep_payload_as_a_string() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("kind.rhai");
    std::fs::write(&script, r#"set_var("kind", type_of(payload));"#).unwrap();
    let payload = dir.path().join("deep.json");
    std::fs::write(&payload, deep_array(100_000)).unwrap();
    let (code, stdout, stderr) = crate::examples::wharf(&[
        "run",
        script.to_str().unwrap(),
        "--payload",
        payload.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["variables"]["kind"], "string", "{report}");
}

/// Sends one raw request (the head, then `body`) and, unless `stall`, nothing more; returns the
/// answer read until the server closes the connection or `within` passes.
async fn raw(
    app: &TestApp,
    method: &str,
    path: &str,
    head: &str,
    body: &[u8],
    within: Duration,
) -> String {
    let mut stream = TcpStream::connect(host(app)).await.unwrap();
    let request = format!("{method} {path} HTTP/1.1\r\nhost: a\r\nconnection: close\r\n{head}\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    // The server may answer (and close) before the whole body is written.
    let _ = stream.write_all(body).await;
    read_until_closed(&mut stream, within).await.0
}

/// Every route that takes a body, walked from the OpenAPI document, answers `413` to one byte
/// past its limit (declared, or streamed in chunks) and `408` to a body that stalls, and takes a
/// body at its limit; sign-in (which takes no credentials) included, and no `5xx` anywhere.
#[tokio::test]
async fn every_route_with_a_body_answers_413_past_its_limit_and_408_when_it_stalls() {
    let app = spawn_with(|c| {
        c.body_timeout_seconds = 1;
        c.max_body_bytes = 8 << 10;
        c.max_document_bytes = 128 << 10;
    })
    .await;
    let (_, hook) = app.fleet_with_hook(rhai_fleet("0")).await;
    let hook_path = hook.trim_start_matches(&app.base).to_owned();
    let (_, doc) = wharf::api::documented();
    let doc = serde_json::to_value(&doc).unwrap();
    let auth = format!("authorization: Bearer {ADMIN_TOKEN}\r\n");
    let mut walked = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if op.get("requestBody").is_none() {
                continue;
            }
            let method = method.to_uppercase();
            let (target, limit) = match (method.as_str(), path.as_str()) {
                (_, "/webhooks/{webhook_id}") => (hook_path.clone(), 8 << 10),
                (_, "/api/v1/fleets/{fleet}/dry-run") => (path.clone(), 8 << 10),
                ("POST", "/api/v1/session") => (path.clone(), wharf::api::MAX_SIGN_IN_BODY),
                ("POST", "/api/v1/projects/{project}/fleets")
                | ("PUT", "/api/v1/fleets/{fleet}") => (path.clone(), 128 << 10),
                _ => (path.clone(), wharf::api::MAX_ADMIN_BODY),
            };
            let target = crate::helpers::concrete_path(&target);
            let what = format!("{method} {path}");
            let at = |n: usize| format!("{auth}content-length: {n}\r\n");
            let within = Duration::from_secs(5);

            let fits = raw(
                &app,
                &method,
                &target,
                &at(limit),
                &vec![b' '; limit],
                within,
            )
            .await;
            assert!(fits.starts_with("HTTP/1.1 "), "{what}: {fits}");
            assert!(
                !fits.starts_with("HTTP/1.1 413")
                    && !fits.starts_with("HTTP/1.1 408")
                    && !fits.starts_with("HTTP/1.1 5"),
                "{what} refused a body at its limit of {limit}: {fits}"
            );

            let over = vec![b' '; limit + 1];
            let declared = raw(&app, &method, &target, &at(limit + 1), &over, within).await;
            assert!(
                declared.starts_with("HTTP/1.1 413"),
                "{what}, declared: {declared}"
            );

            let mut chunked = format!("{:x}\r\n", over.len()).into_bytes();
            chunked.extend_from_slice(&over);
            chunked.extend_from_slice(b"\r\n0\r\n\r\n");
            let streamed = raw(
                &app,
                &method,
                &target,
                &format!("{auth}transfer-encoding: chunked\r\n"),
                &chunked,
                within,
            )
            .await;
            assert!(
                streamed.starts_with("HTTP/1.1 413"),
                "{what}, streamed: {streamed}"
            );

            let started = Instant::now();
            let stalled = raw(&app, &method, &target, &at(100), b"{\"a\":", within).await;
            assert!(
                stalled.starts_with("HTTP/1.1 408"),
                "{what}, stalled, after {:?}: {stalled}",
                started.elapsed()
            );
            assert!(
                stalled.contains("not received within 1 s"),
                "{what}: {stalled}"
            );
            walked.push(what);
        }
    }
    assert!(walked.len() >= 10, "routes walked: {walked:?}");
    for route in ["POST /api/v1/session", "POST /webhooks/{webhook_id}"] {
        assert!(
            walked.iter().any(|w| w == route),
            "{route} not walked: {walked:?}"
        );
    }
    assert_eq!(app.healthz().await, StatusCode::OK);
}

/// One client address holding its whole `--max-connections-per-client` (stalled sign-ins that
/// hold their connections) has its further connections closed at once, and another address
/// (127.0.0.2: all of 127/8 is local) is still served `/healthz` and ingress. The real binary,
/// configured through the environment.
#[tokio::test]
async fn a_client_at_its_connection_cap_leaves_room_for_another() {
    let data = tempfile::tempdir().unwrap();
    let server = crate::binary::start_with(data.path(), 0, |cmd| {
        cmd.env("WHARF_MAX_CONNECTIONS", "40")
            .env("WHARF_MAX_CONNECTIONS_PER_CLIENT", "20");
    })
    .await;
    let (_, hook) = server.fleet_with_hook(rhai_fleet("0")).await;
    let addr = server.base.trim_start_matches("http://").to_owned();
    let stall = b"POST /api/v1/session HTTP/1.1\r\nhost: a\r\ncontent-length: 100\r\n\r\n{";
    let mut held = Vec::new();
    for _ in 0..45 {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        let _ = s.write_all(stall).await;
        held.push(s);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The connections past the cap were closed without an answer.
    let mut closed = 0;
    for s in &mut held {
        let (answer, was_closed) = read_until_closed(s, Duration::from_millis(50)).await;
        if was_closed {
            assert!(answer.is_empty(), "{answer}");
            closed += 1;
        }
    }
    // The test's admin calls may keep one pooled connection from 127.0.0.1 open too.
    let open = held.len() - closed;
    assert!(
        (19..=20).contains(&open),
        "{open} connections held open, {closed} closed, with a cap of 20"
    );

    let other = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let res = other
        .get(format!("{}/healthz", server.base))
        .send()
        .await
        .expect("another client is served /healthz");
    assert_eq!(res.status(), StatusCode::OK);
    let res = other
        .post(&hook)
        .body("{}")
        .send()
        .await
        .expect("another client is served ingress");
    assert_eq!(res.status(), StatusCode::CREATED);
    // The first address is still at its cap.
    let first = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    assert!(
        first
            .get(format!("{}/healthz", server.base))
            .send()
            .await
            .is_err()
    );
    drop(held);
}
