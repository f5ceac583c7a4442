//! One tenant's state in the embedded store, kept behind the tenant's
//! mutex: its sessions and their user and deadline indexes, plugin kv
//! entries, the audit stream with its idempotency keys, and the end queue
//! with its dead letters, the webhook outbox, with the stream ids ([`StreamId`]) its audit
//! records and end jobs carry.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Mutex, MutexGuard};

use crate::session::{AuditRecord, EndReason, Millis, SessionRecord};
use crate::store::{DeadLetter, Delivery, EndJob, OnceKey, Remembered, StoreError, StoreResult};

pub(super) fn lock(t: &Mutex<Tenant>) -> MutexGuard<'_, Tenant> {
    t.lock().unwrap_or_else(|e| e.into_inner())
}

/// A stream id: milliseconds and a sequence number, ordered like Redis's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub(super) struct StreamId(u64, u64);

impl StreamId {
    pub(super) fn parse(s: &str) -> StoreResult<Self> {
        let bad = || StoreError::Backend(format!("invalid audit id {s:?}"));
        match s.split_once('-') {
            Some((ms, seq)) => Ok(StreamId(
                ms.parse().map_err(|_| bad())?,
                seq.parse().map_err(|_| bad())?,
            )),
            None => Ok(StreamId(s.parse().map_err(|_| bad())?, 0)),
        }
    }
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.0, self.1)
    }
}

/// How much one plugin holds in kv.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct KvUsage {
    pub(super) keys: u64,
    pub(super) bytes: u64,
}

pub(super) struct KvEntry {
    pub(super) value: String,
    pub(super) expires_at: Option<Millis>,
}

#[derive(Default)]
pub(super) struct Tenant {
    pub(super) sessions: HashMap<String, SessionRecord>,
    /// Token hashes by user.
    users: HashMap<String, HashSet<String>>,
    /// `(expires_at, token_hash)` of every stored session.
    pub(super) deadlines: BTreeSet<(Millis, String)>,
    pub(super) kv: HashMap<(String, String), KvEntry>,
    /// `(expires_at, plugin, key)` of every expiring kv entry.
    pub(super) kv_expiry: BTreeSet<(Millis, String, String)>,
    /// Entries and bytes (keys plus values) held in `kv`, by plugin.
    kv_usage: HashMap<String, KvUsage>,
    pub(super) audit: VecDeque<(StreamId, AuditRecord)>,
    pub(super) last_audit_id: StreamId,
    /// Idempotency keys of audit appends: the id written and when the key
    /// lapses.
    pub(super) audit_once: HashMap<String, String>,
    /// The same keys with when they lapse, oldest first (the TTL is fixed).
    pub(super) audit_once_order: VecDeque<(Millis, String)>,
    /// The end queue, by job id.
    pub(super) ends: BTreeMap<StreamId, QueuedEnd>,
    pub(super) last_end_id: StreamId,
    /// End jobs taken out of the queue unfinished, oldest first.
    pub(super) dead: VecDeque<DeadLetter>,
    /// Idempotency keys of creates and removes: when each lapses (wall
    /// clock) and what it recorded.
    once: HashMap<String, (Millis, Remembered)>,
    /// The same keys by when they lapse.
    once_expiry: BTreeSet<(Millis, String)>,
    /// The webhook outbox, by delivery id.
    pub(super) outbox: HashMap<String, Delivery>,
    /// `(due_at, id)` of every delivery in `outbox`.
    pub(super) outbox_due: BTreeSet<(Millis, String)>,
}

/// An end job and who holds it.
pub(super) struct QueuedEnd {
    pub(super) job: EndJob,
    /// The consumer that claimed it and when.
    pub(super) claimed: Option<(String, Millis)>,
}

/// The next stream id after `last` at time `now`, as Redis assigns them.
pub(super) fn next_id(last: StreamId, now: Millis) -> StreamId {
    if now > last.0 {
        StreamId(now, 0)
    } else {
        StreamId(last.0, last.1 + 1)
    }
}

impl Tenant {
    pub(super) fn live(&self, token_hash: &str, now: Millis) -> Option<&SessionRecord> {
        self.sessions.get(token_hash).filter(|r| !r.is_expired(now))
    }

    pub(super) fn insert(&mut self, record: SessionRecord) {
        self.deadlines
            .insert((record.expires_at(), record.token_hash.clone()));
        if let Some(user) = &record.user {
            self.users
                .entry(user.clone())
                .or_default()
                .insert(record.token_hash.clone());
        }
        self.sessions.insert(record.token_hash.clone(), record);
    }

