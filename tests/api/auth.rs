//! Webhook authentication through the real server: bearer org keys, the three HMAC schemes
//! (signed by `openssl` and by the providers' own Python libraries), rotation of secrets and
//! URLs, secrets sealed at rest, redaction, the admin token on every route, CORS, and no secret
//! in a trace-level log.

use std::process::{Command, Stdio};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{ADMIN_TOKEN, TestApp, rhai_fleet, spawn_app, spawn_with};

const MISSING: &str = "Missing authorization header";
const WRONG: &str = "Wrong authentication credentials";

/// A new org with a fleet whose webhook is created with `auth`; returns (org id, fleet id, the
/// webhook as created).
async fn org_fleet(app: &TestApp, auth: Value) -> (String, String, Value) {
    let (s, org) = app.post("/orgs", json!({"name": "acme"})).await;
    assert_eq!(s, StatusCode::CREATED, "{org}");
    let org_id = org["id"].as_str().unwrap().to_owned();
    let (_, p) = app
        .post(&format!("/orgs/{org_id}/projects"), json!({"name": "p"}))
        .await;
    let project = p["id"].as_str().unwrap();
    let (s, fleet) = app
        .post(
            &format!("/projects/{project}/fleets"),
            rhai_fleet("let x = 1;"),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{fleet}");
    let fleet_id = fleet["id"].as_str().unwrap().to_owned();
    let (s, hook) = app
        .post(
            &format!("/fleets/{fleet_id}/webhook"),
            json!({"auth": auth}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{hook}");
    (org_id, fleet_id, hook)
}

async fn new_key(app: &TestApp, org: &str) -> (String, String) {
    let (s, key) = app.post(&format!("/orgs/{org}/api-keys"), json!({})).await;
    assert_eq!(s, StatusCode::CREATED, "{key}");
    (
        key["id"].as_str().unwrap().to_owned(),
        key["key"].as_str().unwrap().to_owned(),
    )
}

/// POSTs `body` to `url` with `headers`; returns status and the raw body text.
async fn call(
    app: &TestApp,
    url: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (StatusCode, String) {
    let mut req = app
        .client
        .post(url)
        .header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = req.body(body.to_owned()).send().await.unwrap();
    let status = res.status();
    (status, res.text().await.unwrap())
}

/// Asserts a 401 whose body is exactly `{"request":{"id":R},"error":message}`.
fn assert_401(got: (StatusCode, String), message: &str) {
    let (status, text) = got;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    let id = body["request"]["id"].as_str().expect("a request id");
    assert_eq!(body, json!({"request": {"id": id}, "error": message}));
    assert!(
        text.contains(&format!(r#""error":"{message}""#)),
        "byte for byte: {text}"
    );
}

async fn runs(app: &TestApp, fleet: &str) -> usize {
    let (_, page) = app.get(&format!("/fleets/{fleet}/runs")).await;
    page["runs"].as_array().unwrap().len()
}

#[tokio::test]
async fn bearer_webhooks_take_a_live_key_of_the_fleets_org_only() {
    let app = spawn_app().await;
    let (org, fleet, hook) = org_fleet(&app, json!("bearer")).await;
    assert_eq!(hook["auth"], json!({"mode": "bearer"}));
    let url = hook["url"].as_str().unwrap();
    let (key_id, key) = new_key(&app, &org).await;
    let (other_org, _, _) = org_fleet(&app, json!("none")).await;
    let (_, other_key) = new_key(&app, &other_org).await;

    assert_401(call(&app, url, &[], "{}").await, MISSING);
    assert_401(
        call(
            &app,
            url,
            &[("authorization", &format!("Basic {key}"))],
            "{}",
        )
        .await,
        MISSING,
    );
    assert_401(
        call(
            &app,
            url,
            &[("authorization", "Bearer wharf_key_nope")],
            "{}",
        )
        .await,
        WRONG,
    );
    assert_401(
        call(
            &app,
            url,
            &[("authorization", &format!("Bearer {other_key}"))],
            "{}",
        )
        .await,
        WRONG,
    );
    assert_eq!(runs(&app, &fleet).await, 0);
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let auth = format!("{scheme} {key}");
        let (s, text) = call(&app, url, &[("authorization", &auth)], "{}").await;
        assert_eq!(s, StatusCode::CREATED, "{scheme}: {text}");
    }
    assert_eq!(runs(&app, &fleet).await, 3);

    // A key in the query string is refused, with or without the header, and not stored.
    for q in [
        format!("?key={key}"),
        format!("?api_key={key}"),
        format!("?x={key}"),
    ] {
        let (s, text) = call(
            &app,
            &format!("{url}{q}"),
            &[("authorization", &format!("Bearer {key}"))],
            "{}",
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{text}");
        assert!(text.contains("query string"), "{text}");
        assert!(!text.contains(&key));
    }
    assert_eq!(runs(&app, &fleet).await, 3);

    // Listed without the key, with its prefix and last use.
    let mut listed = Value::Null;
    for _ in 0..100 {
        let (s, list) = app.get(&format!("/orgs/{org}/api-keys")).await;
        assert_eq!(s, StatusCode::OK);
        listed = list["api_keys"][0].clone();
        if !listed["last_used_at"].is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(listed["id"], key_id.as_str());
    assert!(key.starts_with(listed["prefix"].as_str().unwrap()));
    assert!(listed["last_used_at"].is_string(), "{listed}");
    assert!(!listed.to_string().contains(&key), "{listed}");
    let (s, _) = app
        .get("/orgs/00000000-0000-0000-0000-000000000000/api-keys")
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Revocation takes effect on the very next call, although the key was cached.
    let (s, _) = app
        .admin(Method::DELETE, &format!("/api-keys/{key_id}"), None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_401(
        call(
            &app,
            url,
            &[("authorization", &format!("Bearer {key}"))],
            "{}",
        )
        .await,
        WRONG,
    );
    let (_, list) = app.get(&format!("/orgs/{org}/api-keys")).await;
    assert!(list["api_keys"][0]["revoked_at"].is_string());

    // The mode can be changed back and forth.
    let (s, hook) = app
        .admin(
            Method::PATCH,
            &format!("/fleets/{fleet}/webhook"),
            Some(json!({"auth": "none"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{hook}");
    assert_eq!(call(&app, url, &[], "{}").await.0, StatusCode::CREATED);
}

/// `openssl dgst -sha256 -hmac <secret>` of a body, as hex.
fn openssl_hmac(secret: &str, body: &str) -> String {
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-hmac", secret])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("openssl runs");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    text.trim().rsplit(' ').next().unwrap().to_owned()
}

/// Runs a Python snippet (the providers' libraries, installed by scripts/test.sh) and returns
/// its output line.
fn python(script: &str, args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "python failed (scripts/test.sh installs stripe and standardwebhooks from PyPI): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn stripe_header(secret: &str, t: i64, body: &str) -> String {
    python(
        "import sys, stripe\n\
         t, secret, body = sys.argv[1], sys.argv[2], sys.argv[3]\n\
         sig = stripe.WebhookSignature._compute_signature(t + '.' + body, secret)\n\
         print('t=' + t + ',v1=' + sig)",
        &[&t.to_string(), secret, body],
    )
}

fn standard_signature(secret: &str, id: &str, t: i64, body: &str) -> String {
    python(
        "import sys, datetime\n\
         from standardwebhooks.webhooks import Webhook\n\
         secret, msg_id, t, body = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]\n\
         ts = datetime.datetime.fromtimestamp(t, tz=datetime.timezone.utc)\n\
         print(Webhook(secret).sign(msg_id, ts, body))",
        &[secret, id, &t.to_string(), body],
    )
}

fn now() -> i64 {
    wharf::util::now_ms() / 1000
}

#[tokio::test]
async fn github_signatures_made_by_openssl_pass_and_others_do_not() {
    let app = spawn_app().await;
    let given = "a-github-webhook-secret-0123456789";
    let (_, fleet, hook) = org_fleet(
        &app,
        json!({"mode": "hmac", "scheme": "github", "secret": given}),
    )
    .await;
    assert_eq!(hook["secret"], given, "shown once");
    assert_eq!(hook["auth"]["scheme"], "github");
    let url = hook["url"].as_str().unwrap();
    let body = r#"{"ref":"refs/heads/main"}"#;
    let sig = format!("sha256={}", openssl_hmac(given, body));
    let (s, text) = call(&app, url, &[("x-hub-signature-256", &sig)], body).await;
    assert_eq!(s, StatusCode::CREATED, "{text}");
    assert_401(
        call(&app, url, &[("x-hub-signature-256", &sig)], "{}").await,
        WRONG,
    );
    assert_401(call(&app, url, &[], body).await, MISSING);
    let bad = format!("sha256={}", openssl_hmac("another-secret-0123456789", body));
    assert_401(
        call(&app, url, &[("x-hub-signature-256", &bad)], body).await,
        WRONG,
    );

    // The shown secret is not shown again.
    let (_, f) = app.get(&format!("/fleets/{fleet}")).await;
    assert!(!f.to_string().contains(given), "{f}");

    // A generated secret has 256 bits and works the same way.
    let (s, hook) = app
        .admin(
            Method::PATCH,
            &format!("/fleets/{fleet}/webhook"),
            Some(json!({"auth": {"mode": "hmac", "scheme": "github"}})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{hook}");
    let generated = hook["secret"].as_str().unwrap();
    assert_eq!(generated.len(), 64, "32 bytes in hex");
    let sig = format!("sha256={}", openssl_hmac(generated, body));
    assert_eq!(
        call(&app, url, &[("x-hub-signature-256", &sig)], body)
            .await
            .0,
        StatusCode::CREATED
    );

    // Unknown schemes and short secrets are named.
    let (s, e) = app
        .admin(
            Method::PATCH,
            &format!("/fleets/{fleet}/webhook"),
            Some(json!({"auth": {"mode": "hmac", "scheme": "gitlab"}})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        e["error"].as_str().unwrap().contains("standard-webhooks"),
        "{e}"
    );
    let (s, _) = app
        .admin(
            Method::PATCH,
            &format!("/fleets/{fleet}/webhook"),
            Some(json!({"auth": {"mode": "hmac", "scheme": "github", "secret": "short"}})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn stripe_signatures_made_by_the_stripe_library_pass_within_300_seconds() {
    let app = spawn_app().await;
    let (_, _, hook) = org_fleet(&app, json!({"mode": "hmac", "scheme": "stripe"})).await;
    let secret = hook["secret"].as_str().unwrap();
    assert!(secret.starts_with("whsec_"));
    let url = hook["url"].as_str().unwrap();
    let body = r#"{"id":"evt_1","type":"charge.succeeded"}"#;
    let header = stripe_header(secret, now(), body);
    let (s, text) = call(&app, url, &[("stripe-signature", &header)], body).await;
    assert_eq!(s, StatusCode::CREATED, "{text}");
    // Several v1 (Stripe's own rotation): any may match.
    let v1 = header.split(",v1=").nth(1).unwrap();
    let t_part = header.split(',').next().unwrap();
    let several = format!("{t_part},v1={},v1={v1}", "0".repeat(64));
    assert_eq!(
        call(&app, url, &[("stripe-signature", &several)], body)
            .await
            .0,
        StatusCode::CREATED
    );
    for off in [-400, 400] {
        let stale = stripe_header(secret, now() + off, body);
        assert_401(
            call(&app, url, &[("stripe-signature", &stale)], body).await,
            WRONG,
        );
    }
    for off in [-200, 200] {
        let near = stripe_header(secret, now() + off, body);
        assert_eq!(
            call(&app, url, &[("stripe-signature", &near)], body)
                .await
                .0,
            StatusCode::CREATED,
            "{off} s is within the tolerance"
        );
    }
    assert_401(call(&app, url, &[], body).await, MISSING);
}

#[tokio::test]
async fn standard_webhooks_signed_by_the_library_pass_and_secrets_rotate_with_grace() {
    let app = spawn_app().await;
    let given = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let (_, fleet, hook) = org_fleet(
        &app,
        json!({"mode": "hmac", "scheme": "standard-webhooks", "secret": given}),
    )
    .await;
    let url = hook["url"].as_str().unwrap().to_owned();
    let body = r#"{"type":"invoice.paid"}"#;
    let signed = |secret: &str, t: i64| {
        let sig = standard_signature(secret, "msg_1", t, body);
        (t.to_string(), sig)
    };
    let send = |(t, sig): (String, String)| {
        let url = url.clone();
        let app = &app;
        async move {
            call(
                app,
                &url,
                &[
                    ("webhook-id", "msg_1"),
                    ("webhook-timestamp", &t),
                    ("webhook-signature", &sig),
                ],
                body,
            )
            .await
        }
    };
    let (s, text) = send(signed(given, now())).await;
    assert_eq!(s, StatusCode::CREATED, "{text}");
    // Clear of the 300 s edge: the test's clock and the server's read whole seconds a moment
    // apart (the exact edge is a unit test in crates/wharf-core/src/auth/hmac.rs).
    assert_401(send(signed(given, now() - 305)).await, WRONG);
    assert_401(send(signed(given, now() + 305)).await, WRONG);
    assert_401(
        call(&app, &url, &[("webhook-id", "msg_1")], body).await,
        MISSING,
    );

    // Rotation with a grace period: both secrets pass, then only the new one.
    let (s, rotated) = app
        .post(
            &format!("/fleets/{fleet}/webhook/secret/rotate"),
            json!({"grace_seconds": 2}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{rotated}");
    let new = rotated["secret"].as_str().unwrap().to_owned();
    assert!(new.starts_with("whsec_"));
    assert_eq!(rotated["auth"]["secrets"].as_array().unwrap().len(), 2);
    assert!(rotated["auth"]["secrets"][1]["expires_at"].is_string());
    assert_eq!(send(signed(&new, now())).await.0, StatusCode::CREATED);
    assert_eq!(send(signed(given, now())).await.0, StatusCode::CREATED);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_401(send(signed(given, now())).await, WRONG);
    assert_eq!(send(signed(&new, now())).await.0, StatusCode::CREATED);

    // Without grace the old one stops at once; too long a grace is refused.
    let (_, again) = app
        .post(&format!("/fleets/{fleet}/webhook/secret/rotate"), json!({}))
        .await;
    let newest = again["secret"].as_str().unwrap();
    assert_401(send(signed(&new, now())).await, WRONG);
    assert_eq!(send(signed(newest, now())).await.0, StatusCode::CREATED);
    let (s, _) = app
        .post(
            &format!("/fleets/{fleet}/webhook/secret/rotate"),
            json!({"grace_seconds": 8 * 24 * 3600}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

/// The run id of a 201 answer.
fn run_of(got: &(StatusCode, String)) -> String {
    assert_eq!(got.0, StatusCode::CREATED, "{}", got.1);
    let body: Value = serde_json::from_str(&got.1).unwrap();
    body["data"]["fleet_run_id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_replayed_stripe_call_is_answered_as_its_first_run() {
    let app = spawn_app().await;
    let (_, fleet, hook) = org_fleet(&app, json!({"mode": "hmac", "scheme": "stripe"})).await;
    let secret = hook["secret"].as_str().unwrap();
    let url = hook["url"].as_str().unwrap();
    let body = r#"{"id":"evt_replayed","type":"charge.succeeded"}"#;
    let header = stripe_header(secret, now(), body);
    let first = call(&app, url, &[("stripe-signature", &header)], body).await;
    let run = run_of(&first);
    // The captured call again, as it was; with an Idempotency-Key of the replayer's choosing;
    // with its v1 list padded. Each is the first call's answer, and no run is added.
    let (t_part, v1) = header.split_once(',').unwrap();
    let padded = format!("{t_part},v1={},{v1}", "0".repeat(64));
    for headers in [
        vec![("stripe-signature", header.as_str())],
        vec![
            ("stripe-signature", header.as_str()),
            ("idempotency-key", "replay-1"),
        ],
        vec![("stripe-signature", padded.as_str())],
    ] {
        let again = call(&app, url, &headers, body).await;
        assert_eq!(run_of(&again), run, "{headers:?}");
        assert_eq!(again.1, first.1, "the first call's answer, byte for byte");
    }
    assert_eq!(runs(&app, &fleet).await, 1);
    // Another event, or the same one signed anew (Stripe's own retry), is a new run.
    let other = r#"{"id":"evt_other","type":"charge.succeeded"}"#;
    let h = stripe_header(secret, now(), other);
    assert_ne!(
        run_of(&call(&app, url, &[("stripe-signature", &h)], other).await),
        run
    );
    let h = stripe_header(secret, now() - 10, body);
    assert_ne!(
        run_of(&call(&app, url, &[("stripe-signature", &h)], body).await),
        run
    );
    assert_eq!(runs(&app, &fleet).await, 3);
}

#[tokio::test]
async fn a_replayed_standard_webhooks_call_is_a_repeat_even_with_an_idempotency_key() {
    let app = spawn_app().await;
    let (_, fleet, hook) =
        org_fleet(&app, json!({"mode": "hmac", "scheme": "standard-webhooks"})).await;
    let secret = hook["secret"].as_str().unwrap();
    let url = hook["url"].as_str().unwrap();
    let body = r#"{"type":"invoice.paid"}"#;
    // One reading of the clock for the header and the signature: two could straddle a second.
    let at = now();
    let t = at.to_string();
    let sig = standard_signature(secret, "msg_replayed", at, body);
    let signed = [
        ("webhook-id", "msg_replayed"),
        ("webhook-timestamp", t.as_str()),
        ("webhook-signature", sig.as_str()),
    ];
    let first = call(&app, url, &signed, body).await;
    let run = run_of(&first);
    let again = call(&app, url, &signed, body).await;
    assert_eq!(again.1, first.1);
    // An unsigned Idempotency-Key does not make the replay a new call.
    let mut keyed = signed.to_vec();
    keyed.push(("idempotency-key", "replay-2"));
    assert_eq!(run_of(&call(&app, url, &keyed, body).await), run);
    assert_eq!(runs(&app, &fleet).await, 1);
    // A new message id is a new run.
    let at = now();
    let sig2 = standard_signature(secret, "msg_next", at, body);
    let t2 = at.to_string();
    let next = [
        ("webhook-id", "msg_next"),
        ("webhook-timestamp", t2.as_str()),
        ("webhook-signature", sig2.as_str()),
    ];
    assert_ne!(run_of(&call(&app, url, &next, body).await), run);
    assert_eq!(runs(&app, &fleet).await, 2);
}

#[tokio::test]
async fn secret_rotation_needs_an_hmac_webhook() {
    let app = spawn_app().await;
    let (_, fleet, _) = org_fleet(&app, json!("none")).await;
    let (s, _) = app
        .post(&format!("/fleets/{fleet}/webhook/secret/rotate"), json!({}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
}

#[tokio::test]
async fn hmac_secrets_are_sealed_in_the_database_file() {
    let app = spawn_app().await;
    let given = "a-plain-secret-that-must-not-be-stored";
    let (_, fleet, hook) = org_fleet(
        &app,
        json!({"mode": "hmac", "scheme": "github", "secret": given}),
    )
    .await;
    let (_, rotated) = app
        .post(
            &format!("/fleets/{fleet}/webhook/secret/rotate"),
            json!({"grace_seconds": 60}),
        )
        .await;
    let generated = rotated["secret"].as_str().unwrap().to_owned();
    // Still usable: the sealed secret verifies a call.
    let body = "{}";
    let sig = format!("sha256={}", openssl_hmac(given, body));
    assert_eq!(
        call(
            &app,
            hook["url"].as_str().unwrap(),
            &[("x-hub-signature-256", &sig)],
            body
        )
        .await
        .0,
        StatusCode::CREATED
    );
    let dir = app.stop().await;
    for file in ["wharf.db", "wharf.db-wal"] {
        let bytes = std::fs::read(dir.path().join(file)).unwrap_or_default();
        for secret in [given, generated.as_str()] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{secret} found in {file}"
            );
        }
    }
}

#[tokio::test]
async fn a_rotated_url_keeps_working_for_its_grace_period_then_answers_400() {
    let app = spawn_app().await;
    let (_, fleet, hook) = org_fleet(&app, json!("none")).await;
    let old = hook["url"].as_str().unwrap().to_owned();
    let (s, e) = app
        .post(
            &format!("/fleets/{fleet}/webhook/rotate"),
            json!({"grace_seconds": 7 * 24 * 3600 + 1}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    assert!(e["error"].as_str().unwrap().contains("7 days"));
    let (s, rotated) = app
        .post(
            &format!("/fleets/{fleet}/webhook/rotate"),
            json!({"grace_seconds": 2}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{rotated}");
    let new = rotated["url"].as_str().unwrap();
    assert_ne!(new, old);
    assert_eq!(rotated["previous_url"], old.as_str());
    assert_eq!(call(&app, &old, &[], "{}").await.0, StatusCode::CREATED);
    assert_eq!(call(&app, new, &[], "{}").await.0, StatusCode::CREATED);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (s, text) = call(&app, &old, &[], "{}").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{text}");
    assert_eq!(call(&app, new, &[], "{}").await.0, StatusCode::CREATED);
    // A rotation without grace ends the previous URL at once.
    let (_, third) = app
        .post(&format!("/fleets/{fleet}/webhook/rotate"), json!({}))
        .await;
    assert_eq!(call(&app, new, &[], "{}").await.0, StatusCode::BAD_REQUEST);
    assert!(third.get("previous_url").is_none());
}

#[tokio::test]
async fn provider_secret_headers_and_secret_query_keys_are_stored_redacted() {
    let app = spawn_app().await;
    let (fleet, url) = app.fleet_with_hook(rhai_fleet("let x = 1;")).await;
    let headers = [
        ("x-gitlab-token", "gl-secret-1"),
        ("x-slack-signature", "v0=slack-secret-2"),
        ("x-shopify-hmac-sha256", "shopify-secret-3"),
        ("x-twilio-signature", "twilio-secret-4"),
        ("svix-signature", "v1,svix-secret-5"),
    ];
    let (s, text) = call(
        &app,
        &format!("{url}?token=query-secret-6&sig=query-secret-7&page=2"),
        &headers,
        "{}",
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{text}");
    let (_, page) = app.get(&format!("/fleets/{fleet}/runs")).await;
    let run_id = page["runs"][0]["id"].as_str().unwrap();
    let (_, run) = app.get(&format!("/runs/{run_id}")).await;
    let request = &run["request"];
    for (name, _) in headers {
        assert_eq!(request["headers"][name], "[redacted]", "{name}");
    }
    assert_eq!(request["query"]["token"], "[redacted]");
    assert_eq!(request["query"]["sig"], "[redacted]");
    assert_eq!(request["query"]["page"], "2");
    assert!(!run.to_string().contains("secret-"), "{run}");
}

/// Every route of the router, called without the admin token and with a wrong one, answers 401;
/// only health, the OpenAPI document and webhook ingress are public.
#[tokio::test]
async fn every_admin_route_needs_the_token() {
    // Each route is called with a wrong token: the limit on failed sign-ins would answer 429.
    let app = spawn_with(|c| c.max_failed_sign_ins = 0).await;
    let (_, doc) = wharf::api::documented();
    let doc = serde_json::to_value(&doc).unwrap();
    let public = ["/healthz", "/api/v1/openapi.json", "/webhooks/{webhook_id}"];
    let mut walked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        if public.contains(&path.as_str()) {
            continue;
        }
        let concrete = crate::helpers::concrete_path(path);
        for method in item.as_object().unwrap().keys() {
            let method: Method = method.to_uppercase().parse().unwrap();
            for auth in [None, Some("Bearer wrong-token"), Some("Basic x")] {
                let mut req = app
                    .client
                    .request(method.clone(), app.url(&concrete))
                    .json(&json!({}));
                if let Some(a) = auth {
                    req = req.header("authorization", a);
                }
                let res = req.send().await.unwrap();
                assert_eq!(
                    res.status(),
                    StatusCode::UNAUTHORIZED,
                    "{method} {path} with {auth:?}"
                );
            }
            walked += 1;
        }
    }
    assert!(walked > 20, "{walked} operations walked");
    // The scheme name is case-insensitive for the admin token too.
    let res = app
        .client
        .get(app.url("/api/v1/orgs"))
        .header("authorization", format!("bearer {ADMIN_TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn cors_is_off_unless_an_origin_is_given() {
    async fn preflight(app: &TestApp, origin: &str) -> Option<String> {
        let res = app
            .client
            .request(Method::OPTIONS, app.url("/api/v1/orgs"))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .send()
            .await
            .unwrap();
        res.headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap().to_owned())
    }
    let app = spawn_app().await;
    assert_eq!(preflight(&app, "https://evil.example").await, None);
    let res = app
        .client
        .get(app.url("/api/v1/orgs"))
        .header("origin", "https://evil.example")
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert!(res.headers().get("access-control-allow-origin").is_none());

    let app = spawn_with(|c| c.cors_origins = vec!["https://admin.example".into()]).await;
    assert_eq!(
        preflight(&app, "https://admin.example").await.as_deref(),
        Some("https://admin.example")
    );
    assert_eq!(preflight(&app, "https://evil.example").await, None);
    let res = app
        .client
        .get(app.url("/api/v1/orgs"))
        .header("origin", "https://admin.example")
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        StatusCode::UNAUTHORIZED,
        "still needs the token"
    );
}

/// The real binary at `WHARF_LOG=trace` through every auth flow: no secret, key, token or
/// signature appears anywhere in its output.
#[tokio::test]
async fn no_secret_reaches_the_log_at_trace_level() {
    let data = tempfile::tempdir().unwrap();
    let log = data.path().join("stderr.log");
    let file = std::fs::File::create(&log).unwrap();
    let server = crate::binary::start_with(data.path(), 0, |cmd| {
        cmd.env("WHARF_LOG", "trace").stderr(file);
    })
    .await;
    let client = reqwest::Client::new();
    let post = |url: String, headers: Vec<(&'static str, String)>, body: &'static str| {
        let client = client.clone();
        async move {
            let mut req = client.post(url).body(body);
            for (k, v) in headers {
                req = req.header(k, v);
            }
            req.send().await.unwrap().status()
        }
    };
    let mut secrets: Vec<String> = vec![ADMIN_TOKEN.to_owned()];

    let (_, org) = server.post("/orgs", json!({"name": "o"})).await;
    let org = org["id"].as_str().unwrap().to_owned();
    let (_, p) = server
        .post(&format!("/orgs/{org}/projects"), json!({"name": "p"}))
        .await;
    let (_, fleet) = server
        .post(
            &format!("/projects/{}/fleets", p["id"].as_str().unwrap()),
            rhai_fleet("let x = 1;"),
        )
        .await;
    let fleet = fleet["id"].as_str().unwrap().to_owned();
    let (_, key) = server
        .post(&format!("/orgs/{org}/api-keys"), json!({}))
        .await;
    let key_id = key["id"].as_str().unwrap().to_owned();
    let key = key["key"].as_str().unwrap().to_owned();
    secrets.push(key.clone());

    // Bearer: good, wrong, in the query, revoked.
    let (s, hook) = server
        .post(
            &format!("/fleets/{fleet}/webhook"),
            json!({"auth": "bearer"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let url = hook["url"].as_str().unwrap().to_owned();
    let bearer = format!("Bearer {key}");
    assert_eq!(
        post(url.clone(), vec![("authorization", bearer.clone())], "{}").await,
        StatusCode::CREATED
    );
    let wrong = "wharf_key_thisiswrongbutsecrettoo0123456789abcdefghijkl".to_owned();
    secrets.push(wrong.clone());
    assert_eq!(
        post(
            url.clone(),
            vec![("authorization", format!("Bearer {wrong}"))],
            "{}"
        )
        .await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        post(format!("{url}?key={key}"), vec![], "{}").await,
        StatusCode::BAD_REQUEST
    );
    let (s, _) = server
        .call(Method::DELETE, &format!("/api-keys/{key_id}"), None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(
        post(url.clone(), vec![("authorization", bearer)], "{}").await,
        StatusCode::UNAUTHORIZED
    );

    // Every HMAC scheme: set (given and generated), signed calls, a wrong one, a rotation.
    let body = r#"{"a":1}"#;
    for scheme in ["github", "stripe", "standard-webhooks"] {
        let given = if scheme == "standard-webhooks" {
            "whsec_c2VjcmV0LWdpdmVuLWZvci10aGUtbG9nLXRlc3Q=".to_owned()
        } else {
            format!("given-{scheme}-secret-for-the-log-test")
        };
        let (s, hook) = server
            .call(
                Method::PATCH,
                &format!("/fleets/{fleet}/webhook"),
                Some(json!({"auth": {"mode": "hmac", "scheme": scheme, "secret": given}})),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{hook}");
        let (s, rotated) = server
            .post(
                &format!("/fleets/{fleet}/webhook/secret/rotate"),
                json!({"grace_seconds": 60}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{rotated}");
        let generated = rotated["secret"].as_str().unwrap().to_owned();
        for secret in [&given, &generated] {
            let headers: Vec<(&'static str, String)> = match scheme {
                "github" => vec![(
                    "x-hub-signature-256",
                    format!("sha256={}", openssl_hmac(secret, body)),
                )],
                "stripe" => vec![("stripe-signature", stripe_header(secret, now(), body))],
                _ => {
                    let at = now();
                    vec![
                        ("webhook-id", "msg_log".to_owned()),
                        ("webhook-timestamp", at.to_string()),
                        (
                            "webhook-signature",
                            standard_signature(secret, "msg_log", at, body),
                        ),
                    ]
                }
            };
            for (_, v) in &headers {
                // The whole value, and its hex or base64 part alone.
                for part in std::iter::once(v.as_str()).chain(v.split([',', '=', ' '])) {
                    if part.len() >= 20 {
                        secrets.push(part.to_owned());
                    }
                }
            }
            assert_eq!(
                post(url.clone(), headers, body).await,
                StatusCode::CREATED,
                "{scheme}"
            );
        }
        assert_eq!(
            post(
                url.clone(),
                vec![("x-hub-signature-256", "sha256=00".into())],
                body
            )
            .await,
            StatusCode::UNAUTHORIZED
        );
        secrets.push(given);
        secrets.push(generated);
    }
    let (s, _) = server
        .post(
            &format!("/fleets/{fleet}/webhook/rotate"),
            json!({"grace_seconds": 60}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);

    // The dashboard's sign-in: a wrong token, the right one, calls with the cookie, sign-out.
    let session = |body: Value| {
        client
            .post(format!("{}/api/v1/session", server.base))
            .json(&body)
            .send()
    };
    let wrong_admin = "wrong-admin-token-that-is-long-enough-0123456789".to_owned();
    secrets.push(wrong_admin.clone());
    let res = session(json!({"token": wrong_admin})).await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let wrong_bearer = "wrong-bearer-admin-token-long-enough-0123456789".to_owned();
    secrets.push(wrong_bearer.clone());
    let res = client
        .get(format!("{}/api/v1/orgs", server.base))
        .bearer_auth(&wrong_bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res = session(json!({"token": ADMIN_TOKEN})).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let cookie = res.headers()["set-cookie"].to_str().unwrap();
    let cookie = cookie.split(';').next().unwrap().to_owned();
    let csrf = res.json::<Value>().await.unwrap()["csrf_token"]
        .as_str()
        .unwrap()
        .to_owned();
    secrets.push(cookie["wharf_session=".len()..].to_owned());
    secrets.push(csrf.clone());
    let with_cookie = |method: Method, path: &str| {
        client
            .request(method, format!("{}/api/v1{path}", server.base))
            .header("cookie", &cookie)
    };
    let res = with_cookie(Method::GET, &format!("/fleets/{fleet}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let res = with_cookie(Method::POST, &format!("/fleets/{fleet}/webhook/rotate"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let res = with_cookie(Method::DELETE, "/session")
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    drop(server);

    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.lines().count() > 50,
        "trace logging is on: {} lines",
        text.lines().count()
    );
    for secret in &secrets {
        assert!(
            !text.contains(secret.as_str()),
            "{secret:?} appears in the log"
        );
    }
    // Both failed sign-ins are logged at warn, with the client's address.
    let failed: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("failed sign-in") && l.contains("WARN"))
        .collect();
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert!(failed.iter().all(|l| l.contains("127.0.0.1")), "{failed:?}");
}

/// A client from 127.0.0.1 that sent ten wrong admin tokens (at sign-in and as bearer tokens)
/// is answered 429 with `Retry-After`, even with the right token, before its token is compared;
/// another address (127.0.0.2) still signs in and calls the API.
#[tokio::test]
async fn failed_sign_ins_are_limited_per_client_address() {
    let app = spawn_app().await;
    let from = |ip: [u8; 4]| {
        reqwest::Client::builder()
            .local_address(std::net::IpAddr::from(ip))
            .build()
            .unwrap()
    };
    let (first, second) = (from([127, 0, 0, 1]), from([127, 0, 0, 2]));
    for i in 0..10 {
        let wrong = format!("wrong-admin-token-number-{i}-0123456789abcdef");
        let res = if i % 2 == 0 {
            first
                .post(app.url("/api/v1/session"))
                .json(&json!({"token": wrong}))
                .send()
                .await
        } else {
            first
                .get(app.url("/api/v1/orgs"))
                .bearer_auth(&wrong)
                .send()
                .await
        };
        assert_eq!(res.unwrap().status(), StatusCode::UNAUTHORIZED, "try {i}");
    }
    let refused = [
        first
            .post(app.url("/api/v1/session"))
            .json(&json!({"token": ADMIN_TOKEN})),
        first.get(app.url("/api/v1/orgs")).bearer_auth(ADMIN_TOKEN),
        first.get(app.url("/api/v1/orgs")).bearer_auth("wrong"),
    ];
    for req in refused {
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        let retry: u64 = res.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=60).contains(&retry), "{retry}");
        let body: Value = res.json().await.unwrap();
        assert!(
            body["error"].as_str().unwrap().contains("failed sign-ins"),
            "{body}"
        );
    }
    let res = second
        .post(app.url("/api/v1/session"))
        .json(&json!({"token": ADMIN_TOKEN}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let res = second
        .get(app.url("/api/v1/orgs"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

/// A given admin token shorter than 32 bytes stops the binary at start with a clear error.
#[tokio::test]
async fn a_short_admin_token_is_refused_at_start() {
    let data = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--no-demo",
            "--data-dir",
        ])
        .arg(data.path())
        .env("WHARF_ADMIN_TOKEN", "only-27-bytes-0123456789abc")
        .env("WHARF_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > std::time::Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the server started with a 27-byte admin token");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(!status.success());
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(
        err.contains("27 bytes") && err.contains("at least 32"),
        "{err}"
    );
    assert!(!err.contains("only-27-bytes"), "the token is echoed: {err}");
}
