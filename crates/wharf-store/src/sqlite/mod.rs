//! The embedded store: one SQLite file in WAL mode, driven through rusqlite.
//!
//! Writes go through one [`writer::Writer`] thread that owns the only writing connection and
//! commits whatever has gathered in one transaction; reads use a small pool of read-only
//! connections on tokio's blocking threads, which WAL lets run beside the writer without ever
//! waiting for it. rusqlite over sqlx because of measured per-statement cost: sqlx's SQLite
//! driver hands every statement to a worker thread and back (~60 µs here), rusqlite with cached
//! prepared statements runs it in place (see BENCHMARKS.md).

mod catalog;
mod history;
mod listing;
mod outbox;
mod queue;
mod retention;
mod writer;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, Row};
use uuid::Uuid;

use super::*;
use writer::Writer;

/// Schema migrations, applied in order; `PRAGMA user_version` counts those applied.
const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/sqlite/0001_init.sql"),
    include_str!("../../migrations/sqlite/0002_queue_engine.sql"),
    include_str!("../../migrations/sqlite/0003_scheduling.sql"),
    include_str!("../../migrations/sqlite/0004_admission.sql"),
    include_str!("../../migrations/sqlite/0005_listing.sql"),
    include_str!("../../migrations/sqlite/0006_outbox.sql"),
    include_str!("../../migrations/sqlite/0007_auth.sql"),
    include_str!("../../migrations/sqlite/0008_sessions.sql"),
    include_str!("../../migrations/sqlite/0009_fair_claims.sql"),
];

/// Read-only connections: at most this many reads run at once (more wait their turn rather than
/// each taking a blocking thread and a connection of its own), and as many stay open between
/// reads.
const READERS: usize = 8;

/// SQLite implementation of [`Store`].
pub struct SqliteStore {
    writer: Writer,
    readers: Arc<Readers>,
    /// Webhook resolutions for ingress.
    webhooks: super::cache::WebhookCache,
    /// Fleet id → fleet, for claims. Only the writer thread fills and clears it, inside the
    /// same transactions that change fleets, so a claim never sees a stale document.
    fleets: moka::sync::Cache<Uuid, Arc<Fleet>>,
    /// How claims choose among ready runs.
    claim_order: ClaimOrder,
    /// Dropped with the store, which ends the checkpoint thread (it holds the other end).
    _checkpointer: std::sync::mpsc::Sender<()>,
}

/// Maps a driver error into the store's own error.
pub(super) fn backend(e: rusqlite::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match e {
            rusqlite::Error::QueryReturnedNoRows => StoreError::NotFound("row"),
            other => backend(other),
        }
    }
}

/// Creates the database file readable by its owner only (mode 0600) before SQLite opens it,
/// and closes an existing one and its `-wal`/`-shm` files the same way: SQLite gives the
/// journal files it creates the mode of the database file, so the whole store stays private
/// whatever the process umask.
fn restrict_files(path: &Path) -> StoreResult<()> {
    let io = |e: std::io::Error| StoreError::Backend(format!("{}: {e}", path.display()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path).map_err(io)?;
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        crate::files::restrict_file(Path::new(&file)).map_err(io)?;
    }
    Ok(())
}

impl SqliteStore {
    /// Opens (creating if needed) the database file, applies migrations and starts the writer.
    pub async fn open(path: &Path) -> StoreResult<Self> {
        let path = path.to_owned();
        let conn = tokio::task::spawn_blocking({
            let path = path.clone();
            move || open_writer(&path)
        })
        .await
        .map_err(|e| StoreError::Backend(e.to_string()))??;
        let writer =
            Writer::start(conn).map_err(|e| StoreError::Backend(format!("writer thread: {e}")))?;
        let checkpointer = start_checkpointer(&path)?;
        Ok(SqliteStore {
            writer,
            readers: Arc::new(Readers {
                path,
                idle: Mutex::new(Vec::new()),
                permits: Arc::new(tokio::sync::Semaphore::new(READERS)),
            }),
            webhooks: super::cache::WebhookCache::new(),
            fleets: moka::sync::Cache::new(10_000),
            claim_order: ClaimOrder::default(),
            _checkpointer: checkpointer,
        })
    }

    /// The same store, claiming in `order` (to measure fairness against arrival order).
    pub fn with_claim_order(mut self, order: ClaimOrder) -> Self {
        self.claim_order = order;
        self
    }

