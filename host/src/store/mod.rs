//! Session storage: one small object-safe trait, two backends.
//!
//! - [`memory::MemoryStore`]: the embedded default, so `sessiond serve` needs
//!   nothing else.
//! - [`redis::RedisStore`]: Redis (or Redis Cluster) shared by many stateless
//!   hosts; every multi-step operation is one atomic Lua script.
//!
//! Both pass the same conformance suite (`tests/tests/store_conformance.rs`).

use async_trait::async_trait;
use serde_json::Value;

use crate::session::{AuditRecord, EndReason, Millis, SessionRecord};

pub mod memory;
pub mod redis;

/// What a store operation can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend cannot be reached or did not answer in time.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The backend answered with something this version cannot read.
    #[error("store data corrupt: {0}")]
    Corrupt(String),
    /// Any other backend failure.
    #[error("store error: {0}")]
    Backend(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// What happens when a user already has the tenant's maximum of sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LimitPolicy {
    /// Refuse the new session.
    Deny,
    /// End the least recently used session(s) to make room.
    EvictLru,
}

/// The per-user session limit applied by [`SessionStore::create`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserLimit {
    /// The most live sessions one user may have in the tenant.
    pub max: u32,
    pub policy: LimitPolicy,
}

/// The result of [`SessionStore::create`].
#[derive(Debug, Clone, PartialEq)]
pub enum CreateOutcome {
    /// Stored. `evicted` holds the sessions removed to make room (policy
    /// `EvictLru`); the caller runs their end hooks with reason `evicted`.
    Created { evicted: Vec<SessionRecord> },
    /// The user is at the limit and the policy is `Deny`; nothing was written.
    LimitReached { active: u32 },
}

/// The result of a compare-and-set write.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteOutcome {
    /// Written; holds the record as stored.
    Written(SessionRecord),
    /// The stored version differs from the expected one; nothing was written.
    /// Holds the current record.
    VersionMismatch(SessionRecord),
    /// No live session has that key.
    NotFound,
}

/// A session that the sweeper took out of the store because it ran out.
#[derive(Debug, Clone, PartialEq)]
pub struct Expired {
    pub record: SessionRecord,
    pub reason: EndReason,
}

/// One page of a tenant's audit stream.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditPage {
    pub records: Vec<AuditRecord>,
    /// Pass as `after` to read the next page; none when this page is the last.
    pub next: Option<String>,
}

/// Checks [`SessionStore::update`]'s precondition that the new record is
/// exactly one version after the expected one.
pub(crate) fn check_next_version(record: &SessionRecord, expected_version: u64) -> StoreResult<()> {
    if record.version != expected_version.wrapping_add(1) {
        return Err(StoreError::Backend(format!(
            "record version {} is not expected version {expected_version} + 1",
            record.version
        )));
    }
    Ok(())
}

/// Session storage. Every method is atomic: concurrent callers on any number
/// of hosts see each operation happen entirely or not at all. Sessions are
/// keyed by `(tenant, token_hash)`; a session past its deadline is never
/// returned by any read.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Checks that the backend answers.
    async fn ping(&self) -> StoreResult<()>;

    /// Stores a new session, enforcing `limit` for its user (anonymous
    /// sessions have no limit). Exact under concurrency.
    async fn create(
        &self,
        record: &SessionRecord,
        limit: Option<UserLimit>,
        now: Millis,
    ) -> StoreResult<CreateOutcome>;

    /// The live session with this token hash.
    async fn get(
        &self,
        tenant: &str,
        token_hash: &str,
        now: Millis,
    ) -> StoreResult<Option<SessionRecord>>;

    /// Replaces the session stored under `token_hash` with `record` if the
    /// stored version is `expected_version`. `record.version` must be
    /// `expected_version + 1`. `record.token_hash` may differ from `token_hash`:
    /// the session then moves to the new key (token rotation) and the old key
    /// stops working. The user index and deadlines follow the record.
    async fn update(
        &self,
        token_hash: &str,
        record: &SessionRecord,
        expected_version: u64,
        now: Millis,
    ) -> StoreResult<WriteOutcome>;

    /// Slides the idle deadline: sets `last_seen_at = now` and bumps the
    /// version. Returns the updated record.
    async fn touch(
        &self,
        tenant: &str,
        token_hash: &str,
        now: Millis,
    ) -> StoreResult<Option<SessionRecord>>;

    /// Removes a live session and returns it. Of any number of concurrent
    /// calls (and sweeps) for the same session exactly one gets `Some`; that
    /// caller runs the end hooks.
    async fn remove(
        &self,
        tenant: &str,
        token_hash: &str,
        now: Millis,
    ) -> StoreResult<Option<SessionRecord>>;

    /// The live sessions of a user, oldest first.
    async fn list_user(
        &self,
        tenant: &str,
        user: &str,
        now: Millis,
    ) -> StoreResult<Vec<SessionRecord>>;

    /// Removes every live session of a user and returns them (same exactly-one
    /// guarantee as [`SessionStore::remove`]).
    async fn remove_user(
        &self,
        tenant: &str,
        user: &str,
        now: Millis,
    ) -> StoreResult<Vec<SessionRecord>>;

    /// Takes up to `max` sessions of `tenant` whose deadline is `<= now` out of
    /// the store and returns them with the reason they ended. Each expired
    /// session is returned by exactly one call.
    async fn take_expired(
        &self,
        tenant: &str,
        now: Millis,
        max: usize,
    ) -> StoreResult<Vec<Expired>>;

    /// Reads a plugin's private key-value entry.
    async fn kv_get(&self, tenant: &str, plugin: &str, key: &str) -> StoreResult<Option<String>>;

    /// Writes a plugin's private key-value entry, optionally expiring.
    async fn kv_set(
        &self,
        tenant: &str,
        plugin: &str,
        key: &str,
        value: &str,
        ttl_seconds: Option<u32>,
    ) -> StoreResult<()>;

    /// Deletes a plugin's private key-value entry; returns whether it existed.
    async fn kv_delete(&self, tenant: &str, plugin: &str, key: &str) -> StoreResult<bool>;

    /// Appends a record to the tenant's audit stream; returns its id.
    async fn audit_append(
        &self,
        tenant: &str,
        plugin: &str,
        session: Option<&str>,
        record: &Value,
        now: Millis,
    ) -> StoreResult<String>;

    /// Reads the tenant's audit stream oldest first, `limit` records after the
    /// id `after` (from the start when none).
    async fn audit_page(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<AuditPage>;
}
