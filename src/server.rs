//! Wiring: open the store, recover runs, set up the admin token and the demo, then serve HTTP
//! and run the scheduler until shutdown.
//!
//! Start-up is split from serving ([`prepare`] then [`Prepared::run`]) so that callers — `main`,
//! the tests — can see what first start created before traffic flows.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::{self, ApiSettings, AppState};
use crate::config::{Config, Role};
use crate::fleet::FleetDoc;
use crate::ingest::Ingress;
use crate::sandbox::{Sandbox, SandboxConfig};
use crate::scheduler::{Scheduler, SchedulerConfig};
use crate::store::postgres::PostgresStore;
use crate::store::sqlite::SqliteStore;
use crate::store::{Store, WebhookAuth, WebhookSettings};
use crate::util::{random_token, sha256_hex};

/// File (in the data folder) holding the sha256 of a generated admin token.
const ADMIN_HASH_FILE: &str = "admin-token.sha256";

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
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating the data folder {}", config.data_dir.display()))?;
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
    let (admin_token_hash, generated_admin_token) = admin_token(&config)?;
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
        secrets.clone(),
        crate::outbox::OutboxConfig {
            node_id,
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
/// kernel holds them, instead of each costing a task and buffers), the request head bounded in
/// header count and bytes (hyper answers `431` past either), and headers that must arrive within
/// `--header-timeout-seconds` (a slowloris client is disconnected). On shutdown, stops accepting
/// and waits for the connections in flight to finish their requests.
async fn serve_http(
    listener: TcpListener,
    app: axum::Router,
    config: &Config,
    shutdown: CancellationToken,
) {
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
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            () = shutdown.cancelled() => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
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
        let _ = stream.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let conn =
            graceful.watch(http.serve_connection(hyper_util::rt::TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
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

/// The admin token's hash: from the setting, else from the data folder, else a new token whose
/// hash is written there (the token itself is returned to be shown once).
fn admin_token(config: &Config) -> anyhow::Result<(String, Option<String>)> {
    if let Some(token) = config.admin_token.as_deref().filter(|t| !t.is_empty()) {
        return Ok((sha256_hex(token.as_bytes()), None));
    }
    let path = config.data_dir.join(ADMIN_HASH_FILE);
    if let Ok(hash) = std::fs::read_to_string(&path) {
        return Ok((hash.trim().to_owned(), None));
    }
    // 48 alphanumerics: about 285 bits.
    let token = random_token("wharf_admin_", 48);
    write_private(&path, &sha256_hex(token.as_bytes()))?;
    Ok((sha256_hex(token.as_bytes()), Some(token)))
}

fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(contents.as_bytes())?;
    Ok(())
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
