//! Webhook resolutions cached for ingress, the same for every store: every call resolves its id,
//! and a query costs more than the rest of the request.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{ApiKeyRef, StoreResult, WebhookTarget};

/// Webhook id → target. Cleared by every write that could change an answer (rotate, remove,
/// fleet replace or delete) — before the write, so lookups in flight do not cache, and after
/// it, so nothing read before the commit survives. `generation` is what stops a lookup that
/// raced such a write from caching what it read.
#[derive(Clone)]
pub(crate) struct WebhookCache {
    map: moka::sync::Cache<String, WebhookTarget>,
    /// Live API keys by hash. Cleared with the webhooks (a revocation is rare), so that one
    /// `wharf_catalog` notification reaches both on every node. Unknown keys are not cached:
    /// a caller trying keys must not be able to fill the cache.
    keys: moka::sync::Cache<String, ApiKeyRef>,
    generation: Arc<AtomicU64>,
}

impl WebhookCache {
    pub(crate) fn new() -> Self {
        WebhookCache {
            map: moka::sync::Cache::new(10_000),
            keys: moka::sync::Cache::new(10_000),
            generation: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The cached target, or `load`'s answer, cached unless a write raced it.
    pub(crate) async fn resolve<Fut>(
        &self,
        id: &str,
        load: impl FnOnce() -> Fut,
    ) -> StoreResult<Option<WebhookTarget>>
    where
        Fut: Future<Output = StoreResult<Option<WebhookTarget>>>,
    {
        if let Some(hit) = self.map.get(id) {
            return Ok(Some(hit));
        }
        let generation = self.generation.load(Ordering::SeqCst);
        let target = load().await?;
        if let Some(target) = &target
            && self.generation.load(Ordering::SeqCst) == generation
        {
            self.map.insert(id.to_owned(), target.clone());
        }
        Ok(target)
    }

    /// The cached live key with this hash, or `load`'s answer, cached unless a write raced it.
    pub(crate) async fn resolve_key<Fut>(
        &self,
        hash: &str,
        load: impl FnOnce() -> Fut,
    ) -> StoreResult<Option<ApiKeyRef>>
    where
        Fut: Future<Output = StoreResult<Option<ApiKeyRef>>>,
    {
        if let Some(hit) = self.keys.get(hash) {
            return Ok(Some(hit));
        }
        let generation = self.generation.load(Ordering::SeqCst);
        let key = load().await?;
        if let Some(key) = key
            && self.generation.load(Ordering::SeqCst) == generation
        {
            self.keys.insert(hash.to_owned(), key);
        }
        Ok(key)
    }

    /// Drops every cached resolution and key.
    pub(crate) fn forget(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.map.invalidate_all();
        self.keys.invalidate_all();
    }
}
