//! Session storage: six small object-safe traits, one per concern
//! ([`SessionStore`], [`EndQueue`], [`KvStore`], [`AuditStore`],
//! [`Outbox`], [`ControlStore`]), and three backends that implement all of them
//! ([`StoreBackend`]).
//!
//! - [`memory::MemoryStore`]: this process's memory; for tests and for
//!   deliberately ephemeral use (the built-in default when a config has no
//!   `[store]` table).
//! - [`embedded::EmbeddedStore`]: SQLite in one data directory, for a single
//!   host that keeps its sessions, end queue, kv and audit across restarts.
//! - [`redis::RedisStore`]: Redis (or Redis Cluster) shared by many stateless
//!   hosts; every multi-step operation is one atomic Lua script.
//!
//! All pass the same conformance suite (`tests/tests/store_conformance.rs`)
//! and take their default settings from [`defaults`]. Each also reads and
//! writes its whole content ([`dump::StoreDump`]), so a store moves to
//! another backend (`sessiond store export` and `import`).

use async_trait::async_trait;
use serde_json::{Map, Value};

pub use control::{ControlRecord, ControlStore, Swapped};

use crate::json::OverLimit;
use crate::session::{AuditRecord, EndReason, Millis, SessionRecord};

pub mod control;
pub mod dump;
pub mod embedded;
pub mod memory;
pub mod metered;
pub mod redis;

/// What a store operation can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The request never reached the backend, or the backend refused it
    /// without running it (no connection, connecting timed out, a cluster
    /// that is down, loading or read-only, a stopped writer): nothing was
    /// changed, and the call may be retried as it is.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The request may have reached the backend but no answer came (the
    /// response timed out, the connection dropped mid-request): a write may
    /// or may not have happened, and may still happen.
    #[error("store outcome unknown: {0}")]
    OutcomeUnknown(String),
    /// The backend answered with something this version cannot read.
    #[error("store data corrupt: {0}")]
    Corrupt(String),
    /// Any other backend failure.
    #[error("store error: {0}")]
    Backend(String),
    /// A kv write that would take a plugin past its quota; nothing was
    /// written.
    #[error("quota exceeded: {0}")]
    QuotaExceeded(String),
}

/// What one plugin of one tenant may keep in its kv: at most `max_keys`
/// live entries of at most `max_bytes` in all (keys plus values, in UTF-8
/// bytes). Entries past their TTL do not count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvQuota {
    pub max_bytes: u64,
    pub max_keys: u64,
}

impl Default for KvQuota {
    /// No bound, as [`KvQuota::UNLIMITED`].
    fn default() -> Self {
        KvQuota::UNLIMITED
    }
}

impl KvQuota {
    /// No bound (for tools that copy a store whole).
    pub const UNLIMITED: KvQuota = KvQuota {
        max_bytes: u64::MAX,
        max_keys: u64::MAX,
    };

