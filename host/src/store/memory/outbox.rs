//! The memory store's webhook outbox: [`Outbox`] over each tenant's map of
//! deliveries and its index by due time.

use async_trait::async_trait;

use super::MemoryStore;
use super::tenant::lock;
use crate::session::Millis;
use crate::store::{Delivery, Outbox, OutboxStats, StoreResult};

#[async_trait]
impl Outbox for MemoryStore {
    async fn outbox_push(&self, tenant: &str, deliveries: &[Delivery]) -> StoreResult<u64> {
        let tenant = self.tenant(tenant);
        let mut t = lock(&tenant);
        let mut queued = 0;
        for d in deliveries {
            if t.outbox.contains_key(&d.id) {
                continue;
            }
            t.outbox_due.insert((d.due_at, d.id.clone()));
            t.outbox.insert(d.id.clone(), d.clone());
            queued += 1;
        }
        Ok(queued)
    }

    async fn outbox_lease(
        &self,
        tenant: &str,
        max: usize,
        lease_ms: Millis,
        now: Millis,
    ) -> StoreResult<Vec<Delivery>> {
        let tenant = self.tenant(tenant);
        let mut t = lock(&tenant);
        let due: Vec<(Millis, String)> = t
            .outbox_due
            .iter()
            .take_while(|(at, _)| *at <= now)
            .take(max)
            .cloned()
            .collect();
        let until = now.saturating_add(lease_ms);
        let mut out = Vec::with_capacity(due.len());
        for (at, id) in due {
            t.outbox_due.remove(&(at, id.clone()));
            let Some(d) = t.outbox.get_mut(&id) else {
                continue;
            };
            d.due_at = until;
            d.attempts = d.attempts.saturating_add(1);
            out.push(d.clone());
            t.outbox_due.insert((until, id));
        }
        Ok(out)
    }

    async fn outbox_remove(&self, tenant: &str, ids: &[String]) -> StoreResult<u64> {
        let tenant = self.tenant(tenant);
        let mut t = lock(&tenant);
        let mut removed = 0;
        for id in ids {
            if let Some(d) = t.outbox.remove(id) {
                t.outbox_due.remove(&(d.due_at, d.id));
                removed += 1;
            }
        }
        Ok(removed)
    }

    async fn outbox_retry(
        &self,
        tenant: &str,
        id: &str,
        due_at: Millis,
        error: &str,
    ) -> StoreResult<bool> {
        let tenant = self.tenant(tenant);
        let mut t = lock(&tenant);
        let Some(d) = t.outbox.get_mut(id) else {
            return Ok(false);
        };
        let was = d.due_at;
        d.due_at = due_at;
        d.last_error = Some(error.to_string());
        t.outbox_due.remove(&(was, id.to_string()));
        t.outbox_due.insert((due_at, id.to_string()));
        Ok(true)
    }

    async fn outbox_stats(&self, tenant: &str, now: Millis) -> StoreResult<OutboxStats> {
        let tenant = self.tenant(tenant);
        let t = lock(&tenant);
        Ok(OutboxStats {
            held: t.outbox.len() as u64,
            due: t.outbox_due.iter().take_while(|(at, _)| *at <= now).count() as u64,
            oldest_created_at: t.outbox.values().map(|d| d.created_at).min(),
        })
    }

    async fn outbox_page(
        &self,
        tenant: &str,
        cursor: Option<&str>,
        max: usize,
    ) -> StoreResult<(Vec<Delivery>, Option<String>)> {
        let tenant = self.tenant(tenant);
        let t = lock(&tenant);
        let mut page: Vec<&Delivery> = t
            .outbox
            .values()
            .filter(|d| cursor.is_none_or(|c| d.id.as_str() > c))
            .collect();
        page.sort_by(|a, b| a.id.cmp(&b.id));
        let full = page.len() > max;
        page.truncate(max);
        let page: Vec<Delivery> = page.into_iter().cloned().collect();
        let next = full.then(|| page.last().map(|d| d.id.clone())).flatten();
        Ok((page, next))
    }
}