    /// Takes a stored session (live or not) out of every index.
    pub(super) fn take(&mut self, token_hash: &str) -> Option<SessionRecord> {
        let record = self.sessions.remove(token_hash)?;
        self.deadlines
            .remove(&(record.expires_at(), token_hash.to_string()));
        if let Some(user) = &record.user
            && let Some(set) = self.users.get_mut(user)
        {
            set.remove(token_hash);
            if set.is_empty() {
                self.users.remove(user);
            }
        }
        Some(record)
    }

    /// The live sessions of a user, least recently used first.
    pub(super) fn live_of_user(&self, user: &str, now: Millis) -> Vec<&SessionRecord> {
        let mut live: Vec<&SessionRecord> = self
            .users
            .get(user)
            .into_iter()
            .flatten()
            .filter_map(|h| self.live(h, now))
            .collect();
        live.sort_by(|a, b| (a.last_seen_at, &a.token_hash).cmp(&(b.last_seen_at, &b.token_hash)));
        live
    }

    pub(super) fn purge_kv(&mut self, now: Millis) {
        while let Some(first) = self.kv_expiry.first() {
            if first.0 > now {
                break;
            }
            let (at, plugin, key) = self.kv_expiry.pop_first().expect("non-empty");
            if self
                .kv
                .get(&(plugin.clone(), key.clone()))
                .and_then(|e| e.expires_at)
                == Some(at)
            {
                self.kv_remove(&plugin, &key);
            }
        }
    }

    /// What `plugin` holds in `kv`: entries, and bytes of keys plus values.
    pub(super) fn kv_usage(&self, plugin: &str) -> KvUsage {
        self.kv_usage.get(plugin).copied().unwrap_or_default()
    }

    /// Stores an entry (none may be under its key), with its expiry.
    pub(super) fn kv_insert(&mut self, plugin: &str, key: &str, entry: KvEntry) {
        if let Some(at) = entry.expires_at {
            self.kv_expiry
                .insert((at, plugin.to_string(), key.to_string()));
        }
        let usage = self.kv_usage.entry(plugin.to_string()).or_default();
        usage.keys += 1;
        usage.bytes += (key.len() + entry.value.len()) as u64;
        self.kv.insert((plugin.to_string(), key.to_string()), entry);
    }

    /// Queues the end job of a session that was just taken out.
    fn queue_end(&mut self, record: &SessionRecord, reason: EndReason, now: Millis) {
        let id = next_id(self.last_end_id, now);
        self.last_end_id = id;
        let job = EndJob {
            id: id.to_string(),
            end_id: format!("{}.{id}", record.public_id),
            record: record.clone(),
            reason,
            ended_at: now,
            reclaimed: false,
            deliveries: 0,
            trace: crate::trace::current(),
        };
        self.ends.insert(id, QueuedEnd { job, claimed: None });
    }

    /// Takes a live session out and queues its end job when asked.
    pub(super) fn end(
        &mut self,
        token_hash: &str,
        reason: EndReason,
        queue: bool,
        now: Millis,
    ) -> Option<SessionRecord> {
        let record = self.take(token_hash)?;
        if queue {
            self.queue_end(&record, reason, now);
        }
        Some(record)
    }

    /// What the idempotency key `id` recorded, unless it lapsed by `clock`.
    pub(super) fn remembered(&mut self, id: &str, clock: Millis) -> Option<Remembered> {
        while let Some((at, _)) = self.once_expiry.first() {
            if *at > clock {
                break;
            }
            let (_, lapsed) = self.once_expiry.pop_first().expect("non-empty");
            self.once.remove(&lapsed);
        }
        self.once.get(id).map(|(_, r)| r.clone())
    }

    /// Records the idempotency key `key` of a write, with the session it
    /// created (if any), from the wall clock `clock`.
    pub(super) fn remember(
        &mut self,
        key: &OnceKey,
        created: Option<&SessionRecord>,
        clock: Millis,
    ) {
        let until = clock.saturating_add(key.ttl_ms);
        let remembered = Remembered {
            request: key.request.clone(),
            created: created.map(|r| (r.clone(), key.sealed.clone().unwrap_or_default())),
        };
        if let Some((old, _)) = self.once.insert(key.id.clone(), (until, remembered)) {
            self.once_expiry.remove(&(old, key.id.clone()));
        }
        self.once_expiry.insert((until, key.id.clone()));
    }

    pub(super) fn kv_remove(&mut self, plugin: &str, key: &str) -> Option<KvEntry> {
        let entry = self.kv.remove(&(plugin.to_string(), key.to_string()))?;
        if let Some(at) = entry.expires_at {
            self.kv_expiry
                .remove(&(at, plugin.to_string(), key.to_string()));
        }
        if let Some(usage) = self.kv_usage.get_mut(plugin) {
            usage.keys -= 1;
            usage.bytes -= (key.len() + entry.value.len()) as u64;
            if usage.keys == 0 {
                self.kv_usage.remove(plugin);
            }
        }
        Some(entry)
    }
}
