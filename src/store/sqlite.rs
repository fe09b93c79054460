//! The embedded store: one SQLite file in WAL mode.
//!
//! Ingest commits run with `synchronous = FULL`: the WAL is fsynced before ingress answers
//! `201`, once per batch of calls thanks to [`super::IngestBatcher`]. Every other write (claims,
//! progress, finishes, admin changes) runs with `NORMAL`: it survives a crash of the process at
//! once, and a power loss from the next ingest commit on, whose fsync covers the whole WAL. An
//! fsync per claim and per finish would otherwise cap a node at about a thousand runs a second,
//! and losing one to a power cut only means the run is executed again (runs are at-least-once). SQLite serialises writers,
//! which is what makes the single-statement claim below safe without row locks.

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row};
use uuid::Uuid;

use super::*;
use crate::util::now_ms;

/// SQLite implementation of [`Store`].
pub struct SqliteStore {
    /// The one connection that writes. SQLite admits one writer at a time; several writing
    /// connections would meet in SQLite's busy handler, which sleeps in steps of milliseconds —
    /// waiting for a connection of this pool instead costs microseconds.
    pool: SqlitePool,
    /// Connections for reads, which WAL lets run beside the writer.
    reader: SqlitePool,
    /// Webhook id → target, for ingress: every call resolves its id, and a query through the
    /// driver costs more than the rest of the request. Cleared by every write that could change
    /// an answer (rotate, remove, fleet replace or delete); `generation` stops a lookup that
    /// raced such a write from caching what it read before it.
    webhooks: moka::sync::Cache<String, WebhookTarget>,
    generation: std::sync::atomic::AtomicU64,
}

const RUN_COLUMNS: &str = "id, fleet_id, request_id, status, attempt, variables, vessels, error, created_at, started_at, finished_at";

