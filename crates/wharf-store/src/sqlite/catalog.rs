//! [`Catalog`] on SQLite: admin writes through the writer thread, lookups on read connections.

use rusqlite::{OptionalExtension, params};

use super::*;
use wharf_core::util::now_ms;

#[async_trait]
impl Catalog for SqliteStore {
    async fn is_empty(&self) -> StoreResult<bool> {
        self.read(|c| Ok(c.query_row("SELECT NOT EXISTS (SELECT 1 FROM orgs)", [], |r| r.get(0))?))
            .await
    }

    async fn create_org(&self, name: &str) -> StoreResult<Org> {
        let org = Org {
            id: Uuid::new_v4(),
            name: name.to_owned(),
        };
        let row = org.clone();
        self.write(move |c| {
            c.execute(
                "INSERT INTO orgs (id, name, created_at) VALUES (?1, ?2, ?3)",
                params![row.id.to_string(), row.name, now_ms()],
            )?;
            Ok(())
        })
        .await?;
        Ok(org)
    }

    async fn create_api_key(
        &self,
        org_id: Uuid,
        key_hash: &str,
        prefix: &str,
    ) -> StoreResult<Uuid> {
        let id = Uuid::new_v4();
        let (hash, prefix) = (key_hash.to_owned(), prefix.to_owned());
        self.write(move |c| {
            let n = c.execute(
                "INSERT INTO api_keys (id, org_id, key_hash, created_at, prefix)
                 SELECT ?1, id, ?2, ?3, ?5 FROM orgs WHERE id = ?4",
                params![id.to_string(), hash, now_ms(), org_id.to_string(), prefix],
            )?;
            touched(n as u64, "org")?;
            Ok(id)
        })
        .await
    }

    async fn revoke_api_key(&self, id: Uuid) -> StoreResult<()> {
        self.forget_webhooks();
        let done = self
            .write(move |c| {
                let n = c.execute(
                    "UPDATE api_keys SET revoked_at = ?1 WHERE id = ?2 AND revoked_at IS NULL",
                    params![now_ms(), id.to_string()],
                )?;
                touched(n as u64, "api key")?;
                Ok(())
            })
            .await;
        self.forget_webhooks();
        done
    }

    async fn revoke_session(&self, id_hash: &str, until: i64) -> StoreResult<()> {
        let id_hash = id_hash.to_owned();
        self.write(move |c| {
            c.prepare_cached(
                "INSERT INTO revoked_sessions (id_hash, until) VALUES (?1, ?2)
                 ON CONFLICT (id_hash) DO NOTHING",
            )?
            .execute(params![id_hash, until])?;
            Ok(())
        })
        .await
    }

