//! [`StoreDump`](crate::store::dump::StoreDump) for the memory store: each
//! tenant is read whole, in one page per kind, and every import item is
//! written under its tenant's lock.

use async_trait::async_trait;

use super::MemoryStore;
use super::tenant::{KvEntry, QueuedEnd, StreamId, Tenant, lock};
use crate::session::{Millis, SessionRecord, now_ms};
use crate::store::dump::{
    AuditItem, AuditOnceItem, DumpPage, EndJobItem, Imported, Item, Kind, KvItem, OutboxItem,
    SessionItem, StoreDump,
};
use crate::store::{EndJob, StoreResult};

impl Tenant {
    fn holds_anything(&self, now: Millis) -> bool {
        !self.sessions.is_empty()
            || !self.ends.is_empty()
            || !self.audit.is_empty()
            || !self.audit_once.is_empty()
            || !self.outbox.is_empty()
            || self.last_audit_id != StreamId::default()
            || self
                .kv
                .values()
                .any(|e| e.expires_at.is_none_or(|at| at > now))
    }

    fn page(&self, tenant: &str, kind: Kind, now: Millis) -> Vec<Item> {
        match kind {
            Kind::Session => {
                let mut records: Vec<&SessionRecord> = self.sessions.values().collect();
                records.sort_by(|a, b| a.token_hash.cmp(&b.token_hash));
                records
                    .into_iter()
                    .map(|r| Item::Session(SessionItem::from(r)))
                    .collect()
            }
            Kind::EndJob => self
                .ends
                .values()
                .map(|q| Item::EndJob(EndJobItem::from(&q.job)))
                .collect(),
            Kind::Kv => {
                let mut entries: Vec<(&(String, String), &KvEntry)> = self
                    .kv
                    .iter()
                    .filter(|(_, e)| e.expires_at.is_none_or(|at| at > now))
                    .collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                entries
                    .into_iter()
                    .map(|((plugin, key), e)| {
                        Item::Kv(KvItem {
                            tenant: tenant.to_string(),
                            plugin: plugin.clone(),
                            key: key.clone(),
                            value: e.value.clone(),
                            expires_at: e.expires_at,
                        })
                    })
                    .collect()
            }
            Kind::Audit => self
                .audit
                .iter()
                .map(|(_, r)| Item::Audit(AuditItem::from(r)))
                .collect(),
            Kind::AuditOnce => {
                let mut keys: Vec<AuditOnceItem> = self
                    .audit_once_order
                    .iter()
                    .filter(|(until, _)| *until > now)
                    .filter_map(|(until, key)| {
                        Some(AuditOnceItem {
                            tenant: tenant.to_string(),
                            key: key.clone(),
                            id: self.audit_once.get(key)?.clone(),
                            expires_at: *until,
                        })
                    })
                    .collect();
                keys.sort_by(|a, b| a.key.cmp(&b.key));
                keys.into_iter().map(Item::AuditOnce).collect()
            }
            Kind::Outbox => {
                let mut held: Vec<&crate::store::Delivery> = self.outbox.values().collect();
                held.sort_by(|a, b| a.id.cmp(&b.id));
                held.into_iter()
                    .map(|d| Item::Outbox(OutboxItem::of(tenant, d)))
                    .collect()
            }
        }
    }

    fn import(&mut self, item: &Item, audit_max_len: usize, now: Millis) -> StoreResult<Imported> {
        if item.lapsed(now) {
            return Ok(Imported::Lapsed);
        }
        Ok(match item {
            Item::Session(i) => {
                if self.sessions.contains_key(&i.record.token_hash) {
                    Imported::Exists
                } else {
                    self.insert(i.record.clone());
                    Imported::Written
                }
            }
            Item::EndJob(i) => self.import_end(i)?,
            Item::Kv(i) => {
                let id = (i.plugin.clone(), i.key.clone());
                if self
                    .kv
                    .get(&id)
                    .is_some_and(|e| e.expires_at.is_none_or(|at| at > now))
                {
                    return Ok(Imported::Exists);
                }
                self.kv_remove(&i.plugin, &i.key);
                self.kv_insert(
                    &i.plugin,
                    &i.key,
                    KvEntry {
                        value: i.value.clone(),
                        expires_at: i.expires_at,
                    },
                );
                Imported::Written
            }
            Item::Audit(i) => {
                let id = StreamId::parse(&i.id)?;
                let at = self.audit.partition_point(|(a, _)| *a < id);
                if self.audit.get(at).is_some_and(|(a, _)| *a == id) {
                    return Ok(Imported::Exists);
                }
                if id <= self.last_audit_id {
                    return Ok(Imported::OutOfOrder);
                }
                self.last_audit_id = id;
                self.audit.push_back((id, i.to_record()));
                while self.audit.len() > audit_max_len {
                    self.audit.pop_front();
                }
                Imported::Written
            }
            Item::AuditOnce(i) => {
                // Lapsed keys go first, as an append with a key does it.
                let clock = now_ms();
                while self
                    .audit_once_order
                    .front()
                    .is_some_and(|(until, _)| *until <= clock)
                {
                    let (_, lapsed) = self.audit_once_order.pop_front().expect("non-empty");
                    self.audit_once.remove(&lapsed);
                }
                if self.audit_once.contains_key(&i.key) {
                    return Ok(Imported::Exists);
                }
                self.audit_once.insert(i.key.clone(), i.id.clone());
                // The order stays sorted by expiry, which the purge relies on.
                let at = self
                    .audit_once_order
                    .partition_point(|(until, _)| *until <= i.expires_at);
                self.audit_once_order
                    .insert(at, (i.expires_at, i.key.clone()));
                Imported::Written
            }
            Item::Outbox(i) => {
                if self.outbox.contains_key(&i.id) {
                    return Ok(Imported::Exists);
                }
                self.outbox_due.insert((i.due_at, i.id.clone()));
                self.outbox.insert(i.id.clone(), i.delivery());
                Imported::Written
            }
        })
    }

