//! Wiring: open the store, recover runs, set up the admin token and the demo, then serve HTTP
//! and run the scheduler until shutdown.
//!
//! Start-up is split from serving ([`prepare`] then [`Prepared::run`]) so that callers — `main`,
//! the tests — can see what first start created before traffic flows.

use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::{self, ApiSettings, AppState};
use crate::config::{Config, Role};
use crate::fleet::FleetDoc;
use crate::ingest::Ingress;
use crate::sandbox::wasm::ArtifactKey;
use crate::sandbox::{Sandbox, SandboxConfig};
use crate::scheduler::{Scheduler, SchedulerConfig};
use crate::store::postgres::PostgresStore;
use crate::store::sqlite::SqliteStore;
use crate::store::{Store, WebhookAuth, WebhookSettings};
use crate::util::{random_token, sha256_hex};

/// File (in the data folder) holding the sha256 of a generated admin token.
const ADMIN_HASH_FILE: &str = "admin-token.sha256";

/// Shortest admin token accepted, in bytes: a token chosen by hand shorter than a 256-bit key
/// is refused at start rather than guessed later.
pub const MIN_ADMIN_TOKEN_BYTES: usize = 32;

/// The script of the demo fleet's vessel.
pub const DEMO_SCRIPT: &str = include_str!("demo.rhai");

/// What first start created, for printing.
#[derive(Debug, Clone)]
pub struct Demo {
    /// The demo fleet.
    pub fleet_id: uuid::Uuid,
    /// Its webhook URL.
    pub url: String,
}

/// A server ready to run.
pub struct Prepared {
    /// `None` on a worker node, which serves no HTTP.
    listener: Option<TcpListener>,
    /// `--metrics-listen`: metrics without the admin token.
    metrics_listener: Option<TcpListener>,
    /// Where `--metrics-listen` serves `GET /metrics`, when set.
    pub metrics_url: Option<String>,
    state: AppState,
    config: Config,
    deliverer: crate::outbox::Deliverer,
    /// The admin token, when it was generated now (shown once, never stored).
    pub generated_admin_token: Option<String>,
    /// The demo fleet, when it was created now.
    pub demo: Option<Demo>,
    /// Base URL of the server.
    pub public_url: String,
    /// Runs found running at start and put back in the queue.
    pub recovered_runs: u64,
    /// Runs found running at start that had used up their attempts, now failed.
    pub failed_runs: u64,
}