impl SqliteStore {
    /// Opens (creating if needed) the database file and applies migrations.
    pub async fn open(path: &Path) -> StoreResult<Self> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("migrations/sqlite")
            .run(&pool)
            .await
            .map_err(|e| StoreError::Corrupt(format!("migration failed: {e}")))?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.read_only(true))
            .await?;
        Ok(SqliteStore {
            pool,
            reader,
            webhooks: moka::sync::Cache::new(10_000),
            generation: std::sync::atomic::AtomicU64::new(0),
        })
    }

    fn forget_webhooks(&self) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.webhooks.invalidate_all();
    }

    async fn fleet_row(&self, id: Uuid) -> StoreResult<Fleet> {
        let row = sqlx::query(
            "SELECT f.id, f.project_id, p.org_id, f.spec, f.created_at, f.updated_at
             FROM fleets f JOIN projects p ON p.id = f.project_id WHERE f.id = ?",
        )
        .bind(id.to_string())
        .fetch_optional(&self.reader)
        .await?
        .ok_or(StoreError::NotFound("fleet"))?;
        Ok(Fleet {
            id: uuid_col(&row, "id")?,
            project_id: uuid_col(&row, "project_id")?,
            org_id: uuid_col(&row, "org_id")?,
            spec: serde_json::from_str(row.try_get("spec")?)?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }

    async fn webhook_by(&self, column_is_fleet: bool, key: &str) -> StoreResult<Option<Webhook>> {
        let sql = if column_is_fleet {
            "SELECT id, fleet_id, auth, created_at FROM webhooks WHERE fleet_id = ?"
        } else {
            "SELECT id, fleet_id, auth, created_at FROM webhooks WHERE id = ?"
        };
        let row = sqlx::query(sql)
            .bind(key.to_owned())
            .fetch_optional(&self.reader)
            .await?;
        row.map(|r| webhook_from(&r)).transpose()
    }

    async fn request(&self, id: &str, with_body: bool) -> StoreResult<RequestRecord> {
        let sql = if with_body {
            "SELECT id, fleet_id, method, content_type, headers, query, body, body_size, received_at FROM requests WHERE id = ?"
        } else {
            "SELECT id, fleet_id, method, content_type, headers, query, x'' AS body, body_size, received_at FROM requests WHERE id = ?"
        };
        let row = sqlx::query(sql)
            .bind(id.to_owned())
            .fetch_optional(&self.reader)
            .await?
            .ok_or(StoreError::NotFound("request"))?;
        Ok(RequestRecord {
            id: uuid_col(&row, "id")?,
            fleet_id: uuid_col(&row, "fleet_id")?,
            method: row.try_get("method")?,
            content_type: row.try_get("content_type")?,
            headers: serde_json::from_str(row.try_get("headers")?)?,
            query: serde_json::from_str(row.try_get("query")?)?,
            body: row.try_get("body")?,
            body_size: row.try_get::<i64, _>("body_size")? as u64,
            received_at: row.try_get("received_at")?,
        })
    }
}

/// The two multi-row INSERTs of an ingest batch, in one transaction: the driver's per-statement
/// cost dominates SQLite writes, so statements, not rows, are what to save.
async fn insert_batch(
    conn: &mut sqlx::pool::PoolConnection<sqlx::Sqlite>,
    batch: &[Ingest],
) -> StoreResult<()> {
    let mut tx = sqlx::Connection::begin(&mut **conn).await?;
    let mut requests = QueryBuilder::new(
        "INSERT INTO requests (id, fleet_id, method, content_type, headers, query, body, body_size, received_at) ",
    );
    requests.push_values(batch, |mut b, i| {
        let r = &i.request;
        b.push_bind(r.id.to_string())
            .push_bind(r.fleet_id.to_string())
            .push_bind(r.method.as_str())
            .push_bind(r.content_type.as_str())
            .push_bind(serde_json::to_string(&r.headers).unwrap_or_default())
            .push_bind(serde_json::to_string(&r.query).unwrap_or_default())
            .push_bind(r.body.as_slice())
            .push_bind(r.body_size as i64)
            .push_bind(r.received_at);
    });
    requests.build().execute(&mut *tx).await?;
    let mut runs = QueryBuilder::new(
        "INSERT INTO runs (id, fleet_id, request_id, status, serial, created_at) ",
    );
    runs.push_values(batch, |mut b, i| {
        b.push_bind(i.run_id.to_string())
            .push_bind(i.request.fleet_id.to_string())
            .push_bind(i.request.id.to_string())
            .push_bind("queued")
            .push_bind(i.serial)
            .push_bind(i.request.received_at);
    });
    runs.build().execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(())
}

fn uuid_col(row: &SqliteRow, col: &str) -> StoreResult<Uuid> {
    let s: String = row.try_get(col)?;
    Uuid::from_str(&s).map_err(|e| StoreError::Corrupt(format!("{col}: {e}")))
}

fn webhook_from(row: &SqliteRow) -> StoreResult<Webhook> {
    Ok(Webhook {
        id: row.try_get("id")?,
        fleet_id: uuid_col(row, "fleet_id")?,
        auth: serde_json::from_str(row.try_get("auth")?)?,
        created_at: row.try_get("created_at")?,
    })
}

fn run_from(row: &SqliteRow) -> StoreResult<RunRecord> {
    let status: String = row.try_get("status")?;
    Ok(RunRecord {
        id: uuid_col(row, "id")?,
        fleet_id: uuid_col(row, "fleet_id")?,
        request_id: uuid_col(row, "request_id")?,
        status: RunStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("run status {status:?}")))?,
        attempt: row.try_get::<i64, _>("attempt")? as u32,
        variables: serde_json::from_str(row.try_get("variables")?)?,
        vessels: serde_json::from_str(row.try_get("vessels")?)?,
        error: row.try_get("error")?,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
    })
}

