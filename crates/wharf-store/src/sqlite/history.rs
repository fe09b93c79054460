//! [`History`] on SQLite: read-only connections, never waiting for the writer.

use rusqlite::OptionalExtension;
use rusqlite::types::Value as SqlValue;

use super::*;

/// A page of run history, newest first: of one fleet, or (`None`) of every fleet.
pub(super) fn runs_page(
    c: &Connection,
    fleet_id: Option<Uuid>,
    filter: &RunFilter,
) -> StoreResult<Vec<RunRecord>> {
    let mut sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE 1");
    let mut args: Vec<SqlValue> = Vec::new();
    if let Some(fleet_id) = fleet_id {
        sql.push_str(" AND fleet_id = ?");
        args.push(SqlValue::Text(fleet_id.to_string()));
    }
    if let Some(status) = filter.status {
        sql.push_str(" AND status = ?");
        args.push(SqlValue::Text(status.as_str().into()));
        if fleet_id.is_some() && matches!(status, RunStatus::Queued | RunStatus::Running) {
            // Lets SQLite use the small `runs_active` index instead of the history.
            sql.push_str(" AND status IN ('queued', 'running')");
        }
    }
    if let Some(before) = filter.before {
        sql.push_str(" AND seq < (SELECT seq FROM runs WHERE id = ?)");
        args.push(SqlValue::Text(before.to_string()));
    }
    sql.push_str(" ORDER BY seq DESC LIMIT ?");
    args.push(SqlValue::Integer(filter.limit as i64));
    let mut stmt = c.prepare_cached(&sql)?;
    let rows = stmt
        .query_map(rusqlite::params_from_iter(args), run_from)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

#[async_trait]
impl History for SqliteStore {
    async fn runs(&self, fleet_id: Uuid, filter: &RunFilter) -> StoreResult<Vec<RunRecord>> {
        let filter = filter.clone();
        self.read(move |c| runs_page(c, Some(fleet_id), &filter))
            .await
    }

    async fn run(&self, id: Uuid) -> StoreResult<(RunRecord, RequestRecord)> {
        self.read(move |c| {
            let run = c
                .prepare_cached(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1"))?
                .query_row([id.to_string()], run_from)
                .optional()?
                .ok_or(StoreError::NotFound("run"))?;
            let request = c
                .prepare_cached(&format!(
                    "SELECT {REQUEST_COLUMNS} FROM requests WHERE id = ?1"
                ))?
                .query_row([run.request_id.to_string()], |row| {
                    request_from(row, Vec::new())
                })
                .optional()?
                .ok_or(StoreError::NotFound("request"))?;
            Ok((run, request))
        })
        .await
    }
}