/// Opens everything and performs first-start set-up.
/// `listener` is `None` exactly for `--role worker`.
pub async fn prepare(config: Config, listener: Option<TcpListener>) -> anyhow::Result<Prepared> {
    crate::util::private_dir(&config.data_dir)
        .with_context(|| format!("creating the data folder {}", config.data_dir.display()))?;
    // Files written by older versions under the process umask are closed too.
    for file in [crate::auth::secrets::KEY_FILE, ADMIN_HASH_FILE] {
        let path = config.data_dir.join(file);
        crate::util::restrict_file(&path)
            .with_context(|| format!("restricting {} to its owner", path.display()))?;
    }
    // First, so that a weak token stops the start before anything else is opened.
    let (admin_token_hash, generated_admin_token) = admin_token(&config)?;
    let secrets =
        crate::auth::secrets::SecretBox::load(config.secret_key.as_deref(), &config.data_dir)?;
    let store = open_store(&config).await?;
    if config.role == Role::Worker && !store.is_shared() {
        anyhow::bail!(
            "--role worker needs a store shared with ingress nodes (--database postgres://…): \
             with SQLite no other node can accept calls"
        );
    }
    // A store of this node alone: whatever was running belonged to a process that is gone. A
    // shared one: other nodes' runs are running; only expired leases are this node's business.
    let recovered = store
        .requeue_expired(
            crate::util::now_ms(),
            !store.is_shared(),
            config.max_attempts,
        )
        .await?;
    if recovered.requeued + recovered.failed > 0 {
        tracing::warn!(
            requeued = recovered.requeued,
            failed = recovered.failed,
            "runs interrupted by the last stop: re-queued, or failed after max attempts"
        );
    }
    let resealed = reseal_legacy(&store, &secrets)
        .await
        .context("sealing secrets of an earlier version again")?;
    if resealed > 0 {
        tracing::info!(
            values = resealed,
            "secrets sealed by an earlier version sealed again, bound to their place"
        );
    }
    let outbox_hook = crate::outbox::OutboxHook {
        secrets: secrets.clone(),
        wake: Arc::new(tokio::sync::Notify::new()),
    };
    let scheduler_config = SchedulerConfig {
        // An ingress node runs nothing: its scheduler only checks code when fleets are saved.
        workers: if config.role == Role::Ingress {
            0
        } else {
            config.workers
        },
        prefetch: config.prefetch,
        max_slow: config.max_slow_vessels,
        lease: std::time::Duration::from_secs(config.lease_seconds.max(1)),
        max_attempts: config.max_attempts,
        vessel_nice: config.vessel_nice,
        max_running: config.max_running,
        outbox: Some(outbox_hook.clone()),
        ..SchedulerConfig::default()
    };
    let sandbox = Arc::new(Sandbox::new(&SandboxConfig {
        cache_dir: Some(config.data_dir.join("modules")),
        cache_key: Some(ArtifactKey(secrets.derive_key(b"wasm-artifacts"))),
        max_concurrent: Scheduler::max_vessels(&scheduler_config) as u32,
    })?);
    scheduler_config.metrics.watch_sandbox(sandbox.clone());
    let metrics_listener = match config.metrics_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} for metrics"))?,
        ),
        None => None,
    };
    let metrics_url = match &metrics_listener {
        Some(l) => Some(format!("http://{}/metrics", l.local_addr()?)),
        None => None,
    };
    let node_id = scheduler_config.node_id.clone();
    let scheduler = Scheduler::new(store.clone(), sandbox, scheduler_config)?;
    let deliverer = crate::outbox::Deliverer::new(
        store.clone(),
        store.is_shared(),
        secrets.clone(),
        crate::outbox::OutboxConfig {
            node_id,
            proxy: config.egress_proxy.clone(),
            ..crate::outbox::OutboxConfig::new(
                config.max_deliveries,
                crate::outbox::EgressPolicy::new(
                    config.egress_deny.clone(),
                    config.egress_allow.clone(),
                ),
            )
        },
        outbox_hook.wake.clone(),
    )?;
    let local = match &listener {
        Some(l) => l.local_addr()?,
        None => config.listen,
    };
    let public_url = config
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{local}"))
        .trim_end_matches('/')
        .to_owned();
    // A worker serves no webhooks: the demo is for nodes that do.
    let demo = if !config.no_demo && listener.is_some() && store.is_empty().await? {
        Some(
            create_demo(&store, &scheduler, &public_url)
                .await
                .context("creating the demo fleet")?,
        )
    } else {
        None
    };
    let sessions = crate::api::Sessions::new(
        secrets.clone(),
        &admin_token_hash,
        &public_url,
        store.clone(),
    );
    let state = AppState {
        secrets,
        ingress: Ingress::new(store.clone(), scheduler.clone()).with_limits(
            config.max_queued_per_fleet,
            crate::disk::FreeDisk::new(&config.data_dir, config.min_free_disk),
        ),
        store,
        scheduler,
        settings: Arc::new(ApiSettings {
            admin_token_hash,
            public_url: public_url.clone(),
            max_body_bytes: config.max_body_bytes,
            cors_origins: config.cors_origins.clone(),
            max_url_bytes: config.max_url_bytes,
            body_timeout: std::time::Duration::from_secs(config.body_timeout_seconds.max(1)),
            max_document_bytes: config.max_document_bytes,
            sign_ins: crate::api::SignInGuard::new(config.max_failed_sign_ins),
            sessions,
        }),
    };
    Ok(Prepared {
        listener,
        metrics_listener,
        metrics_url,
        state,
        config,
        deliverer,
        generated_admin_token,
        demo,
        public_url,
        recovered_runs: recovered.requeued,
        failed_runs: recovered.failed,
    })
}

