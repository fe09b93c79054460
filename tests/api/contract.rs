//! The served OpenAPI document against the real binary: Schemathesis (PyPI, installed by
//! scripts/test.sh) generates calls from the document, with every check on, and fails on any
//! server error or any answer that contradicts the document.

use std::process::Command;

use reqwest::StatusCode;
use serde_json::json;

use crate::binary::start_with;
use crate::helpers::{ADMIN_TOKEN, rhai_fleet};

/// Test cases per operation and phase: enough to reach odd inputs on every operation while
/// keeping the whole run to a few minutes on a small machine.
const EXAMPLES_PER_OPERATION: &str = "15";

#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_no_server_error_and_nothing_the_document_does_not_say() {
    let data = tempfile::tempdir().unwrap();
    // The only setting changed: Schemathesis sends wrong tokens on purpose (its `ignored_auth`
    // check), which would soon have the sign-in guard answer every call from this address 429.
    let server = start_with(data.path(), 0, |cmd| {
        cmd.env("WHARF_MAX_FAILED_SIGN_INS", "0");
    })
    .await;
    // Something to read: an org, a project, a fleet with a webhook, and a finished run.
    let (fleet, url) = server
        .fleet_with_hook(rhai_fleet(r#"set_var("seen", "yes"); emit(#{n: 1});"#))
        .await;
    let run = server.trigger(&url, r#"{"abc": "456"}"#).await;
    let run = server.finished(&run).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let (s, page) = server.get(&format!("/fleets/{fleet}/runs")).await;
    assert_eq!(s, StatusCode::OK, "{page}");
    let (s, key) = server
        .post(
            &format!("/orgs/{}/api-keys", run_org(&server, &fleet).await),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{key}");

    let report = tempfile::tempdir().unwrap();
    let junit = report.path().join("junit.xml");
    let mut tried = Vec::new();
    for program in ["schemathesis", "st"] {
        let out = Command::new(program)
            .arg("--config-file")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/api/schemathesis.toml"
            ))
            .args(["run", &format!("{}/api/v1/openapi.json", server.base)])
            .args(["--checks", "all"])
            .args(["--header", &format!("Authorization: Bearer {ADMIN_TOKEN}")])
            .args(["--max-examples", EXAMPLES_PER_OPERATION])
            .args(["--workers", "2"])
            .args(["--request-timeout", "30"])
            .args(["--report", "junit", "--report-junit-path"])
            .arg(&junit)
            // Schemathesis keeps a cache in its working directory: not in the repository.
            .current_dir(report.path())
            .env("NO_COLOR", "1")
            .env("SCHEMATHESIS_TELEMETRY", "false")
            .output();
        match out {
            Ok(out) => {
                let said = format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                assert!(
                    out.status.success(),
                    "Schemathesis found answers that contradict the OpenAPI document, or server \
                     errors:\n{said}"
                );
                assert!(
                    said.contains("passed") || said.contains("PASSED") || said.contains("✅"),
                    "Schemathesis ran no test:\n{said}"
                );
                return;
            }
            Err(e) => tried.push(format!("{program}: {e}")),
        }
    }
    panic!(
        "Schemathesis could not be run ({}); install it with \
         `python3 -m pip install schemathesis` (scripts/test.sh does)",
        tried.join("; ")
    );
}

/// The org of a fleet, from the fleet itself.
async fn run_org(server: &crate::binary::Proc, fleet: &str) -> String {
    let (s, doc) = server.get(&format!("/fleets/{fleet}")).await;
    assert_eq!(s, StatusCode::OK, "{doc}");
    doc["org_id"].as_str().unwrap().to_owned()
}

/// Every answer with a body names its shape: `{}`, what a `serde_json::Value` body gives, is
/// nowhere in the document.
#[test]
fn every_answer_of_the_document_has_a_typed_body() {
    let doc = serde_json::to_value(wharf::api::documented().1).unwrap();
    let mut untyped = Vec::new();
    let mut typed = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            for (status, answer) in op["responses"].as_object().into_iter().flatten() {
                for (media, content) in answer["content"].as_object().into_iter().flatten() {
                    if content["schema"] == json!({}) {
                        untyped.push(format!("{method} {path} {status} {media}"));
                    } else {
                        typed += 1;
                    }
                }
            }
        }
    }
    assert!(typed > 50, "the document's answers were read: {typed}");
    assert!(untyped.is_empty(), "answers without a schema: {untyped:?}");
}