    async fn session_revoked(&self, id_hash: &str) -> StoreResult<bool> {
        let id_hash = id_hash.to_owned();
        self.read(move |c| {
            Ok(c.prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM revoked_sessions WHERE id_hash = ?1 AND until > ?2)",
            )?
            .query_row(params![id_hash, now_ms()], |r| r.get(0))?)
        })
        .await
    }

    async fn api_key(&self, key_hash: &str) -> StoreResult<Option<ApiKeyRef>> {
        let hash = key_hash.to_owned();
        self.webhooks
            .resolve_key(key_hash, || {
                self.read(move |c| {
                    let mut stmt = c.prepare_cached(
                        "SELECT id, org_id FROM api_keys WHERE key_hash = ?1 AND revoked_at IS NULL",
                    )?;
                    let mut rows = stmt.query([hash])?;
                    let Some(row) = rows.next()? else {
                        return Ok(None);
                    };
                    Ok(Some(ApiKeyRef {
                        id: uuid_at(row, "id")?,
                        org_id: uuid_at(row, "org_id")?,
                    }))
                })
            })
            .await
    }

    async fn api_keys(&self, org_id: Uuid) -> StoreResult<Vec<ApiKeyInfo>> {
        self.read(move |c| {
            let org = org_id.to_string();
            let exists: bool = c.query_row(
                "SELECT EXISTS (SELECT 1 FROM orgs WHERE id = ?1)",
                [&org],
                |r| r.get(0),
            )?;
            touched(u64::from(exists), "org")?;
            let mut stmt = c.prepare_cached(
                "SELECT id, org_id, prefix, created_at, last_used_at, revoked_at FROM api_keys
                 WHERE org_id = ?1 ORDER BY created_at, id",
            )?;
            let keys = stmt
                .query_map([&org], |row| {
                    Ok(ApiKeyInfo {
                        id: uuid_at(row, "id")?,
                        org_id: uuid_at(row, "org_id")?,
                        prefix: row.get("prefix")?,
                        created_at: row.get("created_at")?,
                        last_used_at: row.get("last_used_at")?,
                        revoked_at: row.get("revoked_at")?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(keys)
        })
        .await
    }

    async fn touch_api_keys(&self, used: &[(Uuid, i64)]) -> StoreResult<()> {
        let used = used.to_vec();
        self.write(move |c| {
            let mut stmt = c.prepare_cached(
                "UPDATE api_keys SET last_used_at = MAX(COALESCE(last_used_at, 0), ?1) WHERE id = ?2",
            )?;
            for (id, at) in &used {
                stmt.execute(params![at, id.to_string()])?;
            }
            Ok(())
        })
        .await
    }

    async fn create_project(&self, org_id: Uuid, name: &str) -> StoreResult<Project> {
        let project = Project {
            id: Uuid::new_v4(),
            name: name.to_owned(),
            org_id,
        };
        let p = project.clone();
        self.write(move |c| {
            let n = c.execute(
                "INSERT INTO projects (id, org_id, name, created_at)
                 SELECT ?1, id, ?2, ?3 FROM orgs WHERE id = ?4",
                params![p.id.to_string(), p.name, now_ms(), p.org_id.to_string()],
            )?;
            touched(n as u64, "org")?;
            Ok(())
        })
        .await?;
        Ok(project)
    }

    async fn create_fleet_with_id(
        &self,
        project_id: Uuid,
        id: Uuid,
        spec: &FleetSpec,
    ) -> StoreResult<Fleet> {
        let doc = serde_json::to_string(spec)?;
        self.write(move |c| {
            let now = now_ms();
            let n = c.execute(
                "INSERT INTO fleets (id, project_id, spec, created_at, updated_at)
                 SELECT ?1, id, ?2, ?3, ?3 FROM projects WHERE id = ?4",
                params![id.to_string(), doc, now, project_id.to_string()],
            )?;
            touched(n as u64, "project")?;
            fleet_by_id(c, id)?.ok_or(StoreError::NotFound("fleet"))
        })
        .await
    }

    async fn fleet(&self, id: Uuid) -> StoreResult<Fleet> {
        self.read(move |c| fleet_by_id(c, id)?.ok_or(StoreError::NotFound("fleet")))
            .await
    }

    async fn replace_fleet(&self, id: Uuid, spec: &FleetSpec) -> StoreResult<Fleet> {
        let doc = serde_json::to_string(spec)?;
        let fleets = self.fleets.clone();
        self.forget_webhooks();
        let fleet = self
            .write(move |c| {
                let n = c.execute(
                    "UPDATE fleets SET spec = ?1, updated_at = ?2 WHERE id = ?3",
                    params![doc, now_ms(), id.to_string()],
                )?;
                fleets.invalidate(&id);
                touched(n as u64, "fleet")?;
                fleet_by_id(c, id)?.ok_or(StoreError::NotFound("fleet"))
            })
            .await;
        self.forget_webhooks();
        fleet
    }

    async fn delete_fleet(&self, id: Uuid) -> StoreResult<()> {
        let fleets = self.fleets.clone();
        self.forget_webhooks();
        let done = self
            .write(move |c| {
                let n = c.execute("DELETE FROM fleets WHERE id = ?1", [id.to_string()])?;
                fleets.invalidate(&id);
                touched(n as u64, "fleet")?;
                Ok(())
            })
            .await;
        self.forget_webhooks();
        done
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
        let (row, auth) = (hook.clone(), serde_json::to_string(auth)?);
        let (rate_limit, deduplicate) = (
            settings
                .rate_limit
                .map(|r| serde_json::to_string(&r))
                .transpose()?,
            settings
                .deduplicate
                .as_ref()
                .map(serde_json::to_string)
                .transpose()?,
        );
        self.write(move |c| {
            let exists: bool = c.query_row(
                "SELECT EXISTS (SELECT 1 FROM fleets WHERE id = ?1)",
                [fleet_id.to_string()],
                |r| r.get(0),
            )?;
            if !exists {
                return Err(StoreError::NotFound("fleet"));
            }
            let n = c.execute(
                "INSERT OR IGNORE INTO webhooks (id, fleet_id, auth, created_at, rate_limit, deduplicate)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![row.id, fleet_id.to_string(), auth, row.created_at, rate_limit, deduplicate],
            )?;
            if n == 0 {
                return Err(StoreError::Conflict("the fleet already has a webhook".into()));
            }
            // A fleet whose earlier webhook was removed starts with a fresh limit.
            c.execute("DELETE FROM rate_limits WHERE fleet_id = ?1", [fleet_id.to_string()])?;
            Ok(())
        })
        .await?;
        Ok(hook)
    }

    async fn update_webhook(&self, fleet_id: Uuid, change: &WebhookChange) -> StoreResult<Webhook> {
        let rate_limit = change
            .rate_limit
            .map(|r| r.map(|r| serde_json::to_string(&r)).transpose())
            .transpose()?;
        let deduplicate = change
            .deduplicate
            .as_ref()
            .map(|d| d.as_ref().map(serde_json::to_string).transpose())
            .transpose()?;
        let auth = change
            .auth
            .as_ref()
            .map(serde_json::to_string)
            .transpose()?;
        self.forget_webhooks();
        let hook = self
            .write(move |c| {
                let fleet = fleet_id.to_string();
                let exists: bool = c.query_row(
                    "SELECT EXISTS (SELECT 1 FROM webhooks WHERE fleet_id = ?1)",
                    [&fleet],
                    |r| r.get(0),
                )?;
                touched(u64::from(exists), "webhook")?;
                if let Some(limit) = rate_limit {
                    c.execute(
                        "UPDATE webhooks SET rate_limit = ?1 WHERE fleet_id = ?2",
                        params![limit, fleet],
                    )?;
                    // The state was kept for the old limit; under a new one it would mean
                    // something else (a far-off time of a slower limit would block a faster one).
                    c.execute("DELETE FROM rate_limits WHERE fleet_id = ?1", [&fleet])?;
                }
                if let Some(dedupe) = deduplicate {
                    c.execute(
                        "UPDATE webhooks SET deduplicate = ?1 WHERE fleet_id = ?2",
                        params![dedupe, fleet],
                    )?;
                }
                if let Some(auth) = auth {
                    c.execute(
                        "UPDATE webhooks SET auth = ?1 WHERE fleet_id = ?2",
                        params![auth, fleet],
                    )?;
                }
                Ok(c.query_row(
                    &format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE fleet_id = ?1"),
                    [&fleet],
                    webhook_from,
                )?)
            })
            .await;
        self.forget_webhooks();
        hook
    }

    async fn rotate_webhook_keeping(
        &self,
        fleet_id: Uuid,
        new_id: &str,
        old_until: Option<i64>,
    ) -> StoreResult<Webhook> {
        let new_id = new_id.to_owned();
        self.forget_webhooks();
        let hook = self
            .write(move |c| {
                // SET reads the row as it was, so previous_id takes the id being replaced.
                let n = c.execute(
                    "UPDATE webhooks SET previous_id = CASE WHEN ?4 IS NULL THEN NULL ELSE id END,
                     previous_until = ?4, id = ?1, created_at = ?2 WHERE fleet_id = ?3",
                    params![new_id, now_ms(), fleet_id.to_string(), old_until],
                )?;
                touched(n as u64, "webhook")?;
                Ok(c.query_row(
                    &format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE fleet_id = ?1"),
                    [fleet_id.to_string()],
                    webhook_from,
                )?)
            })
            .await;
        self.forget_webhooks();
        hook
    }

    async fn delete_webhook(&self, fleet_id: Uuid) -> StoreResult<()> {
        self.forget_webhooks();
        let done = self
            .write(move |c| {
                let n = c.execute(
                    "DELETE FROM webhooks WHERE fleet_id = ?1",
                    [fleet_id.to_string()],
                )?;
                touched(n as u64, "webhook")?;
                Ok(())
            })
            .await;
        self.forget_webhooks();
        done
    }

    async fn fleets_with_legacy_seals(&self) -> StoreResult<Vec<Uuid>> {
        self.read(|c| {
            let mut stmt = c.prepare(
                "SELECT id FROM fleets WHERE spec LIKE '%\"v1:%'
                 UNION SELECT fleet_id FROM webhooks WHERE auth LIKE '%\"v1:%'",
            )?;
            let ids = stmt
                .query_map([], |row| row.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            ids.iter()
                .map(|id| Uuid::parse_str(id).map_err(|e| StoreError::Corrupt(e.to_string())))
                .collect()
        })
        .await
    }

    async fn fleet_webhook(&self, fleet_id: Uuid) -> StoreResult<Option<Webhook>> {
        self.read(move |c| {
            Ok(c.prepare_cached(&format!(
                "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE fleet_id = ?1"
            ))?
            .query_row([fleet_id.to_string()], webhook_from)
            .optional()?)
        })
        .await
    }

    async fn resolve_webhook(&self, id: &str) -> StoreResult<Option<WebhookTarget>> {
        let key = id.to_owned();
        self.webhooks
            .resolve(id, || {
                self.read(move |c| {
                    let mut stmt = c.prepare_cached(
                        "SELECT w.id, w.fleet_id, w.auth, w.created_at, w.rate_limit, w.deduplicate,
                                w.previous_id, w.previous_until, f.project_id, p.org_id, f.spec
                         FROM webhooks w JOIN fleets f ON f.id = w.fleet_id
                         JOIN projects p ON p.id = f.project_id
                         WHERE w.id = ?1
                         UNION ALL
                         SELECT w.id, w.fleet_id, w.auth, w.created_at, w.rate_limit, w.deduplicate,
                                w.previous_id, w.previous_until, f.project_id, p.org_id, f.spec
                         FROM webhooks w JOIN fleets f ON f.id = w.fleet_id
                         JOIN projects p ON p.id = f.project_id
                         WHERE w.previous_id = ?1",
                    )?;
                    let mut rows = stmt.query([key])?;
                    let Some(row) = rows.next()? else {
                        return Ok(None);
                    };
                    let spec: FleetSpec = json_at(row, "spec")?;
                    Ok(Some(WebhookTarget {
                        webhook: webhook_from(row)?,
                        project_id: uuid_at(row, "project_id")?,
                        org_id: uuid_at(row, "org_id")?,
                        concurrency: spec.concurrency.clone(),
                        spec: Arc::new(spec),
                    }))
                })
            })
            .await
    }
}

#[async_trait]
impl Code for SqliteStore {
    async fn put_code(&self, code: &[NewCode]) -> StoreResult<()> {
        let code = code.to_vec();
        self.write(move |c| {
            let mut stmt = c.prepare_cached(
                "INSERT OR IGNORE INTO code (sha256, kind, bytes, created_at) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for item in &code {
                stmt.execute(params![item.sha256, item.kind.as_str(), item.bytes, now_ms()])?;
            }
            Ok(())
        })
        .await
    }

    async fn code(&self, sha256: &str) -> StoreResult<Vec<u8>> {
        let sha = sha256.to_owned();
        self.read(move |c| {
            c.prepare_cached("SELECT bytes FROM code WHERE sha256 = ?1")?
                .query_row([sha], |r| r.get(0))
                .optional()?
                .ok_or(StoreError::NotFound("code"))
        })
        .await
    }
}