    /// The error of a write that would leave a plugin with `keys` entries
    /// of `bytes` bytes, if that is over the quota.
    pub fn check(&self, keys: u64, bytes: u64) -> StoreResult<()> {
        if keys > self.max_keys {
            return Err(StoreError::QuotaExceeded(format!(
                "the plugin's kv would hold {keys} keys, more than its {} allowed",
                self.max_keys
            )));
        }
        if bytes > self.max_bytes {
            return Err(StoreError::QuotaExceeded(format!(
                "the plugin's kv would hold {bytes} bytes, more than its {} allowed",
                self.max_bytes
            )));
        }
        Ok(())
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The stores' default settings, defined once for both backends.
pub mod defaults {
    use std::time::Duration;

    /// About how many records each tenant's audit stream keeps.
    pub const AUDIT_MAX_LEN: usize = 100_000;
    /// How long a Redis session key outlives its deadline, so the sweeper can
    /// still take it and run its end hooks.
    pub const GRACE: Duration = Duration::from_secs(3600);
    /// The first part of every Redis key.
    pub const KEY_PREFIX: &str = "sessiond";
    /// How long one Redis response may take.
    pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
    /// How long one Redis connection attempt may take.
    pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(1);
    /// The bound on a whole Redis operation, reconnecting included.
    pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(3);
    /// About how many dead letters each tenant's list keeps (the oldest go).
    pub const DEAD_LETTER_MAX_LEN: usize = 10_000;
}

/// How long an idempotency key of [`AuditStore::audit_append`] is kept.
pub const AUDIT_ONCE_TTL_MS: Millis = 24 * 3600 * 1000;

/// An idempotency key as a store keeps it: the write it guards records it
/// in the same atomic step ([`SessionStore::create_once`],
/// [`SessionStore::remove_once`]), so a write the backend ran after its
/// caller gave up is still found by the caller's retry.
///
/// The store never sees the client's key itself: `id` is a digest of the
/// tenant and the key, and the token a create hands out is kept only
/// sealed with the key (`sealed`), so a copy of the store reveals no token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnceKey {
    /// The record's name within its tenant (hex).
    pub id: String,
    /// A digest of what the request asked for (hex): a retry with another
    /// request is told apart from a real retry by it.
    pub request: String,
    /// How long the record is kept from the write (ms).
    pub ttl_ms: Millis,
    /// What the create answered with, kept to answer a retry the same way:
    /// the new session's token, sealed with the client's key (hex). None
    /// for a remove.
    pub sealed: Option<String>,
}

/// What a store remembers of a write made with an idempotency key.
#[derive(Debug, Clone, PartialEq)]
pub struct Remembered {
    /// [`OnceKey::request`] of the write.
    pub request: String,
    /// For a create: the session as it was created and its sealed token.
    pub created: Option<(SessionRecord, String)>,
}

/// The result of a write guarded by an idempotency key.
#[derive(Debug, Clone, PartialEq)]
pub enum Once<T> {
    /// The key was not known: the write ran (recording the key if it
    /// changed anything) and this is its result.
    Ran(T),
    /// The key was known: nothing ran now; this is what the first write
    /// recorded (its `request` may differ from this call's).
    Known(Box<Remembered>),
}

/// What happens when a user already has the tenant's maximum of sessions.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
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

/// What [`SessionStore::create`] enforces, in the same atomic step as the
/// write: the per-user limit, and the tenant's quota of stored sessions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CreateLimit {
    /// The user's limit; none: no per-user limit (anonymous sessions never
    /// have one).
    pub user: Option<UserLimit>,
    /// The most sessions the tenant may have stored: the live ones, and
    /// those past their deadline that no sweeper has taken yet. A create at
    /// the quota is refused ([`CreateOutcome::QuotaReached`]), even when
    /// `evict-lru` would have made room for its user. None: no quota.
    pub tenant_max: Option<u64>,
}

impl CreateLimit {
    /// No limit at all.
    pub const NONE: CreateLimit = CreateLimit {
        user: None,
        tenant_max: None,
    };

    /// Whether the tenant is at its quota with `stored` sessions.
    pub fn tenant_full(&self, stored: u64) -> bool {
        self.tenant_max.is_some_and(|max| stored >= max)
    }
}

/// The result of [`SessionStore::create`].
#[derive(Debug, Clone, PartialEq)]
pub enum CreateOutcome {
    /// Stored. `evicted` holds the sessions removed to make room (policy
    /// `EvictLru`); the caller runs their end hooks with reason `evicted`.
    Created { evicted: Vec<SessionRecord> },
    /// The user is at the limit and the policy is `Deny`; nothing was written.
    LimitReached { active: u32 },
    /// The tenant has its quota of stored sessions
    /// ([`CreateLimit::tenant_max`]); nothing was written.
    QuotaReached { stored: u64 },
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

/// The result of [`SessionStore::merge`].
#[derive(Debug, Clone, PartialEq)]
pub enum MergeOutcome {
    /// Merged; holds the record as stored.
    Merged(Box<SessionRecord>),
    /// No live session has that key.
    NotFound,
    /// The merged session would be over a bound of [`crate::json`] (its
    /// data too deep, or its record too large); nothing was written.
    OverLimit(OverLimit),
}

/// A session that the sweeper took out of the store because it ran out.
#[derive(Debug, Clone, PartialEq)]
pub struct Expired {
    pub record: SessionRecord,
    pub reason: EndReason,
}

/// One ended session whose `on-session-end` hooks are still to run: an entry
/// of the tenant's durable end queue.
///
/// Every operation that ends sessions (`create` evicting, `remove`,
/// `remove_user`, `take_expired`) queues their jobs in the same atomic step
/// when asked to (`queue_ends`). A host takes jobs with
/// [`EndQueue::claim_ends`], runs the hooks and then acknowledges them
/// with [`EndQueue::ack_ends`]; a job claimed but not acknowledged within
/// the reclaim time (its host died or stalled) is handed to the next host
/// that claims. A job that can never be finished (it cannot be read, or it
/// was handed out too often) goes to the tenant's dead-letter list
/// ([`EndQueue::dead_letter`]) instead, so it never holds up the others.
#[derive(Debug, Clone, PartialEq)]
pub struct EndJob {
    /// The job's position in the queue; pass it to [`EndQueue::ack_ends`].
    pub id: String,
    /// The idempotency key given to the hooks: the same on every delivery
    /// of this job, different for every other end.
    pub end_id: String,
    /// The session as it was when it ended.
    pub record: SessionRecord,
    pub reason: EndReason,
    /// When the session ended (ms since the epoch).
    pub ended_at: Millis,
    /// Whether the job was taken over from a consumer that did not finish it.
    pub reclaimed: bool,
    /// How many times the job has been handed out, this time included: 1
    /// on its first claim, more when it was taken over.
    pub deliveries: u64,
    /// The trace of the request that ended the session
    /// ([`crate::trace::current`] when the job was queued); none when the
    /// sweeper ended it. The job's `end_job` span continues that trace.
    pub trace: Option<crate::trace::TraceParent>,
}

/// An end job to move to the dead-letter list, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Poison {
    /// The job's id in the queue.
    pub id: String,
    /// Why its hooks will not run (again).
    pub why: String,
}

