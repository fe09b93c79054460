//! [`Listing`] on SQLite: read-only connections; each page is one range scan of an index from
//! migration 0005 (runs: of the primary key, newest first).

use rusqlite::OptionalExtension;
use rusqlite::types::Value as SqlValue;

use super::*;

/// Adds the `before` cursor: rows ordered before the row with that id in `table`.
fn cursor(sql: &mut String, args: &mut Vec<SqlValue>, alias: &str, table: &str, page: &Page) {
    if let Some(before) = page.before {
        sql.push_str(&format!(
            " AND ({alias}.created_at, {alias}.id) < (SELECT created_at, id FROM {table} WHERE id = ?)"
        ));
        args.push(SqlValue::Text(before.to_string()));
    }
}

fn finish_page(sql: &mut String, args: &mut Vec<SqlValue>, alias: &str, page: &Page) {
    sql.push_str(&format!(
        " ORDER BY {alias}.created_at DESC, {alias}.id DESC LIMIT ?"
    ));
    args.push(SqlValue::Integer(page.limit as i64));
}

fn org_from(row: &Row) -> rusqlite::Result<OrgItem> {
    Ok(OrgItem {
        id: uuid_at(row, "id")?,
        name: row.get("name")?,
        created_at: row.get("created_at")?,
    })
}

fn project_from(row: &Row) -> rusqlite::Result<ProjectItem> {
    Ok(ProjectItem {
        id: uuid_at(row, "id")?,
        org_id: uuid_at(row, "org_id")?,
        name: row.get("name")?,
        created_at: row.get("created_at")?,
    })
}

fn fleet_item_from(row: &Row) -> rusqlite::Result<FleetItem> {
    let spec: FleetSpec = json_at(row, "spec")?;
    let status: Option<String> = row.get("last_status")?;
    Ok(FleetItem {
        id: uuid_at(row, "id")?,
        project_id: uuid_at(row, "project_id")?,
        org_id: uuid_at(row, "org_id")?,
        vessels: spec.vessels.into_iter().map(|v| v.name).collect(),
        name: spec.name,
        webhook_id: row.get("webhook_id")?,
        last_run_status: status.as_deref().and_then(RunStatus::parse),
        created_at: row.get("created_at")?,
        updated_at: row.get("updated_at")?,
    })
}

