//! The Redis backend's webhook outbox: [`Outbox`] over each tenant's
//! delivery hashes `wh:<id>` and the sorted sets `whq` (by when due) and
//! `whc` (by when queued), kept together by the `outbox_*` scripts (see
//! `keys` for the layout).

use async_trait::async_trait;
use redis::Value;

use super::RedisStore;
use super::conn::Effect;
use super::keys::clamp;
use super::reply::{corrupt, items, number, text};
use super::scripts::{SCRIPTS, flag};
use crate::session::Millis;
use crate::store::{Delivery, Outbox, OutboxStats, StoreResult};

/// How many deliveries one push script queues at most (bodies can be large).
const PUSH_CHUNK: usize = 100;

/// How many ids one remove script takes at most.
const REMOVE_CHUNK: usize = 1000;

#[async_trait]
impl Outbox for RedisStore {
    async fn outbox_push(&self, tenant: &str, deliveries: &[Delivery]) -> StoreResult<u64> {
        let keys = self.keys(tenant);
        let mut queued = 0;
        for chunk in deliveries.chunks(PUSH_CHUNK) {
            let mut inv = SCRIPTS.outbox_push.prepare_invoke();
            inv.key(keys.outbox_due())
                .key(keys.outbox_created())
                .arg(keys.base());
            for d in chunk {
                inv.arg(&d.id)
                    .arg(&d.message_id)
                    .arg(&d.url)
                    .arg(&d.body)
                    .arg(clamp(d.created_at))
                    .arg(clamp(d.due_at))
                    .arg(d.attempts)
                    .arg(flag(d.last_error.is_some()))
                    .arg(d.last_error.as_deref().unwrap_or_default());
            }
            queued += number(&self.conn.invoke(&inv).await?)?;
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
        if max == 0 {
            return Ok(Vec::new());
        }
        let (now, lease_ms) = (clamp(now), clamp(lease_ms));
        // What the script sets, computed the same way (both clamped).
        let due_at = clamp(now.saturating_add(lease_ms));
        let keys = self.keys(tenant);
        let mut inv = SCRIPTS.outbox_lease.prepare_invoke();
        inv.key(keys.outbox_due())
            .key(keys.outbox_created())
            .arg(keys.base())
            .arg(now)
            .arg(max)
            .arg(lease_ms);
        let reply = items(self.conn.invoke(&inv).await?)?;
        if !reply.len().is_multiple_of(7) {
            return Err(corrupt("outbox_lease: list length is not a multiple of 7"));
        }
        let (mut out, mut unreadable) = (Vec::new(), Vec::new());
        for f in reply.chunks(7) {
            match leased(f, due_at) {
                Ok(d) => out.push(d),
                // A delivery no sender could use must not hold up the
                // others: it goes (an id that cannot be read fails the lease).
                Err(e) => {
                    let id = text(&f[0])?.to_string();
                    tracing::warn!(tenant, id = %id,
                        "dropping an outbox delivery that cannot be read: {e}");
                    unreadable.push(id);
                }
            }
        }
        if !unreadable.is_empty() {
            self.outbox_remove(tenant, &unreadable).await?;
        }
        Ok(out)
    }

    async fn outbox_remove(&self, tenant: &str, ids: &[String]) -> StoreResult<u64> {
        let keys = self.keys(tenant);
        let mut removed = 0;
        for chunk in ids.chunks(REMOVE_CHUNK) {
            let mut inv = SCRIPTS.outbox_remove.prepare_invoke();
            inv.key(keys.outbox_due())
                .key(keys.outbox_created())
                .arg(keys.base());
            for id in chunk {
                inv.arg(id);
            }
            removed += number(&self.conn.invoke(&inv).await?)?;
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
        let keys = self.keys(tenant);
        let mut inv = SCRIPTS.outbox_retry.prepare_invoke();
        inv.key(keys.delivery(id))
            .key(keys.outbox_due())
            .key(keys.outbox_created())
            .arg(id)
            .arg(clamp(due_at))
            .arg(error);
        match number(&self.conn.invoke(&inv).await?)? {
            0 => Ok(false),
            1 => Ok(true),
            n => Err(corrupt(format_args!("outbox_retry answered {n}"))),
        }
    }

    async fn outbox_stats(&self, tenant: &str, now: Millis) -> StoreResult<OutboxStats> {
        let keys = self.keys(tenant);
        let mut inv = SCRIPTS.outbox_stats.prepare_invoke();
        inv.key(keys.outbox_due())
            .key(keys.outbox_created())
            .arg(clamp(now));
        let reply = items(self.conn.invoke_as(Effect::Read, &inv).await?)?;
        let [held, due, oldest] = reply.as_slice() else {
            return Err(corrupt("outbox_stats: expected three values"));
        };
        Ok(OutboxStats {
            held: number(held)?,
            due: number(due)?,
            oldest_created_at: match oldest {
                Value::Nil => None,
                v => Some(number(v)?),
            },
        })
    }

    async fn outbox_page(
        &self,
        tenant: &str,
        cursor: Option<&str>,
        max: usize,
    ) -> StoreResult<(Vec<Delivery>, Option<String>)> {
        let keys = self.keys(tenant);
        let mut inv = SCRIPTS.outbox_page.prepare_invoke();
        inv.key(keys.outbox_due())
            .arg(keys.base())
            .arg(cursor.unwrap_or("0"))
            .arg(max.max(1));
        let reply = items(self.conn.invoke(&inv).await?)?;
        let Some((next, rest)) = reply.split_first() else {
            return Err(corrupt("outbox_page: empty reply"));
        };
        if !rest.len().is_multiple_of(8) {
            return Err(corrupt(
                "outbox_page: list length is not 1 + a multiple of 8",
            ));
        }
        let mut page = Vec::with_capacity(rest.len() / 8);
        for f in rest.chunks(8) {
            let [
                id,
                message_id,
                url,
                body,
                created_at,
                due_at,
                attempts,
                error,
            ] = f
            else {
                unreachable!("chunks of 8");
            };
            let fields = [
                id.clone(),
                message_id.clone(),
                url.clone(),
                body.clone(),
                created_at.clone(),
                attempts.clone(),
                error.clone(),
            ];
            page.push(leased(&fields, number(due_at)?)?);
        }
        let next = text(next)?;
        Ok((page, (next != "0").then(|| next.to_string())))
    }
}

/// A delivery from the lease script's `id, m, u, b, c, n, e` (`e` nil when
/// it has not failed yet), now due at `due_at`.
fn leased(f: &[Value], due_at: Millis) -> StoreResult<Delivery> {
    let [id, message_id, url, body, created_at, attempts, error] = f else {
        return Err(corrupt("outbox_lease: expected seven fields per delivery"));
    };
    let id = text(id)?.to_string();
    let field = |v: &Value, name: &str| -> StoreResult<String> {
        match v {
            Value::Nil => Err(corrupt(format_args!("outbox delivery {id} lacks {name}"))),
            v => text(v).map(str::to_string),
        }
    };
    let created_at = match created_at {
        Value::Nil => return Err(corrupt(format_args!("outbox delivery {id} lacks c"))),
        v => number(v)?,
    };
    Ok(Delivery {
        message_id: field(message_id, "m")?,
        url: field(url, "u")?,
        body: field(body, "b")?,
        created_at,
        due_at,
        // Saturating, as the other backends count.
        attempts: u32::try_from(number(attempts)?).unwrap_or(u32::MAX),
        last_error: match error {
            Value::Nil => None,
            v => Some(text(v)?.to_string()),
        },
        id,
    })
}
