//! Sessions in Redis (or Redis Cluster), shared by any number of stateless hosts.
//!
//! Every trait call is one round trip: a single command or one atomic Lua
//! script (`EVALSHA`, falling back to loading the script once per server).
//! This module holds [`RedisStore`] and its trait impls but the end
//! queue's, which `ends` holds, and the webhook outbox's, which `outbox`
//! holds (a large push is split into calls of 100 deliveries, each atomic);
//! `keys` holds the key layout, `conn` the
//! connection ([`RedisConfig`], single server or cluster, operation
//! timeout), `scripts` the Lua scripts (`lua/*.lua`) and `reply` the
//! reading of replies.
//!
//! # End jobs
//!
//! Every script that ends sessions (create evicting, remove, user removal,
//! take-expired) appends their end jobs to `ends` in the same atomic step,
//! when the caller asks for it (the tenant has end hooks). Hosts read the
//! stream through the consumer group `ends`, each under its own consumer
//! name: `XAUTOCLAIM` first hands over entries another consumer has held
//! past the reclaim time (a dead or stalled host), then `XREADGROUP >` new
//! ones, in one script. A finished job is `XACK`ed and `XDEL`eted at once,
//! so the stream holds only unfinished jobs. The end id given to hooks is
//! `<public id>.<entry id>`: the same on every delivery of the job, whose
//! count the group keeps (`XPENDING`). A job moved to the dead-letter list
//! is copied to the stream `dead` and acknowledged in one script; an entry
//! that cannot be read is moved there by the claim that finds it (one
//! more round trip, only then).

use async_trait::async_trait;
use redis::Value;
use serde_json::{Map, Value as Json};

use super::{
    AUDIT_ONCE_TTL_MS, AuditPage, AuditStore, CreateLimit, CreateOutcome, Expired, KvQuota,
    KvStore, MergeOutcome, Once, OnceKey, Remembered, SessionStore, StoreError, StoreResult,
    WriteOutcome, oldest_first,
};
use crate::json::{Limit, MAX_DEPTH, MAX_SESSION_BYTES, OverLimit};
use crate::session::{EndReason, Millis, SessionRecord};

mod conn;
mod control;
/// [`super::dump::StoreDump`] for this store.
mod dump;
mod ends;
mod keys;
mod outbox;
mod reply;
mod scripts;

pub use conn::RedisConfig;
use conn::{Connection, Effect};
use keys::{MAX_MS, TenantKeys, audit_fields, session_expiry, session_fields};
use reply::{
    audit_record, corrupt, id_after, items, number, one_record, parse_record, records, remembered,
    text,
};
use scripts::{SCRIPTS, ends_flag, limit_args};

/// The Redis-backed session store.
pub struct RedisStore {
    conn: Connection,
    prefix: String,
    grace_ms: Millis,
    audit_max_len: usize,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("mode", &self.conn.mode())
            .field("prefix", &self.prefix)
            .field("grace_ms", &self.grace_ms)
            .field("audit_max_len", &self.audit_max_len)
            .finish()
    }
}

impl RedisStore {
    /// Connects with the default settings: one URL is a single server, more
    /// than one a cluster.
    pub async fn connect(urls: &[impl AsRef<str>]) -> StoreResult<Self> {
        Self::connect_with(RedisConfig::new(
            urls.iter().map(|u| u.as_ref().to_string()),
        ))
        .await
    }

    pub async fn connect_with(config: RedisConfig) -> StoreResult<Self> {
        let conn = Connection::open(&config).await?;
        Ok(Self {
            conn,
            prefix: config.prefix,
            grace_ms: config.grace.as_millis().min(u128::from(MAX_MS)) as Millis,
            audit_max_len: config.audit_max_len.max(1),
        })
    }

    fn keys(&self, tenant: &str) -> TenantKeys {
        TenantKeys::new(&self.prefix, tenant)
    }

    fn pexpireat(&self, deadline: Millis) -> Millis {
        session_expiry(deadline, self.grace_ms)
    }