impl Prepared {
    /// Serves until `shutdown` fires: then stops accepting, gives running vessels the grace
    /// period to finish, and leaves everything else queued.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        if let Some(listener) = self.metrics_listener {
            let app = api::metrics_router(self.state.clone());
            let token = shutdown.clone();
            tokio::spawn(async move {
                let served = axum::serve(listener, app)
                    .with_graceful_shutdown(async move { token.cancelled().await })
                    .await;
                if let Err(e) = served {
                    tracing::error!(error = %e, "serving metrics failed");
                }
            });
        }
        let scheduler = self.state.scheduler.clone();
        let workers = {
            let token = shutdown.clone();
            tokio::spawn(async move { scheduler.run(token).await })
        };
        let deliveries = {
            let (deliverer, token) = (self.deliverer.clone(), shutdown.clone());
            tokio::spawn(async move { deliverer.run(token).await })
        };
        tokio::spawn(crate::retention::run(
            self.state.store.clone(),
            crate::retention::RetentionConfig {
                keep: self.config.retention(),
                every: self.config.retain_every,
            },
            shutdown.clone(),
        ));
        match self.listener {
            Some(listener) => {
                let app = api::router(self.state);
                serve_http(listener, app, &self.config, shutdown.clone()).await;
            }
            None => shutdown.cancelled().await,
        }
        if tokio::time::timeout(self.config.grace(), workers)
            .await
            .is_err()
        {
            tracing::warn!("grace period over; unfinished runs will be re-queued at next start");
        }
        // Sends in flight get a few seconds; those cut off are sent again at the next start.
        let _ = deliveries.await;
        Ok(())
    }
}