/// An end job taken out of the queue without its hooks having finished:
/// an entry of the tenant's dead-letter list. Holds no token, nor the
/// session's data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The job's id in the queue it left.
    pub id: String,
    /// The end id its hooks were given; none when its record could not be
    /// read.
    pub end_id: Option<String>,
    /// Why the session ended; none when that could not be read.
    pub reason: Option<EndReason>,
    /// Why the job was moved here.
    pub why: String,
    /// When it was moved here (ms since the epoch).
    pub at: Millis,
    /// How many times it had been handed out.
    pub deliveries: u64,
}

/// A tenant's dead-letter list: how many it holds, and the newest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadLetters {
    pub count: u64,
    /// Newest first.
    pub newest: Vec<DeadLetter>,
}

/// How many end jobs a tenant's queue holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndQueueStats {
    /// Queued and not yet claimed by any host.
    pub waiting: u64,
    /// Claimed by a host and not yet acknowledged.
    pub claimed: u64,
}

/// One page of a tenant's audit stream.
#[derive(Debug, Clone, Default, PartialEq)]
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

/// [`SessionStore::merge`] on a record held as a value (the memory and
/// embedded stores): the record as it is after the merge, or the bound it
/// breaks.
pub(crate) fn merged(
    current: &SessionRecord,
    patch: &Map<String, Value>,
    now: Millis,
) -> Result<SessionRecord, OverLimit> {
    let mut next = current.clone();
    crate::json::merge_patch(&mut next.data, patch);
    next.last_seen_at = next.last_seen_at.max(now);
    next.version += 1;
    crate::json::check_merged(&next)?;
    Ok(next)
}

/// Sorts records oldest first (ties: lowest public id), the order of
/// [`SessionStore::list_user`] and [`SessionStore::remove_user`].
pub(crate) fn oldest_first(records: &mut [SessionRecord]) {
    records.sort_by(|a, b| (a.created_at, &a.public_id).cmp(&(b.created_at, &b.public_id)));
}