    /// Runs `f` on a read-only connection, off the reactor.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let readers = self.readers.clone();
        let permit = readers
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| StoreError::Backend(format!("a read failed: {e}")))?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let conn = readers.take()?;
            let result = f(&conn);
            readers.put(conn);
            result
        })
        .await
        .map_err(|e| StoreError::Backend(format!("a read failed: {e}")))?
    }

    /// Runs `f` in the writer's next transaction; returns once it is committed.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        self.writer.call(false, f).await
    }

    fn forget_webhooks(&self) {
        self.webhooks.forget();
    }
}

fn open_writer(path: &Path) -> StoreResult<Connection> {
    restrict_files(path)?;
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Each writer job runs in a savepoint; its statement journal stays in memory instead of
    // spilling to a temporary file once past 64 KiB.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // Checkpoints run on their own thread (see `checkpointer`); this is only the backstop should
    // that thread fall behind: at 10,000 pages (~40 MiB of WAL) the writer checkpoints itself.
    conn.pragma_update(None, "wal_autocheckpoint", 10_000)?;
    conn.set_prepared_statement_cache_capacity(64);
    migrate(&conn)?;
    Ok(conn)
}

/// How often the checkpointer copies committed WAL frames into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);

/// Starts the thread that checkpoints the WAL beside the writer. A PASSIVE checkpoint never
/// blocks the writer or readers; done here, its copying and fsyncs stay off the one thread every
/// write waits for. Once everything is checkpointed, SQLite restarts the WAL from its beginning
/// at the next write, so the file stays small. The thread ends once the returned sender is
/// dropped, with the store: a process that opens and drops stores keeps no thread per store.
fn start_checkpointer(path: &Path) -> StoreResult<std::sync::mpsc::Sender<()>> {
    use std::sync::mpsc::RecvTimeoutError;
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_millis(100))?;
    // This connection must never checkpoint on its own commits (it makes none) nor on close.
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    std::thread::Builder::new()
        .name("sqlite-checkpoint".into())
        .spawn(move || {
            // Nothing is ever sent: the wait ends on the period or on the store's drop.
            while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(CHECKPOINT_EVERY) {
                let result: rusqlite::Result<(i64, i64, i64)> =
                    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                    });
                if let Err(e) = result {
                    tracing::warn!(error = %e, "checkpointing the WAL failed; retrying");
                }
            }
        })
        .map_err(|e| StoreError::Backend(format!("checkpoint thread: {e}")))?;
    Ok(stop)
}

/// Applies the migrations not yet applied, each in its own transaction.
fn migrate(conn: &Connection) -> StoreResult<()> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let mut applied = usize::try_from(version).unwrap_or(usize::MAX);
    // Databases made by earlier versions recorded their first migration in sqlx's table.
    let legacy: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = '_sqlx_migrations')",
        [],
        |r| r.get(0),
    )?;
    if applied == 0 && legacy {
        applied = 1;
    }
    if applied > MIGRATIONS.len() {
        return Err(StoreError::Corrupt(format!(
            "the database is at schema version {applied}, newer than this wharf knows ({})",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        let version = i + 1;
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE; {sql}; PRAGMA user_version = {version}; COMMIT;"
        ))
        .map_err(|e| {
            let _ = conn.execute_batch("ROLLBACK");
            StoreError::Corrupt(format!("migration {version} failed: {e}"))
        })?;
    }
    Ok(())
}

/// Read-only connections, opened on demand and kept for reuse.
struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    permits: Arc<tokio::sync::Semaphore>,
}

impl Readers {
    fn take(&self) -> StoreResult<Connection> {
        if let Some(conn) = self.idle.lock().ok().and_then(|mut idle| idle.pop()) {
            return Ok(conn);
        }
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.set_prepared_statement_cache_capacity(32);
        Ok(conn)
    }

    fn put(&self, conn: Connection) {
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < READERS
        {
            idle.push(conn);
        }
    }
}

// ---- rows ----------------------------------------------------------------------------------

