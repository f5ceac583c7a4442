//! A store backend that counts and times every operation of another one
//! ([`MeteredStore`]), by trait method name, and counts the sessions its
//! operations create and end. Everything a server does with its store goes
//! through it (the service layer, the sweeper, the end worker and the
//! plugins' capabilities), so the metrics see it all without the callers
//! knowing.
//!
//! The dump and import of a whole store are passed through unmetered: they
//! are the CLI's, never a running server's.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use serde_json::{Map, Value};

use super::dump::{DumpPage, Imported, Item, Kind, StoreDump};
use super::{
    AuditPage, AuditStore, ControlRecord, ControlStore, CreateLimit, CreateOutcome, DeadLetters,
    Delivery, EndJob, EndQueue, EndQueueStats, Expired, KvQuota, KvStore, MergeOutcome, Once,
    OnceKey, Outbox, OutboxStats, Poison, Remembered, SessionStore, StoreBackend, StoreError,
    StoreResult, Swapped, WriteOutcome,
};
use crate::metrics::StoreMetrics;
use crate::session::{EndReason, Millis, SessionRecord};

/// `inner`, with every operation recorded in `metrics`.
pub struct MeteredStore {
    inner: Arc<dyn StoreBackend>,
    metrics: StoreMetrics,
}

impl std::fmt::Debug for MeteredStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeteredStore").finish_non_exhaustive()
    }
}

impl MeteredStore {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn StoreBackend>, metrics: StoreMetrics) -> MeteredStore {
        MeteredStore { inner, metrics }
    }

    /// Runs one operation of the inner store and records it.
    async fn timed<T>(
        &self,
        operation: &'static str,
        run: impl Future<Output = StoreResult<T>>,
    ) -> StoreResult<T> {
        let started = Instant::now();
        let span = tracing::debug_span!("store", operation);
        let result = tracing::Instrument::instrument(run, span).await;
        let error = result.as_ref().err().map(error_kind);
        self.metrics.operation(operation, started.elapsed(), error);
        result
    }

    fn ended(&self, tenant: &str, reason: EndReason, count: usize) {
        self.metrics.ended(tenant, reason.as_str(), count as u64);
    }
}

/// The fixed name of a store error's kind.
fn error_kind(error: &StoreError) -> &'static str {
    match error {
        StoreError::Unavailable(_) => "unavailable",
        StoreError::OutcomeUnknown(_) => "outcome-unknown",
        StoreError::Corrupt(_) => "corrupt",
        StoreError::Backend(_) => "backend",
        StoreError::QuotaExceeded(_) => "quota-exceeded",
    }
}

#[async_trait]
impl SessionStore for MeteredStore {
    async fn ping(&self) -> StoreResult<()> {
        self.timed("ping", self.inner.ping()).await
    }

    async fn create(
        &self,
        record: &SessionRecord,
        limit: CreateLimit,
        queue_ends: bool,
        now: Millis,
    ) -> StoreResult<CreateOutcome> {
        let outcome = self
            .timed("create", self.inner.create(record, limit, queue_ends, now))
            .await?;
        if let CreateOutcome::Created { evicted } = &outcome {
            self.metrics.created(&record.tenant);
            self.ended(&record.tenant, EndReason::Evicted, evicted.len());
        }
        Ok(outcome)
    }

    async fn create_once(
        &self,
        record: &SessionRecord,
        limit: CreateLimit,
        queue_ends: bool,
        key: &OnceKey,
        now: Millis,
    ) -> StoreResult<Once<CreateOutcome>> {
        let outcome = self
            .timed(
                "create_once",
                self.inner.create_once(record, limit, queue_ends, key, now),
            )
            .await?;
        if let Once::Ran(CreateOutcome::Created { evicted }) = &outcome {
            self.metrics.created(&record.tenant);
            self.ended(&record.tenant, EndReason::Evicted, evicted.len());
        }
        Ok(outcome)
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
        let outcome = self
            .timed(
                "remove_once",
                self.inner
                    .remove_once(tenant, token_hash, reason, queue_ends, key, now),
            )
            .await?;
        if let Once::Ran(removed) = &outcome {
            self.ended(tenant, reason, usize::from(removed.is_some()));
        }
        Ok(outcome)
    }

    async fn remembered(&self, tenant: &str, id: &str) -> StoreResult<Option<Remembered>> {
        self.timed("remembered", self.inner.remembered(tenant, id))
            .await
    }

    async fn get(
        &self,
        tenant: &str,
        token_hash: &str,
        now: Millis,
    ) -> StoreResult<Option<SessionRecord>> {
        self.timed("get", self.inner.get(tenant, token_hash, now))
            .await
    }

