//! The list endpoints over HTTP: every list pages newest first with `limit`, `before` and
//! `next_before`, and names what is wrong with bad paging.

use std::collections::HashSet;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, rhai_fleet, spawn_with};

/// Every item of `path` (whose items are under `key`), walked `limit` at a time; asserts that
/// the walk gives the same items, in the same order, as one big page, with no repeats.
async fn walk(app: &TestApp, path: &str, key: &str, limit: usize) -> Vec<Value> {
    let sep = if path.contains('?') { '&' } else { '?' };
    let (s, whole) = app.get(&format!("{path}{sep}limit=500")).await;
    assert_eq!(s, StatusCode::OK, "{whole}");
    assert!(whole["next_before"].is_null(), "one page holds them all");
    let whole = whole[key].as_array().unwrap().clone();
    assert!(whole.len() > limit, "the walk needs more than one page");

    let mut seen = Vec::new();
    let mut before: Option<String> = None;
    for _ in 0..100 {
        let page_path = match &before {
            None => format!("{path}{sep}limit={limit}"),
            Some(b) => format!("{path}{sep}limit={limit}&before={b}"),
        };
        let (s, page) = app.get(&page_path).await;
        assert_eq!(s, StatusCode::OK, "{page}");
        let items = page[key].as_array().unwrap();
        assert!(items.len() <= limit);
        seen.extend(items.iter().cloned());
        match page["next_before"].as_str() {
            Some(next) => {
                assert_eq!(items.len(), limit, "only a full page has a next one");
                assert_eq!(Some(next), items.last().unwrap()["id"].as_str());
                before = Some(next.to_owned());
            }
            None => {
                let ids: HashSet<&str> = seen.iter().map(|v| v["id"].as_str().unwrap()).collect();
                assert_eq!(ids.len(), seen.len(), "no item twice");
                assert_eq!(seen, whole, "no gaps, same order as one page");
                return seen;
            }
        }
    }
    panic!("the walk never ended");
}

async fn org(app: &TestApp, name: &str) -> String {
    let (s, org) = app.post("/orgs", json!({ "name": name })).await;
    assert_eq!(s, StatusCode::CREATED, "{org}");
    org["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn orgs_and_projects_page_and_read_one_by_one() {
    let app = spawn_with(|c| c.no_demo = true).await;
    for i in 0..7 {
        org(&app, &format!("org{}", i % 2)).await;
    }
    let orgs = walk(&app, "/orgs", "orgs", 3).await;
    assert_eq!(orgs.len(), 7);
    // Newest first: by creation time (milliseconds), then id.
    let keys: Vec<(&str, &str)> = orgs
        .iter()
        .map(|o| (o["created_at"].as_str().unwrap(), o["id"].as_str().unwrap()))
        .collect();
    assert!(
        keys.windows(2).all(|w| w[0] > w[1]),
        "newest first: {keys:?}"
    );
    assert!(orgs[0]["created_at"].as_str().unwrap().ends_with('Z'));
    let (_, named) = app.get("/orgs?name=org1").await;
    assert_eq!(named["orgs"].as_array().unwrap().len(), 3);

    let id = orgs[2]["id"].as_str().unwrap();
    let (s, one) = app.get(&format!("/orgs/{id}")).await;
    assert_eq!((s, &one), (StatusCode::OK, &orgs[2]));
    for _ in 0..5 {
        app.post(&format!("/orgs/{id}/projects"), json!({"name": "p"}))
            .await;
    }
    let projects = walk(&app, &format!("/orgs/{id}/projects"), "projects", 2).await;
    assert!(
        projects
            .iter()
            .all(|p| p["org_id"] == id && p["name"] == "p")
    );
    let pid = projects[4]["id"].as_str().unwrap();
    let (s, one) = app.get(&format!("/projects/{pid}")).await;
    assert_eq!((s, &one), (StatusCode::OK, &projects[4]));

    let unknown = uuid::Uuid::new_v4();
    for path in [
        format!("/orgs/{unknown}"),
        format!("/orgs/{unknown}/projects"),
        format!("/projects/{unknown}"),
        format!("/projects/{unknown}/fleets"),
        "/orgs/not-an-id".to_owned(),
    ] {
        let (s, body) = app.get(&path).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{path}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains("not found"),
            "{body}"
        );
    }
    for (query, names) in [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=ten", "limit"),
        ("before=xyz", "before"),
    ] {
        for list in ["/orgs", "/fleets", "/runs"] {
            let (s, body) = app.get(&format!("{list}?{query}")).await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{list}?{query}: {body}");
            assert!(body["error"].as_str().unwrap().contains(names), "{body}");
        }
    }
}

