//! The Redis backend's end queue: [`EndQueue`] over each tenant's `ends`
//! stream and its consumer group, and the `dead` stream of dead letters
//! (see the parent module and `keys` for the layout).

use async_trait::async_trait;
use redis::Value;

use super::RedisStore;
use super::conn::Effect;
use super::reply::{corrupt, dead_letter, end_job, entry, items, number, text};
use super::scripts::SCRIPTS;
use crate::session::Millis;
use crate::store::{DeadLetters, EndJob, EndQueue, EndQueueStats, Poison, StoreResult, defaults};

#[async_trait]
impl EndQueue for RedisStore {
    async fn claim_ends(
        &self,
        tenant: &str,
        consumer: &str,
        max: usize,
        reclaim_after_ms: Millis,
        now: Millis,
    ) -> StoreResult<Vec<EndJob>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let mut inv = SCRIPTS.claim_ends.prepare_invoke();
        inv.key(self.keys(tenant).ends())
            .arg(consumer)
            .arg(max)
            .arg(reclaim_after_ms.max(1));
        let mut reply = items(self.conn.invoke(&inv).await?)?.into_iter();
        let (Some(old), Some(fresh), Some(counts)) = (reply.next(), reply.next(), reply.next())
        else {
            return Err(corrupt("claim_ends: expected three lists"));
        };
        let counts = items(counts)?
            .iter()
            .map(number)
            .collect::<StoreResult<Vec<u64>>>()?;
        let old = items(old)?
            .into_iter()
            .zip(counts)
            .map(|(e, n)| (e, true, n));
        let fresh = items(fresh)?.into_iter().map(|e| (e, false, 1));
        let (mut jobs, mut unreadable) = (Vec::new(), Vec::new());
        for (value, reclaimed, deliveries) in old.chain(fresh) {
            if matches!(value, Value::Nil) {
                continue;
            }
            let (id, fields) = entry(value)?;
            match end_job(id.clone(), &fields, reclaimed, deliveries) {
                Ok(job) => jobs.push(job),
                Err(e) => unreadable.push(Poison {
                    id,
                    why: format!("the queued job cannot be read: {e}"),
                }),
            }
        }
        // The jobs claimed with an unreadable entry are handed out whatever
        // happens to it: should moving it fail, it stays claimed and the
        // claim that takes it over tries again.
        if !unreadable.is_empty() {
            let _ = self.dead_letter(tenant, &unreadable, now).await;
        }
        Ok(jobs)
    }

    async fn ack_ends(&self, tenant: &str, ids: &[String]) -> StoreResult<Vec<String>> {
        let key = self.keys(tenant).ends();
        let mut taken = Vec::new();
        for chunk in ids.chunks(1000) {
            let mut inv = SCRIPTS.ack_ends.prepare_invoke();
            inv.key(&key);
            for id in chunk {
                inv.arg(id);
            }
            for id in items(self.conn.invoke(&inv).await?)? {
                taken.push(text(&id)?.to_string());
            }
        }
        Ok(taken)
    }

    async fn dead_letter(&self, tenant: &str, jobs: &[Poison], now: Millis) -> StoreResult<u64> {
        let keys = self.keys(tenant);
        let mut moved = 0;
        for chunk in jobs.chunks(500) {
            let mut inv = SCRIPTS.dead_letter.prepare_invoke();
            inv.key(keys.ends())
                .key(keys.dead())
                .arg(defaults::DEAD_LETTER_MAX_LEN)
                .arg(now);
            for job in chunk {
                inv.arg(&job.id).arg(&job.why);
            }
            moved += number(&self.conn.invoke(&inv).await?)?;
        }
        Ok(moved)
    }

    async fn dead_letters(&self, tenant: &str, limit: usize) -> StoreResult<DeadLetters> {
        let mut inv = SCRIPTS.dead_letters.prepare_invoke();
        inv.key(self.keys(tenant).dead()).arg(limit);
        let mut reply = items(self.conn.invoke(&inv).await?)?.into_iter();
        let (Some(count), Some(entries)) = (reply.next(), reply.next()) else {
            return Err(corrupt("dead_letters: expected a count and a list"));
        };
        Ok(DeadLetters {
            count: number(&count)?,
            newest: items(entries)?
                .into_iter()
                .map(dead_letter)
                .collect::<StoreResult<_>>()?,
        })
    }

    async fn end_queue(&self, tenant: &str) -> StoreResult<EndQueueStats> {
        let mut inv = SCRIPTS.end_queue.prepare_invoke();
        inv.key(self.keys(tenant).ends());
        match items(self.conn.invoke(&inv).await?)?.as_slice() {
            [waiting, claimed] => Ok(EndQueueStats {
                waiting: number(waiting)?,
                claimed: number(claimed)?,
            }),
            _ => Err(corrupt("end queue stats: expected two numbers")),
        }
    }

    async fn oldest_end_at(&self, tenant: &str) -> StoreResult<Option<Millis>> {
        let reply = self
            .conn
            .query_as(
                Effect::Read,
                redis::cmd("XRANGE")
                    .arg(self.keys(tenant).ends())
                    .arg("-")
                    .arg("+")
                    .arg("COUNT")
                    .arg(1),
            )
            .await?;
        let Some(first) = items(reply)?.into_iter().next() else {
            return Ok(None);
        };
        let (id, fields) = entry(first)?;
        // The job's `at` field: when its session ended (the entry id's
        // time is Redis's clock at the same moment).
        let at = fields
            .chunks(2)
            .find(|kv| text(&kv[0]).is_ok_and(|k| k == "at"))
            .map(|kv| number(&kv[1]))
            .transpose()?;
        match at {
            Some(at) => Ok(Some(at)),
            None => id
                .split_once('-')
                .and_then(|(ms, _)| ms.parse().ok())
                .map(Some)
                .ok_or_else(|| corrupt("end queue: an entry id without time")),
        }
    }

    async fn prune_end_consumers(
        &self,
        tenant: &str,
        keep: &str,
        idle_ms: Millis,
    ) -> StoreResult<u64> {
        let mut inv = SCRIPTS.prune_consumers.prepare_invoke();
        inv.key(self.keys(tenant).ends()).arg(keep).arg(idle_ms);
        number(&self.conn.invoke(&inv).await?)
    }
}
