//! Code kept in memory, for a dry run that stores nothing (`wharf run`): the fleet's code is
//! checked and compiled exactly as when a fleet is saved, without opening a database.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use wharf_core::fleet::NewCode;

use crate::{Code, StoreError, StoreResult};

/// Code by sha256, in this process only.
#[derive(Debug, Default)]
pub struct MemoryCode {
    code: Mutex<HashMap<String, Vec<u8>>>,
}

#[async_trait]
impl Code for MemoryCode {
    async fn put_code(&self, code: &[NewCode]) -> StoreResult<()> {
        let mut kept = self
            .code
            .lock()
            .map_err(|_| StoreError::Backend("the code map was poisoned".into()))?;
        for item in code {
            kept.entry(item.sha256.clone())
                .or_insert_with(|| item.bytes.clone());
        }
        Ok(())
    }

    async fn code(&self, sha256: &str) -> StoreResult<Vec<u8>> {
        let kept = self
            .code
            .lock()
            .map_err(|_| StoreError::Backend("the code map was poisoned".into()))?;
        kept.get(sha256)
            .cloned()
            .ok_or(StoreError::NotFound("code"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wharf_core::vessel::VesselKind;

    #[tokio::test]
    async fn keeps_code_by_hash_and_leaves_a_stored_hash_alone() {
        let store = MemoryCode::default();
        let new = |bytes: &[u8]| NewCode {
            vessel: "v".into(),
            sha256: "abc".into(),
            kind: VesselKind::Rhai,
            bytes: bytes.to_vec(),
        };
        assert!(matches!(
            store.code("abc").await,
            Err(StoreError::NotFound(_))
        ));
        store.put_code(&[new(b"first")]).await.unwrap();
        store.put_code(&[new(b"second")]).await.unwrap();
        assert_eq!(store.code("abc").await.unwrap(), b"first");
    }
}