    /// Lists (`take` none) or takes a user's live sessions.
    async fn user_sessions(
        &self,
        tenant: &str,
        user: &str,
        now: Millis,
        take: Option<(EndReason, bool)>,
    ) -> StoreResult<Vec<SessionRecord>> {
        let keys = self.keys(tenant);
        let mut inv = SCRIPTS.user.prepare_invoke();
        inv.key(keys.user(user))
            .key(keys.deadlines())
            .arg(keys.base())
            .arg(now);
        match take {
            Some((reason, queue)) => inv.arg("1").arg(reason.as_str()).arg(ends_flag(queue)),
            None => inv.arg("0").arg("").arg("0"),
        };
        let effect = if take.is_some() {
            Effect::Write
        } else {
            Effect::Read
        };
        let reply = items(self.conn.invoke_as(effect, &inv).await?)?;
        let mut out = records(&reply)?;
        oldest_first(&mut out);
        Ok(out)
    }
}

impl RedisStore {
    /// The create script, with or without an idempotency key.
    async fn create_with(
        &self,
        record: &SessionRecord,
        limit: CreateLimit,
        queue_ends: bool,
        key: Option<&OnceKey>,
        now: Millis,
    ) -> StoreResult<Once<CreateOutcome>> {
        let keys = self.keys(&record.tenant);
        let mut inv = SCRIPTS.create.prepare_invoke();
        inv.key(keys.session(&record.token_hash))
            .key(keys.deadlines());
        if let Some(user) = &record.user {
            inv.key(keys.user(user));
        }
        // Anonymous sessions have no per-user limit.
        let (max, policy) = limit_args(limit.user.filter(|_| record.user.is_some()));
        let tenant_max = limit
            .tenant_max
            .map_or(-1, |m| i64::try_from(m).unwrap_or(i64::MAX));
        inv.arg(keys.base()).arg(&record.token_hash);
        for f in session_fields(record)? {
            inv.arg(f);
        }
        inv.arg(self.pexpireat(record.expires_at()))
            .arg(now)
            .arg(max)
            .arg(policy)
            .arg(ends_flag(queue_ends))
            .arg(tenant_max);
        if let Some(key) = key {
            inv.arg(&key.id)
                .arg(&key.request)
                .arg(key.sealed.as_deref().unwrap_or_default())
                .arg(key.ttl_ms.max(1));
        }
        let reply = items(self.conn.invoke(&inv).await?)?;
        match reply.first().map(text).transpose()? {
            Some("ok") => Ok(Once::Ran(CreateOutcome::Created {
                evicted: records(&reply[1..])?,
            })),
            Some("limit") => Ok(Once::Ran(CreateOutcome::LimitReached {
                active: reply
                    .get(1)
                    .map(number)
                    .transpose()?
                    .unwrap_or_default()
                    .try_into()
                    .map_err(corrupt)?,
            })),
            Some("quota") => Ok(Once::Ran(CreateOutcome::QuotaReached {
                stored: reply.get(1).map(number).transpose()?.unwrap_or_default(),
            })),
            Some("known") => Ok(Once::Known(Box::new(
                remembered(&reply[1..])?.ok_or_else(|| corrupt("a known key without a request"))?,
            ))),
            Some("exists") => Err(StoreError::Backend(
                "a session with this token hash exists".into(),
            )),
            other => Err(corrupt(format_args!("create answered {other:?}"))),
        }
    }

    /// The remove script, with or without an idempotency key.
    async fn remove_with(
        &self,
        tenant: &str,
        token_hash: &str,
        reason: EndReason,
        queue_ends: bool,
        key: Option<&OnceKey>,
        now: Millis,
    ) -> StoreResult<Once<Option<SessionRecord>>> {
        let keys = self.keys(tenant);
        let mut inv = SCRIPTS.remove.prepare_invoke();
        inv.key(keys.session(token_hash))
            .key(keys.deadlines())
            .arg(keys.base())
            .arg(token_hash)
            .arg(now)
            .arg(reason.as_str())
            .arg(ends_flag(queue_ends));
        if let Some(key) = key {
            inv.arg(&key.id).arg(&key.request).arg(key.ttl_ms.max(1));
        }
        let reply = items(self.conn.invoke(&inv).await?)?;
        if reply.first().map(text).transpose().ok().flatten() == Some("known") {
            return Ok(Once::Known(Box::new(
                remembered(&reply[1..])?.ok_or_else(|| corrupt("a known key without a request"))?,
            )));
        }
        one_record(&reply).map(Once::Ran)
    }
}

