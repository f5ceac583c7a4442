//! Webhooks: each tenant's session events, signed and POSTed to the
//! endpoints it configures (`[[tenants.<name>.webhooks]]`), through a
//! durable outbox in the store ([`crate::store::Outbox`]).
//!
//! - **Events.** `session.created` is queued right after the create is
//!   stored. `session.ended` is queued by the end worker when it runs the
//!   session's end job, before the end hooks, whatever ended the session
//!   (logout, expiry, idle timeout, revocation, eviction); a tenant with
//!   such a webhook therefore gets end jobs even without end hooks. An end
//!   job taken over from a dead host queues nothing twice: the delivery ids
//!   come from the end id.
//! - **Signing.** Each attempt is signed as Standard Webhooks specifies:
//!   `webhook-id` (the message id, the same on every attempt and every
//!   endpoint: deduplicate on it), `webhook-timestamp` (Unix seconds, of
//!   this attempt) and `webhook-signature` (`v1,` and the base64
//!   HMAC-SHA256 of `<id>.<timestamp>.<body>` under the secret's key).
//! - **Sending** ([`sender`]). Every host leases due deliveries from each
//!   tenant's outbox, at most `webhooks.max_concurrent_per_tenant` of one
//!   tenant at once, and POSTs them with a timeout of `webhooks.timeout_ms`,
//!   following no redirects. A 2xx answer removes the delivery; anything
//!   else (another status, a timeout, a refused connection) makes it due
//!   again after a backoff that doubles from `webhooks.retry_base_ms` up to
//!   `webhooks.retry_max_ms`. After `webhooks.max_attempts` it is given up
//!   on, logged and counted.
//! - **Guarantee: at least once.** A host that dies mid-delivery holds its
//!   lease for two timeouts and a second; then any host sends the delivery
//!   again. So a receiver may see a message twice, always with the same
//!   `webhook-id`. With the memory store the outbox dies with the process.
//!   A `session.created` is queued just after the create, not in its atomic
//!   step: a host that dies between the two loses that one event.

use std::sync::Arc;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::Notify;

use crate::config::{WebhookEvent, WebhooksConfig};
use crate::metrics::Metrics;
use crate::session::{EndReason, Millis, SessionRecord, now_ms, rfc3339};
use crate::store::{Delivery, Outbox, StoreResult};
use crate::tenant::Tenant;

pub mod sender;

/// What the webhooks of one host share: the outbox, the settings and the
/// sender's wake-up.
pub struct Webhooks {
    pub outbox: Arc<dyn Outbox>,
    pub config: WebhooksConfig,
    pub metrics: Arc<Metrics>,
    wake: Notify,
    /// What this host's attempts at each (tenant, endpoint URL) came to.
    endpoints: std::sync::Mutex<std::collections::HashMap<(String, String), EndpointState>>,
}

/// What this host's attempts at one endpoint came to since it started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointState {
    /// Deliveries the endpoint took (a 2xx answer).
    pub sent: u64,
    /// Attempts that failed (each is retried, or given up on).
    pub failed: u64,
    /// Deliveries given up on after their last attempt.
    pub gave_up: u64,
    /// Failed attempts since the last one that was sent.
    pub failing_in_a_row: u64,
    /// When the endpoint last took a delivery.
    pub last_sent_at: Option<Millis>,
    /// The latest failed attempt.
    pub last_failure: Option<LastFailure>,
}

