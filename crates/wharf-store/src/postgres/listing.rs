//! [`Listing`] on PostgreSQL: each page is one range scan of an index from migration 0004
//! (runs: of the primary key, newest first).

use sqlx::{Postgres, QueryBuilder};

use super::*;

/// Adds the `before` cursor (rows ordered before the row with that id in `table`), the order
/// and the limit.
fn finish_page(q: &mut QueryBuilder<Postgres>, alias: &str, table: &str, page: &Page) {
    if let Some(before) = page.before {
        q.push(format!(
            " AND ({alias}.created_at, {alias}.id) < (SELECT created_at, id FROM {table} WHERE id = "
        ))
        .push_bind(before)
        .push(")");
    }
    q.push(format!(
        " ORDER BY {alias}.created_at DESC, {alias}.id DESC LIMIT "
    ))
    .push_bind(page.limit as i64);
}

fn org_from(row: &PgRow) -> StoreResult<OrgItem> {
    Ok(OrgItem {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        created_at: row.try_get("created_at")?,
    })
}

fn project_from(row: &PgRow) -> StoreResult<ProjectItem> {
    Ok(ProjectItem {
        id: row.try_get("id")?,
        org_id: row.try_get("org_id")?,
        name: row.try_get("name")?,
        created_at: row.try_get("created_at")?,
    })
}

fn fleet_item_from(row: &PgRow) -> StoreResult<FleetItem> {
    let spec: FleetSpec = json_col(row, "spec")?;
    let status: Option<String> = row.try_get("last_status")?;
    Ok(FleetItem {
        id: row.try_get("id")?,
        project_id: row.try_get("project_id")?,
        org_id: row.try_get("org_id")?,
        vessels: spec.vessels.into_iter().map(|v| v.name).collect(),
        name: spec.name,
        webhook_id: row.try_get("webhook_id")?,
        last_run_status: status.as_deref().and_then(RunStatus::parse),
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

#[async_trait]
impl Listing for PostgresStore {
    async fn orgs(&self, page: &Page) -> StoreResult<Vec<OrgItem>> {
        let mut q = QueryBuilder::new("SELECT o.id, o.name, o.created_at FROM orgs o WHERE TRUE");
        if let Some(name) = &page.name {
            q.push(" AND o.name = ").push_bind(name.clone());
        }
        finish_page(&mut q, "o", "orgs", page);
        let rows = q.build().fetch_all(&self.pool).await?;
        rows.iter().map(org_from).collect()
    }

    async fn org(&self, id: Uuid) -> StoreResult<OrgItem> {
        let row = sqlx::query("SELECT id, name, created_at FROM orgs WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound("org"))?;
        org_from(&row)
    }

    async fn projects(&self, org_id: Uuid, page: &Page) -> StoreResult<Vec<ProjectItem>> {
        let mut q = QueryBuilder::new(
            "SELECT p.id, p.org_id, p.name, p.created_at FROM projects p WHERE p.org_id = ",
        );
        q.push_bind(org_id);
        if let Some(name) = &page.name {
            q.push(" AND p.name = ").push_bind(name.clone());
        }
        finish_page(&mut q, "p", "projects", page);
        let rows = q.build().fetch_all(&self.pool).await?;
        rows.iter().map(project_from).collect()
    }

    async fn project(&self, id: Uuid) -> StoreResult<ProjectItem> {
        let row = sqlx::query("SELECT id, org_id, name, created_at FROM projects WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound("project"))?;
        project_from(&row)
    }

    async fn fleets(&self, project_id: Option<Uuid>, page: &Page) -> StoreResult<Vec<FleetItem>> {
        // The newest run of each listed fleet is one probe of `runs_by_fleet`.
        let mut q = QueryBuilder::new(
            "SELECT f.id, f.project_id, p.org_id, f.spec, f.created_at, f.updated_at,
                w.id AS webhook_id,
                (SELECT r.status FROM runs r WHERE r.fleet_id = f.id
                 ORDER BY r.seq DESC LIMIT 1) AS last_status
             FROM fleets f JOIN projects p ON p.id = f.project_id
             LEFT JOIN webhooks w ON w.fleet_id = f.id WHERE TRUE",
        );
        if let Some(project_id) = project_id {
            q.push(" AND f.project_id = ").push_bind(project_id);
        }
        if let Some(name) = &page.name {
            q.push(" AND ((f.spec::jsonb) ->> 'name') = ")
                .push_bind(name.clone());
        }
        finish_page(&mut q, "f", "fleets", page);
        let rows = q.build().fetch_all(&self.pool).await?;
        rows.iter().map(fleet_item_from).collect()
    }

    async fn recent_runs(&self, filter: &RunFilter) -> StoreResult<Vec<RunRecord>> {
        self.runs_page(None, filter).await
    }

    async fn queue_stats(&self) -> StoreResult<QueueStats> {
        // Read from the `runs_active` index; the oldest is then one primary-key lookup.
        let row = sqlx::query(
            "SELECT COUNT(*) AS queued,
                (SELECT created_at FROM runs WHERE seq = MIN(a.seq)) AS oldest
             FROM runs a WHERE a.status IN ('queued', 'running') AND a.status = 'queued'",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(QueueStats {
            queued: row.try_get::<i64, _>("queued")? as u64,
            oldest_queued_at: row.try_get("oldest")?,
        })
    }

    async fn run_counts(
        &self,
        since: i64,
        bucket_ms: i64,
        fleet_id: Option<Uuid>,
    ) -> StoreResult<Vec<RunCount>> {
        // As on SQLite: the window starts after the newest run older than `since`, found by a
        // backward walk of the primary key; the window is then one range of it.
        let rows = sqlx::query(
            "SELECT fleet_id, (created_at - $1) / $2 AS bucket, status, COUNT(*) AS n
             FROM runs
             WHERE seq > COALESCE(
                     (SELECT seq FROM runs WHERE created_at < $1 ORDER BY seq DESC LIMIT 1), 0)
               AND created_at >= $1 AND ($3::uuid IS NULL OR fleet_id = $3)
             GROUP BY fleet_id, bucket, status",
        )
        .bind(since)
        .bind(bucket_ms.max(1))
        .bind(fleet_id)
        .fetch_all(&self.pool)
        .await?;
        let mut counts = Vec::with_capacity(rows.len());
        for row in rows {
            let status: String = row.try_get("status")?;
            if let Some(status) = RunStatus::parse(&status) {
                counts.push(RunCount {
                    fleet_id: row.try_get("fleet_id")?,
                    bucket: row.try_get("bucket")?,
                    status,
                    count: row.try_get::<i64, _>("n")? as u64,
                });
            }
        }
        Ok(counts)
    }

    async fn body_preview(&self, run_id: Uuid, max: usize) -> StoreResult<BodyPreview> {
        let row = sqlx::query(
            "SELECT substring(q.body FROM 1 FOR $2) AS head, q.body_size FROM runs r
             JOIN requests q ON q.id = r.request_id WHERE r.id = $1",
        )
        .bind(run_id)
        .bind(i32::try_from(max).unwrap_or(i32::MAX))
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound("run"))?;
        Ok(BodyPreview {
            bytes: row.try_get("head")?,
            body_size: row.try_get::<i64, _>("body_size")? as u64,
        })
    }
}
