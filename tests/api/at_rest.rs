//! What wharf leaves on disk and in its database: a private data folder whatever the umask,
//! sealed values that open only in the place they were sealed for (and older unbound ones
//! sealed again at start), and PostgreSQL spoken to over TLS.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_in};

/// Authorization headers a receiver got, by path.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<HashMap<String, Vec<String>>>>);

impl Seen {
    /// A receiver on a random port recording each request's `Authorization`; its base URL.
    async fn start() -> (Seen, String) {
        let seen = Seen::default();
        let record = seen.clone();
        let app = axum::Router::new().fallback(move |uri: axum::http::Uri, h: HeaderMap| {
            let record = record.clone();
            async move {
                let auth = h
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                record
                    .0
                    .lock()
                    .unwrap()
                    .entry(uri.path().to_owned())
                    .or_default()
                    .push(auth);
                "ok"
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (seen, url)
    }

    /// The `Authorization` values sent to `path`, once at least one arrived.
    async fn wait(&self, path: &str) -> Vec<String> {
        let started = Instant::now();
        loop {
            if let Some(list) = self.0.lock().unwrap().get(path) {
                return list.clone();
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "nothing reached {path}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A server on `data` that may deliver to this machine's receivers.
async fn server(data: tempfile::TempDir) -> TestApp {
    spawn_in(data, |c| {
        c.egress_allow = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await
}

/// A fleet emitting one row to a destination at `url` with `authorization`.
fn fleet(name: &str, url: &str, authorization: &str) -> Value {
    json!({"name": name,
        "vessels": [{"name": "v", "kind": "rhai", "source": "emit(#{n: 1});"}],
        "destinations": [{"name": "out", "url": url, "authorization": authorization}]})
}

/// The fleet's spec as stored, read from the SQLite file while the server is stopped.
fn stored_spec(db: &std::path::Path, fleet: &str) -> Value {
    let c = rusqlite::Connection::open(db).unwrap();
    let text: String = c
        .query_row("SELECT spec FROM fleets WHERE id = ?1", [fleet], |r| {
            r.get(0)
        })
        .unwrap();
    serde_json::from_str(&text).unwrap()
}

fn store_spec(db: &std::path::Path, fleet: &str, spec: &Value) {
    let c = rusqlite::Connection::open(db).unwrap();
    c.execute(
        "UPDATE fleets SET spec = ?2 WHERE id = ?1",
        rusqlite::params![fleet, spec.to_string()],
    )
    .unwrap();
}

/// A webhook URL of a stopped server, on the server started after it (a new port).
fn moved(app: &TestApp, url: &str) -> String {
    let path = &url[url.find("/webhooks/").expect("a webhook URL")..];
    app.url(path)
}

/// `plaintext` sealed as versions before associated data did: `v1:` + base64(nonce ‖
/// ciphertext) under the data folder's key.
fn seal_v1(data: &std::path::Path, plaintext: &str) -> String {
    let key = std::fs::read_to_string(data.join("secret.key")).unwrap();
    let key = base64::engine::general_purpose::STANDARD
        .decode(key.trim())
        .unwrap();
    let cipher = chacha20poly1305::XChaCha20Poly1305::new_from_slice(&key).unwrap();
    let nonce = chacha20poly1305::XChaCha20Poly1305::generate_nonce(&mut OsRng);
    let mut raw = nonce.to_vec();
    raw.extend(cipher.encrypt(&nonce, plaintext.as_bytes()).unwrap());
    format!(
        "v1:{}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

#[cfg(unix)]
#[tokio::test]
async fn the_data_folder_and_its_files_are_readable_by_their_owner_only() {
    use std::os::unix::fs::PermissionsExt as _;
    let data = tempfile::tempdir().unwrap();
    // A folder made by hand, or by an older version, open to everyone.
    std::fs::set_permissions(data.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let app = server(data).await;
    let hook = app.fleet_with_hook(crate::helpers::rhai_fleet("1")).await.1;
    app.trigger_ok(&hook, "{}").await;
    let data = app.stop().await;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(data.path()), 0o700, "the data folder");
    let mut files = vec!["wharf.db", "secret.key"];
    for journal in ["wharf.db-wal", "wharf.db-shm"] {
        if data.path().join(journal).exists() {
            files.push(journal);
        }
    }
    for file in files {
        assert_eq!(mode(&data.path().join(file)), 0o600, "{file}");
    }
}

#[tokio::test]
async fn a_sealed_credential_moved_to_another_fleet_does_not_open_there() {
    let (seen, url) = Seen::start().await;
    let app = server(tempfile::tempdir().unwrap()).await;
    let project = app.project().await;
    let (s, crm) = app
        .post(
            &format!("/projects/{project}/fleets"),
            fleet("crm", &format!("{url}/crm"), "Bearer crm-credential"),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{crm}");
    let (thief, hook) = app
        .fleet_with_hook(fleet("thief", &format!("{url}/thief"), "Bearer thief"))
        .await;
    let data = app.stop().await;

    // Someone who can write the database, but has not the key, moves the CRM fleet's sealed
    // credential into a fleet whose destination they chose.
    let db = data.path().join("wharf.db");
    let crm_id = crm["id"].as_str().unwrap();
    let sealed = stored_spec(&db, crm_id)["destinations"][0]["authorization"].clone();
    assert!(sealed.as_str().unwrap().starts_with("v2:"), "{sealed}");
    let mut spec = stored_spec(&db, &thief);
    spec["destinations"][0]["authorization"] = sealed;
    store_spec(&db, &thief, &spec);

    let app = server(data).await;
    app.trigger_ok(&moved(&app, &hook), "{}").await;
    let got = seen.wait("/thief").await;
    assert!(
        got.iter().all(|a| !a.contains("crm-credential")),
        "the moved credential was sent: {got:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn secrets_sealed_by_an_earlier_version_are_sealed_again_for_their_place_and_still_work() {
    let (seen, url) = Seen::start().await;
    let app = server(tempfile::tempdir().unwrap()).await;
    let (fleet_id, url_of_hook) = app
        .fleet_with_hook(fleet("old", &format!("{url}/old"), "Bearer placeholder"))
        .await;
    let secret = "an-hmac-secret-of-the-old-days-0123456789";
    let (s, hook) = app
        .admin(
            reqwest::Method::PATCH,
            &format!("/fleets/{fleet_id}/webhook"),
            Some(json!({"auth": {"mode": "hmac", "scheme": "github", "secret": secret}})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{hook}");
    let data = app.stop().await;

    // Put back what an earlier version stored: values sealed without associated data.
    let db = data.path().join("wharf.db");
    let mut spec = stored_spec(&db, &fleet_id);
    spec["destinations"][0]["authorization"] = seal_v1(data.path(), "Bearer from-v1").into();
    store_spec(&db, &fleet_id, &spec);
    let c = rusqlite::Connection::open(&db).unwrap();
    let auth: String = c
        .query_row(
            "SELECT auth FROM webhooks WHERE fleet_id = ?1",
            [&fleet_id],
            |r| r.get(0),
        )
        .unwrap();
    let mut auth: Value = serde_json::from_str(&auth).unwrap();
    auth["secrets"][0]["sealed"] = seal_v1(data.path(), secret).into();
    c.execute(
        "UPDATE webhooks SET auth = ?2 WHERE fleet_id = ?1",
        rusqlite::params![fleet_id, auth.to_string()],
    )
    .unwrap();
    drop(c);

    let app = server(data).await;
    // The start sealed both again, bound to their place.
    let c = rusqlite::Connection::open(&db).unwrap();
    let texts: Vec<String> = ["SELECT spec FROM fleets", "SELECT auth FROM webhooks"]
        .iter()
        .flat_map(|q| {
            let mut stmt = c.prepare(q).unwrap();
            stmt.query_map([], |r| r.get::<_, String>(0))
                .unwrap()
                .map(Result::unwrap)
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(texts.iter().all(|t| !t.contains("\"v1:")), "{texts:?}");
    let sealed = texts.iter().filter(|t| t.contains("\"v2:")).count();
    assert_eq!(sealed, 2, "the destination and the webhook: {texts:?}");

    // And both still work: a call signed with the old secret is accepted, and its delivery
    // carries the old credential.
    let body = "{}";
    let sig = {
        use hmac::Mac as _;
        let mut mac =
            <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(body.as_bytes());
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    };
    let res = app
        .client
        .post(moved(&app, &url_of_hook))
        .header("x-hub-signature-256", sig)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(seen.wait("/old").await, vec!["Bearer from-v1".to_owned()]);
    app.stop().await;
}

/// `sslmode=require` in the database URL is honoured: the store's connections are encrypted.
/// PostgreSQL's own view (`pg_stat_ssl`) says so, for connections named by `application_name`.
#[tokio::test]
async fn postgresql_is_spoken_to_over_tls_when_the_url_asks() {
    use sqlx::Connection as _;
    let Some((schema, url)) = crate::store::fresh_schema("wharf_tls").await else {
        return;
    };
    let app_name = format!("wharf_tls_{}", uuid::Uuid::new_v4().simple());
    let sep = if url.contains('?') { '&' } else { '?' };
    let tls_url = format!(
        "{url}{sep}sslmode=require&application_name={app_name}&options=-csearch_path%3D{schema}"
    );
    let store = wharf::store::postgres::PostgresStore::open(&tls_url)
        .await
        .expect("the store opens over TLS");
    use wharf::store::Catalog as _;
    store.create_org("tls").await.unwrap();
    let mut admin = sqlx::PgConnection::connect(&url).await.unwrap();
    let (connections, encrypted): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE s.ssl)
         FROM pg_stat_activity a JOIN pg_stat_ssl s ON s.pid = a.pid
         WHERE a.application_name = $1",
    )
    .bind(&app_name)
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert!(connections > 0, "the store's connections are visible");
    assert_eq!(
        encrypted, connections,
        "every connection of the store uses TLS"
    );
}
