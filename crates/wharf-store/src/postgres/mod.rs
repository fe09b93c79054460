//! The shared store: PostgreSQL, for several nodes on one database (`--database postgres://…`).
//!
//! Same tables and the same semantics as the SQLite store; what differs is how they are kept
//! across nodes:
//! - claims take runs with `FOR UPDATE SKIP LOCKED`, so nodes never wait on each other's rows;
//! - `reject` and `queue` decisions, and the release of a `queue` fleet's next run, take a
//!   transaction-scoped advisory lock on the fleet, so they are serial per fleet across nodes;
//! - every node `LISTEN`s: `wharf_queue` (runs queued or released: wake the dispatcher at once)
//!   and `wharf_catalog` (a webhook or fleet changed: drop cached webhook resolutions). Both are
//!   sent with `pg_notify` inside the writing transaction, so they arrive after its commit;
//!   and `wharf_cancel` (a running run was cancelled: the node holding it stops it).

mod catalog;
mod history;
mod listing;
mod outbox;
mod queue;
mod retention;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::Row;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgRow};
use tokio::sync::Notify;
use uuid::Uuid;

use super::*;

/// Channel telling nodes that runs became claimable.
const QUEUE_CHANNEL: &str = "wharf_queue";
/// Channel telling nodes that webhooks or fleets changed.
const CATALOG_CHANNEL: &str = "wharf_catalog";
/// Channel telling nodes that a running run was cancelled; the payload is its id.
const CANCEL_CHANNEL: &str = "wharf_cancel";

/// PostgreSQL implementation of [`Store`].
pub struct PostgresStore {
    pool: PgPool,
    /// Webhook resolutions for ingress; cleared on every node through `wharf_catalog`.
    webhooks: super::cache::WebhookCache,
    /// Fired when another node (or this one) queued or released runs.
    work: Arc<Notify>,
    /// Runs cancelled while running, by any node.
    cancels: tokio::sync::broadcast::Sender<Uuid>,
}

fn backend(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::RowNotFound => StoreError::NotFound("row"),
        other => StoreError::Backend(other.to_string()),
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        backend(e)
    }
}