    fn import_end(&mut self, i: &EndJobItem) -> StoreResult<Imported> {
        let id = StreamId::parse(&i.id)?;
        if self.ends.contains_key(&id) {
            return Ok(Imported::Exists);
        }
        if !self.advance_end_ids(id) {
            return Ok(Imported::OutOfOrder);
        }
        let job = EndJob {
            id: i.id.clone(),
            end_id: i.end_id.clone(),
            record: i.record.clone(),
            reason: i.reason,
            ended_at: i.ended_at,
            reclaimed: false,
            deliveries: 0,
            // Not in the dump: a moved job's end_job span starts a trace.
            trace: None,
        };
        self.ends.insert(id, QueuedEnd { job, claimed: None });
        Ok(Imported::Written)
    }

    /// Moves the tenant's end-id counter up to `id`, so that every job it
    /// queues from now on gets a larger id; false when the counter is at or
    /// past `id` already (a stream only grows at its end, as on Redis).
    fn advance_end_ids(&mut self, id: StreamId) -> bool {
        if id <= self.last_end_id {
            return false;
        }
        self.last_end_id = id;
        true
    }
}

#[async_trait]
impl StoreDump for MemoryStore {
    async fn dump_tenants(&self) -> StoreResult<Vec<String>> {
        let tenants: Vec<(String, _)> = self
            .tenants
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(name, t)| (name.clone(), t.clone()))
            .collect();
        let now = now_ms();
        let mut out: Vec<String> = tenants
            .into_iter()
            .filter(|(_, t)| lock(t).holds_anything(now))
            .map(|(name, _)| name)
            .collect();
        out.sort();
        Ok(out)
    }

    async fn dump_page(
        &self,
        tenant: &str,
        kind: Kind,
        cursor: Option<&str>,
    ) -> StoreResult<DumpPage> {
        // The first page holds everything; there is no second.
        if cursor.is_some() {
            return Ok(DumpPage::default());
        }
        let t = self.tenant(tenant);
        let items = lock(&t).page(tenant, kind, now_ms());
        Ok(DumpPage { items, next: None })
    }

    async fn import_items(&self, items: &[Item], now: Millis) -> StoreResult<Vec<Imported>> {
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let t = self.tenant(item.tenant());
            out.push(lock(&t).import(item, self.audit_max_len, now)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{ClientInfo, EndReason};
    use crate::store::{CreateLimit, SessionStore};

    fn record(token_hash: &str, public_id: &str) -> SessionRecord {
        SessionRecord {
            token_hash: token_hash.into(),
            public_id: public_id.into(),
            tenant: "t".into(),
            user: None,
            roles: Vec::new(),
            created_at: 0,
            last_seen_at: 0,
            absolute_expires_at: Millis::MAX,
            idle_timeout_ms: Millis::MAX,
            version: 1,
            client: ClientInfo::default(),
            data: Default::default(),
            plugin_state: Default::default(),
            idle_warned_at: None,
        }
    }

    fn job(public_id: &str, id: &str) -> Item {
        let record = record(&format!("h-{public_id}"), public_id);
        Item::EndJob(EndJobItem {
            tenant: "t".into(),
            id: id.into(),
            end_id: crate::store::dump::end_id(public_id, id),
            reason: EndReason::Expired,
            ended_at: 5,
            record,
        })
    }

    #[tokio::test]
    async fn imported_end_jobs_keep_their_ids_and_later_ends_come_after() {
        let store = MemoryStore::new();
        let items = [job("a", "100-0"), job("b", "100-3"), job("c", "100-2")];
        let outcomes = store.import_items(&items, 1).await.unwrap();
        assert_eq!(
            outcomes,
            [Imported::Written, Imported::Written, Imported::OutOfOrder]
        );
        assert_eq!(
            store.import_items(&items[..1], 1).await.unwrap(),
            [Imported::Exists]
        );
        // A session ended in the same millisecond gets a later id.
        let record = record("live", "d");
        store
            .create(&record, CreateLimit::NONE, false, 100)
            .await
            .unwrap();
        store
            .remove("t", "live", EndReason::Logout, true, 100)
            .await
            .unwrap();
        let t = store.tenant("t");
        let ids: Vec<StreamId> = lock(&t).ends.keys().copied().collect();
        assert_eq!(ids.len(), 3);
        assert_eq!(ids[1], StreamId::parse("100-3").unwrap());
        assert!(ids[2] > ids[1]);
    }
}