/// Serves the main listener with the limits on what a client controls: at most
/// `--max-connections` connections at once (the next ones wait in the listen backlog, where the
/// kernel holds them, instead of each costing a task and buffers), at most
/// `--max-connections-per-client` of them from one client address (more are closed at once, so
/// one client cannot hold every slot), the request head bounded in header count and bytes (hyper
/// answers `431` past either), and headers that must arrive within `--header-timeout-seconds` (a
/// slowloris client is disconnected). Each request carries its peer's address
/// (`ConnectInfo<SocketAddr>`) for the limits counted per client. On shutdown, stops accepting
/// and waits for the connections in flight to finish their requests.
async fn serve_http(
    listener: TcpListener,
    app: axum::Router,
    config: &Config,
    shutdown: CancellationToken,
) {
    use tower::Layer;
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(std::time::Duration::from_secs(
            config.header_timeout_seconds.max(1),
        ))
        .max_headers(config.max_header_count)
        // hyper refuses a read buffer under 8 KiB.
        .max_buf_size(
            usize::try_from(config.max_header_bytes)
                .unwrap_or(usize::MAX)
                .max(8192),
        );
    let permits = Arc::new(tokio::sync::Semaphore::new(
        usize::try_from(config.max_connections.max(1)).unwrap_or(usize::MAX),
    ));
    let per_client = PerClient::new(config.max_connections_per_client);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            () = shutdown.cancelled() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: pausing lets connections close
                    // instead of spinning on the error.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        // Closed at once, its permit back at once: a client at its cap costs nothing more.
        let Some(slot) = per_client.take(peer.ip()) else {
            tracing::debug!(client = %peer.ip(), "connection refused: the client holds its maximum");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = axum::Extension(axum::extract::ConnectInfo(peer)).layer(app.clone());
        let service = hyper_util::service::TowerToHyperService::new(app);
        let conn =
            graceful.watch(http.serve_connection(hyper_util::rt::TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(slot);
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Connections held per client address (see [`crate::api::client_key`]), capped.
#[derive(Clone)]
struct PerClient {
    /// 0: no cap, nothing counted.
    cap: u64,
    held: Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, u64>>>,
}

/// One connection counted against its client (nothing when there is no cap); given back when
/// dropped.
struct ClientSlot {
    counted: Option<(PerClient, std::net::IpAddr)>,
}

impl PerClient {
    fn new(cap: u64) -> Self {
        PerClient {
            cap,
            held: Arc::default(),
        }
    }

    /// A slot for a new connection from `ip`, unless its client holds the cap already.
    fn take(&self, ip: std::net::IpAddr) -> Option<ClientSlot> {
        if self.cap == 0 {
            return Some(ClientSlot { counted: None });
        }
        let client = crate::api::client_key(ip);
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let count = held.entry(client).or_insert(0);
        if *count >= self.cap {
            return None;
        }
        *count += 1;
        Some(ClientSlot {
            counted: Some((self.clone(), client)),
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let Some((owner, client)) = &self.counted else {
            return;
        };
        let mut held = owner.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = held.get_mut(client) {
            *count -= 1;
            if *count == 0 {
                held.remove(client);
            }
        }
    }
}

/// The store the configuration names (see [`Config::database`]).
async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    let url = config.database.as_deref().unwrap_or("");
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let store = PostgresStore::open(url)
            .await
            .context("opening the PostgreSQL store")?;
        return Ok(Arc::new(store));
    }
    let path = match url.strip_prefix("sqlite://") {
        Some(path) if !path.is_empty() => std::path::PathBuf::from(path),
        _ if url.is_empty() => config.data_dir.join("wharf.db"),
        _ => anyhow::bail!(
            "--database must be postgres://…, postgresql://… or sqlite://PATH (got a value of another scheme)"
        ),
    };
    let store = SqliteStore::open(&path)
        .await
        .with_context(|| format!("opening the SQLite store {}", path.display()))?;
    Ok(Arc::new(store))
}

/// Seals again, bound to their place, the secrets an earlier version sealed without associated
/// data (`v1:`): webhook HMAC secrets, destination credentials in fleet documents, and the
/// headers of deliveries still pending. Runs at every start and finds nothing once done; on a
/// shared PostgreSQL store two nodes starting together may both seal a value again, and the
/// last write wins with a value that opens. Returns how many values were sealed again.
async fn reseal_legacy(
    store: &Arc<dyn Store>,
    secrets: &crate::auth::secrets::SecretBox,
) -> anyhow::Result<usize> {
    use crate::auth::secrets::{SealContext, SecretBox};
    // A legacy value opened and sealed again for `place`; any other value left as it is.
    let reseal = |value: &mut String, place: &SealContext| -> anyhow::Result<bool> {
        if !SecretBox::is_legacy(value) {
            return Ok(false);
        }
        let clear = secrets.open_legacy(value)?;
        *value = secrets.seal(place, &clear);
        Ok(true)
    };
    let mut count = 0;
    for fleet_id in store.fleets_with_legacy_seals().await? {
        let mut fleet = store.fleet(fleet_id).await?;
        let before = count;
        for d in &mut fleet.spec.destinations {
            for (field, value) in [
                ("authorization", &mut d.authorization),
                ("api_key", &mut d.api_key),
                ("signing_secret", &mut d.signing_secret),
            ] {
                if let Some(value) = value {
                    let place = SealContext::destination(fleet_id, &d.name, field);
                    count += usize::from(reseal(value, &place)?);
                }
            }
        }
        if count > before {
            store.replace_fleet(fleet_id, &fleet.spec).await?;
        }
        if let Some(hook) = store.fleet_webhook(fleet_id).await?
            && let WebhookAuth::Hmac(mut auth) = hook.auth
            && auth.secrets.iter().any(|s| SecretBox::is_legacy(&s.sealed))
        {
            for secret in &mut auth.secrets {
                let place = SealContext::webhook_secret(fleet_id);
                count += usize::from(reseal(&mut secret.sealed, &place)?);
            }
            let change = crate::store::WebhookChange {
                auth: Some(WebhookAuth::Hmac(auth)),
                ..Default::default()
            };
            store.update_webhook(fleet_id, &change).await?;
        }
    }
    for mut delivery in store.deliveries_with_legacy_seals().await? {
        let id = delivery.id;
        for (header, value) in delivery.request.sealed_headers.iter_mut() {
            count += usize::from(reseal(value, &SealContext::delivery_header(id, header))?);
        }
        if let Some(value) = &mut delivery.request.signing_secret {
            let place = SealContext::destination(
                delivery.fleet_id,
                &delivery.destination,
                "signing_secret",
            );
            count += usize::from(reseal(value, &place)?);
        }
        store.set_delivery_request(id, &delivery.request).await?;
    }
    Ok(count)
}

/// The admin token's hash: from the setting, else from the data folder, else a new token whose
/// hash is written there (the token itself is returned to be shown once).
fn admin_token(config: &Config) -> anyhow::Result<(String, Option<String>)> {
    if let Some(token) = config.admin_token.as_deref().filter(|t| !t.is_empty()) {
        if token.len() < MIN_ADMIN_TOKEN_BYTES {
            anyhow::bail!(
                "the admin token (--admin-token / WHARF_ADMIN_TOKEN) is {} bytes long; it must \
                 have at least {MIN_ADMIN_TOKEN_BYTES} (e.g. `openssl rand -hex 32`), or leave it \
                 unset to have one generated",
                token.len()
            );
        }
        return Ok((sha256_hex(token.as_bytes()), None));
    }
    let path = config.data_dir.join(ADMIN_HASH_FILE);
    if let Ok(hash) = std::fs::read_to_string(&path) {
        return Ok((hash.trim().to_owned(), None));
    }
    // 48 alphanumerics: about 285 bits, over the 256 of `MIN_ADMIN_TOKEN_BYTES` random bytes.
    let token = random_token("wharf_admin_", 48);
    crate::auth::secrets::write_private(&path, sha256_hex(token.as_bytes()).as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok((sha256_hex(token.as_bytes()), Some(token)))
}

async fn create_demo(
    store: &Arc<dyn Store>,
    scheduler: &Scheduler,
    public_url: &str,
) -> anyhow::Result<Demo> {
    let org = store.create_org("demo").await?;
    let project = store.create_project(org.id, "demo").await?;
    let doc: FleetDoc = serde_json::from_value(serde_json::json!({
        "name": "github-push",
        "variables": {"watched_branch": "main"},
        "vessels": [{"name": "parse", "kind": "rhai", "source": DEMO_SCRIPT}],
    }))?;
    let spec = scheduler.prepare_fleet(doc).await?;
    let fleet = store.create_fleet(project.id, &spec).await?;
    let hook = store
        .create_webhook(
            fleet.id,
            &crate::api::new_webhook_id(),
            &WebhookAuth::None,
            &WebhookSettings::default(),
        )
        .await?;
    Ok(Demo {
        fleet_id: fleet.id,
        url: format!("{public_url}/webhooks/{}", hook.id),
    })
}

/// A GitHub-style push payload that the demo fleet understands.
pub const DEMO_PAYLOAD: &str = r#"{"ref":"refs/heads/main","repository":{"full_name":"acme/tools"},"pusher":{"name":"alice"},"commits":[{"id":"a1"},{"id":"b2"}]}"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_admin_token_needs_32_bytes_and_a_generated_one_has_over_256_bits() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::with_data_dir(dir.path());
        config.admin_token = Some("a".repeat(MIN_ADMIN_TOKEN_BYTES - 1));
        let err = admin_token(&config).unwrap_err().to_string();
        assert!(err.contains("at least 32"), "{err}");
        assert!(!err.contains(&"a".repeat(31)), "the token is echoed: {err}");
        config.admin_token = Some("a".repeat(MIN_ADMIN_TOKEN_BYTES));
        assert!(admin_token(&config).unwrap().1.is_none());

        config.admin_token = None;
        let (hash, generated) = admin_token(&config).unwrap();
        let generated = generated.expect("a token is generated");
        let random = generated.strip_prefix("wharf_admin_").unwrap();
        // 48 characters drawn from 62: 285 bits.
        assert_eq!(random.len(), 48);
        assert!(random.len() as f64 * 62f64.log2() > 256.0);
        assert_eq!(hash, sha256_hex(generated.as_bytes()));
        // The next start reads the hash back and generates nothing.
        assert_eq!(admin_token(&config).unwrap(), (hash, None));
    }

    #[test]
    fn connections_are_capped_per_client_and_given_back_when_they_end() {
        let per_client = PerClient::new(2);
        let one: std::net::IpAddr = "192.0.2.1".parse().unwrap();
        let a = per_client.take(one).expect("first");
        let _b = per_client.take(one).expect("second");
        assert!(per_client.take(one).is_none());
        assert!(per_client.take("192.0.2.2".parse().unwrap()).is_some());
        drop(a);
        assert!(per_client.take(one).is_some());
        // Within one IPv6 /64, addresses share the cap.
        let v6 = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        let _c = per_client.take(v6("2001:db8::1")).unwrap();
        let _d = per_client.take(v6("2001:db8::2")).unwrap();
        assert!(per_client.take(v6("2001:db8::3")).is_none());
        let off = PerClient::new(0);
        let held: Vec<_> = (0..1000).map(|_| off.take(one)).collect();
        assert!(held.iter().all(Option::is_some));
    }
}