/// Sessions: create, read, change and end them. Every method is atomic:
/// concurrent callers on any number of hosts see each operation happen
/// entirely or not at all. Sessions are keyed by `(tenant, token_hash)`; a
/// session past its deadline is never returned by any read.
///
/// Every method that ends sessions takes `queue_ends`: when set, the end job
/// of each session it ends goes onto the tenant's [`EndQueue`] in the same
/// atomic step.
///
/// A record nested deeper than [`crate::json::MAX_STORED_DEPTH`] is refused
/// ([`StoreError::Backend`]); every record a store accepted reads back,
/// whatever the edge's bounds were when it was written.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Checks that the backend answers.
    async fn ping(&self) -> StoreResult<()>;

    /// Stores a new session, enforcing `limit`: the tenant's quota of
    /// stored sessions, and the limit of its user (anonymous sessions have
    /// none). Exact under concurrency. With `queue_ends`,
    /// the end jobs of the sessions evicted to make room (reason `evicted`)
    /// are queued in the same atomic step.
    async fn create(
        &self,
        record: &SessionRecord,
        limit: CreateLimit,
        queue_ends: bool,
        now: Millis,
    ) -> StoreResult<CreateOutcome>;

    /// [`SessionStore::create`] guarded by an idempotency key: when `key`
    /// is known in the record's tenant nothing is written and what it
    /// recorded is returned; otherwise the create runs and, if it stored
    /// the session, records `key` (with the record as stored and
    /// `key.sealed`) in the same atomic step. A create that hit the limit
    /// records nothing.
    async fn create_once(
        &self,
        record: &SessionRecord,
        limit: CreateLimit,
        queue_ends: bool,
        key: &OnceKey,
        now: Millis,
    ) -> StoreResult<Once<CreateOutcome>>;

    /// [`SessionStore::remove`] guarded by an idempotency key: when `key`
    /// is known in `tenant` nothing is removed and what it recorded is
    /// returned; otherwise the removal runs and, if it ended a session,
    /// records `key` in the same atomic step.
    async fn remove_once(
        &self,
        tenant: &str,
        token_hash: &str,
        reason: EndReason,
        queue_ends: bool,
        key: &OnceKey,
        now: Millis,
    ) -> StoreResult<Once<Option<SessionRecord>>>;

    /// What the idempotency key named `id` recorded in `tenant`, if it is
    /// still kept. Records are kept [`OnceKey::ttl_ms`] by the wall clock
    /// (by Redis's own clock on Redis).
    async fn remembered(&self, tenant: &str, id: &str) -> StoreResult<Option<Remembered>>;

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

    /// Applies `patch`, an RFC 7396 merge patch, to the data of the live
    /// session under `token_hash` in one atomic step, with no version
    /// expected: concurrent merges all apply, one after the other. Like
    /// [`SessionStore::touch`] it also sets `last_seen_at` to `now` (if
    /// later) and bumps the version; deadlines and the user index follow.
    /// A result whose data nests deeper than [`crate::json::MAX_DEPTH`] or
    /// whose record is over [`crate::json::MAX_SESSION_BYTES`] is refused
    /// ([`MergeOutcome::OverLimit`]) and nothing is written. Numbers, empty
    /// arrays and objects, and strings come back exactly as given.
    async fn merge(
        &self,
        tenant: &str,
        token_hash: &str,
        patch: &Map<String, Value>,
        now: Millis,
    ) -> StoreResult<MergeOutcome>;

    /// Slides the idle deadline: sets `last_seen_at = now` and bumps the
    /// version. Returns the updated record.
    async fn touch(
        &self,
        tenant: &str,
        token_hash: &str,
        now: Millis,
    ) -> StoreResult<Option<SessionRecord>>;

    /// Removes a live session and returns it. Of any number of concurrent
    /// calls (and sweeps) for the same session exactly one gets `Some`, and
    /// with `queue_ends` exactly one end job (with `reason`) is queued.
    async fn remove(
        &self,
        tenant: &str,
        token_hash: &str,
        reason: EndReason,
        queue_ends: bool,
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
        reason: EndReason,
        queue_ends: bool,
        now: Millis,
    ) -> StoreResult<Vec<SessionRecord>>;

    /// How many sessions `tenant` has stored: the live ones, and those past
    /// their deadline that no sweeper has taken yet (for at most about a
    /// sweep interval). Cheap: a counter or an index count, no record read.
    async fn stored_sessions(&self, tenant: &str) -> StoreResult<u64>;

    /// Reads (changes nothing) up to `max` sessions of `tenant` whose
    /// deadline is after `after` and at most `until`, earliest deadline
    /// first (ties in token-hash order on the embedded and memory stores, in
    /// any order on Redis). The idle-warning scan's read: the sessions whose
    /// deadline comes within the warning's lead time.
    async fn deadlines_between(
        &self,
        tenant: &str,
        after: Millis,
        until: Millis,
        max: usize,
    ) -> StoreResult<Vec<SessionRecord>>;

    /// Takes up to `max` sessions of `tenant` whose deadline is `<= now` out of
    /// the store and returns them with the reason they ended (`expired` or
    /// `idle-timeout`). Each expired session is returned by exactly one call,
    /// and with `queue_ends` its end job is queued in the same atomic step.
    async fn take_expired(
        &self,
        tenant: &str,
        now: Millis,
        max: usize,
        queue_ends: bool,
    ) -> StoreResult<Vec<Expired>>;
}