#[async_trait]
impl Store for SqliteStore {
    async fn is_empty(&self) -> StoreResult<bool> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM orgs")
            .fetch_one(&self.reader)
            .await?;
        Ok(n == 0)
    }

    async fn create_org(&self, name: &str) -> StoreResult<Org> {
        let id = Uuid::new_v4();
        sqlx::query("INSERT INTO orgs (id, name, created_at) VALUES (?, ?, ?)")
            .bind(id.to_string())
            .bind(name.to_owned())
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        Ok(Org {
            id,
            name: name.to_owned(),
        })
    }

    async fn create_api_key(&self, org_id: Uuid, key_hash: &str) -> StoreResult<Uuid> {
        let id = Uuid::new_v4();
        let done = sqlx::query(
            "INSERT INTO api_keys (id, org_id, key_hash, created_at)
             SELECT ?, id, ?, ? FROM orgs WHERE id = ?",
        )
        .bind(id.to_string())
        .bind(key_hash.to_owned())
        .bind(now_ms())
        .bind(org_id.to_string())
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound("org"));
        }
        Ok(id)
    }

    async fn revoke_api_key(&self, id: Uuid) -> StoreResult<()> {
        let done =
            sqlx::query("UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL")
                .bind(now_ms())
                .bind(id.to_string())
                .execute(&self.pool)
                .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound("api key"));
        }
        Ok(())
    }

    async fn create_project(&self, org_id: Uuid, name: &str) -> StoreResult<Project> {
        let id = Uuid::new_v4();
        let done = sqlx::query(
            "INSERT INTO projects (id, org_id, name, created_at) SELECT ?, id, ?, ? FROM orgs WHERE id = ?",
        )
        .bind(id.to_string())
        .bind(name.to_owned())
        .bind(now_ms())
        .bind(org_id.to_string())
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound("org"));
        }
        Ok(Project {
            id,
            name: name.to_owned(),
            org_id,
        })
    }

    async fn put_code(&self, code: &[NewCode]) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        for c in code {
            sqlx::query(
                "INSERT OR IGNORE INTO code (sha256, kind, bytes, created_at) VALUES (?, ?, ?, ?)",
            )
            .bind(c.sha256.clone())
            .bind(c.kind.as_str())
            .bind(c.bytes.clone())
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn code(&self, sha256: &str) -> StoreResult<Vec<u8>> {
        sqlx::query_scalar("SELECT bytes FROM code WHERE sha256 = ?")
            .bind(sha256.to_owned())
            .fetch_optional(&self.reader)
            .await?
            .ok_or(StoreError::NotFound("code"))
    }

    async fn create_fleet(&self, project_id: Uuid, spec: &FleetSpec) -> StoreResult<Fleet> {
        let id = Uuid::new_v4();
        let now = now_ms();
        let done = sqlx::query(
            "INSERT INTO fleets (id, project_id, spec, created_at, updated_at)
             SELECT ?, id, ?, ?, ? FROM projects WHERE id = ?",
        )
        .bind(id.to_string())
        .bind(serde_json::to_string(spec)?)
        .bind(now)
        .bind(now)
        .bind(project_id.to_string())
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound("project"));
        }
        self.fleet_row(id).await
    }

    async fn fleet(&self, id: Uuid) -> StoreResult<Fleet> {
        self.fleet_row(id).await
    }

    async fn replace_fleet(&self, id: Uuid, spec: &FleetSpec) -> StoreResult<Fleet> {
        let done = sqlx::query("UPDATE fleets SET spec = ?, updated_at = ? WHERE id = ?")
            .bind(serde_json::to_string(spec)?)
            .bind(now_ms())
            .bind(id.to_string())
            .execute(&self.pool)
            .await?;
        self.forget_webhooks();
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound("fleet"));
        }
        self.fleet_row(id).await
    }

    async fn delete_fleet(&self, id: Uuid) -> StoreResult<()> {
        let done = sqlx::query("DELETE FROM fleets WHERE id = ?")
            .bind(id.to_string())
            .execute(&self.pool)
            .await?;
        self.forget_webhooks();
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound("fleet"));
        }
        Ok(())
    }

    async fn create_webhook(
        &self,
        fleet_id: Uuid,
        id: &str,
        auth: &WebhookAuth,
    ) -> StoreResult<Webhook> {
        self.fleet_row(fleet_id).await?;
        let now = now_ms();
        let done = sqlx::query(
            "INSERT OR IGNORE INTO webhooks (id, fleet_id, auth, created_at) VALUES (?, ?, ?, ?)",
        )
        .bind(id.to_owned())
        .bind(fleet_id.to_string())
        .bind(serde_json::to_string(auth)?)
        .bind(now)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::Conflict(
                "the fleet already has a webhook".into(),
            ));
        }
        Ok(Webhook {
            id: id.to_owned(),
            fleet_id,
            auth: auth.clone(),
            created_at: now,
        })
    }

    async fn rotate_webhook(&self, fleet_id: Uuid, new_id: &str) -> StoreResult<Webhook> {
        let done = sqlx::query("UPDATE webhooks SET id = ?, created_at = ? WHERE fleet_id = ?")
            .bind(new_id.to_owned())
            .bind(now_ms())
            .bind(fleet_id.to_string())
            .execute(&self.pool)
            .await?;
        self.forget_webhooks();
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound("webhook"));
        }
        self.webhook_by(true, &fleet_id.to_string())
            .await?
            .ok_or(StoreError::NotFound("webhook"))
    }

    async fn delete_webhook(&self, fleet_id: Uuid) -> StoreResult<()> {
        let done = sqlx::query("DELETE FROM webhooks WHERE fleet_id = ?")
            .bind(fleet_id.to_string())
            .execute(&self.pool)
            .await?;
        self.forget_webhooks();
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound("webhook"));
        }
        Ok(())
    }

    async fn fleet_webhook(&self, fleet_id: Uuid) -> StoreResult<Option<Webhook>> {
        self.webhook_by(true, &fleet_id.to_string()).await
    }

    async fn resolve_webhook(&self, id: &str) -> StoreResult<Option<WebhookTarget>> {
        if let Some(hit) = self.webhooks.get(id) {
            return Ok(Some(hit));
        }
        let generation = self.generation.load(std::sync::atomic::Ordering::SeqCst);
        let row = sqlx::query(
            "SELECT w.id, w.fleet_id, w.auth, w.created_at, f.project_id, p.org_id, f.spec
             FROM webhooks w JOIN fleets f ON f.id = w.fleet_id JOIN projects p ON p.id = f.project_id
             WHERE w.id = ?",
        )
        .bind(id.to_owned())
        .fetch_optional(&self.reader)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let spec: FleetSpec = serde_json::from_str(row.try_get("spec")?)?;
        let target = WebhookTarget {
            webhook: webhook_from(&row)?,
            project_id: uuid_col(&row, "project_id")?,
            org_id: uuid_col(&row, "org_id")?,
            concurrency: spec.concurrency,
        };
        if self.generation.load(std::sync::atomic::Ordering::SeqCst) == generation {
            self.webhooks.insert(id.to_owned(), target.clone());
        }
        Ok(Some(target))
    }

    async fn has_active_run(&self, fleet_id: Uuid) -> StoreResult<bool> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM runs WHERE fleet_id = ? AND status IN ('queued', 'running')",
        )
        .bind(fleet_id.to_string())
        .fetch_one(&self.reader)
        .await?;
        Ok(n > 0)
    }

    async fn enqueue(&self, batch: &[Ingest]) -> StoreResult<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut conn = self.pool.acquire().await?;
        sqlx::query("PRAGMA synchronous = FULL")
            .execute(&mut *conn)
            .await?;
        let result = insert_batch(&mut conn, batch).await;
        sqlx::query("PRAGMA synchronous = NORMAL")
            .execute(&mut *conn)
            .await?;
        result
    }

    async fn claim(&self, owner: &str, lease_until: i64) -> StoreResult<Option<Claimed>> {
        // One statement: the oldest queued run whose fleet is not serial-and-busy becomes ours.
        let row = sqlx::query(
            "UPDATE runs SET status = 'running', attempt = attempt + 1, lease_owner = ?, lease_until = ?,
                    started_at = ?, vessels = '[]'
             WHERE seq = (
                SELECT r.seq FROM runs r
                WHERE r.status = 'queued'
                  AND (r.serial = 0 OR NOT EXISTS
                        (SELECT 1 FROM runs b WHERE b.fleet_id = r.fleet_id AND b.status = 'running'))
                ORDER BY r.seq LIMIT 1)
             RETURNING id, fleet_id, request_id, status, attempt, variables, vessels, error, created_at, started_at, finished_at",
        )
        .bind(owner.to_owned())
        .bind(lease_until)
        .bind(now_ms())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let run = run_from(&row)?;
        let request = self.request(&run.request_id.to_string(), true).await?;
        Ok(Some(Claimed { run, request }))
    }

    async fn renew(&self, run_id: Uuid, owner: &str, lease_until: i64) -> StoreResult<bool> {
        let done = sqlx::query("UPDATE runs SET lease_until = ? WHERE id = ? AND lease_owner = ? AND status = 'running'")
            .bind(lease_until)
            .bind(run_id.to_string())
            .bind(owner.to_owned())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn progress(
        &self,
        run_id: Uuid,
        owner: &str,
        vars: &BTreeMap<String, String>,
        vessels: &[VesselRun],
    ) -> StoreResult<()> {
        sqlx::query("UPDATE runs SET variables = ?, vessels = ? WHERE id = ? AND lease_owner = ? AND status = 'running'")
            .bind(serde_json::to_string(vars)?)
            .bind(serde_json::to_string(vessels)?)
            .bind(run_id.to_string())
            .bind(owner.to_owned())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn finish(&self, run_id: Uuid, owner: &str, finish: &Finish) -> StoreResult<()> {
        sqlx::query(
            "UPDATE runs SET status = ?, variables = ?, vessels = ?, error = ?, finished_at = ?,
                    lease_owner = NULL, lease_until = NULL
             WHERE id = ? AND lease_owner = ? AND status = 'running'",
        )
        .bind(finish.status.as_str())
        .bind(serde_json::to_string(&finish.variables)?)
        .bind(serde_json::to_string(&finish.vessels)?)
        .bind(finish.error.clone())
        .bind(now_ms())
        .bind(run_id.to_string())
        .bind(owner.to_owned())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn requeue_expired(&self, now: i64, all: bool) -> StoreResult<u64> {
        let done = sqlx::query(
            "UPDATE runs SET status = 'queued', lease_owner = NULL, lease_until = NULL,
                    error = 'node_lost: the worker running attempt ' || attempt || ' stopped; re-queued'
             WHERE status = 'running' AND (? OR lease_until < ?)",
        )
        .bind(all)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn release(&self, run_id: Uuid, owner: &str) -> StoreResult<()> {
        // Attempt goes back down: a graceful hand-back is not a lost attempt.
        sqlx::query(
            "UPDATE runs SET status = 'queued', attempt = attempt - 1, lease_owner = NULL, lease_until = NULL,
                    vessels = '[]'
             WHERE id = ? AND lease_owner = ? AND status = 'running'",
        )
        .bind(run_id.to_string())
        .bind(owner.to_owned())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn runs(&self, fleet_id: Uuid, filter: &RunFilter) -> StoreResult<Vec<RunRecord>> {
        let mut q = QueryBuilder::new(format!("SELECT {RUN_COLUMNS} FROM runs WHERE fleet_id = "));
        q.push_bind(fleet_id.to_string());
        if let Some(status) = filter.status {
            q.push(" AND status = ").push_bind(status.as_str());
        }
        if let Some(before) = filter.before {
            q.push(" AND seq < (SELECT seq FROM runs WHERE id = ")
                .push_bind(before.to_string())
                .push(")");
        }
        q.push(" ORDER BY seq DESC LIMIT ")
            .push_bind(filter.limit as i64);
        let rows = q.build().fetch_all(&self.reader).await?;
        rows.iter().map(run_from).collect()
    }

    async fn run(&self, id: Uuid) -> StoreResult<(RunRecord, RequestRecord)> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE id = ?"
        )))
        .bind(id.to_string())
        .fetch_optional(&self.reader)
        .await?
        .ok_or(StoreError::NotFound("run"))?;
        let run = run_from(&row)?;
        let request = self.request(&run.request_id.to_string(), false).await?;
        Ok((run, request))
    }
}
