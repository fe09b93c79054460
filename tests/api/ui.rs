//! The dashboard: its sessions, CSRF rule and data calls over HTTP, and the whole of it in a
//! real browser (`ui/tests/dashboard.mjs`: Debian's chromium driven by playwright-core).

use reqwest::StatusCode;
use reqwest::header::{COOKIE, SET_COOKIE};
use serde_json::{Value, json};

use crate::helpers::*;

/// Signs in; returns the cookie pair (`wharf_session=…`) and the CSRF token.
async fn sign_in(app: &TestApp) -> (String, String) {
    let res = app
        .client
        .post(app.url("/api/v1/session"))
        .json(&json!({"token": ADMIN_TOKEN}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let set = res.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(set.contains(attr), "{attr} missing in {set}");
    }
    assert!(!set.contains("Secure"), "plain http: not Secure");
    assert!(!set.contains(ADMIN_TOKEN));
    let pair = set.split(';').next().unwrap().to_owned();
    let body: Value = res.json().await.unwrap();
    (pair, body["csrf_token"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn a_session_cookie_authorises_reads_and_with_its_csrf_token_writes() {
    let app = spawn_app().await;
    let fleet = app.demo.clone().unwrap().fleet_id;

    // A wrong or missing token signs nobody in, and sets no cookie.
    for body in [json!({"token": "wrong"}), json!({})] {
        let res = app
            .client
            .post(app.url("/api/v1/session"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        assert!(res.headers().get(SET_COOKIE).is_none());
    }

    let (cookie, csrf) = sign_in(&app).await;
    let with_cookie = |method: reqwest::Method, path: &str| {
        app.client
            .request(method, app.url(&format!("/api/v1{path}")))
            .header(COOKIE, &cookie)
    };
    // Reads need only the cookie.
    let res = with_cookie(reqwest::Method::GET, "/session")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.json::<Value>().await.unwrap()["csrf_token"], csrf);
    let res = with_cookie(reqwest::Method::GET, &format!("/fleets/{fleet}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);

    // A write without the CSRF token, or with another, is refused and changes nothing.
    for token in [None, Some("not-the-token")] {
        let mut req = with_cookie(
            reqwest::Method::POST,
            &format!("/fleets/{fleet}/webhook/rotate"),
        );
        if let Some(t) = token {
            req = req.header("x-csrf-token", t);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
        let body: Value = res.json().await.unwrap();
        assert!(body["error"].as_str().unwrap().contains("CSRF"), "{body}");
    }
    let (_, before) = app.get(&format!("/fleets/{fleet}")).await;
    let res = with_cookie(
        reqwest::Method::POST,
        &format!("/fleets/{fleet}/webhook/rotate"),
    )
    .header("x-csrf-token", &csrf)
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let (_, after) = app.get(&format!("/fleets/{fleet}")).await;
    assert_ne!(before["webhook"]["id"], after["webhook"]["id"]);

    // An altered cookie opens nothing.
    let altered = format!("{}x", &cookie[..cookie.len() - 1]);
    let res = app
        .client
        .get(app.url("/api/v1/session"))
        .header(COOKIE, altered)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

    // Signing out needs the CSRF token too; then the cookie is dead.
    let res = with_cookie(reqwest::Method::DELETE, "/session")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let res = with_cookie(reqwest::Method::DELETE, "/session")
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert!(
        res.headers()[SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let res = with_cookie(reqwest::Method::GET, &format!("/fleets/{fleet}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn sessions_end_when_the_admin_token_changes() {
    let app = spawn_app().await;
    let (cookie, _) = sign_in(&app).await;
    let data = app.stop().await;
    let app = spawn_in(data, |c| {
        c.admin_token = Some("another-admin-token-0123456789-abcdefgh".into())
    })
    .await;
    let res = app
        .client
        .get(app.url("/api/v1/session"))
        .header(COOKIE, cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_page_is_served_with_a_strict_policy_and_every_path_under_ui_is_the_page() {
    let app = spawn_app().await;
    let no_redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let res = no_redirect.get(app.url("/")).send().await.unwrap();
    assert!(res.status().is_redirection());
    assert_eq!(res.headers()["location"], "/ui/");
    for path in [
        "/ui/",
        "/ui/runs",
        "/ui/runs/0190a0a0-0000-7000-8000-000000000000",
    ] {
        let res = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        let csp = res.headers()["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
        assert!(res.text().await.unwrap().contains("/ui/app.js"));
    }
    let res = app.client.get(app.url("/ui/app.js")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    let etag = res.headers()["etag"].clone();
    let res = app
        .client
        .get(app.url("/ui/app.js"))
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
    let res = app.client.get(app.url("/ui/nope.js")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn run_stats_count_runs_by_status_per_bucket_and_fleet() {
    let app = spawn_app().await;
    let (ok_fleet, ok_url) = app.fleet_with_hook(rhai_fleet("0")).await;
    let (bad_fleet, bad_url) = app.fleet_with_hook(rhai_fleet("exit(3)")).await;
    let mut runs = Vec::new();
    for _ in 0..3 {
        runs.push(app.trigger_ok(&ok_url, "{}").await);
    }
    runs.push(app.trigger_ok(&bad_url, "{}").await);
    for r in &runs {
        app.finished_run(r).await;
    }
    let (s, stats) = app.get("/stats/runs?minutes=60&bucket_seconds=60").await;
    assert_eq!(s, StatusCode::OK, "{stats}");
    assert_eq!(stats["totals"]["succeeded"], 3);
    assert_eq!(stats["totals"]["failed"], 1);
    let buckets = stats["buckets"].as_array().unwrap();
    assert!((60..=62).contains(&buckets.len()), "{}", buckets.len());
    let last_two: u64 = buckets[buckets.len() - 2..]
        .iter()
        .map(|b| b["succeeded"].as_u64().unwrap() + b["failed"].as_u64().unwrap())
        .sum();
    assert_eq!(last_two, 4, "the runs are in the newest buckets");
    let fleets = stats["fleets"].as_array().unwrap();
    assert_eq!(fleets[0]["fleet_id"], ok_fleet.as_str(), "busiest first");
    assert_eq!(fleets[0]["runs"], 3);
    assert_eq!(fleets[1]["fleet_id"], bad_fleet.as_str());
    assert_eq!(fleets[1]["failed"], 1);
    assert_eq!(
        fleets[1]["failed_per_bucket"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_u64().unwrap())
            .sum::<u64>(),
        1
    );
    assert_eq!(stats["queue"]["queued"], 0);

    let (_, one) = app
        .get(&format!(
            "/stats/runs?minutes=5&bucket_seconds=10&fleet={bad_fleet}"
        ))
        .await;
    assert_eq!(one["totals"]["failed"], 1);
    assert_eq!(one["totals"]["succeeded"], 0);
    assert_eq!(one["bucket_seconds"], 10);

    for bad in [
        "minutes=0",
        "minutes=20000",
        "bucket_seconds=abc",
        "minutes=10080&bucket_seconds=60",
        "fleet=nope",
    ] {
        let (s, body) = app.get(&format!("/stats/runs?{bad}")).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert!(body["error"].as_str().is_some());
    }
}

#[tokio::test]
async fn a_runs_body_comes_back_as_stored_bytes_never_as_a_page() {
    let app = spawn_app().await;
    let (_, url) = app.fleet_with_hook(rhai_fleet("0")).await;
    let body: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
    let (s, b, _) = app.trigger(&url, "text/html", body.clone()).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let run = b["data"]["fleet_run_id"].as_str().unwrap();
    let res = app
        .client
        .get(app.url(&format!("/api/v1/runs/{run}/body?max_bytes=100")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "application/octet-stream");
    assert_eq!(res.headers()["x-content-type-options"], "nosniff");
    assert!(
        res.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment")
    );
    assert_eq!(res.headers()["x-body-size"], "10000");
    assert_eq!(res.bytes().await.unwrap().as_ref(), &body[..100]);
    let res = app
        .client
        .get(app.url(&format!("/api/v1/runs/{run}/body")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.bytes().await.unwrap().as_ref(), &body[..]);
    let (s, _) = app
        .get("/runs/0190a0a0-0000-7000-8000-000000000000/body")
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

/// The dashboard in Debian's chromium (`scripts/test.sh` installs it and `npm ci`s `ui/`):
/// sign-in, overview, a run appearing live, run details, live log lines, Try it, rotation, the
/// CSRF refusal, filters, a phone-sized screen, dark mode, 10,000 runs of history, sign-out.
/// Screenshots land in `target/ui-screenshots/`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_a_real_browser() {
    // The page's delivery check sends to a receiver on this machine: allowed explicitly, as
    // internal addresses are denied by default.
    let app = spawn_with(|c| {
        c.egress_allow = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    let root = env!("CARGO_MANIFEST_DIR");
    let shots = format!("{root}/target/ui-screenshots");
    let _ = std::fs::remove_dir_all(&shots);
    let output = tokio::process::Command::new("node")
        .arg(format!("{root}/ui/tests/dashboard.mjs"))
        .current_dir(format!("{root}/ui"))
        .env("WHARF_URL", &app.base)
        .env("WHARF_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("SCREENSHOT_DIR", &shots)
        .output()
        .await
        .expect("node runs (scripts/test.sh installs Node.js packages and chromium)");
    let out = String::from_utf8_lossy(&output.stdout);
    let err = String::from_utf8_lossy(&output.stderr);
    println!("{out}");
    eprintln!("{err}");
    assert!(
        output.status.success(),
        "browser test failed:\n{out}\n{err}"
    );
    assert!(
        out.contains("signed out"),
        "the script ran to its end:\n{out}"
    );
}

/// The dashboard's use of the API, checked by TypeScript: `ui/types/api.d.ts` is generated from
/// the server's OpenAPI document by openapi-typescript, and `app.js` (`// @ts-check`, its API
/// answers typed by JSDoc) must pass `tsc --noEmit` against it. A document that changed without
/// the types being regenerated fails here too; `WHARF_UPDATE_UI_TYPES=1` rewrites the file.
#[test]
fn the_dashboard_type_checks_against_the_served_contract() {
    let ui = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("ui");
    let bin = ui.join("node_modules/.bin");
    assert!(
        bin.join("tsc").exists() && bin.join("openapi-typescript").exists(),
        "ui/node_modules lacks typescript or openapi-typescript: run scripts/install-ui-test-deps.sh"
    );
    let (_, doc) = wharf::api::documented();
    let work = tempfile::tempdir().unwrap();
    let json = work.path().join("openapi.json");
    std::fs::write(&json, doc.to_pretty_json().unwrap()).unwrap();
    let generated = work.path().join("api.d.ts");
    let out = std::process::Command::new(bin.join("openapi-typescript"))
        .arg(&json)
        // A free-form object (the fleet document) is `unknown` values, not `never`.
        .arg("--empty-objects-unknown")
        .arg("--output")
        .arg(&generated)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openapi-typescript failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let committed = ui.join("types/api.d.ts");
    let fresh = std::fs::read_to_string(&generated).unwrap();
    if std::env::var_os("WHARF_UPDATE_UI_TYPES").is_some() {
        std::fs::write(&committed, &fresh).unwrap();
    }
    assert!(
        std::fs::read_to_string(&committed).ok().as_deref() == Some(fresh.as_str()),
        "ui/types/api.d.ts is not what the OpenAPI document gives; regenerate it with \
         WHARF_UPDATE_UI_TYPES=1 cargo test --test api the_dashboard_type_checks"
    );
    let out = std::process::Command::new(bin.join("tsc"))
        .arg("--project")
        .arg(ui.join("tsconfig.json"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the dashboard does not type-check against the API's types:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