impl PostgresStore {
    /// Connects, applies migrations and starts listening for other nodes' notifications.
    pub async fn open(url: &str) -> StoreResult<Self> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Backend(format!("bad database URL: {e}")))?;
        Self::open_with(options).await
    }

    /// Like [`PostgresStore::open`], from parsed options (tests set a schema this way).
    pub async fn open_with(options: PgConnectOptions) -> StoreResult<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        sqlx::migrate!("migrations/postgres")
            .run(&pool)
            .await
            .map_err(|e| StoreError::Corrupt(format!("migration failed: {e}")))?;
        let store = PostgresStore {
            pool,
            webhooks: super::cache::WebhookCache::new(),
            work: Arc::new(Notify::new()),
            cancels: tokio::sync::broadcast::channel(256).0,
        };
        store.listen().await?;
        Ok(store)
    }

    /// Follows both channels on a connection of its own; reconnects (dropping every cached
    /// resolution, since notifications may have been missed meanwhile) if it breaks.
    async fn listen(&self) -> StoreResult<()> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener
            .listen_all([QUEUE_CHANNEL, CATALOG_CHANNEL, CANCEL_CHANNEL])
            .await?;
        let (webhooks, work, cancels) = (
            self.webhooks.clone(),
            self.work.clone(),
            self.cancels.clone(),
        );
        tokio::spawn(async move {
            loop {
                match listener.try_recv().await {
                    Ok(Some(n)) if n.channel() == QUEUE_CHANNEL => work.notify_one(),
                    Ok(Some(n)) if n.channel() == CANCEL_CHANNEL => {
                        if let Ok(id) = Uuid::from_str(n.payload()) {
                            let _ = cancels.send(id);
                        }
                    }
                    Ok(Some(_)) => webhooks.forget(),
                    // The connection was lost and is being re-established: anything may have
                    // changed in between.
                    Ok(None) => {
                        webhooks.forget();
                        work.notify_one();
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "listening for other nodes failed; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
        Ok(())
    }

    fn forget_webhooks(&self) {
        self.webhooks.forget();
    }
}

// ---- rows ----------------------------------------------------------------------------------

fn json_col<T: serde::de::DeserializeOwned>(row: &PgRow, col: &str) -> StoreResult<T> {
    let s: String = row.try_get(col)?;
    Ok(serde_json::from_str(&s)?)
}

/// Columns of `runs` that [`run_from`] reads.
const RUN_COLUMNS: &str = "id, fleet_id, request_id, status, attempt, variables, vessels, error, \
     reason, lost_attempts::text AS lost_attempts, replay_of, resumed_from, cancel_requested, \
     concurrency_key, created_at, started_at, finished_at";

fn run_from(row: &PgRow) -> StoreResult<RunRecord> {
    let status: String = row.try_get("status")?;
    Ok(RunRecord {
        id: row.try_get("id")?,
        fleet_id: row.try_get("fleet_id")?,
        request_id: row.try_get("request_id")?,
        status: RunStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("run status {status:?}")))?,
        attempt: row.try_get::<i32, _>("attempt")? as u32,
        variables: json_col(row, "variables")?,
        vessels: json_col(row, "vessels")?,
        error: row.try_get("error")?,
        reason: match row.try_get::<Option<String>, _>("reason")? {
            Some(r) => Some(
                RunReason::parse(&r)
                    .ok_or_else(|| StoreError::Corrupt(format!("run reason {r:?}")))?,
            ),
            None => None,
        },
        lost_attempts: json_col(row, "lost_attempts")?,
        replay_of: row.try_get("replay_of")?,
        resumed_from: row.try_get("resumed_from")?,
        cancel_requested: row.try_get("cancel_requested")?,
        concurrency_key: row.try_get("concurrency_key")?,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
    })
}

/// Columns of `requests` that [`request_from`] reads.
const REQUEST_COLUMNS: &str =
    "id, fleet_id, method, content_type, headers, query, body_size, received_at";

fn request_from(row: &PgRow, body: Vec<u8>) -> StoreResult<RequestRecord> {
    Ok(RequestRecord {
        id: row.try_get("id")?,
        fleet_id: row.try_get("fleet_id")?,
        method: row.try_get("method")?,
        content_type: row.try_get("content_type")?,
        headers: json_col(row, "headers")?,
        query: json_col(row, "query")?,
        body,
        body_size: row.try_get::<i64, _>("body_size")? as u64,
        received_at: row.try_get("received_at")?,
    })
}

/// A nullable JSON column.
fn json_opt<T: serde::de::DeserializeOwned>(row: &PgRow, col: &str) -> StoreResult<Option<T>> {
    let s: Option<String> = row.try_get(col)?;
    Ok(s.map(|s| serde_json::from_str(&s)).transpose()?)
}

/// Columns of `webhooks` that [`webhook_from`] reads.
const WEBHOOK_COLUMNS: &str =
    "id, fleet_id, auth, created_at, rate_limit, deduplicate, previous_id, previous_until";

fn webhook_from(row: &PgRow) -> StoreResult<Webhook> {
    Ok(Webhook {
        id: row.try_get("id")?,
        fleet_id: row.try_get("fleet_id")?,
        auth: json_col(row, "auth")?,
        created_at: row.try_get("created_at")?,
        settings: WebhookSettings {
            rate_limit: json_opt(row, "rate_limit")?,
            deduplicate: json_opt(row, "deduplicate")?,
        },
        previous_id: row.try_get("previous_id")?,
        previous_until: row.try_get("previous_until")?,
    })
}

fn fleet_from(row: &PgRow) -> StoreResult<Fleet> {
    Ok(Fleet {
        id: row.try_get("id")?,
        project_id: row.try_get("project_id")?,
        org_id: row.try_get("org_id")?,
        spec: json_col(row, "spec")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

const FLEET_SELECT: &str = "SELECT f.id, f.project_id, p.org_id, f.spec, f.created_at, f.updated_at
     FROM fleets f JOIN projects p ON p.id = f.project_id";

/// Serialises policy decisions about one fleet across nodes until the transaction ends.
async fn lock_fleet(tx: &mut sqlx::PgConnection, fleet_id: Uuid) -> StoreResult<()> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(fleet_id.to_string())
        .execute(tx)
        .await?;
    Ok(())
}

/// A condition on `concurrency_key` matching `key`, the value bound as `$n` when there is one.
/// Two texts rather than `IS NOT DISTINCT FROM`, which no index serves.
fn key_is(key: Option<&str>, n: usize) -> String {
    match key {
        Some(_) => format!("concurrency_key = ${n}"),
        None => "concurrency_key IS NULL".into(),
    }
}

/// The oldest held run of a `queue` fleet (or of one key of it) becomes claimable; the caller
/// holds the fleet's lock.
async fn release_next(
    tx: &mut sqlx::PgConnection,
    fleet_id: Uuid,
    key: Option<&str>,
) -> StoreResult<()> {
    let sql = format!(
        "UPDATE runs SET held = FALSE WHERE seq =
            (SELECT seq FROM runs WHERE fleet_id = $1 AND {} AND held ORDER BY seq LIMIT 1)",
        key_is(key, 2)
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(fleet_id);
    if let Some(key) = key {
        query = query.bind(key);
    }
    let released = query.execute(&mut *tx).await?;
    if released.rows_affected() > 0 {
        notify(tx, QUEUE_CHANNEL).await?;
    }
    Ok(())
}

/// Sends a notification when the transaction commits.
async fn notify(tx: &mut sqlx::PgConnection, channel: &str) -> StoreResult<()> {
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(channel)
        .execute(tx)
        .await?;
    Ok(())
}
