//! Data written by an earlier release opens: a copy of `tests/fixtures/data-before-22` (made by
//! the binary of the commit before the workspace split; see `tests/fixtures/README.md`) is
//! served by today's binary with its fleet, webhook, runs and requests intact, and its webhook
//! still takes calls.

use std::path::Path;

use reqwest::StatusCode;
use serde_json::Value;

use crate::binary::{Proc, start_with};

/// The admin token that binary generated for the folder (only its hash is in the folder); a
/// throwaway, like the folder's secret key.
const TOKEN: &str = "wharf_admin_Oq9n1hUfPsmyKmeuS8RhH4z6nplWhMpkBXfBAh3etKF1Ai1s";

/// The calls that binary's webhook took, in order: `n` 3 made the first vessel throw.
const CALLS: [u64; 4] = [1, 2, 3, 4];

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

async fn serve_copy() -> (tempfile::TempDir, Proc) {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/data-before-22");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    copy_dir(&fixture, &data);
    // No token given: the server must take the hash the folder holds.
    let server = start_with(&data, 0, |cmd| {
        cmd.env_remove("WHARF_ADMIN_TOKEN");
    })
    .await
    .signed_in_as(TOKEN);
    (dir, server)
}

/// The fleet the fixture holds, found by name.
async fn orders(server: &Proc) -> Value {
    let (s, page) = server.get("/fleets?name=orders").await;
    assert_eq!(
        s,
        StatusCode::OK,
        "the old admin token still signs in: {page}"
    );
    let fleets = page["fleets"].as_array().unwrap();
    assert_eq!(fleets.len(), 1, "{page}");
    let (s, fleet) = server
        .get(&format!("/fleets/{}", fleets[0]["id"].as_str().unwrap()))
        .await;
    assert_eq!(s, StatusCode::OK, "{fleet}");
    fleet
}

#[tokio::test]
async fn a_data_folder_written_before_the_split_opens_with_everything_in_it() {
    let (_dir, server) = serve_copy().await;
    let fleet = orders(&server).await;
    let id = fleet["id"].as_str().unwrap().to_owned();
    assert_eq!(fleet["variables"]["greeting"], "hello", "{fleet}");
    let vessels: Vec<&str> = fleet["vessels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(vessels, ["check", "after"], "{fleet}");
    assert_eq!(fleet["vessels"][1]["needs"], serde_json::json!(["check"]));

    // The old runs, oldest first, each with its request's body.
    let mut runs = server.all_runs(&id).await;
    runs.reverse();
    assert_eq!(runs.len(), CALLS.len(), "{runs:#?}");
    for (run, n) in runs.iter().zip(CALLS) {
        let run_id = run["id"].as_str().unwrap();
        let (s, run) = server.get(&format!("/runs/{run_id}")).await;
        assert_eq!(s, StatusCode::OK, "{run}");
        let body = reqwest::Client::new()
            .get(format!("{}/api/v1/runs/{run_id}/body", server.base))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(body.status(), StatusCode::OK);
        let body: Value = serde_json::from_slice(&body.bytes().await.unwrap()).unwrap();
        assert_eq!(body["n"], n, "{run}");
        if n == 3 {
            assert_eq!(run["status"], "failed", "{run}");
            assert_eq!(run["vessels"][0]["status"], "failed", "{run}");
        } else {
            assert_eq!(run["status"], "succeeded", "{run}");
            assert_eq!(run["variables"]["n"], n.to_string(), "{run}");
            assert_eq!(run["variables"]["after"], "yes", "{run}");
            assert_eq!(
                run["vessels"][0]["stdout"],
                format!("checked {n}\n"),
                "{run}"
            );
        }
    }

    // The webhook still takes calls, under its old id, and runs them.
    let url = fleet["webhook"]["url"].as_str().unwrap();
    assert!(url.starts_with(&server.base), "{url}");
    let run = server.trigger(url, r#"{"n": 5}"#).await;
    let run = server.finished(&run).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["variables"]["n"], "5", "{run}");
    assert_eq!(run["variables"]["greeting"], "hello", "{run}");
    assert_eq!(server.all_runs(&id).await.len(), CALLS.len() + 1);
}
