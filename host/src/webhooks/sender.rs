//! The webhook sender that every host runs: leases due deliveries from each
//! tenant's outbox in turn, sends each on a task of its own, and removes or
//! reschedules it by its outcome (see the parent module).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::Webhooks;
use crate::config::secret_key;
use crate::session::{Millis, now_ms};
use crate::store::Delivery;
use crate::tenant::{Tenant, TenantRegistry};

/// Sends deliveries until `stop` is cancelled; then waits at most one
/// delivery timeout for those in flight. A delivery cut off then stays
/// leased in the outbox and is sent again (by any host) when its lease
/// ends.
pub async fn run(webhooks: Arc<Webhooks>, tenants: Arc<TenantRegistry>, stop: CancellationToken) {
    let timeout = Duration::from_millis(webhooks.config.timeout_ms.max(1));
    let client = match reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("sessiond/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(client) => client,
        Err(e) => {
            tracing::error!("webhooks: cannot build the HTTP client, sending nothing: {e}");
            return;
        }
    };
    let mut poll = tokio::time::interval(Duration::from_millis(
        webhooks.config.poll_interval_ms.max(1),
    ));
    poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut sending = Sending {
        webhooks: webhooks.clone(),
        client,
        in_flight: HashMap::new(),
        tasks: JoinSet::new(),
    };
    loop {
        sending.round(&tenants).await;
        tokio::select! {
            _ = poll.tick() => {}
            () = webhooks.wake.notified() => {}
            Some(done) = sending.tasks.join_next() => sending.finished(done),
            () = stop.cancelled() => break,
        }
        while let Some(done) = sending.tasks.try_join_next() {
            sending.finished(done);
        }
    }
    let drained = tokio::time::timeout(timeout, async {
        while let Some(done) = sending.tasks.join_next().await {
            sending.finished(done);
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            deliveries = sending.tasks.len(),
            "webhooks: stopping with deliveries in flight; they are sent again when their \
             lease ends"
        );
        sending.tasks.abort_all();
    }
}

/// The sender's state: the client, and each tenant's deliveries in flight.
struct Sending {
    webhooks: Arc<Webhooks>,
    client: reqwest::Client,
    in_flight: HashMap<String, usize>,
    tasks: JoinSet<String>,
}

impl Sending {
    /// Leases each tenant's due deliveries into its free slots and starts
    /// them.
    async fn round(&mut self, tenants: &TenantRegistry) {
        let config = &self.webhooks.config;
        let slots = config.max_concurrent_per_tenant.max(1);
        for tenant in tenants.current().iter() {
            if tenant.config.webhooks.is_empty() {
                continue;
            }
            let busy = self.in_flight.get(&tenant.name).copied().unwrap_or(0);
            if busy >= slots {
                continue;
            }
            let leased = self
                .webhooks
                .outbox
                .outbox_lease(&tenant.name, slots - busy, config.lease_ms(), now_ms())
                .await;
            let deliveries = match leased {
                Ok(deliveries) => deliveries,
                Err(e) => {
                    tracing::warn!(tenant = %tenant.name, "webhooks: leasing deliveries failed: {e}");
                    continue;
                }
            };
            for delivery in deliveries {
                *self.in_flight.entry(tenant.name.clone()).or_default() += 1;
                let (webhooks, client, tenant) =
                    (self.webhooks.clone(), self.client.clone(), tenant.clone());
                self.tasks.spawn(async move {
                    attempt(&webhooks, &client, &tenant, delivery).await;
                    tenant.name.clone()
                });
            }
        }
    }

    /// Frees the slot of a delivery that finished.
    fn finished(&mut self, done: Result<String, tokio::task::JoinError>) {
        match done {
            Ok(tenant) => {
                if let Some(n) = self.in_flight.get_mut(&tenant) {
                    *n = n.saturating_sub(1);
                }
            }
            // Only an abort ends a task otherwise, and it counts nothing.
            Err(e) => tracing::error!("webhooks: a delivery task failed: {e}"),
        }
    }
}

/// One attempt at `delivery`, and what the outbox is told of it.
async fn attempt(
    webhooks: &Webhooks,
    client: &reqwest::Client,
    tenant: &Tenant,
    delivery: Delivery,
) {
    let outbox = &webhooks.outbox;
    let metrics = &webhooks.metrics.webhooks;
    let started = Instant::now();
    let Some(hook) = tenant
        .config
        .webhooks
        .iter()
        .find(|w| w.url == delivery.url)
    else {
        tracing::warn!(tenant = %tenant.name, url = %delivery.url, id = %delivery.message_id,
            "webhooks: dropping a delivery whose endpoint is no longer configured");
        metrics.attempt(&tenant.name, "dropped", started.elapsed());
        remove(webhooks, tenant, &delivery).await;
        return;
    };
    let failure = match send(client, hook.secret.as_deref(), &delivery).await {
        Ok(()) => {
            webhooks.note_attempt(&tenant.name, &delivery, None, false);
            metrics.attempt(&tenant.name, "sent", started.elapsed());
            let queued_for = now_ms().saturating_sub(delivery.created_at);
            metrics.delivered(&tenant.name, Duration::from_millis(queued_for));
            remove(webhooks, tenant, &delivery).await;
            return;
        }
        Err(failure) => failure,
    };
    let gave_up = delivery.attempts >= webhooks.config.max_attempts;
    webhooks.note_attempt(&tenant.name, &delivery, Some(&failure), gave_up);
    if gave_up {
        metrics.attempt(&tenant.name, "gave-up", started.elapsed());
        tracing::warn!(tenant = %tenant.name, url = %delivery.url, id = %delivery.message_id,
            attempts = delivery.attempts,
            "webhooks: giving up on a delivery after its last attempt: {failure}");
        remove(webhooks, tenant, &delivery).await;
        return;
    }
    metrics.attempt(&tenant.name, "failed", started.elapsed());
    let due = now_ms().saturating_add(backoff(webhooks, &delivery));
    tracing::debug!(tenant = %tenant.name, url = %delivery.url, id = %delivery.message_id,
        attempts = delivery.attempts, "webhooks: delivery failed, retrying later: {failure}");
    if let Err(e) = outbox
        .outbox_retry(&tenant.name, &delivery.id, due, &failure)
        .await
    {
        tracing::warn!(tenant = %tenant.name, id = %delivery.message_id,
            "webhooks: cannot reschedule a failed delivery (it is retried when its lease \
             ends): {e}");
    }
}

/// Takes a finished delivery out of the outbox. If that fails, the delivery
/// is sent again when its lease ends (at least once).
async fn remove(webhooks: &Webhooks, tenant: &Tenant, delivery: &Delivery) {
    let ids = [delivery.id.clone()];
    if let Err(e) = webhooks.outbox.outbox_remove(&tenant.name, &ids).await {
        tracing::warn!(tenant = %tenant.name, id = %delivery.message_id,
            "webhooks: cannot remove a finished delivery (it may be sent again): {e}");
    }
}

/// POSTs `delivery`, signed with `secret`; why it failed, if it did.
async fn send(
    client: &reqwest::Client,
    secret: Option<&str>,
    delivery: &Delivery,
) -> Result<(), String> {
    let key = secret
        .ok_or_else(|| "the webhook has no secret".to_string())
        .and_then(secret_key)?;
    let signer = standardwebhooks::Webhook::from_bytes(key).map_err(|e| e.to_string())?;
    let timestamp = i64::try_from(now_ms() / 1000).unwrap_or(i64::MAX);
    let signature = signer
        .sign(&delivery.message_id, timestamp, delivery.body.as_bytes())
        .map_err(|e| format!("cannot sign: {e}"))?;
    let answer = client
        .post(&delivery.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(standardwebhooks::HEADER_WEBHOOK_ID, &delivery.message_id)
        .header(
            standardwebhooks::HEADER_WEBHOOK_TIMESTAMP,
            timestamp.to_string(),
        )
        .header(standardwebhooks::HEADER_WEBHOOK_SIGNATURE, signature)
        .body(delivery.body.clone())
        .send()
        .await;
    match answer {
        Ok(answer) if answer.status().is_success() => Ok(()),
        Ok(answer) => Err(format!("the endpoint answered {}", answer.status())),
        Err(e) if e.is_timeout() => Err("the endpoint did not answer in time".into()),
        Err(e) if e.is_connect() => Err(format!("cannot connect to the endpoint: {e}")),
        Err(e) => Err(format!("sending failed: {e}")),
    }
}

/// The wait after `delivery`'s latest failed attempt: `retry_base_ms`
/// doubled for each earlier attempt, at most `retry_max_ms`, plus up to a
/// fifth of it, spread by the delivery's id so that retries of many
/// deliveries do not all fall due at once.
fn backoff(webhooks: &Webhooks, delivery: &Delivery) -> Millis {
    let config = &webhooks.config;
    let doublings = delivery.attempts.saturating_sub(1).min(40);
    let wait = config
        .retry_base_ms
        .saturating_mul(1u64 << doublings)
        .min(config.retry_max_ms);
    let digest = Sha256::digest(format!("{}:{}", delivery.id, delivery.attempts).as_bytes());
    let spread = u64::from(u16::from_be_bytes([digest[0], digest[1]]));
    wait.saturating_add((wait / 5).saturating_mul(spread) / u64::from(u16::MAX))
}