fn uuid_at(row: &Row, idx: &str) -> rusqlite::Result<Uuid> {
    let s: String = row.get(idx)?;
    Uuid::from_str(&s).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn json_at<T: serde::de::DeserializeOwned>(row: &Row, idx: &str) -> rusqlite::Result<T> {
    let s: String = row.get(idx)?;
    serde_json::from_str(&s).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

/// Columns of `runs` that [`run_from`] reads.
const RUN_COLUMNS: &str = "id, fleet_id, request_id, status, attempt, variables, vessels, error, \
     reason, lost_attempts, replay_of, resumed_from, cancel_requested, concurrency_key, created_at, \
     started_at, finished_at";

fn run_from(row: &Row) -> rusqlite::Result<RunRecord> {
    let status: String = row.get("status")?;
    Ok(RunRecord {
        id: uuid_at(row, "id")?,
        fleet_id: uuid_at(row, "fleet_id")?,
        request_id: uuid_at(row, "request_id")?,
        status: RunStatus::parse(&status).ok_or_else(|| {
            rusqlite::Error::InvalidColumnType(
                0,
                format!("status {status}"),
                rusqlite::types::Type::Text,
            )
        })?,
        attempt: row.get::<_, i64>("attempt")? as u32,
        variables: json_at(row, "variables")?,
        vessels: json_at(row, "vessels")?,
        error: row.get("error")?,
        reason: match row.get::<_, Option<String>>("reason")? {
            Some(r) => Some(RunReason::parse(&r).ok_or_else(|| {
                rusqlite::Error::InvalidColumnType(
                    0,
                    format!("reason {r}"),
                    rusqlite::types::Type::Text,
                )
            })?),
            None => None,
        },
        lost_attempts: json_at(row, "lost_attempts")?,
        replay_of: match row.get::<_, Option<String>>("replay_of")? {
            Some(_) => Some(uuid_at(row, "replay_of")?),
            None => None,
        },
        resumed_from: row.get("resumed_from")?,
        cancel_requested: row.get("cancel_requested")?,
        concurrency_key: row.get("concurrency_key")?,
        created_at: row.get("created_at")?,
        started_at: row.get("started_at")?,
        finished_at: row.get("finished_at")?,
    })
}

/// Columns of `requests` that [`request_from`] reads (the body as `body`).
const REQUEST_COLUMNS: &str =
    "id, fleet_id, method, content_type, headers, query, body_size, received_at";

fn request_from(row: &Row, body: Vec<u8>) -> rusqlite::Result<RequestRecord> {
    Ok(RequestRecord {
        id: uuid_at(row, "id")?,
        fleet_id: uuid_at(row, "fleet_id")?,
        method: row.get("method")?,
        content_type: row.get("content_type")?,
        headers: json_at(row, "headers")?,
        query: json_at(row, "query")?,
        body,
        body_size: row.get::<_, i64>("body_size")? as u64,
        received_at: row.get("received_at")?,
    })
}

/// A nullable JSON column.
fn json_opt<T: serde::de::DeserializeOwned>(row: &Row, idx: &str) -> rusqlite::Result<Option<T>> {
    let s: Option<String> = row.get(idx)?;
    s.map(|s| {
        serde_json::from_str(&s).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
        })
    })
    .transpose()
}

/// Columns of `webhooks` that [`webhook_from`] reads.
const WEBHOOK_COLUMNS: &str =
    "id, fleet_id, auth, created_at, rate_limit, deduplicate, previous_id, previous_until";

fn webhook_from(row: &Row) -> rusqlite::Result<Webhook> {
    Ok(Webhook {
        id: row.get("id")?,
        fleet_id: uuid_at(row, "fleet_id")?,
        auth: json_at(row, "auth")?,
        created_at: row.get("created_at")?,
        settings: WebhookSettings {
            rate_limit: json_opt(row, "rate_limit")?,
            deduplicate: json_opt(row, "deduplicate")?,
        },
        previous_id: row.get("previous_id")?,
        previous_until: row.get("previous_until")?,
    })
}

/// Loads a fleet with its project's org.
fn fleet_by_id(conn: &Connection, id: Uuid) -> StoreResult<Option<Fleet>> {
    let mut stmt = conn.prepare_cached(
        "SELECT f.id, f.project_id, p.org_id, f.spec, f.created_at, f.updated_at
         FROM fleets f JOIN projects p ON p.id = f.project_id WHERE f.id = ?1",
    )?;
    let mut rows = stmt.query([id.to_string()])?;
    let Some(row) = rows.next()? else {
        return Ok(None);
    };
    Ok(Some(Fleet {
        id: uuid_at(row, "id")?,
        project_id: uuid_at(row, "project_id")?,
        org_id: uuid_at(row, "org_id")?,
        spec: json_at(row, "spec")?,
        created_at: row.get("created_at")?,
        updated_at: row.get("updated_at")?,
    }))
}