    async fn update(
        &self,
        token_hash: &str,
        record: &SessionRecord,
        expected_version: u64,
        now: Millis,
    ) -> StoreResult<WriteOutcome> {
        self.timed(
            "update",
            self.inner.update(token_hash, record, expected_version, now),
        )
        .await
    }

    async fn merge(
        &self,
        tenant: &str,
        token_hash: &str,
        patch: &Map<String, Value>,
        now: Millis,
    ) -> StoreResult<MergeOutcome> {
        self.timed("merge", self.inner.merge(tenant, token_hash, patch, now))
            .await
    }

    async fn touch(
        &self,
        tenant: &str,
        token_hash: &str,
        now: Millis,
    ) -> StoreResult<Option<SessionRecord>> {
        self.timed("touch", self.inner.touch(tenant, token_hash, now))
            .await
    }

    async fn remove(
        &self,
        tenant: &str,
        token_hash: &str,
        reason: EndReason,
        queue_ends: bool,
        now: Millis,
    ) -> StoreResult<Option<SessionRecord>> {
        let removed = self
            .timed(
                "remove",
                self.inner
                    .remove(tenant, token_hash, reason, queue_ends, now),
            )
            .await?;
        self.ended(tenant, reason, usize::from(removed.is_some()));
        Ok(removed)
    }

    async fn list_user(
        &self,
        tenant: &str,
        user: &str,
        now: Millis,
    ) -> StoreResult<Vec<SessionRecord>> {
        self.timed("list_user", self.inner.list_user(tenant, user, now))
            .await
    }

    async fn remove_user(
        &self,
        tenant: &str,
        user: &str,
        reason: EndReason,
        queue_ends: bool,
        now: Millis,
    ) -> StoreResult<Vec<SessionRecord>> {
        let removed = self
            .timed(
                "remove_user",
                self.inner
                    .remove_user(tenant, user, reason, queue_ends, now),
            )
            .await?;
        self.ended(tenant, reason, removed.len());
        Ok(removed)
    }

    async fn stored_sessions(&self, tenant: &str) -> StoreResult<u64> {
        self.timed("stored_sessions", self.inner.stored_sessions(tenant))
            .await
    }

    async fn deadlines_between(
        &self,
        tenant: &str,
        after: Millis,
        until: Millis,
        max: usize,
    ) -> StoreResult<Vec<SessionRecord>> {
        self.timed(
            "deadlines_between",
            self.inner.deadlines_between(tenant, after, until, max),
        )
        .await
    }

    async fn take_expired(
        &self,
        tenant: &str,
        now: Millis,
        max: usize,
        queue_ends: bool,
    ) -> StoreResult<Vec<Expired>> {
        let taken = self
            .timed(
                "take_expired",
                self.inner.take_expired(tenant, now, max, queue_ends),
            )
            .await?;
        for reason in [EndReason::Expired, EndReason::IdleTimeout] {
            let n = taken.iter().filter(|e| e.reason == reason).count();
            self.ended(tenant, reason, n);
        }
        Ok(taken)
    }
}

#[async_trait]
impl EndQueue for MeteredStore {
    async fn claim_ends(
        &self,
        tenant: &str,
        consumer: &str,
        max: usize,
        reclaim_after_ms: Millis,
        now: Millis,
    ) -> StoreResult<Vec<EndJob>> {
        self.timed(
            "claim_ends",
            self.inner
                .claim_ends(tenant, consumer, max, reclaim_after_ms, now),
        )
        .await
    }

    async fn ack_ends(&self, tenant: &str, ids: &[String]) -> StoreResult<Vec<String>> {
        self.timed("ack_ends", self.inner.ack_ends(tenant, ids))
            .await
    }

    async fn dead_letter(&self, tenant: &str, jobs: &[Poison], now: Millis) -> StoreResult<u64> {
        self.timed("dead_letter", self.inner.dead_letter(tenant, jobs, now))
            .await
    }

    async fn dead_letters(&self, tenant: &str, limit: usize) -> StoreResult<DeadLetters> {
        self.timed("dead_letters", self.inner.dead_letters(tenant, limit))
            .await
    }

    async fn end_queue(&self, tenant: &str) -> StoreResult<EndQueueStats> {
        self.timed("end_queue", self.inner.end_queue(tenant)).await
    }

    async fn oldest_end_at(&self, tenant: &str) -> StoreResult<Option<Millis>> {
        self.timed("oldest_end_at", self.inner.oldest_end_at(tenant))
            .await
    }

    async fn prune_end_consumers(
        &self,
        tenant: &str,
        keep: &str,
        idle_ms: Millis,
    ) -> StoreResult<u64> {
        self.timed(
            "prune_end_consumers",
            self.inner.prune_end_consumers(tenant, keep, idle_ms),
        )
        .await
    }
}