/// The durable end queue: end jobs that [`SessionStore`]'s ending methods
/// queued, claimed and acknowledged by the end workers of every host.
#[async_trait]
pub trait EndQueue: Send + Sync + 'static {
    /// Claims up to `max` end jobs of `tenant` for `consumer` (a name unique
    /// to the claiming host process): first jobs that another consumer (or
    /// this one) claimed at least `reclaim_after_ms` ago without
    /// acknowledging them, marked `reclaimed`, then jobs never claimed, oldest
    /// first. A job is held by one consumer at a time.
    ///
    /// An entry that cannot be read as a job is not returned: it goes to
    /// the dead-letter list at once (its `why` says what is wrong with it),
    /// and the jobs claimed with it are returned as usual.
    async fn claim_ends(
        &self,
        tenant: &str,
        consumer: &str,
        max: usize,
        reclaim_after_ms: Millis,
        now: Millis,
    ) -> StoreResult<Vec<EndJob>>;

    /// Acknowledges finished end jobs: they leave the queue for good.
    /// Returns the ids this call took out of the queue; unknown ids, and
    /// jobs that another consumer acknowledged (or dead-lettered) first,
    /// are not among them.
    async fn ack_ends(&self, tenant: &str, ids: &[String]) -> StoreResult<Vec<String>>;

    /// Moves end jobs (claimed or not) to the tenant's dead-letter list,
    /// each with its `why`, dead-lettered at `now`: they leave the queue as
    /// if acknowledged and are never handed out again. Unknown ids are
    /// ignored. Returns how many moved. The list keeps about
    /// [`defaults::DEAD_LETTER_MAX_LEN`] entries; the oldest go first.
    async fn dead_letter(&self, tenant: &str, jobs: &[Poison], now: Millis) -> StoreResult<u64>;

    /// How many dead letters `tenant` has, and the newest `limit` of them.
    async fn dead_letters(&self, tenant: &str, limit: usize) -> StoreResult<DeadLetters>;

    /// How many end jobs of `tenant` are waiting and claimed.
    async fn end_queue(&self, tenant: &str) -> StoreResult<EndQueueStats>;

    /// When the oldest end job still in `tenant`'s queue (waiting or
    /// claimed) was queued (ms since the epoch); none when the queue is
    /// empty.
    async fn oldest_end_at(&self, tenant: &str) -> StoreResult<Option<Millis>>;

    /// Forgets the end-queue consumers of `tenant` (other than `keep`) that
    /// hold no job and have not claimed for `idle_ms`: hosts that stopped or
    /// died and whose jobs were taken over. Returns how many were removed.
    /// A store that does not track consumers removes none.
    async fn prune_end_consumers(
        &self,
        tenant: &str,
        keep: &str,
        idle_ms: Millis,
    ) -> StoreResult<u64>;
}

/// Each plugin's private key-value entries, per (tenant, plugin).
#[async_trait]
pub trait KvStore: Send + Sync + 'static {
    /// Reads a plugin's private key-value entry.
    async fn kv_get(&self, tenant: &str, plugin: &str, key: &str) -> StoreResult<Option<String>>;

    /// Writes a plugin's private key-value entry, optionally expiring,
    /// without a quota.
    async fn kv_set(
        &self,
        tenant: &str,
        plugin: &str,
        key: &str,
        value: &str,
        ttl_seconds: Option<u32>,
    ) -> StoreResult<()> {
        self.kv_set_within(tenant, plugin, key, value, ttl_seconds, KvQuota::UNLIMITED)
            .await
    }

    /// Writes a plugin's private key-value entry, optionally expiring,
    /// unless the plugin's entries would then be over `quota` (counted
    /// with the new entry in place of the old one under `key`): then it
    /// writes nothing and fails with [`StoreError::QuotaExceeded`]. The
    /// check and the write are one atomic step, so the quota holds across
    /// hosts. A TTL of 0 deletes the entry (never over quota).
    async fn kv_set_within(
        &self,
        tenant: &str,
        plugin: &str,
        key: &str,
        value: &str,
        ttl_seconds: Option<u32>,
        quota: KvQuota,
    ) -> StoreResult<()>;

    /// Deletes a plugin's private key-value entry; returns whether it existed.
    async fn kv_delete(&self, tenant: &str, plugin: &str, key: &str) -> StoreResult<bool>;
}

