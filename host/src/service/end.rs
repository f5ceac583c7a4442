//! Every store step that ends sessions, in one place.
//!
//! Ending a session has two halves, and forgetting either silently drops
//! end hooks:
//! 1. the store step must queue the end jobs in the same atomic step, when
//!    the tenant has end hooks (`queue_ends`);
//! 2. whatever ended must be reported: logged, and this host's end worker
//!    woken so that the hooks run within milliseconds.
//!
//! [`Ending`] is the only caller of the store's ending steps (create with
//! eviction, remove, remove a user's, take expired): each of its methods
//! passes the tenant's end policy and reports what ended through one
//! private function. Create, logout, authenticate (evicting), revoke and
//! the sweeper all use it.

use super::Result;
use crate::app::App;
use crate::session::{EndReason, Millis, SessionRecord, now_ms};
use crate::store::{CreateLimit, CreateOutcome, Expired, Once, OnceKey};
use crate::tenant::Tenant;

/// The ending steps of one tenant's sessions.
#[derive(Clone, Copy)]
pub struct Ending<'a> {
    app: &'a App,
    tenant: &'a Tenant,
}

impl<'a> Ending<'a> {
    pub fn of(app: &'a App, tenant: &'a Tenant) -> Ending<'a> {
        Ending { app, tenant }
    }

    /// Stores a new session; with policy `evict-lru` at the user's limit,
    /// ends the least recently used sessions (reason `evicted`) in the same
    /// step.
    pub async fn create(
        &self,
        record: &SessionRecord,
        limit: CreateLimit,
        now: Millis,
    ) -> Result<CreateOutcome> {
        let outcome = self
            .app
            .sessions
            .create(record, limit, self.tenant.queues_ends(), now)
            .await?;
        if let CreateOutcome::Created { evicted } = &outcome {
            self.ended(evicted.iter().map(|r| (r, EndReason::Evicted)));
        }
        Ok(outcome)
    }

    /// [`Ending::create`] guarded by an idempotency key (see
    /// [`crate::store::SessionStore::create_once`]).
    pub async fn create_once(
        &self,
        record: &SessionRecord,
        limit: CreateLimit,
        key: &OnceKey,
        now: Millis,
    ) -> Result<Once<CreateOutcome>> {
        let outcome = self
            .app
            .sessions
            .create_once(record, limit, self.tenant.queues_ends(), key, now)
            .await?;
        if let Once::Ran(CreateOutcome::Created { evicted }) = &outcome {
            self.ended(evicted.iter().map(|r| (r, EndReason::Evicted)));
        }
        Ok(outcome)
    }

    /// [`Ending::one`] guarded by an idempotency key (see
    /// [`crate::store::SessionStore::remove_once`]).
    pub async fn one_once(
        &self,
        token_hash: &str,
        reason: EndReason,
        key: &OnceKey,
        now: Millis,
    ) -> Result<Once<Option<SessionRecord>>> {
        let outcome = self
            .app
            .sessions
            .remove_once(
                &self.tenant.name,
                token_hash,
                reason,
                self.tenant.queues_ends(),
                key,
                now,
            )
            .await?;
        if let Once::Ran(Some(record)) = &outcome {
            self.ended(std::iter::once((record, reason)));
        }
        Ok(outcome)
    }

    /// Ends one live session; none when there is no such live session.
    pub async fn one(
        &self,
        token_hash: &str,
        reason: EndReason,
        now: Millis,
    ) -> Result<Option<SessionRecord>> {
        let record = self
            .app
            .sessions
            .remove(
                &self.tenant.name,
                token_hash,
                reason,
                self.tenant.queues_ends(),
                now,
            )
            .await?;
        self.ended(record.iter().map(|r| (r, reason)));
        Ok(record)
    }

    /// Ends every live session of `user`.
    pub async fn user(
        &self,
        user: &str,
        reason: EndReason,
        now: Millis,
    ) -> Result<Vec<SessionRecord>> {
        let records = self
            .app
            .sessions
            .remove_user(
                &self.tenant.name,
                user,
                reason,
                self.tenant.queues_ends(),
                now,
            )
            .await?;
        self.ended(records.iter().map(|r| (r, reason)));
        Ok(records)
    }

    /// Ends up to `max` sessions whose deadline has passed, each with the
    /// reason it ran out (`expired` or `idle-timeout`).
    pub async fn expired(&self, max: usize, now: Millis) -> Result<Vec<Expired>> {
        let taken = self
            .app
            .sessions
            .take_expired(&self.tenant.name, now, max, self.tenant.queues_ends())
            .await?;
        self.ended(taken.iter().map(|e| (&e.record, e.reason)));
        Ok(taken)
    }

    /// Reports sessions the store just ended (and, for a tenant with end
    /// hooks, whose end jobs it queued in the same step): logs each, and
    /// wakes the end worker, which runs the hooks.
    fn ended<'r>(&self, ended: impl Iterator<Item = (&'r SessionRecord, EndReason)>) {
        let mut any = false;
        for (record, reason) in ended {
            any = true;
            tracing::debug!(tenant = %self.tenant.name, session = %record.public_id,
                reason = reason.as_str(), "session ended");
        }
        if any && self.tenant.queues_ends() {
            self.app.ends.wake();
        }
    }
}

/// Ends every expired session of every tenant, one batch of at most `batch`
/// at a time; returns how many ended. A tenant whose sweep fails is logged
/// and left for the next round.
pub async fn sweep(app: &App, batch: usize) -> usize {
    let batch = batch.max(1);
    let mut ended = 0;
    let tenants = app.tenants.current();
    // A degraded tenant's sessions wait: ending them now would skip the end
    // hooks of the plugins that did not load.
    for tenant in tenants.iter().filter(|t| t.degraded.is_none()) {
        let ending = Ending::of(app, tenant);
        loop {
            match ending.expired(batch, now_ms()).await {
                Ok(taken) => {
                    ended += taken.len();
                    if taken.len() < batch {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(tenant = %tenant.name, "sweeping failed: {e}");
                    break;
                }
            }
        }
    }
    ended
}