#[async_trait]
impl SessionStore for RedisStore {
    async fn ping(&self) -> StoreResult<()> {
        let reply = self
            .conn
            .query_as(Effect::Read, &redis::cmd("PING"))
            .await?;
        match text(&reply)? {
            "PONG" => Ok(()),
            other => Err(corrupt(format_args!("PING answered {other:?}"))),
        }
    }

    async fn create(
        &self,
        record: &SessionRecord,
        limit: CreateLimit,
        queue_ends: bool,
        now: Millis,
    ) -> StoreResult<CreateOutcome> {
        match self
            .create_with(record, limit, queue_ends, None, now)
            .await?
        {
            Once::Ran(outcome) => Ok(outcome),
            Once::Known(_) => Err(corrupt("create without a key answered as a known key")),
        }
    }

    async fn create_once(
        &self,
        record: &SessionRecord,
        limit: CreateLimit,
        queue_ends: bool,
        key: &OnceKey,
        now: Millis,
    ) -> StoreResult<Once<CreateOutcome>> {
        self.create_with(record, limit, queue_ends, Some(key), now)
            .await
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
        self.remove_with(tenant, token_hash, reason, queue_ends, Some(key), now)
            .await
    }

    async fn remembered(&self, tenant: &str, id: &str) -> StoreResult<Option<Remembered>> {
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(self.keys(tenant).idempotency(id))
            .arg("q")
            .arg("r")
            .arg("t");
        let reply = items(self.conn.query_as(Effect::Read, &cmd).await?)?;
        remembered(&reply)
    }

    async fn get(
        &self,
        tenant: &str,
        token_hash: &str,
        now: Millis,
    ) -> StoreResult<Option<SessionRecord>> {
        let key = self.keys(tenant).session(token_hash);
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(key).arg("r").arg("v").arg("l").arg("d");
        let f = items(self.conn.query_as(Effect::Read, &cmd).await?)?;
        if f.len() != 4 {
            return Err(corrupt("HMGET answered the wrong number of fields"));
        }
        if matches!(f[0], Value::Nil) || number(&f[3])? <= now {
            return Ok(None);
        }
        parse_record(&f[0], &f[1], &f[2]).map(Some)
    }

    async fn update(
        &self,
        token_hash: &str,
        record: &SessionRecord,
        expected_version: u64,
        now: Millis,
    ) -> StoreResult<WriteOutcome> {
        super::check_next_version(record, expected_version)?;
        let keys = self.keys(&record.tenant);
        let mut inv = SCRIPTS.update.prepare_invoke();
        inv.key(keys.session(token_hash))
            .key(keys.session(&record.token_hash))
            .key(keys.deadlines());
        if let Some(user) = &record.user {
            inv.key(keys.user(user));
        }
        inv.arg(keys.base())
            .arg(token_hash)
            .arg(&record.token_hash)
            .arg(expected_version);
        for f in session_fields(record)? {
            inv.arg(f);
        }
        inv.arg(self.pexpireat(record.expires_at())).arg(now);
        let reply = items(self.conn.invoke(&inv).await?)?;
        match reply.first().map(text).transpose()? {
            Some("ok") => Ok(WriteOutcome::Written(record.clone())),
            Some("nf") => Ok(WriteOutcome::NotFound),
            Some("vm") if reply.len() == 4 => Ok(WriteOutcome::VersionMismatch(parse_record(
                &reply[1], &reply[2], &reply[3],
            )?)),
            Some("exists") => Err(StoreError::Backend(
                "a session with the new token hash exists".into(),
            )),
            other => Err(corrupt(format_args!("update answered {other:?}"))),
        }
    }

