//! The guest kit end to end: every guest is built from source, every example fleet runs its
//! sample payload through `wharf run` and through the real server, and both must give the
//! variables, exit status and row count its `expected.json` promises. Templates must build into
//! modules that pass upload validation and run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::spawn_app;

const EXAMPLES: [&str; 4] = ["github-push", "stripe-event", "slack-command", "csv-upload"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Builds every guest once per test process (templates into a temp folder, examples beside
/// their fleet.json) with the same script CI and guest authors use.
fn guests() -> &'static Path {
    static OUT: OnceLock<PathBuf> = OnceLock::new();
    OUT.get_or_init(|| {
        let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("guests");
        let status = Command::new("bash")
            .arg(root().join("scripts/build-guests.sh"))
            .arg(&out)
            .status()
            .expect("bash runs");
        assert!(
            status.success(),
            "building the guests failed; run scripts/install-guest-toolchains.sh first"
        );
        out
    })
}

struct Example {
    dir: PathBuf,
    payload: PathBuf,
    content_type: String,
    expected: Value,
}

fn example(name: &str) -> Example {
    let dir = root().join("examples").join(name);
    let payload = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.file_stem().is_some_and(|s| s == "payload"))
        .unwrap_or_else(|| panic!("{name} has no payload.*"));
    let content_type = std::fs::read_to_string(dir.join("content-type"))
        .unwrap()
        .trim()
        .to_owned();
    let expected =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    Example {
        dir,
        payload,
        content_type,
        expected,
    }
}

/// Compares a run (server run or dry-run report) with an example's promise.
fn check(name: &str, how: &str, run: &Value, expected: &Value) {
    assert_eq!(
        run["variables"], expected["variables"],
        "{name} via {how}: variables\n{run:#}"
    );
    let vessels = run["vessels"].as_array().unwrap();
    let last = vessels.last().unwrap();
    assert_eq!(
        last["exit_code"], expected["exit_code"],
        "{name} via {how}: exit code\n{run:#}"
    );
    let rows: usize = vessels
        .iter()
        .map(|v| v["rows"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(
        Some(rows as u64),
        expected["rows"].as_u64(),
        "{name} via {how}: rows\n{run:#}"
    );
}

pub fn wharf(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args(args)
        .output()
        .expect("wharf runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn every_example_gives_its_expected_variables_locally_and_on_the_server() {
    guests();
    let app = spawn_app().await;
    for name in EXAMPLES {
        let ex = example(name);
        let fleet_file = ex.dir.join("fleet.json");

        let (code, stdout, stderr) = wharf(&[
            "run",
            fleet_file.to_str().unwrap(),
            "--payload",
            ex.payload.to_str().unwrap(),
            "--content-type",
            &ex.content_type,
            "--json",
        ]);
        let report: Value = serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("{name}: {e}\n{stdout}\n{stderr}"));
        check(name, "wharf run", &report, &ex.expected);
        assert_eq!(
            Some(code as i64),
            ex.expected["exit_code"].as_i64(),
            "{name}: wharf run's exit code"
        );

        // The same fleet file, bundled by the CLI, uploaded to the server and triggered.
        let (code, bundle, stderr) = wharf(&["bundle", fleet_file.to_str().unwrap()]);
        assert_eq!(code, 0, "{stderr}");
        let doc: Value = serde_json::from_str(&bundle).unwrap();
        let (fleet, url) = app.fleet_with_hook(doc).await;
        let body = std::fs::read(&ex.payload).unwrap();
        let (s, answer, _) = app.trigger(&url, &ex.content_type, body.clone()).await;
        assert_eq!(s, StatusCode::CREATED, "{answer}");
        let run = app
            .finished_run(answer["data"]["fleet_run_id"].as_str().unwrap())
            .await;
        check(name, "the server", &run, &ex.expected);

        // And the dry run gives the same, without a run in the history.
        let res = app
            .client
            .post(app.url(&format!("/api/v1/fleets/{fleet}/dry-run")))
            .bearer_auth(crate::helpers::ADMIN_TOKEN)
            .header("content-type", &ex.content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let dry: Value = res.json().await.unwrap();
        check(name, "dry-run", &dry, &ex.expected);
        let (_, runs) = app.get(&format!("/fleets/{fleet}/runs")).await;
        assert_eq!(
            runs["runs"].as_array().unwrap().len(),
            1,
            "a dry run queues nothing"
        );
    }
}

#[tokio::test]
async fn templates_build_into_modules_the_server_accepts_and_runs() {
    let out = guests();
    let app = spawn_app().await;
    for template in ["template-rust", "template-c", "template-assemblyscript"] {
        let module = out.join(format!("{template}.wasm"));
        let (code, stdout, stderr) =
            wharf(&["run", module.to_str().unwrap(), "--payload", "-", "--json"]);
        assert_eq!(code, 0, "{template}: {stdout}\n{stderr}");
        let bytes = std::fs::read(&module).unwrap();
        let doc = json!({"name": template, "vessels": [{"name": "v", "kind": "wasm",
            "wasm_base64": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, bytes)}]});
        let (_, url) = app.fleet_with_hook(doc).await;
        let run = app
            .finished_run(&app.trigger_ok(&url, r#"{"hello":"world"}"#).await)
            .await;
        assert_eq!(run["status"], "succeeded", "{template}: {run:#}");
    }
}