/// A failed attempt at a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastFailure {
    pub at: Millis,
    /// The delivery's `webhook-id`.
    pub message_id: String,
    /// Its attempts so far, this one included.
    pub attempt: u32,
    /// Why it failed: the endpoint's status, a timeout, a refused connection.
    pub error: String,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Webhooks {
    pub fn new(outbox: Arc<dyn Outbox>, config: WebhooksConfig, metrics: Arc<Metrics>) -> Self {
        Webhooks {
            outbox,
            config,
            metrics,
            wake: Notify::new(),
            endpoints: Default::default(),
        }
    }

    /// What this host's attempts at `tenant`'s endpoint `url` came to.
    pub fn endpoint_state(&self, tenant: &str, url: &str) -> EndpointState {
        self.endpoints
            .lock()
            .ok()
            .and_then(|m| m.get(&(tenant.to_string(), url.to_string())).cloned())
            .unwrap_or_default()
    }

    /// Counts an attempt at `delivery`: sent when `failure` is none, and
    /// otherwise failed (and given up on when `gave_up`).
    fn note_attempt(
        &self,
        tenant: &str,
        delivery: &Delivery,
        failure: Option<&str>,
        gave_up: bool,
    ) {
        let Ok(mut endpoints) = self.endpoints.lock() else {
            return;
        };
        let state = endpoints
            .entry((tenant.to_string(), delivery.url.clone()))
            .or_default();
        let now = now_ms();
        match failure {
            None => {
                state.sent += 1;
                state.failing_in_a_row = 0;
                state.last_sent_at = Some(now);
            }
            Some(error) => {
                state.failed += 1;
                state.failing_in_a_row += 1;
                state.gave_up += u64::from(gave_up);
                state.last_failure = Some(LastFailure {
                    at: now,
                    message_id: delivery.message_id.clone(),
                    attempt: delivery.attempts,
                    error: error.to_string(),
                });
            }
        }
    }

    /// Queues `session.created` for `record`, if its tenant has a webhook
    /// for it.
    pub async fn created(&self, tenant: &Tenant, record: &SessionRecord) -> StoreResult<()> {
        let data = json!({
            "tenant": tenant.name,
            "session": record.public_id,
            "user": record.user,
            "created_at": rfc3339(record.created_at),
            "created_at_ms": record.created_at,
            "expires_at": rfc3339(record.expires_at()),
            "expires_at_ms": record.expires_at(),
            "idle_expires_at": rfc3339(record.idle_expires_at()),
            "idle_expires_at_ms": record.idle_expires_at(),
        });
        let message_id = message_id("session.created", &record.public_id);
        self.queue(
            tenant,
            WebhookEvent::SessionCreated,
            &message_id,
            data,
            record.created_at,
        )
        .await
    }

    /// Queues `session.idle-warning` for `record`'s current idle period,
    /// if its tenant has a webhook for it. Queued again for the same period
    /// (by another host), it queues nothing new.
    pub async fn idle_warning(&self, tenant: &Tenant, record: &SessionRecord) -> StoreResult<()> {
        let idle_at = record.idle_expires_at();
        let data = json!({
            "tenant": tenant.name,
            "session": record.public_id,
            "user": record.user,
            "last_seen_at": rfc3339(record.last_seen_at),
            "last_seen_at_ms": record.last_seen_at,
            "idle_expires_at": rfc3339(idle_at),
            "idle_expires_at_ms": idle_at,
        });
        let period = format!("{}.{}", record.public_id, record.last_seen_at);
        let message_id = message_id("session.idle-warning", &period);
        self.queue(
            tenant,
            WebhookEvent::SessionIdleWarning,
            &message_id,
            data,
            now_ms(),
        )
        .await
    }

    /// Queues `session.ended` for an end job, if its tenant has a webhook
    /// for it. `end_id` is the job's: a job run again queues nothing new.
    pub async fn ended(
        &self,
        tenant: &Tenant,
        record: &SessionRecord,
        reason: EndReason,
        end_id: &str,
        ended_at: Millis,
    ) -> StoreResult<()> {
        let data = json!({
            "tenant": tenant.name,
            "session": record.public_id,
            "user": record.user,
            "reason": reason.as_str(),
            "end_id": end_id,
            "created_at": rfc3339(record.created_at),
            "created_at_ms": record.created_at,
            "ended_at": rfc3339(ended_at),
            "ended_at_ms": ended_at,
        });
        let message_id = message_id("session.ended", end_id);
        self.queue(
            tenant,
            WebhookEvent::SessionEnded,
            &message_id,
            data,
            ended_at,
        )
        .await
    }

    /// One delivery of the event per endpoint that wants it, queued at
    /// `at`; wakes this host's sender.
    async fn queue(
        &self,
        tenant: &Tenant,
        event: WebhookEvent,
        message_id: &str,
        data: Value,
        at: Millis,
    ) -> StoreResult<()> {
        let body = json!({
            "type": event.as_str(),
            "timestamp": rfc3339(at),
            "data": data,
        })
        .to_string();
        let deliveries: Vec<Delivery> = tenant
            .config
            .webhooks
            .iter()
            .filter(|w| w.wants(event))
            .map(|w| Delivery {
                id: format!("{message_id}.{}", short_hash(&w.url)),
                message_id: message_id.to_string(),
                url: w.url.clone(),
                body: body.clone(),
                created_at: at,
                due_at: at,
                attempts: 0,
                last_error: None,
            })
            .collect();
        if deliveries.is_empty() {
            return Ok(());
        }
        self.outbox.outbox_push(&tenant.name, &deliveries).await?;
        self.wake.notify_one();
        Ok(())
    }
}

/// The message id of an event about `subject` (a public id or an end id):
/// `msg_` and 32 hex digits, the same whenever the same event is queued
/// again.
fn message_id(event: &str, subject: &str) -> String {
    let digest = Sha256::digest(format!("{event}\n{subject}").as_bytes());
    format!("msg_{}", hex::encode(&digest[..16]))
}

/// 12 hex digits of the SHA-256 of `text`: tells an event's endpoints apart
/// in delivery ids.
fn short_hash(text: &str) -> String {
    hex::encode(&Sha256::digest(text.as_bytes())[..6])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_are_stable_and_distinct() {
        let a = message_id("session.ended", "p1.1-0");
        assert_eq!(a, message_id("session.ended", "p1.1-0"));
        assert_ne!(a, message_id("session.ended", "p1.2-0"));
        assert_ne!(a, message_id("session.created", "p1.1-0"));
        assert!(a.starts_with("msg_") && a.len() == 36, "{a}");
    }
}
