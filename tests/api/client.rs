//! The client commands as an operator uses them: the real `wharf` binary against a real
//! server, its output and its exit codes.

use std::path::Path;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{ADMIN_TOKEN, TestApp, rhai_fleet, spawn_with};

/// Runs `wharf ARGS` against `app`; returns exit code, stdout and stderr.
async fn wharf(app: &TestApp, args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args(args)
        .env("WHARF_URL", &app.base)
        .env("WHARF_ADMIN_TOKEN", ADMIN_TOKEN)
        .env_remove("WHARF_LOG_FORMAT")
        .output()
        .await
        .expect("wharf runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Like [`wharf`] with `--json`, parsing stdout; asserts exit 0.
async fn wharf_json(app: &TestApp, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.push("--json");
    let (code, out, err) = wharf(app, &args).await;
    assert_eq!(code, 0, "wharf {args:?}: {out}{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

/// A folder of two fleet files, one naming its script by `source_file`.
fn fleet_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "check.rhai", r#"set_var("seen", "1");"#);
    write(
        dir.path(),
        "alpha.json",
        r#"{"name": "alpha", "variables": {"n": 1},
            "vessels": [{"name": "check", "kind": "rhai", "source_file": "check.rhai"}]}"#,
    );
    write(
        dir.path(),
        "beta.json",
        r#"{"name": "beta", "concurrency": "queue",
            "vessels": [{"name": "b", "kind": "rhai", "source": "if payload.fail == true { exit(3) }"}]}"#,
    );
    write(dir.path(), "notes.txt", "not a fleet");
    dir
}

fn results(answer: &Value) -> Vec<(String, String)> {
    answer["fleets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["name"].as_str().unwrap().to_owned(),
                f["result"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn pair(name: &str, result: &str) -> (String, String) {
    (name.to_owned(), result.to_owned())
}

#[tokio::test]
async fn apply_creates_then_changes_nothing_then_updates_what_changed() {
    let app = spawn_with(|c| c.no_demo = true).await;
    let dir = fleet_dir();
    let folder = dir.path().to_str().unwrap();

    let (code, out, err) = wharf(
        &app,
        &["apply", "-f", folder, "--org", "acme", "--project", "tools"],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("created org acme"), "{out}");
    assert!(out.contains("created project tools"), "{out}");
    assert!(out.contains("2 created, 0 updated, 0 unchanged"), "{out}");

    let again = wharf_json(
        &app,
        &["apply", "-f", folder, "--org", "acme", "--project", "tools"],
    )
    .await;
    assert_eq!(
        results(&again),
        [pair("alpha", "unchanged"), pair("beta", "unchanged")]
    );
    assert_eq!(again["notes"], json!([]), "org and project were found");
    let (code, out, _) = wharf(
        &app,
        &["apply", "-f", folder, "--org", "acme", "--project", "tools"],
    )
    .await;
    assert_eq!(code, 0);
    assert!(out.contains("nothing to change"), "{out}");

    // A changed script (through its source_file) and nothing else.
    write(dir.path(), "check.rhai", r#"set_var("seen", "2");"#);
    let project = again["project_id"].as_str().unwrap();
    let changed = wharf_json(
        &app,
        &["apply", "-f", folder, "--project", project, "--webhook"],
    )
    .await;
    assert_eq!(
        results(&changed),
        [pair("alpha", "updated"), pair("beta", "unchanged")]
    );
    let alpha = &changed["fleets"][0];
    let (_, stored) = app
        .get(&format!("/fleets/{}", alpha["id"].as_str().unwrap()))
        .await;
    assert!(
        stored["vessels"][0]["source"]
            .as_str()
            .unwrap()
            .contains('2')
    );
    // --webhook made one for each, and its URL is live.
    assert_eq!(alpha["webhook_created"], true);
    let url = alpha["webhook_url"].as_str().unwrap();
    assert_eq!(stored["webhook"]["url"], url);
    app.trigger_ok(url, "{}").await;

    // A single file, and a changed setting rather than code.
    let beta = dir.path().join("beta.json");
    write(
        dir.path(),
        "beta.json",
        r#"{"name": "beta", "concurrency": "reject",
            "vessels": [{"name": "b", "kind": "rhai", "source": "if payload.fail == true { exit(3) }"}]}"#,
    );
    let one = wharf_json(
        &app,
        &["apply", "-f", beta.to_str().unwrap(), "--project", project],
    )
    .await;
    assert_eq!(results(&one), [pair("beta", "updated")]);

    // A broken file changes nothing and is a usage error.
    write(
        dir.path(),
        "broken.json",
        r#"{"name": "x", "vessels": [{"kind": "lua"}]}"#,
    );
    let (code, _, err) = wharf(&app, &["apply", "-f", folder, "--project", project]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("broken.json"), "{err}");
    std::fs::remove_file(dir.path().join("broken.json")).unwrap();
    let (code, _, err) = wharf(&app, &["apply", "-f", folder, "--project", "tools"]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--org"), "a project name needs its org: {err}");
}

#[tokio::test]
async fn fleets_and_webhooks_by_name_or_id() {
    let app = spawn_with(|c| c.no_demo = true).await;
    let dir = fleet_dir();
    let applied = wharf_json(
        &app,
        &[
            "apply",
            "-f",
            dir.path().to_str().unwrap(),
            "--org",
            "o",
            "--project",
            "p",
        ],
    )
    .await;
    let alpha = applied["fleets"][0]["id"].as_str().unwrap().to_owned();

    let (code, out, _) = wharf(&app, &["fleets", "ls"]).await;
    assert_eq!(code, 0);
    assert!(out.starts_with("NAME"), "{out}");
    assert!(
        out.contains("alpha") && out.contains("beta") && out.contains(&alpha),
        "{out}"
    );
    let listed = wharf_json(
        &app,
        &[
            "fleets",
            "ls",
            "--project",
            applied["project_id"].as_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(listed["fleets"].as_array().unwrap().len(), 2);

    let by_name = wharf_json(&app, &["fleets", "get", "alpha"]).await;
    assert_eq!(by_name["id"], alpha.as_str());
    let (code, out, _) = wharf(&app, &["fleets", "get", &alpha]).await;
    assert_eq!(code, 0);
    assert!(out.contains("check") && out.contains("n = 1"), "{out}");

    let unknown = uuid::Uuid::new_v4().to_string();
    let (code, _, err) = wharf(&app, &["fleets", "get", &unknown]).await;
    assert_eq!(code, 3);
    assert!(err.contains(&format!("no fleet has id {unknown}")), "{err}");
    let (code, _, err) = wharf(&app, &["fleets", "get", "nope"]).await;
    assert_eq!(code, 3);
    assert!(err.contains("no fleet is named \"nope\""), "{err}");
    // The same name in another project makes the name ambiguous: the error lists both ids.
    let other = app.project().await;
    let mut doc = rhai_fleet("let x = 1;");
    doc["name"] = json!("alpha");
    let (_, twin) = app.post(&format!("/projects/{other}/fleets"), doc).await;
    let (code, _, err) = wharf(&app, &["fleets", "get", "alpha"]).await;
    assert_eq!(code, 3);
    assert!(err.contains("ambiguous"), "{err}");
    assert!(
        err.contains(&alpha) && err.contains(twin["id"].as_str().unwrap()),
        "{err}"
    );

    let (code, created, err) = wharf(&app, &["webhook", "create", "beta"]).await;
    assert_eq!(code, 0, "{err}");
    let created = created.trim().to_owned();
    app.trigger_ok(&created, r#"{"fail": false}"#).await;
    let (code, _, err) = wharf(&app, &["webhook", "create", "beta"]).await;
    assert_eq!(code, 3, "a second webhook is refused");
    assert!(err.contains("409"), "{err}");

    let (code, rotated, _) = wharf(&app, &["webhook", "rotate", "beta"]).await;
    assert_eq!(code, 0);
    let rotated = rotated.trim().to_owned();
    assert_ne!(rotated, created);
    let (s, _, _) = app.trigger(&created, "application/json", "{}").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "the old URL is dead");

    let (code, out, _) = wharf(&app, &["webhook", "rm", "beta"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("removed"), "{out}");
    let (s, _, _) = app.trigger(&rotated, "application/json", "{}").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn trigger_wait_exits_with_the_runs_status_and_runs_are_listed() {
    let app = spawn_with(|c| c.no_demo = true).await;
    let dir = fleet_dir();
    wharf_json(
        &app,
        &[
            "apply",
            "-f",
            dir.path().to_str().unwrap(),
            "--org",
            "o",
            "--project",
            "p",
            "--webhook",
        ],
    )
    .await;
    write(dir.path(), "ok.json", r#"{"fail": false}"#);
    write(dir.path(), "bad.json", r#"{"fail": true}"#);
    let ok = dir.path().join("ok.json");
    let bad = dir.path().join("bad.json");

    let (code, out, err) = wharf(
        &app,
        &[
            "trigger",
            "beta",
            "--payload",
            ok.to_str().unwrap(),
            "--wait",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("status:   succeeded"), "{out}");
    let failed = wharf(
        &app,
        &[
            "trigger",
            "beta",
            "--payload",
            bad.to_str().unwrap(),
            "--wait",
            "--json",
        ],
    )
    .await;
    assert_eq!(failed.0, 1, "a failed run exits 1: {failed:?}");
    let run: Value = serde_json::from_str(&failed.1).unwrap();
    assert_eq!(run["status"], "failed");
    assert_eq!(run["vessels"][0]["exit_code"], 3);

    // Without --wait: the ids, exit 0 whatever the run will do.
    let queued = wharf_json(
        &app,
        &["trigger", "beta", "--payload", bad.to_str().unwrap()],
    )
    .await;
    let third = queued["data"]["fleet_run_id"].as_str().unwrap().to_owned();
    app.finished_run(&third).await;

    let page = wharf_json(&app, &["runs", "ls", "--fleet", "beta"]).await;
    let statuses: Vec<&str> = page["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["failed", "failed", "succeeded"], "newest first");
    let failed_only = wharf_json(&app, &["runs", "ls", "--status", "failed", "--limit", "1"]).await;
    assert_eq!(failed_only["runs"][0]["id"], third.as_str());
    assert_eq!(failed_only["runs"].as_array().unwrap().len(), 1);
    let (code, out, _) = wharf(&app, &["runs", "ls"]).await;
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 4, "a header and three runs: {out}");
    let (code, out, _) = wharf(&app, &["runs", "get", &third]).await;
    assert_eq!(code, 0);
    assert!(out.contains("status:   failed"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("b ") && l.contains("failed")),
        "{out}"
    );

    // Errors name what is wrong, with their exit codes.
    let (code, _, err) = wharf(&app, &["trigger", "alpha", "--payload", "/no/such/file"]).await;
    assert_eq!(code, 2, "{err}");
    wharf(&app, &["webhook", "rm", "alpha"]).await;
    let (code, _, err) = wharf(&app, &["trigger", "alpha"]).await;
    assert_eq!(code, 3);
    assert!(err.contains("has no webhook"), "{err}");
    let (code, _, err) = wharf(&app, &["runs", "ls", "--token", "wrong"]).await;
    assert_eq!(code, 3);
    assert!(err.contains("refused the admin token"), "{err}");
    let (code, _, err) = wharf(&app, &["runs", "ls", "--url", "http://127.0.0.1:9"]).await;
    assert_eq!(code, 3);
    assert!(err.contains("cannot reach the wharf server"), "{err}");
}

#[tokio::test]
async fn runs_logs_follow_prints_lines_as_they_are_written_and_cancel_and_replay() {
    use tokio::io::AsyncBufReadExt;
    let app = spawn_with(|_| {}).await;
    let doc = json!({"name": "slow", "vessels": [{"name": "v", "kind": "rhai",
        "source": "print(\"first\"); let t = timestamp(); while t.elapsed < 0.8 { } print(\"second\");"}]});
    let (_, url) = app.fleet_with_hook(doc).await;
    let run = app.trigger_ok(&url, "{}").await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args(["runs", "logs", &run, "--follow"])
        .env("WHARF_URL", &app.base)
        .env("WHARF_ADMIN_TOKEN", ADMIN_TOKEN)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next_line().await.unwrap();
    assert_eq!(first.as_deref(), Some("first"));
    let (_, now) = app.get(&format!("/runs/{run}")).await;
    assert_eq!(now["status"], "running", "the line came live");
    assert_eq!(lines.next_line().await.unwrap().as_deref(), Some("second"));
    assert_eq!(child.wait().await.unwrap().code(), Some(0));

    // Without --follow: what was captured.
    let (code, out, _) = wharf(&app, &["runs", "logs", &run]).await;
    assert_eq!((code, out.as_str()), (0, "first\nsecond\n"));

    // Replay prints the new run's id; cancel stops it.
    let (code, out, err) = wharf(&app, &["runs", "replay", &run]).await;
    assert_eq!(code, 0, "{err}");
    let again = out.trim().to_owned();
    assert_ne!(again, run);
    let (code, out, err) = wharf(&app, &["runs", "cancel", &again]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("cancelled"), "{out}");
    let (code, _, err) = wharf(&app, &["runs", "cancel", &again]).await;
    assert_eq!(code, 3, "an ended run cannot be cancelled: {err}");
    assert!(err.contains("409"), "{err}");
    let (code, _, _) = wharf(&app, &["runs", "logs", &again, "--follow"]).await;
    assert_eq!(code, 4, "a cancelled run's logs exit 4");
}
