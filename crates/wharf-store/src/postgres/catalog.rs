//! [`Catalog`] on PostgreSQL. Writes that change what a webhook resolves to notify
//! `wharf_catalog`, so every node drops its cached resolutions.

use super::*;
use wharf_core::util::now_ms;

#[async_trait]
impl Catalog for PostgresStore {
    async fn is_empty(&self) -> StoreResult<bool> {
        Ok(sqlx::query_scalar("SELECT NOT EXISTS (SELECT 1 FROM orgs)")
            .fetch_one(&self.pool)
            .await?)
    }

    async fn create_org(&self, name: &str) -> StoreResult<Org> {
        let id = Uuid::new_v4();
        sqlx::query("INSERT INTO orgs (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(id)
            .bind(name)
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        Ok(Org {
            id,
            name: name.to_owned(),
        })
    }

    async fn create_api_key(
        &self,
        org_id: Uuid,
        key_hash: &str,
        prefix: &str,
    ) -> StoreResult<Uuid> {
        let id = Uuid::new_v4();
        let n = sqlx::query(
            "INSERT INTO api_keys (id, org_id, key_hash, created_at, prefix)
             SELECT $1, id, $2, $3, $5 FROM orgs WHERE id = $4",
        )
        .bind(id)
        .bind(key_hash)
        .bind(now_ms())
        .bind(org_id)
        .bind(prefix)
        .execute(&self.pool)
        .await?
        .rows_affected();
        touched(n, "org")?;
        Ok(id)
    }

    async fn revoke_api_key(&self, id: Uuid) -> StoreResult<()> {
        self.forget_webhooks();
        let mut tx = self.pool.begin().await?;
        let n =
            sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(now_ms())
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        touched(n, "api key")?;
        // Every node drops its cached keys with its cached webhooks.
        notify(&mut tx, CATALOG_CHANNEL).await?;
        tx.commit().await?;
        self.forget_webhooks();
        Ok(())
    }

    async fn revoke_session(&self, id_hash: &str, until: i64) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO revoked_sessions (id_hash, until) VALUES ($1, $2)
             ON CONFLICT (id_hash) DO NOTHING",
        )
        .bind(id_hash)
        .bind(until)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn session_revoked(&self, id_hash: &str) -> StoreResult<bool> {
        Ok(sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM revoked_sessions WHERE id_hash = $1 AND until > $2)",
        )
        .bind(id_hash)
        .bind(now_ms())
        .fetch_one(&self.pool)
        .await?)
    }

    async fn api_key(&self, key_hash: &str) -> StoreResult<Option<ApiKeyRef>> {
        self.webhooks
            .resolve_key(key_hash, || async {
                let row = sqlx::query(
                    "SELECT id, org_id FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
                )
                .bind(key_hash)
                .fetch_optional(&self.pool)
                .await?;
                row.map(|r| {
                    Ok(ApiKeyRef {
                        id: r.try_get("id")?,
                        org_id: r.try_get("org_id")?,
                    })
                })
                .transpose()
            })
            .await
    }

    async fn api_keys(&self, org_id: Uuid) -> StoreResult<Vec<ApiKeyInfo>> {
        let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM orgs WHERE id = $1)")
            .bind(org_id)
            .fetch_one(&self.pool)
            .await?;
        touched(u64::from(exists), "org")?;
        let rows = sqlx::query(
            "SELECT id, org_id, prefix, created_at, last_used_at, revoked_at FROM api_keys
             WHERE org_id = $1 ORDER BY created_at, id",
        )
        .bind(org_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ApiKeyInfo {
                    id: r.try_get("id")?,
                    org_id: r.try_get("org_id")?,
                    prefix: r.try_get("prefix")?,
                    created_at: r.try_get("created_at")?,
                    last_used_at: r.try_get("last_used_at")?,
                    revoked_at: r.try_get("revoked_at")?,
                })
            })
            .collect()
    }

    async fn touch_api_keys(&self, used: &[(Uuid, i64)]) -> StoreResult<()> {
        if used.is_empty() {
            return Ok(());
        }
        let (ids, times): (Vec<Uuid>, Vec<i64>) = used.iter().copied().unzip();
        sqlx::query(
            "UPDATE api_keys k SET last_used_at = GREATEST(COALESCE(k.last_used_at, 0), u.at)
             FROM UNNEST($1::uuid[], $2::bigint[]) AS u(id, at) WHERE k.id = u.id",
        )
        .bind(ids)
        .bind(times)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn create_project(&self, org_id: Uuid, name: &str) -> StoreResult<Project> {
        let id = Uuid::new_v4();
        let n = sqlx::query(
            "INSERT INTO projects (id, org_id, name, created_at)
             SELECT $1, id, $2, $3 FROM orgs WHERE id = $4",
        )
        .bind(id)
        .bind(name)
        .bind(now_ms())
        .bind(org_id)
        .execute(&self.pool)
        .await?
        .rows_affected();
        touched(n, "org")?;
        Ok(Project {
            id,
            name: name.to_owned(),
            org_id,
        })
    }

    async fn create_fleet_with_id(
        &self,
        project_id: Uuid,
        id: Uuid,
        spec: &FleetSpec,
    ) -> StoreResult<Fleet> {
        let now = now_ms();
        let n = sqlx::query(
            "INSERT INTO fleets (id, project_id, spec, created_at, updated_at)
             SELECT $1, id, $2, $3, $3 FROM projects WHERE id = $4",
        )
        .bind(id)
        .bind(serde_json::to_string(spec)?)
        .bind(now)
        .bind(project_id)
        .execute(&self.pool)
        .await?
        .rows_affected();
        touched(n, "project")?;
        self.fleet(id).await
    }

    async fn fleet(&self, id: Uuid) -> StoreResult<Fleet> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "{FLEET_SELECT} WHERE f.id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound("fleet"))?;
        fleet_from(&row)
    }

    async fn replace_fleet(&self, id: Uuid, spec: &FleetSpec) -> StoreResult<Fleet> {
        self.forget_webhooks();
        let mut tx = self.pool.begin().await?;
        let n = sqlx::query("UPDATE fleets SET spec = $1, updated_at = $2 WHERE id = $3")
            .bind(serde_json::to_string(spec)?)
            .bind(now_ms())
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        touched(n, "fleet")?;
        notify(&mut tx, CATALOG_CHANNEL).await?;
        tx.commit().await?;
        self.forget_webhooks();
        self.fleet(id).await
    }

    async fn delete_fleet(&self, id: Uuid) -> StoreResult<()> {
        self.forget_webhooks();
        let mut tx = self.pool.begin().await?;
        let n = sqlx::query("DELETE FROM fleets WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        touched(n, "fleet")?;
        notify(&mut tx, CATALOG_CHANNEL).await?;
        tx.commit().await?;
        self.forget_webhooks();
        Ok(())
    }

    async fn create_webhook(
        &self,
        fleet_id: Uuid,
        id: &str,
        auth: &WebhookAuth,
        settings: &WebhookSettings,
    ) -> StoreResult<Webhook> {
        let hook = Webhook {
            id: id.to_owned(),
            fleet_id,
            auth: auth.clone(),
            created_at: now_ms(),
            settings: settings.clone(),
            previous_id: None,
            previous_until: None,
        };
        let mut tx = self.pool.begin().await?;
        let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM fleets WHERE id = $1)")
            .bind(fleet_id)
            .fetch_one(&mut *tx)
            .await?;
        if !exists {
            return Err(StoreError::NotFound("fleet"));
        }
        let n = sqlx::query(
            "INSERT INTO webhooks (id, fleet_id, auth, created_at, rate_limit, deduplicate)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT DO NOTHING",
        )
        .bind(&hook.id)
        .bind(fleet_id)
        .bind(serde_json::to_string(auth)?)
        .bind(hook.created_at)
        .bind(
            settings
                .rate_limit
                .map(|r| serde_json::to_string(&r))
                .transpose()?,
        )
        .bind(
            settings
                .deduplicate
                .as_ref()
                .map(serde_json::to_string)
                .transpose()?,
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 0 {
            return Err(StoreError::Conflict(
                "the fleet already has a webhook".into(),
            ));
        }
        // A fleet whose earlier webhook was removed starts with a fresh limit.
        sqlx::query("DELETE FROM rate_limits WHERE fleet_id = $1")
            .bind(fleet_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(hook)
    }

    async fn update_webhook(&self, fleet_id: Uuid, change: &WebhookChange) -> StoreResult<Webhook> {
        self.forget_webhooks();
        let mut tx = self.pool.begin().await?;
        // Serialised with admissions of the fleet, so none decides on half the change.
        lock_fleet(&mut tx, fleet_id).await?;
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM webhooks WHERE fleet_id = $1)")
                .bind(fleet_id)
                .fetch_one(&mut *tx)
                .await?;
        touched(u64::from(exists), "webhook")?;
        if let Some(limit) = change.rate_limit {
            sqlx::query("UPDATE webhooks SET rate_limit = $1 WHERE fleet_id = $2")
                .bind(limit.map(|r| serde_json::to_string(&r)).transpose()?)
                .bind(fleet_id)
                .execute(&mut *tx)
                .await?;
            // The state was kept for the old limit; under a new one it would mean something
            // else (a far-off time of a slower limit would block a faster one).
            sqlx::query("DELETE FROM rate_limits WHERE fleet_id = $1")
                .bind(fleet_id)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(dedupe) = &change.deduplicate {
            sqlx::query("UPDATE webhooks SET deduplicate = $1 WHERE fleet_id = $2")
                .bind(dedupe.as_ref().map(serde_json::to_string).transpose()?)
                .bind(fleet_id)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(auth) = &change.auth {
            sqlx::query("UPDATE webhooks SET auth = $1 WHERE fleet_id = $2")
                .bind(serde_json::to_string(auth)?)
                .bind(fleet_id)
                .execute(&mut *tx)
                .await?;
        }
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE fleet_id = $1"
        )))
        .bind(fleet_id)
        .fetch_one(&mut *tx)
        .await?;
        notify(&mut tx, CATALOG_CHANNEL).await?;
        tx.commit().await?;
        self.forget_webhooks();
        webhook_from(&row)
    }

    async fn rotate_webhook_keeping(
        &self,
        fleet_id: Uuid,
        new_id: &str,
        old_until: Option<i64>,
    ) -> StoreResult<Webhook> {
        self.forget_webhooks();
        let mut tx = self.pool.begin().await?;
        // SET reads the row as it was, so previous_id takes the id being replaced.
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE webhooks SET previous_id = CASE WHEN $4::bigint IS NULL THEN NULL ELSE id END,
             previous_until = $4, id = $1, created_at = $2 WHERE fleet_id = $3
             RETURNING {WEBHOOK_COLUMNS}"
        )))
        .bind(new_id)
        .bind(now_ms())
        .bind(fleet_id)
        .bind(old_until)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound("webhook"))?;
        notify(&mut tx, CATALOG_CHANNEL).await?;
        tx.commit().await?;
        self.forget_webhooks();
        webhook_from(&row)
    }

    async fn delete_webhook(&self, fleet_id: Uuid) -> StoreResult<()> {
        self.forget_webhooks();
        let mut tx = self.pool.begin().await?;
        let n = sqlx::query("DELETE FROM webhooks WHERE fleet_id = $1")
            .bind(fleet_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        touched(n, "webhook")?;
        notify(&mut tx, CATALOG_CHANNEL).await?;
        tx.commit().await?;
        self.forget_webhooks();
        Ok(())
    }

    async fn fleets_with_legacy_seals(&self) -> StoreResult<Vec<Uuid>> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM fleets WHERE spec LIKE '%\"v1:%'
             UNION SELECT fleet_id FROM webhooks WHERE auth LIKE '%\"v1:%'",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    async fn fleet_webhook(&self, fleet_id: Uuid) -> StoreResult<Option<Webhook>> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE fleet_id = $1"
        )))
        .bind(fleet_id)
        .fetch_optional(&self.pool)
        .await?
        .map(|r| webhook_from(&r))
        .transpose()
    }

    async fn resolve_webhook(&self, id: &str) -> StoreResult<Option<WebhookTarget>> {
        self.webhooks
            .resolve(id, || async {
                let row = sqlx::query(
                    "SELECT w.id, w.fleet_id, w.auth, w.created_at, w.rate_limit, w.deduplicate,
                            w.previous_id, w.previous_until, f.project_id, p.org_id, f.spec
                     FROM webhooks w JOIN fleets f ON f.id = w.fleet_id
                     JOIN projects p ON p.id = f.project_id
                     WHERE w.id = $1 OR w.previous_id = $1
                     LIMIT 1",
                )
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
                let Some(row) = row else { return Ok(None) };
                let spec: FleetSpec = json_col(&row, "spec")?;
                Ok(Some(WebhookTarget {
                    webhook: webhook_from(&row)?,
                    project_id: row.try_get("project_id")?,
                    org_id: row.try_get("org_id")?,
                    concurrency: spec.concurrency.clone(),
                    spec: Arc::new(spec),
                }))
            })
            .await
    }
}

#[async_trait]
impl Code for PostgresStore {
    async fn put_code(&self, code: &[NewCode]) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        for c in code {
            sqlx::query(
                "INSERT INTO code (sha256, kind, bytes, created_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (sha256) DO NOTHING",
            )
            .bind(&c.sha256)
            .bind(c.kind.as_str())
            .bind(&c.bytes)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn code(&self, sha256: &str) -> StoreResult<Vec<u8>> {
        sqlx::query_scalar("SELECT bytes FROM code WHERE sha256 = $1")
            .bind(sha256)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound("code"))
    }
}
