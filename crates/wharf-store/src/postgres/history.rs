//! [`History`] on PostgreSQL.

use sqlx::QueryBuilder;

use super::*;

impl PostgresStore {
    /// A page of run history, newest first: of one fleet, or (`None`) of every fleet.
    pub(super) async fn runs_page(
        &self,
        fleet_id: Option<Uuid>,
        filter: &RunFilter,
    ) -> StoreResult<Vec<RunRecord>> {
        let mut q = QueryBuilder::new(format!("SELECT {RUN_COLUMNS} FROM runs WHERE TRUE"));
        if let Some(fleet_id) = fleet_id {
            q.push(" AND fleet_id = ").push_bind(fleet_id);
        }
        if let Some(status) = filter.status {
            q.push(" AND status = ").push_bind(status.as_str());
        }
        if let Some(before) = filter.before {
            q.push(" AND seq < (SELECT seq FROM runs WHERE id = ")
                .push_bind(before)
                .push(")");
        }
        q.push(" ORDER BY seq DESC LIMIT ")
            .push_bind(filter.limit as i64);
        let rows = q.build().fetch_all(&self.pool).await?;
        rows.iter().map(run_from).collect()
    }
}

#[async_trait]
impl History for PostgresStore {
    async fn runs(&self, fleet_id: Uuid, filter: &RunFilter) -> StoreResult<Vec<RunRecord>> {
        self.runs_page(Some(fleet_id), filter).await
    }

    async fn run(&self, id: Uuid) -> StoreResult<(RunRecord, RequestRecord)> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound("run"))?;
        let run = run_from(&row)?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {REQUEST_COLUMNS} FROM requests WHERE id = $1"
        )))
        .bind(run.request_id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound("request"))?;
        Ok((run, request_from(&row, Vec::new())?))
    }
}