#[tokio::test]
async fn fleets_list_per_project_and_by_name_across_projects() {
    let app = spawn_with(|c| c.no_demo = true).await;
    let org_id = org(&app, "acme").await;
    let mut projects = Vec::new();
    for name in ["a", "b"] {
        let (_, p) = app
            .post(&format!("/orgs/{org_id}/projects"), json!({ "name": name }))
            .await;
        projects.push(p["id"].as_str().unwrap().to_owned());
    }
    let mut ids = Vec::new();
    for i in 0..6 {
        let mut doc = rhai_fleet("let x = 1;");
        doc["name"] = json!(if i == 5 {
            "shared".to_owned()
        } else {
            format!("f{i}")
        });
        let project = &projects[if i < 4 { 0 } else { 1 }];
        let (s, f) = app.post(&format!("/projects/{project}/fleets"), doc).await;
        assert_eq!(s, StatusCode::CREATED, "{f}");
        ids.push(f["id"].as_str().unwrap().to_owned());
    }
    let mut doc = rhai_fleet("let x = 1;");
    doc["name"] = json!("shared");
    app.post(&format!("/projects/{}/fleets", projects[0]), doc)
        .await;
    let (_, hook) = app
        .post(&format!("/fleets/{}/webhook", ids[0]), json!({}))
        .await;

    let in_a = walk(
        &app,
        &format!("/projects/{}/fleets", projects[0]),
        "fleets",
        2,
    )
    .await;
    assert_eq!(in_a.len(), 5);
    let all = walk(&app, "/fleets", "fleets", 3).await;
    assert_eq!(all.len(), 7);
    let first = all.iter().find(|f| f["id"] == ids[0].as_str()).unwrap();
    assert_eq!(first["webhook_url"], hook["url"]);
    assert_eq!(first["vessels"], json!(["main"]));
    assert_eq!(first["last_run_status"], Value::Null);
    assert_eq!(first["project_id"], projects[0].as_str());
    assert_eq!(first["org_id"], org_id.as_str());
    assert!(
        all.iter()
            .filter(|f| f["id"] != ids[0].as_str())
            .all(|f| f["webhook_url"].is_null())
    );

    let (_, shared) = app.get("/fleets?name=shared").await;
    let shared: HashSet<&str> = shared["fleets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["project_id"].as_str().unwrap())
        .collect();
    assert_eq!(shared, projects.iter().map(String::as_str).collect());
    let (_, f3) = app
        .get(&format!("/projects/{}/fleets?name=f3", projects[0]))
        .await;
    assert_eq!(f3["fleets"][0]["id"], ids[3].as_str());

    let url = hook["url"].as_str().unwrap();
    let run = app.trigger_ok(url, "{}").await;
    app.finished_run(&run).await;
    let (_, listed) = app.get("/fleets?name=f0").await;
    assert_eq!(listed["fleets"][0]["last_run_status"], "succeeded");
}

#[tokio::test]
async fn runs_page_per_fleet_and_across_fleets() {
    let app = spawn_with(|c| c.no_demo = true).await;
    let (a, url_a) = app.fleet_with_hook(rhai_fleet("let x = 1;")).await;
    let (_, url_b) = app.fleet_with_hook(rhai_fleet("exit(2)")).await;
    let mut runs = Vec::new();
    for i in 0..8 {
        runs.push(
            app.trigger_ok(if i % 2 == 0 { &url_a } else { &url_b }, "{}")
                .await,
        );
    }
    for run in &runs {
        app.finished_run(run).await;
    }
    let of_a = walk(&app, &format!("/fleets/{a}/runs"), "runs", 3).await;
    assert_eq!(of_a.len(), 4);
    let every = walk(&app, "/runs", "runs", 3).await;
    let ids: Vec<&str> = every.iter().map(|r| r["id"].as_str().unwrap()).collect();
    let newest_first: Vec<&str> = runs.iter().rev().map(String::as_str).collect();
    assert_eq!(ids, newest_first);
    let failed = walk(&app, "/runs?status=failed", "runs", 3).await;
    assert_eq!(failed.len(), 4);
    assert!(failed.iter().all(|r| r["status"] == "failed"));
}
