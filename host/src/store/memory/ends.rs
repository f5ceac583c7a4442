//! The memory store's end queue: [`EndQueue`] over each tenant's `ends`
//! map and dead-letter list. Claims hand out abandoned jobs first, as
//! `XAUTOCLAIM` does, and count every delivery.

use async_trait::async_trait;

use super::MemoryStore;
use super::tenant::{StreamId, lock};
use crate::session::Millis;
use crate::store::{
    DeadLetter, DeadLetters, EndJob, EndQueue, EndQueueStats, Poison, StoreResult, defaults,
};

#[async_trait]
impl EndQueue for MemoryStore {
    async fn claim_ends(
        &self,
        tenant: &str,
        consumer: &str,
        max: usize,
        reclaim_after_ms: Millis,
        now: Millis,
    ) -> StoreResult<Vec<EndJob>> {
        let tenant = self.tenant(tenant);
        let mut t = lock(&tenant);
        let mut out = Vec::new();
        // Abandoned jobs first, as XAUTOCLAIM hands them out.
        for queued in t.ends.values_mut() {
            if out.len() >= max {
                break;
            }
            if let Some((_, at)) = &queued.claimed
                && now.saturating_sub(*at) >= reclaim_after_ms
            {
                queued.claimed = Some((consumer.to_string(), now));
                queued.job.reclaimed = true;
                queued.job.deliveries += 1;
                out.push(queued.job.clone());
            }
        }
        for queued in t.ends.values_mut() {
            if out.len() >= max {
                break;
            }
            if queued.claimed.is_none() {
                queued.claimed = Some((consumer.to_string(), now));
                queued.job.deliveries += 1;
                out.push(queued.job.clone());
            }
        }
        Ok(out)
    }

    async fn ack_ends(&self, tenant: &str, ids: &[String]) -> StoreResult<Vec<String>> {
        let tenant = self.tenant(tenant);
        let mut t = lock(&tenant);
        let mut taken = Vec::new();
        for id in ids {
            if let Ok(parsed) = StreamId::parse(id)
                && t.ends.remove(&parsed).is_some()
            {
                taken.push(id.clone());
            }
        }
        Ok(taken)
    }

    async fn dead_letter(&self, tenant: &str, jobs: &[Poison], now: Millis) -> StoreResult<u64> {
        let tenant = self.tenant(tenant);
        let mut t = lock(&tenant);
        let mut moved = 0;
        for poison in jobs {
            let Some(queued) = StreamId::parse(&poison.id)
                .ok()
                .and_then(|id| t.ends.remove(&id))
            else {
                continue;
            };
            let job = queued.job;
            t.dead.push_back(DeadLetter {
                id: job.id,
                end_id: Some(job.end_id),
                reason: Some(job.reason),
                why: poison.why.clone(),
                at: now,
                deliveries: job.deliveries,
            });
            if t.dead.len() > defaults::DEAD_LETTER_MAX_LEN {
                t.dead.pop_front();
            }
            moved += 1;
        }
        Ok(moved)
    }

    async fn dead_letters(&self, tenant: &str, limit: usize) -> StoreResult<DeadLetters> {
        let tenant = self.tenant(tenant);
        let t = lock(&tenant);
        Ok(DeadLetters {
            count: t.dead.len() as u64,
            newest: t.dead.iter().rev().take(limit).cloned().collect(),
        })
    }

    async fn end_queue(&self, tenant: &str) -> StoreResult<EndQueueStats> {
        let tenant = self.tenant(tenant);
        let t = lock(&tenant);
        let claimed = t.ends.values().filter(|q| q.claimed.is_some()).count() as u64;
        Ok(EndQueueStats {
            waiting: t.ends.len() as u64 - claimed,
            claimed,
        })
    }

    async fn oldest_end_at(&self, tenant: &str) -> StoreResult<Option<Millis>> {
        let tenant = self.tenant(tenant);
        let t = lock(&tenant);
        Ok(t.ends.values().next().map(|q| q.job.ended_at))
    }

    async fn prune_end_consumers(
        &self,
        _tenant: &str,
        _keep: &str,
        _idle_ms: Millis,
    ) -> StoreResult<u64> {
        // Consumers are not recorded apart from the jobs they hold.
        Ok(0)
    }
}
