//! The embedded store: everything in this process's memory, nothing to set up.
//!
//! Each tenant's state sits behind its own mutex, so every operation is atomic
//! and per-user limits are exact. The behaviour mirrors [`super::redis::RedisStore`]
//! (both pass the same conformance suite):
//!
//! - a session past its deadline is invisible to every read but stays stored
//!   until [`SessionStore::take_expired`] takes it, so its end hooks run
//!   exactly once;
//! - the per-user limit counts only live sessions; `EvictLru` ends the
//!   sessions with the lowest `last_seen_at` (ties: lowest token hash), and a
//!   limit of 0 refuses every session whatever the policy;
//! - audit ids look like Redis stream ids (`<ms>-<seq>`) and compare the same
//!   way; the stream keeps the newest `audit_max_len` records;
//! - kv expiry follows the wall clock, as Redis does.
//!
//! The one difference: Redis drops a session key a grace period after its
//! deadline even if no sweeper took it; here it stays until swept.
//!
//! This module holds [`MemoryStore`] and its trait impls but one; `ends`
//! holds its end queue ([`crate::store::EndQueue`]), `outbox` its webhook
//! outbox ([`crate::store::Outbox`]), `control` the control plane's records
//! ([`crate::store::ControlStore`]), and `tenant` the state of one tenant
//! and the operations on it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use async_trait::async_trait;
use serde_json::{Map, Value};

use super::{
    AUDIT_ONCE_TTL_MS, AuditPage, AuditStore, CreateLimit, CreateOutcome, Expired, KvQuota,
    KvStore, LimitPolicy, MergeOutcome, Once, OnceKey, Remembered, SessionStore, StoreError,
    StoreResult, WriteOutcome, defaults, oldest_first,
};
use crate::session::{AuditRecord, EndReason, Millis, SessionRecord, now_ms};

/// [`super::dump::StoreDump`] for this store.
mod control;
mod dump;
mod ends;
mod outbox;
mod tenant;

use tenant::{KvEntry, StreamId, Tenant, lock, next_id};

/// The embedded session store.
pub struct MemoryStore {
    tenants: RwLock<HashMap<String, Arc<Mutex<Tenant>>>>,
    audit_max_len: usize,
    control: Mutex<control::Control>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("audit_max_len", &self.audit_max_len)
            .finish_non_exhaustive()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::with_audit_max_len(defaults::AUDIT_MAX_LEN)
    }

    /// A store whose audit streams keep at most `max_len` records each.
    pub fn with_audit_max_len(max_len: usize) -> Self {
        Self {
            tenants: RwLock::new(HashMap::new()),
            audit_max_len: max_len.max(1),
            control: Mutex::default(),
        }
    }

    fn tenant(&self, name: &str) -> Arc<Mutex<Tenant>> {
        if let Some(t) = self
            .tenants
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
        {
            return t.clone();
        }
        self.tenants
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name.to_string())
            .or_default()
            .clone()
    }
}

