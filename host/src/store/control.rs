//! The control plane's storage: the records of tenants created through the
//! operator API ([`crate::control`]) and their uploaded plugin components,
//! shared by every host of one store.
//!
//! A record is one tenant's whole definition as a JSON document, written
//! with compare-and-set on its revision. Every write takes the next value of
//! one counter, the control revision, which is also the written record's
//! revision: a host that has seen revision `n` has seen every change up to
//! `n`, so it learns of changes by reading one number.
//!
//! Components are kept by tenant and SHA-256, as uploaded. The store holds
//! wasm, never compiled code: each host compiles what it reads, after
//! checking its digest.

use async_trait::async_trait;

use super::StoreResult;

/// One tenant's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlRecord {
    /// The tenant.
    pub name: String,
    /// The control revision of the record's last write.
    pub revision: u64,
    /// The record (JSON).
    pub body: String,
}

/// The result of a compare-and-set write: the new revision, or the
/// record's actual revision (0 when there is none) when it was not the
/// expected one.
pub type Swapped = Result<u64, u64>;

/// The control plane's records and components ([`self`]).
#[async_trait]
pub trait ControlStore: Send + Sync + 'static {
    /// The control revision: the revision of the latest write (0 before
    /// the first).
    async fn control_revision(&self) -> StoreResult<u64>;

    /// Every record, by name.
    async fn control_records(&self) -> StoreResult<Vec<ControlRecord>>;

    /// The record of `name`, if there is one.
    async fn control_record(&self, name: &str) -> StoreResult<Option<ControlRecord>>;

    /// Writes `body` as the record of `name` if its revision is still
    /// `expected` (0: there must be no record yet), taking the next control
    /// revision, which it returns.
    async fn control_put(&self, name: &str, body: &str, expected: u64) -> StoreResult<Swapped>;

    /// Removes the record of `name` if its revision is still `expected`,
    /// taking the next control revision (so that every host learns of it).
    async fn control_remove(&self, name: &str, expected: u64) -> StoreResult<Swapped>;

    /// Keeps `bytes` as `tenant`'s component `sha256` (lower-case hex of
    /// their SHA-256, which the caller computed). Writing it again changes
    /// nothing.
    async fn component_put(&self, tenant: &str, sha256: &str, bytes: &[u8]) -> StoreResult<()>;

    /// `tenant`'s component `sha256`, as it was put.
    async fn component_get(&self, tenant: &str, sha256: &str) -> StoreResult<Option<Vec<u8>>>;

    /// Removes `tenant`'s component `sha256`; false when it was not there.
    async fn component_remove(&self, tenant: &str, sha256: &str) -> StoreResult<bool>;
}