#[async_trait]
impl Listing for SqliteStore {
    async fn orgs(&self, page: &Page) -> StoreResult<Vec<OrgItem>> {
        let page = page.clone();
        self.read(move |c| {
            let mut sql = "SELECT o.id, o.name, o.created_at FROM orgs o WHERE 1".to_owned();
            let mut args = Vec::new();
            if let Some(name) = &page.name {
                sql.push_str(" AND o.name = ?");
                args.push(SqlValue::Text(name.clone()));
            }
            cursor(&mut sql, &mut args, "o", "orgs", &page);
            finish_page(&mut sql, &mut args, "o", &page);
            let mut stmt = c.prepare_cached(&sql)?;
            let rows = stmt
                .query_map(rusqlite::params_from_iter(args), org_from)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn org(&self, id: Uuid) -> StoreResult<OrgItem> {
        self.read(move |c| {
            c.prepare_cached("SELECT id, name, created_at FROM orgs WHERE id = ?1")?
                .query_row([id.to_string()], org_from)
                .optional()?
                .ok_or(StoreError::NotFound("org"))
        })
        .await
    }

    async fn projects(&self, org_id: Uuid, page: &Page) -> StoreResult<Vec<ProjectItem>> {
        let page = page.clone();
        self.read(move |c| {
            let mut sql =
                "SELECT p.id, p.org_id, p.name, p.created_at FROM projects p WHERE p.org_id = ?"
                    .to_owned();
            let mut args = vec![SqlValue::Text(org_id.to_string())];
            if let Some(name) = &page.name {
                sql.push_str(" AND p.name = ?");
                args.push(SqlValue::Text(name.clone()));
            }
            cursor(&mut sql, &mut args, "p", "projects", &page);
            finish_page(&mut sql, &mut args, "p", &page);
            let mut stmt = c.prepare_cached(&sql)?;
            let rows = stmt
                .query_map(rusqlite::params_from_iter(args), project_from)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn project(&self, id: Uuid) -> StoreResult<ProjectItem> {
        self.read(move |c| {
            c.prepare_cached("SELECT id, org_id, name, created_at FROM projects WHERE id = ?1")?
                .query_row([id.to_string()], project_from)
                .optional()?
                .ok_or(StoreError::NotFound("project"))
        })
        .await
    }

    async fn fleets(&self, project_id: Option<Uuid>, page: &Page) -> StoreResult<Vec<FleetItem>> {
        let page = page.clone();
        self.read(move |c| {
            // The newest run of each listed fleet is one probe of `runs_by_fleet`.
            let mut sql = "SELECT f.id, f.project_id, p.org_id, f.spec, f.created_at, f.updated_at,
                    w.id AS webhook_id,
                    (SELECT r.status FROM runs r WHERE r.fleet_id = f.id
                     ORDER BY r.seq DESC LIMIT 1) AS last_status
                 FROM fleets f JOIN projects p ON p.id = f.project_id
                 LEFT JOIN webhooks w ON w.fleet_id = f.id WHERE 1"
                .to_owned();
            let mut args = Vec::new();
            if let Some(project_id) = project_id {
                sql.push_str(" AND f.project_id = ?");
                args.push(SqlValue::Text(project_id.to_string()));
            }
            if let Some(name) = &page.name {
                sql.push_str(" AND json_extract(f.spec, '$.name') = ?");
                args.push(SqlValue::Text(name.clone()));
            }
            cursor(&mut sql, &mut args, "f", "fleets", &page);
            finish_page(&mut sql, &mut args, "f", &page);
            let mut stmt = c.prepare_cached(&sql)?;
            let rows = stmt
                .query_map(rusqlite::params_from_iter(args), fleet_item_from)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn recent_runs(&self, filter: &RunFilter) -> StoreResult<Vec<RunRecord>> {
        let filter = filter.clone();
        self.read(move |c| super::history::runs_page(c, None, &filter))
            .await
    }

    async fn queue_stats(&self) -> StoreResult<QueueStats> {
        self.read(|c| {
            // Both aggregates read only the `runs_active` index (its rowid is `seq`); the time
            // of the oldest is then one primary-key lookup.
            let (queued, oldest): (i64, Option<i64>) = c
                .prepare_cached(
                    "SELECT COUNT(*), MIN(seq) FROM runs
                     WHERE status IN ('queued', 'running') AND status = 'queued'",
                )?
                .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            let oldest_queued_at = match oldest {
                None => None,
                Some(seq) => c
                    .prepare_cached("SELECT created_at FROM runs WHERE seq = ?1")?
                    .query_row([seq], |r| r.get(0))
                    .optional()?,
            };
            Ok(QueueStats {
                queued: queued as u64,
                oldest_queued_at,
            })
        })
        .await
    }

    async fn run_counts(
        &self,
        since: i64,
        bucket_ms: i64,
        fleet_id: Option<Uuid>,
    ) -> StoreResult<Vec<RunCount>> {
        let bucket_ms = bucket_ms.max(1);
        self.read(move |c| {
            // `seq` follows creation (runs are inserted in order by the one writer), so the
            // window starts after the newest run older than `since`: found by walking the
            // primary key backwards, then the window is one range of it.
            let mut stmt = c.prepare_cached(
                "SELECT fleet_id, (created_at - ?1) / ?2 AS bucket, status, COUNT(*) AS n
                 FROM runs
                 WHERE seq > COALESCE(
                         (SELECT seq FROM runs WHERE created_at < ?1 ORDER BY seq DESC LIMIT 1), 0)
                   AND created_at >= ?1 AND (?3 IS NULL OR fleet_id = ?3)
                 GROUP BY fleet_id, bucket, status",
            )?;
            let fleet = fleet_id.map(|f| f.to_string());
            let rows = stmt
                .query_map(rusqlite::params![since, bucket_ms, fleet], |row| {
                    let status: String = row.get("status")?;
                    Ok((
                        uuid_at(row, "fleet_id")?,
                        row.get::<_, i64>("bucket")?,
                        status,
                        row.get::<_, i64>("n")?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows
                .into_iter()
                .filter_map(|(fleet_id, bucket, status, n)| {
                    Some(RunCount {
                        fleet_id,
                        bucket,
                        status: RunStatus::parse(&status)?,
                        count: n as u64,
                    })
                })
                .collect())
        })
        .await
    }

    async fn body_preview(&self, run_id: Uuid, max: usize) -> StoreResult<BodyPreview> {
        self.read(move |c| {
            c.prepare_cached(
                "SELECT substr(q.body, 1, ?2), q.body_size FROM runs r
                 JOIN requests q ON q.id = r.request_id WHERE r.id = ?1",
            )?
            .query_row(rusqlite::params![run_id.to_string(), max as i64], |r| {
                Ok(BodyPreview {
                    bytes: r.get::<_, Option<Vec<u8>>>(0)?.unwrap_or_default(),
                    body_size: r.get::<_, i64>(1)? as u64,
                })
            })
            .optional()?
            .ok_or(StoreError::NotFound("run"))
        })
        .await
    }
}