/// Stores a new session in a tenant's state (see [`SessionStore::create`]).
fn create(
    t: &mut Tenant,
    record: &SessionRecord,
    limit: CreateLimit,
    queue_ends: bool,
    now: Millis,
) -> StoreResult<CreateOutcome> {
    // As deep as the other stores keep, so that all behave the same.
    crate::json::check_stored(record).map_err(StoreError::Backend)?;
    if t.sessions.contains_key(&record.token_hash) {
        return Err(StoreError::Backend(
            "a session with this token hash exists".into(),
        ));
    }
    let stored = t.sessions.len() as u64;
    if limit.tenant_full(stored) {
        return Ok(CreateOutcome::QuotaReached { stored });
    }
    let mut evicted = Vec::new();
    if let (Some(user), Some(limit)) = (&record.user, limit.user) {
        let live: Vec<String> = t
            .live_of_user(user, now)
            .into_iter()
            .map(|r| r.token_hash.clone())
            .collect();
        let max = limit.max as usize;
        if live.len() >= max {
            if limit.policy == LimitPolicy::Deny || max == 0 {
                return Ok(CreateOutcome::LimitReached {
                    active: live.len() as u32,
                });
            }
            for hash in &live[..live.len() - max + 1] {
                evicted.extend(t.end(hash, EndReason::Evicted, queue_ends, now));
            }
        }
    }
    t.insert(record.clone());
    Ok(CreateOutcome::Created { evicted })
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn ping(&self) -> StoreResult<()> {
        Ok(())
    }

    async fn create(
        &self,
        record: &SessionRecord,
        limit: CreateLimit,
        queue_ends: bool,
        now: Millis,
    ) -> StoreResult<CreateOutcome> {
        let tenant = self.tenant(&record.tenant);
        let mut t = lock(&tenant);
        create(&mut t, record, limit, queue_ends, now)
    }

    async fn create_once(
        &self,
        record: &SessionRecord,
        limit: CreateLimit,
        queue_ends: bool,
        key: &OnceKey,
        now: Millis,
    ) -> StoreResult<Once<CreateOutcome>> {
        let tenant = self.tenant(&record.tenant);
        let mut t = lock(&tenant);
        let clock = now_ms();
        if let Some(known) = t.remembered(&key.id, clock) {
            return Ok(Once::Known(Box::new(known)));
        }
        let outcome = create(&mut t, record, limit, queue_ends, now)?;
        if let CreateOutcome::Created { .. } = outcome {
            t.remember(key, Some(record), clock);
        }
        Ok(Once::Ran(outcome))
    }

    async fn remove_once(
        &self,
        tenant: &str,
        token_hash: &str,
        reason: EndReason,
        queue_ends: bool,
        key: &OnceKey,
        now: Millis,
    ) -> StoreResult<Once<Option<SessionRecord>>> {
        let tenant = self.tenant(tenant);
        let mut t = lock(&tenant);
        let clock = now_ms();
        if let Some(known) = t.remembered(&key.id, clock) {
            return Ok(Once::Known(Box::new(known)));
        }
        if t.live(token_hash, now).is_none() {
            return Ok(Once::Ran(None));
        }
        let ended = t.end(token_hash, reason, queue_ends, now);
        if ended.is_some() {
            t.remember(key, None, clock);
        }
        Ok(Once::Ran(ended))
    }

    async fn remembered(&self, tenant: &str, id: &str) -> StoreResult<Option<Remembered>> {
        let tenant = self.tenant(tenant);
        let mut t = lock(&tenant);
        Ok(t.remembered(id, now_ms()))
    }

    async fn get(
        &self,
        tenant: &str,
        token_hash: &str,
        now: Millis,
    ) -> StoreResult<Option<SessionRecord>> {
        let tenant = self.tenant(tenant);
        let t = lock(&tenant);
        Ok(t.live(token_hash, now).cloned())
    }

    async fn update(
        &self,
        token_hash: &str,
        record: &SessionRecord,
        expected_version: u64,
        now: Millis,
    ) -> StoreResult<WriteOutcome> {
        super::check_next_version(record, expected_version)?;
        crate::json::check_stored(record).map_err(StoreError::Backend)?;
        let tenant = self.tenant(&record.tenant);
        let mut t = lock(&tenant);
        let Some(current) = t.live(token_hash, now) else {
            return Ok(WriteOutcome::NotFound);
        };
        if current.version != expected_version {
            return Ok(WriteOutcome::VersionMismatch(current.clone()));
        }
        if record.token_hash != token_hash && t.sessions.contains_key(&record.token_hash) {
            return Err(StoreError::Backend(
                "a session with the new token hash exists".into(),
            ));
        }
        t.take(token_hash);
        t.insert(record.clone());
        Ok(WriteOutcome::Written(record.clone()))
    }

    async fn merge(
        &self,
        tenant: &str,
        token_hash: &str,
        patch: &Map<String, Value>,
        now: Millis,
    ) -> StoreResult<MergeOutcome> {
        let tenant = self.tenant(tenant);
        let mut t = lock(&tenant);
        let Some(current) = t.live(token_hash, now) else {
            return Ok(MergeOutcome::NotFound);
        };
        let next = match super::merged(current, patch, now) {
            Ok(next) => next,
            Err(over) => return Ok(MergeOutcome::OverLimit(over)),
        };
        t.take(token_hash);
        t.insert(next.clone());
        Ok(MergeOutcome::Merged(Box::new(next)))
    }

    async fn touch(
        &self,
        tenant: &str,
        token_hash: &str,
        now: Millis,
    ) -> StoreResult<Option<SessionRecord>> {
        let tenant = self.tenant(tenant);
        let mut t = lock(&tenant);
        if t.live(token_hash, now).is_none() {
            return Ok(None);
        }
        let mut record = t.take(token_hash).expect("live session");
        record.last_seen_at = record.last_seen_at.max(now);
        record.version += 1;
        t.insert(record.clone());
        Ok(Some(record))
    }

    async fn remove(
        &self,
        tenant: &str,
        token_hash: &str,
        reason: EndReason,
        queue_ends: bool,
        now: Millis,
    ) -> StoreResult<Option<SessionRecord>> {
        let tenant = self.tenant(tenant);
        let mut t = lock(&tenant);
        if t.live(token_hash, now).is_none() {
            return Ok(None);
        }
        Ok(t.end(token_hash, reason, queue_ends, now))
    }

    async fn list_user(
        &self,
        tenant: &str,
        user: &str,
        now: Millis,
    ) -> StoreResult<Vec<SessionRecord>> {
        let tenant = self.tenant(tenant);
        let t = lock(&tenant);
        let mut out: Vec<SessionRecord> = t.live_of_user(user, now).into_iter().cloned().collect();
        oldest_first(&mut out);
        Ok(out)
    }

    async fn remove_user(
        &self,
        tenant: &str,
        user: &str,
        reason: EndReason,
        queue_ends: bool,
        now: Millis,
    ) -> StoreResult<Vec<SessionRecord>> {
        let tenant = self.tenant(tenant);
        let mut t = lock(&tenant);
        let hashes: Vec<String> = t
            .live_of_user(user, now)
            .into_iter()
            .map(|r| r.token_hash.clone())
            .collect();
        let mut out: Vec<SessionRecord> = hashes
            .iter()
            .filter_map(|h| t.end(h, reason, queue_ends, now))
            .collect();
        oldest_first(&mut out);
        Ok(out)
    }

    async fn stored_sessions(&self, tenant: &str) -> StoreResult<u64> {
        let tenant = self.tenant(tenant);
        let t = lock(&tenant);
        Ok(t.sessions.len() as u64)
    }

    async fn deadlines_between(
        &self,
        tenant: &str,
        after: Millis,
        until: Millis,
        max: usize,
    ) -> StoreResult<Vec<SessionRecord>> {
        let tenant = self.tenant(tenant);
        let t = lock(&tenant);
        let from = (after.saturating_add(1), String::new());
        Ok(t.deadlines
            .range(from..)
            .take_while(|(at, _)| *at <= until)
            .take(max)
            .filter_map(|(_, hash)| t.sessions.get(hash).cloned())
            .collect())
    }

    async fn take_expired(
        &self,
        tenant: &str,
        now: Millis,
        max: usize,
        queue_ends: bool,
    ) -> StoreResult<Vec<Expired>> {
        let tenant = self.tenant(tenant);
        let mut t = lock(&tenant);
        t.purge_kv(now_ms());
        let due: Vec<String> = t
            .deadlines
            .iter()
            .take_while(|(at, _)| *at <= now)
            .take(max)
            .map(|(_, h)| h.clone())
            .collect();
        let mut out = Vec::with_capacity(due.len());
        for hash in &due {
            let Some(reason) = t.sessions.get(hash).map(SessionRecord::expiry_reason) else {
                continue;
            };
            if let Some(record) = t.end(hash, reason, queue_ends, now) {
                out.push(Expired { record, reason });
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl KvStore for MemoryStore {
    async fn kv_get(&self, tenant: &str, plugin: &str, key: &str) -> StoreResult<Option<String>> {
        let tenant = self.tenant(tenant);
        let t = lock(&tenant);
        let now = now_ms();
        Ok(t.kv
            .get(&(plugin.to_string(), key.to_string()))
            .filter(|e| e.expires_at.is_none_or(|at| at > now))
            .map(|e| e.value.clone()))
    }

    async fn kv_set_within(
        &self,
        tenant: &str,
        plugin: &str,
        key: &str,
        value: &str,
        ttl_seconds: Option<u32>,
        quota: KvQuota,
    ) -> StoreResult<()> {
        let tenant = self.tenant(tenant);
        let mut t = lock(&tenant);
        let now = now_ms();
        t.purge_kv(now);
        // A TTL of 0 expires the entry at once.
        if ttl_seconds == Some(0) {
            t.kv_remove(plugin, key);
            return Ok(());
        }
        // The quota counts the plugin's entries with this one in place of
        // the one it replaces (lapsed entries were just purged).
        let usage = t.kv_usage(plugin);
        let old =
            t.kv.get(&(plugin.to_string(), key.to_string()))
                .map(|e| (key.len() + e.value.len()) as u64);
        let new = (key.len() + value.len()) as u64;
        quota.check(
            usage.keys + u64::from(old.is_none()),
            usage.bytes - old.unwrap_or(0) + new,
        )?;
        t.kv_remove(plugin, key);
        let expires_at = ttl_seconds.map(|s| now + u64::from(s) * 1000);
        t.kv_insert(
            plugin,
            key,
            KvEntry {
                value: value.to_string(),
                expires_at,
            },
        );
        Ok(())
    }

    async fn kv_delete(&self, tenant: &str, plugin: &str, key: &str) -> StoreResult<bool> {
        let tenant = self.tenant(tenant);
        let mut t = lock(&tenant);
        let now = now_ms();
        Ok(t.kv_remove(plugin, key)
            .is_some_and(|e| e.expires_at.is_none_or(|at| at > now)))
    }
}

#[async_trait]
impl AuditStore for MemoryStore {
    async fn audit_append(
        &self,
        tenant: &str,
        plugin: &str,
        session: Option<&str>,
        record: &Value,
        once: Option<&str>,
        now: Millis,
    ) -> StoreResult<String> {
        let name = tenant;
        let tenant = self.tenant(name);
        let mut t = lock(&tenant);
        if let Some(key) = once {
            let clock = now_ms();
            while t
                .audit_once_order
                .front()
                .is_some_and(|(until, _)| *until <= clock)
            {
                let (_, lapsed) = t.audit_once_order.pop_front().expect("non-empty");
                t.audit_once.remove(&lapsed);
            }
            if let Some(id) = t.audit_once.get(key) {
                return Ok(id.clone());
            }
        }
        let id = next_id(t.last_audit_id, now);
        t.last_audit_id = id;
        if let Some(key) = once {
            t.audit_once.insert(key.to_string(), id.to_string());
            t.audit_once_order
                .push_back((now_ms() + AUDIT_ONCE_TTL_MS, key.to_string()));
        }
        t.audit.push_back((
            id,
            AuditRecord {
                id: id.to_string(),
                at: now,
                tenant: name.to_string(),
                plugin: plugin.to_string(),
                session: session.map(str::to_string),
                record: record.clone(),
            },
        ));
        while t.audit.len() > self.audit_max_len {
            t.audit.pop_front();
        }
        Ok(id.to_string())
    }

    async fn audit_page(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<AuditPage> {
        let after = after.map(StreamId::parse).transpose()?;
        // A page holds at least one record, so `next` always makes progress.
        let limit = limit.max(1);
        let tenant = self.tenant(tenant);
        let t = lock(&tenant);
        let start = match after {
            Some(after) => t.audit.partition_point(|(id, _)| *id <= after),
            None => 0,
        };
        let records: Vec<AuditRecord> = t
            .audit
            .iter()
            .skip(start)
            .take(limit)
            .map(|(_, r)| r.clone())
            .collect();
        let more = t.audit.len() > start + records.len();
        let next = if more {
            records.last().map(|r| r.id.clone())
        } else {
            None
        };
        Ok(AuditPage { records, next })
    }
}
