//! The memory store's control plane: [`ControlStore`] over one map of
//! records and one of components, behind one mutex.

use std::collections::BTreeMap;

use async_trait::async_trait;

use super::MemoryStore;
use crate::store::{ControlRecord, ControlStore, StoreResult, Swapped};

/// The records, the control revision and the components.
#[derive(Debug, Default)]
pub(super) struct Control {
    revision: u64,
    records: BTreeMap<String, ControlRecord>,
    components: BTreeMap<(String, String), Vec<u8>>,
}

impl Control {
    fn actual(&self, name: &str) -> u64 {
        self.records.get(name).map_or(0, |r| r.revision)
    }
}

impl MemoryStore {
    fn control(&self) -> std::sync::MutexGuard<'_, Control> {
        self.control.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl ControlStore for MemoryStore {
    async fn control_revision(&self) -> StoreResult<u64> {
        Ok(self.control().revision)
    }

    async fn control_records(&self) -> StoreResult<Vec<ControlRecord>> {
        Ok(self.control().records.values().cloned().collect())
    }

    async fn control_record(&self, name: &str) -> StoreResult<Option<ControlRecord>> {
        Ok(self.control().records.get(name).cloned())
    }

    async fn control_put(&self, name: &str, body: &str, expected: u64) -> StoreResult<Swapped> {
        let mut c = self.control();
        let actual = c.actual(name);
        if actual != expected {
            return Ok(Err(actual));
        }
        c.revision += 1;
        let revision = c.revision;
        c.records.insert(
            name.to_string(),
            ControlRecord {
                name: name.to_string(),
                revision,
                body: body.to_string(),
            },
        );
        Ok(Ok(revision))
    }

    async fn control_remove(&self, name: &str, expected: u64) -> StoreResult<Swapped> {
        let mut c = self.control();
        let actual = c.actual(name);
        if actual != expected || actual == 0 {
            return Ok(Err(actual));
        }
        c.revision += 1;
        c.records.remove(name);
        Ok(Ok(c.revision))
    }

    async fn component_put(&self, tenant: &str, sha256: &str, bytes: &[u8]) -> StoreResult<()> {
        self.control()
            .components
            .entry((tenant.to_string(), sha256.to_string()))
            .or_insert_with(|| bytes.to_vec());
        Ok(())
    }

    async fn component_get(&self, tenant: &str, sha256: &str) -> StoreResult<Option<Vec<u8>>> {
        Ok(self
            .control()
            .components
            .get(&(tenant.to_string(), sha256.to_string()))
            .cloned())
    }

    async fn component_remove(&self, tenant: &str, sha256: &str) -> StoreResult<bool> {
        Ok(self
            .control()
            .components
            .remove(&(tenant.to_string(), sha256.to_string()))
            .is_some())
    }
}