/// Each tenant's audit stream.
#[async_trait]
pub trait AuditStore: Send + Sync + 'static {
    /// Appends a record to the tenant's audit stream; returns its id.
    ///
    /// With `once`, an idempotency key: the first append with that key
    /// writes the record and every later one (for a day) writes nothing and
    /// returns the first one's id. End hooks that run again after a host died
    /// mid-hook therefore write each of their records once.
    async fn audit_append(
        &self,
        tenant: &str,
        plugin: &str,
        session: Option<&str>,
        record: &Value,
        once: Option<&str>,
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

/// The webhook outbox: signed deliveries waiting to be sent to tenants'
/// webhook endpoints, leased by the webhook senders of every host
/// ([`crate::webhooks`]).
///
/// A delivery stays in the outbox until it is removed (sent, or given up
/// on). A lease makes it due again `lease_ms` later, so a delivery whose
/// sender died is sent again by whichever host leases next: delivery is at
/// least once, and every attempt carries the same message id.
#[async_trait]
pub trait Outbox: Send + Sync + 'static {
    /// Queues `deliveries` of `tenant`, each due at its `due_at`. A
    /// delivery whose id the outbox already holds is left as it is, so a
    /// step that runs again (an end job taken over from a dead host) queues
    /// nothing twice. Returns how many were queued.
    async fn outbox_push(&self, tenant: &str, deliveries: &[Delivery]) -> StoreResult<u64>;

    /// Leases up to `max` deliveries of `tenant` due at `now` or before,
    /// earliest due first: each is due again at `now + lease_ms`, and its
    /// `attempts` counts this lease.
    async fn outbox_lease(
        &self,
        tenant: &str,
        max: usize,
        lease_ms: Millis,
        now: Millis,
    ) -> StoreResult<Vec<Delivery>>;

    /// Removes deliveries (sent, or given up on); unknown ids are ignored.
    /// Returns how many this call removed.
    async fn outbox_remove(&self, tenant: &str, ids: &[String]) -> StoreResult<u64>;

    /// Makes a leased delivery due at `due_at` and records `error`, its
    /// last attempt's failure. A delivery the outbox no longer holds (another
    /// host sent it meanwhile) is not put back: returns false.
    async fn outbox_retry(
        &self,
        tenant: &str,
        id: &str,
        due_at: Millis,
        error: &str,
    ) -> StoreResult<bool>;

    /// How many deliveries `tenant`'s outbox holds, how many of them are
    /// due at `now`, and when the oldest was queued.
    async fn outbox_stats(&self, tenant: &str, now: Millis) -> StoreResult<OutboxStats>;

    /// Reads (changes nothing) a page of the tenant's held deliveries, for
    /// `sessiond store export`: about `max` after `cursor` (the cursor this
    /// returned for the page before; from the start when none), and the
    /// cursor of the next page (none: this was the last). A delivery may
    /// come twice while the outbox changes (Redis scans), but every one held
    /// throughout comes at least once.
    async fn outbox_page(
        &self,
        tenant: &str,
        cursor: Option<&str>,
        max: usize,
    ) -> StoreResult<(Vec<Delivery>, Option<String>)>;
}

/// One webhook delivery: one event for one endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Unique in the tenant's outbox: the message id and the endpoint.
    pub id: String,
    /// The id the receiver deduplicates on (`webhook-id`): the same on
    /// every attempt, and for every endpoint the event goes to.
    pub message_id: String,
    /// The endpoint.
    pub url: String,
    /// The JSON body, exactly as signed and sent.
    pub body: String,
    /// When the delivery was queued (ms since the epoch).
    pub created_at: Millis,
    /// When it is next due (ms since the epoch).
    pub due_at: Millis,
    /// Attempts made so far; a lease counts one.
    pub attempts: u32,
    /// Why the last attempt failed; none before the first failure.
    pub last_error: Option<String>,
}

/// What a tenant's outbox holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxStats {
    /// Deliveries held (due, leased or waiting for a retry).
    pub held: u64,
    /// Of those, due now.
    pub due: u64,
    /// When the oldest held delivery was queued; none when empty.
    pub oldest_created_at: Option<Millis>,
}

/// A whole backend: all six concerns over one storage, so that ending a
/// session and queuing its end job can be one atomic step, and the dump of
/// all of it ([`dump::StoreDump`]). Components take only the trait they use
/// (`Arc<dyn SessionStore>`, `Arc<dyn KvStore>`...); an
/// `Arc<dyn StoreBackend>` coerces to each.
pub trait StoreBackend:
    SessionStore + EndQueue + KvStore + AuditStore + Outbox + ControlStore + dump::StoreDump
{
}

impl<
    T: SessionStore
        + EndQueue
        + KvStore
        + AuditStore
        + Outbox
        + ControlStore
        + dump::StoreDump
        + ?Sized,
> StoreBackend for T
{
}
