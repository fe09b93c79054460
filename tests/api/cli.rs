//! `wharf run` as a guest author uses it: real files, the real binary, its exit code.

use serde_json::Value;

use crate::examples::wharf;

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn run_reports_variables_and_exits_with_the_vessels_status() {
    let dir = tempfile::tempdir().unwrap();
    let script = write(
        dir.path(),
        "check.rhai",
        r#"
        set_var("who", payload.user);
        set_var("env", vars.env);
        set_var("sig", request.headers["x-sig"]);
        emit(#{id: 1});
        print("hello " + payload.user);
        if payload.user == "mallory" { exit(3) }
        "#,
    );
    let payload = write(dir.path(), "payload.json", r#"{"user":"alice"}"#);
    let (code, stdout, stderr) = wharf(&[
        "run",
        &script,
        "--payload",
        &payload,
        "--var",
        "env=prod",
        "--header",
        "X-Sig: abc",
        "--json",
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["variables"]["who"], "alice");
    assert_eq!(report["variables"]["env"], "prod");
    assert_eq!(report["variables"]["sig"], "abc");
    assert_eq!(report["vessels"][0]["rows"][0]["data"]["id"], 1);
    assert_eq!(report["vessels"][0]["stdout"], "hello alice\n");

    let bad = write(dir.path(), "bad.json", r#"{"user":"mallory"}"#);
    let (code, stdout, _) = wharf(&["run", &script, "--payload", &bad, "--var", "env=prod"]);
    assert_eq!(code, 3, "the vessel's exit status is wharf's: {stdout}");
    assert!(stdout.contains("exit 3"), "{stdout}");
}

#[test]
fn run_limits_end_the_vessel_with_their_reason() {
    let dir = tempfile::tempdir().unwrap();
    let spin = write(dir.path(), "spin.rhai", "loop {}");
    let (code, stdout, _) = wharf(&["run", &spin, "--fuel", "5000", "--json"]);
    assert_eq!(code, wharf::local::EXIT_VESSEL_FAILED);
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["vessels"][0]["reason"], "fuel_exhausted", "{report}");
    assert_eq!(report["status"], "failed");
}

#[test]
fn run_refuses_bad_input_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let broken = write(dir.path(), "broken.rhai", "let x = ;");
    let (code, _, stderr) = wharf(&["run", &broken]);
    assert_ne!(code, 0);
    assert!(stderr.contains("line 1"), "{stderr}");
    let garbage = write(dir.path(), "garbage.wasm", "not wasm at all");
    let (code, _, stderr) = wharf(&["run", &garbage]);
    assert_ne!(code, 0);
    assert!(stderr.contains("garbage"), "names the vessel: {stderr}");
    let (code, _, stderr) = wharf(&["run", "/nonexistent/v.rhai"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("/nonexistent/v.rhai"), "{stderr}");
    let (code, _, stderr) = wharf(&["run", &broken, "--var", "novalue"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("NAME=VALUE"), "{stderr}");
}