    async fn merge(
        &self,
        tenant: &str,
        token_hash: &str,
        patch: &Map<String, Json>,
        now: Millis,
    ) -> StoreResult<MergeOutcome> {
        let keys = self.keys(tenant);
        let patch = serde_json::to_string(patch).map_err(|e| StoreError::Backend(e.to_string()))?;
        let mut inv = SCRIPTS.merge.prepare_invoke();
        inv.key(keys.session(token_hash))
            .key(keys.deadlines())
            .arg(keys.base())
            .arg(token_hash)
            .arg(patch)
            .arg(now)
            .arg(self.grace_ms)
            .arg(MAX_DEPTH)
            .arg(MAX_SESSION_BYTES);
        let reply = items(self.conn.invoke(&inv).await?)?;
        let found = || -> StoreResult<usize> {
            let n = reply.get(1).map(number).transpose()?.unwrap_or_default();
            usize::try_from(n).map_err(corrupt)
        };
        match reply.first().map(text).transpose()? {
            Some("ok") if reply.len() == 4 => Ok(MergeOutcome::Merged(Box::new(parse_record(
                &reply[1], &reply[2], &reply[3],
            )?))),
            Some("nf") => Ok(MergeOutcome::NotFound),
            Some("deep") => Ok(MergeOutcome::OverLimit(OverLimit {
                field: "data".into(),
                limit: Limit::Depth,
                found: found()?,
            })),
            Some("big") => Ok(MergeOutcome::OverLimit(OverLimit {
                field: String::new(),
                limit: Limit::SessionBytes,
                found: found()?,
            })),
            other => Err(corrupt(format_args!("merge answered {other:?}"))),
        }
    }

    async fn touch(
        &self,
        tenant: &str,
        token_hash: &str,
        now: Millis,
    ) -> StoreResult<Option<SessionRecord>> {
        let keys = self.keys(tenant);
        let mut inv = SCRIPTS.touch.prepare_invoke();
        inv.key(keys.session(token_hash))
            .key(keys.deadlines())
            .arg(keys.base())
            .arg(token_hash)
            .arg(now)
            .arg(self.grace_ms);
        let reply = items(self.conn.invoke(&inv).await?)?;
        one_record(&reply)
    }

    async fn remove(
        &self,
        tenant: &str,
        token_hash: &str,
        reason: EndReason,
        queue_ends: bool,
        now: Millis,
    ) -> StoreResult<Option<SessionRecord>> {
        match self
            .remove_with(tenant, token_hash, reason, queue_ends, None, now)
            .await?
        {
            Once::Ran(ended) => Ok(ended),
            Once::Known(_) => Err(corrupt("remove without a key answered as a known key")),
        }
    }

    async fn list_user(
        &self,
        tenant: &str,
        user: &str,
        now: Millis,
    ) -> StoreResult<Vec<SessionRecord>> {
        self.user_sessions(tenant, user, now, None).await
    }

    async fn remove_user(
        &self,
        tenant: &str,
        user: &str,
        reason: EndReason,
        queue_ends: bool,
        now: Millis,
    ) -> StoreResult<Vec<SessionRecord>> {
        self.user_sessions(tenant, user, now, Some((reason, queue_ends)))
            .await
    }

    async fn stored_sessions(&self, tenant: &str) -> StoreResult<u64> {
        let reply = self
            .conn
            .query_as(
                Effect::Read,
                redis::cmd("ZCARD").arg(self.keys(tenant).deadlines()),
            )
            .await?;
        number(&reply)
    }

    async fn deadlines_between(
        &self,
        tenant: &str,
        after: Millis,
        until: Millis,
        max: usize,
    ) -> StoreResult<Vec<SessionRecord>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let keys = self.keys(tenant);
        let mut inv = SCRIPTS.deadlines_between.prepare_invoke();
        inv.key(keys.deadlines())
            .arg(keys.base())
            .arg(keys::clamp(after))
            .arg(keys::clamp(until))
            .arg(max);
        records(&items(self.conn.invoke(&inv).await?)?)
    }

    async fn take_expired(
        &self,
        tenant: &str,
        now: Millis,
        max: usize,
        queue_ends: bool,
    ) -> StoreResult<Vec<Expired>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let keys = self.keys(tenant);
        let mut inv = SCRIPTS.take_expired.prepare_invoke();
        inv.key(keys.deadlines())
            .arg(keys.base())
            .arg(now)
            .arg(max)
            .arg(ends_flag(queue_ends));
        let reply = items(self.conn.invoke(&inv).await?)?;
        Ok(records(&reply)?
            .into_iter()
            .map(|record| Expired {
                reason: record.expiry_reason(),
                record,
            })
            .collect())
    }
}