#[async_trait]
impl KvStore for MeteredStore {
    async fn kv_get(&self, tenant: &str, plugin: &str, key: &str) -> StoreResult<Option<String>> {
        self.timed("kv_get", self.inner.kv_get(tenant, plugin, key))
            .await
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
        self.timed(
            "kv_set",
            self.inner
                .kv_set_within(tenant, plugin, key, value, ttl_seconds, quota),
        )
        .await
    }

    async fn kv_delete(&self, tenant: &str, plugin: &str, key: &str) -> StoreResult<bool> {
        self.timed("kv_delete", self.inner.kv_delete(tenant, plugin, key))
            .await
    }
}

#[async_trait]
impl AuditStore for MeteredStore {
    async fn audit_append(
        &self,
        tenant: &str,
        plugin: &str,
        session: Option<&str>,
        record: &Value,
        once: Option<&str>,
        now: Millis,
    ) -> StoreResult<String> {
        self.timed(
            "audit_append",
            self.inner
                .audit_append(tenant, plugin, session, record, once, now),
        )
        .await
    }

    async fn audit_page(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<AuditPage> {
        self.timed("audit_page", self.inner.audit_page(tenant, after, limit))
            .await
    }
}

#[async_trait]
impl Outbox for MeteredStore {
    async fn outbox_push(&self, tenant: &str, deliveries: &[Delivery]) -> StoreResult<u64> {
        self.timed("outbox_push", self.inner.outbox_push(tenant, deliveries))
            .await
    }

    async fn outbox_lease(
        &self,
        tenant: &str,
        max: usize,
        lease_ms: Millis,
        now: Millis,
    ) -> StoreResult<Vec<Delivery>> {
        self.timed(
            "outbox_lease",
            self.inner.outbox_lease(tenant, max, lease_ms, now),
        )
        .await
    }

    async fn outbox_remove(&self, tenant: &str, ids: &[String]) -> StoreResult<u64> {
        self.timed("outbox_remove", self.inner.outbox_remove(tenant, ids))
            .await
    }

    async fn outbox_retry(
        &self,
        tenant: &str,
        id: &str,
        due_at: Millis,
        error: &str,
    ) -> StoreResult<bool> {
        self.timed(
            "outbox_retry",
            self.inner.outbox_retry(tenant, id, due_at, error),
        )
        .await
    }

    async fn outbox_stats(&self, tenant: &str, now: Millis) -> StoreResult<OutboxStats> {
        self.timed("outbox_stats", self.inner.outbox_stats(tenant, now))
            .await
    }

    async fn outbox_page(
        &self,
        tenant: &str,
        cursor: Option<&str>,
        max: usize,
    ) -> StoreResult<(Vec<Delivery>, Option<String>)> {
        // An export's read, like the other dump reads: not metered.
        self.inner.outbox_page(tenant, cursor, max).await
    }
}

#[async_trait]
impl StoreDump for MeteredStore {
    async fn dump_tenants(&self) -> StoreResult<Vec<String>> {
        self.inner.dump_tenants().await
    }

    async fn dump_page(
        &self,
        tenant: &str,
        kind: Kind,
        cursor: Option<&str>,
    ) -> StoreResult<DumpPage> {
        self.inner.dump_page(tenant, kind, cursor).await
    }

    async fn import_items(&self, items: &[Item], now: Millis) -> StoreResult<Vec<Imported>> {
        self.inner.import_items(items, now).await
    }
}

/// The control plane is read by each host's sync every few hundred
/// milliseconds and written by the operator: not metered.
#[async_trait]
impl ControlStore for MeteredStore {
    async fn control_revision(&self) -> StoreResult<u64> {
        self.inner.control_revision().await
    }

    async fn control_records(&self) -> StoreResult<Vec<ControlRecord>> {
        self.inner.control_records().await
    }

    async fn control_record(&self, name: &str) -> StoreResult<Option<ControlRecord>> {
        self.inner.control_record(name).await
    }

    async fn control_put(&self, name: &str, body: &str, expected: u64) -> StoreResult<Swapped> {
        self.inner.control_put(name, body, expected).await
    }

    async fn control_remove(&self, name: &str, expected: u64) -> StoreResult<Swapped> {
        self.inner.control_remove(name, expected).await
    }

    async fn component_put(&self, tenant: &str, sha256: &str, bytes: &[u8]) -> StoreResult<()> {
        self.inner.component_put(tenant, sha256, bytes).await
    }

    async fn component_get(&self, tenant: &str, sha256: &str) -> StoreResult<Option<Vec<u8>>> {
        self.inner.component_get(tenant, sha256).await
    }

    async fn component_remove(&self, tenant: &str, sha256: &str) -> StoreResult<bool> {
        self.inner.component_remove(tenant, sha256).await
    }
}
