//! Admin API: resources, validation messages, auth, run history.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test]
async fn admin_calls_need_the_token() {
    let app = spawn_app().await;
    let res = app
        .client
        .post(app.url("/api/v1/orgs"))
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let body: Value = res.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("admin token"));
    let res = app
        .client
        .post(app.url("/api/v1/orgs"))
        .bearer_auth("nope")
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.healthz().await, StatusCode::OK);
}

#[tokio::test]
async fn orgs_keys_and_projects() {
    let app = spawn_app().await;
    let (s, org) = app.post("/orgs", json!({"name": "acme"})).await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(org["name"], "acme");
    let org_id = org["id"].as_str().unwrap();
    let (s, key) = app
        .post(&format!("/orgs/{org_id}/api-keys"), json!({}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let secret = key["key"].as_str().unwrap();
    assert!(secret.len() >= 40);
    // Stored hashed: the key's text is nowhere in the database file.
    let db = std::fs::read(app.data.path().join("wharf.db")).unwrap();
    let wal = std::fs::read(app.data.path().join("wharf.db-wal")).unwrap_or_default();
    for bytes in [db, wal] {
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "plain key stored"
        );
    }
    let (s, _) = app
        .admin(
            Method::DELETE,
            &format!("/api-keys/{}", key["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = app
        .admin(
            Method::DELETE,
            &format!("/api-keys/{}", key["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, p) = app
        .post(
            &format!("/orgs/{org_id}/projects"),
            json!({"name": "tools"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(p["org_id"], org_id);
    let missing = uuid::Uuid::new_v4();
    let (s, e) = app
        .post(&format!("/orgs/{missing}/projects"), json!({"name": "x"}))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(e["error"].as_str().unwrap().contains("org"));
    let (s, e) = app.post("/orgs", json!({"nom": "x"})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(e["error"].as_str().unwrap().contains("nom"), "{e}");
    let res = app
        .client
        .post(app.url("/api/v1/orgs"))
        .bearer_auth(ADMIN_TOKEN)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn fleet_documents_are_validated_with_named_errors() {
    let app = spawn_app().await;
    let project = app.project().await;
    let path = format!("/projects/{project}/fleets");
    let v = |name: &str, needs: &[&str]| json!({"name": name, "kind": "rhai", "source": "0", "needs": needs});
    let cases = [
        (
            json!({"name": "f", "vessels": [v("a", &[]), v("a", &[])]}),
            "twice",
        ),
        (
            json!({"name": "f", "vessels": [v("a", &["ghost"])]}),
            "ghost",
        ),
        (
            json!({"name": "f", "vessels": [v("a", &["b"]), v("b", &["a"])]}),
            "cycle",
        ),
        (
            json!({"name": "f", "vessels": [{"name": "a", "kind": "python", "source": "0"}]}),
            "python",
        ),
        (
            json!({"name": "f", "vessels": [{"name": "a", "kind": "rhai", "source": "let x = ;\n"}]}),
            "line 1",
        ),
        (
            json!({"name": "f", "vessels": [{"name": "a", "kind": "rhai", "source": "0\nfn (\n"}]}),
            "line 2",
        ),
        (json!({"name": "f", "vessels": []}), "at least one vessel"),
        (
            json!({"name": "f", "vessels": [v("a", &[])], "concurrency": "sometimes"}),
            "sometimes",
        ),
        (
            json!({"name": "f", "vessels": [{"name": "a", "kind": "rhai", "source": "0", "limits": {"fuel": 0}}]}),
            "limits.fuel",
        ),
    ];
    for (doc, needle) in cases {
        let (s, e) = app.post(&path, doc.clone()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{doc}: {e}");
        let msg = e["error"].as_str().unwrap();
        assert!(msg.contains(needle), "{msg:?} should name {needle:?}");
    }
}

#[tokio::test]
async fn fleet_crud_round_trips_the_document() {
    let app = spawn_app().await;
    let project = app.project().await;
    let doc = json!({"name": "f", "variables": {"abc": "123"}, "concurrency": "queue",
        "vessels": [{"name": "a", "kind": "rhai", "source": "set_var(\"x\", 1)", "limits": {"fuel": 5000}}]});
    let (s, fleet) = app.post(&format!("/projects/{project}/fleets"), doc).await;
    assert_eq!(s, StatusCode::CREATED, "{fleet}");
    let id = fleet["id"].as_str().unwrap();
    assert_eq!(fleet["project_id"], project.as_str());
    assert_eq!(fleet["vessels"][0]["source"], "set_var(\"x\", 1)");
    assert_eq!(fleet["vessels"][0]["sha256"].as_str().unwrap().len(), 64);
    assert!(fleet["webhook"].is_null());
    // What GET returns can be PUT back as it is.
    let (s, got) = app.get(&format!("/fleets/{id}")).await;
    assert_eq!(s, StatusCode::OK);
    let (s, put) = app
        .admin(Method::PUT, &format!("/fleets/{id}"), Some(got.clone()))
        .await;
    assert_eq!(s, StatusCode::OK, "{put}");
    assert_eq!(put["vessels"], got["vessels"]);
    let mut changed = got.clone();
    changed["variables"] = json!({"abc": "999"});
    let (_, put) = app
        .admin(Method::PUT, &format!("/fleets/{id}"), Some(changed))
        .await;
    assert_eq!(put["variables"]["abc"], "999");
    // One webhook per fleet.
    assert_eq!(
        app.post(&format!("/fleets/{id}/webhook"), json!({}))
            .await
            .0,
        StatusCode::CREATED
    );
    let (s, e) = app.post(&format!("/fleets/{id}/webhook"), json!({})).await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    let (s, _) = app
        .admin(Method::DELETE, &format!("/fleets/{id}"), None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(
        app.get(&format!("/fleets/{id}")).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(app.get("/fleets/not-a-uuid").await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn run_history_is_newest_first_with_cursor_and_filter() {
    let app = spawn_app().await;
    let (fleet, url) = app
        .fleet_with_hook(rhai_fleet("exit(if payload.fail { 1 } else { 0 })"))
        .await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let id = app
            .trigger_ok(&url, &format!(r#"{{"fail": {}}}"#, i % 2 == 1))
            .await;
        app.finished_run(&id).await;
        ids.push(id);
    }
    let (s, page) = app.get(&format!("/fleets/{fleet}/runs?limit=2")).await;
    assert_eq!(s, StatusCode::OK);
    let got = run_ids(&page);
    assert_eq!(got, [ids[4].as_str(), ids[3].as_str()]);
    let next = page["next_before"].as_str().unwrap();
    let (_, page2) = app
        .get(&format!("/fleets/{fleet}/runs?limit=2&before={next}"))
        .await;
    let got = run_ids(&page2);
    assert_eq!(got, [ids[2].as_str(), ids[1].as_str()]);
    let (_, failed) = app
        .get(&format!("/fleets/{fleet}/runs?status=failed"))
        .await;
    let failed = run_ids(&failed);
    assert_eq!(failed, [ids[3].as_str(), ids[1].as_str()]);
    for bad in ["status=weird", "limit=0", "limit=abc", "before=xyz"] {
        let (s, e) = app.get(&format!("/fleets/{fleet}/runs?{bad}")).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {e}");
    }
    assert_eq!(
        app.get(&format!("/runs/{}", uuid::Uuid::new_v4())).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn demo_fleet_is_ready_on_first_start() {
    let app = spawn_with(|_| {}).await;
    let demo = app.demo.clone().expect("demo created on first start");
    let (s, body, _) = app
        .trigger(&demo.url, "application/json", wharf::server::DEMO_PAYLOAD)
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let run = app
        .finished_run(body["data"]["fleet_run_id"].as_str().unwrap())
        .await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let vars = &run["variables"];
    assert_eq!(vars["repository"], "acme/tools");
    assert_eq!(vars["branch"], "main");
    assert_eq!(vars["pusher"], "alice");
    assert_eq!(vars["commit_count"], "2");
    assert_eq!(vars["watched"], "true");
    assert!(
        run["vessels"][0]["stdout"]
            .as_str()
            .unwrap()
            .contains("alice pushed 2")
    );
    assert!(run["vessels"][0]["fuel_used"].as_u64().unwrap() > 0);
    let no_demo = spawn_with(|c| c.no_demo = true).await;
    assert!(no_demo.demo.is_none());
}

#[tokio::test]
async fn json_body_overrides_declared_variables_for_one_run() {
    let app = spawn_app().await;
    let doc = json!({"name": "vars", "variables": {"abc": "123", "other": "keep"},
    "vessels": [
        {"name": "first", "kind": "rhai", "source": "set_var(\"seen\", vars.abc); set_var(\"from_first\", \"yes\")"},
        {"name": "second", "kind": "rhai", "source": "set_var(\"got\", vars.from_first + \"/\" + vars.other)", "needs": ["first"]}
    ]});
    let (_, url) = app.fleet_with_hook(doc).await;
    let run = app
        .finished_run(
            &app.trigger_ok(&url, r#"{"abc":"456","undeclared":"x"}"#)
                .await,
        )
        .await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["variables"]["abc"], "456");
    assert_eq!(run["variables"]["seen"], "456");
    assert_eq!(run["variables"]["got"], "yes/keep");
    assert!(run["variables"].get("undeclared").is_none());
    let run = app
        .finished_run(&app.trigger_ok(&url, r#"["not an object"]"#).await)
        .await;
    assert_eq!(run["variables"]["abc"], "123");
}

#[tokio::test]
async fn a_failure_stops_success_vessels_and_runs_failure_ones() {
    let app = spawn_app().await;
    let doc = json!({"name": "chain", "vessels": [
        {"name": "a", "kind": "rhai", "source": "exit(3)"},
        {"name": "b", "kind": "rhai", "source": "0"},
        {"name": "cleanup", "kind": "rhai", "source": "print(\"cleaning\")", "when": "failure"},
        {"name": "always", "kind": "rhai", "source": "0", "when": "always"}
    ]});
    let (_, url) = app.fleet_with_hook(doc).await;
    let run = app.finished_run(&app.trigger_ok(&url, "{}").await).await;
    // `cleanup` (a failure vessel downstream of `a`) ran and succeeded: the failure is handled.
    assert_eq!(run["status"], "succeeded", "{run}");
    let v = run["vessels"].as_array().unwrap();
    assert_eq!(
        (
            v[0]["status"].as_str(),
            v[0]["exit_code"].as_i64(),
            v[0]["reason"].as_str()
        ),
        (Some("failed"), Some(3), Some("exit_code"))
    );
    assert_eq!(v[1]["status"], "skipped");
    assert_eq!(v[2]["status"], "succeeded");
    assert_eq!(v[2]["stdout"], "cleaning\n");
    assert_eq!(v[3]["status"], "succeeded");
    for key in [
        "name",
        "status",
        "exit_code",
        "reason",
        "error",
        "variables",
        "rows",
        "stdout",
        "stderr",
        "fuel_used",
        "duration_ms",
    ] {
        assert!(v[0].get(key).is_some(), "vessel run lacks {key}");
    }
    for key in [
        "id",
        "fleet_id",
        "status",
        "attempt",
        "variables",
        "request",
        "vessels",
        "created_at",
        "started_at",
        "finished_at",
    ] {
        assert!(run.get(key).is_some(), "run lacks {key}");
    }
    assert_eq!(run["attempt"], 1);
}

/// The run ids of a history page, in order.
fn run_ids(page: &serde_json::Value) -> Vec<&str> {
    page["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect()
}