#[async_trait]
impl KvStore for RedisStore {
    async fn kv_get(&self, tenant: &str, plugin: &str, key: &str) -> StoreResult<Option<String>> {
        let reply = self
            .conn
            .query_as(
                Effect::Read,
                redis::cmd("GET").arg(self.keys(tenant).kv(plugin, key)),
            )
            .await?;
        match reply {
            Value::Nil => Ok(None),
            v => text(&v).map(|s| Some(s.to_string())),
        }
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
        // A TTL of 0 expires the entry at once.
        if ttl_seconds == Some(0) {
            self.kv_delete(tenant, plugin, key).await?;
            return Ok(());
        }
        let keys = self.keys(tenant);
        let [sizes, expiry, total] = keys.kv_usage(plugin);
        let mut inv = SCRIPTS.kv_set.prepare_invoke();
        inv.key(keys.kv(plugin, key))
            .key(sizes)
            .key(expiry)
            .key(total)
            .arg(keys.base())
            .arg(key)
            .arg(value)
            .arg(ttl_seconds.map_or(0, |s| u64::from(s) * 1000))
            .arg(quota.max_bytes.min(MAX_MS))
            .arg(quota.max_keys.min(MAX_MS))
            .arg(keys.kv_prefix(plugin));
        let reply = items(self.conn.invoke(&inv).await?)?;
        match reply.first().map(text).transpose()? {
            Some("ok") => Ok(()),
            Some(over @ ("keys" | "bytes")) => {
                let n: u64 = reply
                    .get(1)
                    .map(text)
                    .transpose()?
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                match over {
                    "keys" => quota.check(n, 0),
                    _ => quota.check(0, n),
                }
            }
            _ => Err(corrupt("an unexpected answer to kv_set")),
        }
    }

    async fn kv_delete(&self, tenant: &str, plugin: &str, key: &str) -> StoreResult<bool> {
        let keys = self.keys(tenant);
        let [sizes, expiry, total] = keys.kv_usage(plugin);
        let mut inv = SCRIPTS.kv_delete.prepare_invoke();
        inv.key(keys.kv(plugin, key))
            .key(sizes)
            .key(expiry)
            .key(total)
            .arg(keys.base())
            .arg(key);
        let reply = self.conn.invoke(&inv).await?;
        Ok(number(&reply)? > 0)
    }
}

#[async_trait]
impl AuditStore for RedisStore {
    async fn audit_append(
        &self,
        tenant: &str,
        plugin: &str,
        session: Option<&str>,
        record: &Json,
        once: Option<&str>,
        now: Millis,
    ) -> StoreResult<String> {
        let keys = self.keys(tenant);
        let fields = audit_fields(plugin, session, record, now);
        let reply = match once {
            None => {
                let mut cmd = redis::cmd("XADD");
                cmd.arg(keys.audit())
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(self.audit_max_len)
                    .arg("*")
                    .arg(fields);
                self.conn.query(&cmd).await?
            }
            Some(key) => {
                let mut inv = SCRIPTS.audit_once.prepare_invoke();
                inv.key(keys.audit())
                    .key(keys.once(key))
                    .arg(self.audit_max_len)
                    .arg(AUDIT_ONCE_TTL_MS)
                    .arg(fields);
                self.conn.invoke(&inv).await?
            }
        };
        text(&reply).map(str::to_string)
    }

    async fn audit_page(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<AuditPage> {
        // A page holds at least one record, so `next` always makes progress.
        let limit = limit.max(1);
        let start = match after.map(id_after).transpose()? {
            None => "-".to_string(),
            Some(Some(next)) => next,
            // Nothing can come after the largest id.
            Some(None) => return Ok(AuditPage::default()),
        };
        let mut cmd = redis::cmd("XRANGE");
        cmd.arg(self.keys(tenant).audit())
            .arg(start)
            .arg("+")
            .arg("COUNT")
            .arg(limit + 1);
        let entries = items(self.conn.query_as(Effect::Read, &cmd).await?)?;
        let more = entries.len() > limit;
        let mut records = Vec::with_capacity(limit.min(entries.len()));
        for entry in entries.into_iter().take(limit) {
            records.push(audit_record(tenant, entry)?);
        }
        let next = if more {
            records.last().map(|r| r.id.clone())
        } else {
            None
        };
        Ok(AuditPage { records, next })
    }
}
