//! The key layout of the Redis backend, and the fields of what it stores
//! (session hashes, audit entries, webhook deliveries).
//!
//! Every key of a tenant starts with `<prefix>:{<tenant>}:`. The `{…}` hash
//! tag puts all of a tenant's keys in one cluster slot, so a script may touch
//! any of them. (`%`, `{`, `}` and `:` in a tenant name are percent-escaped and
//! the empty name is written `%`, so the tag is never empty and never cut
//! short.)
//!
//! | key | type | content | expiry |
//! |---|---|---|---|
//! | `s:<token_hash>` | hash | `r` record JSON, `v` version, `l` last_seen_at, `a` absolute deadline, `i` idle timeout, `d` deadline = min(a, l + i), `u` user (`""` when anonymous) | `PEXPIREAT d + grace` |
//! | `u:<user>` | sorted set | token hashes, score = last_seen_at (lowest = least recently used) | `PEXPIREAT` the latest member's `d + grace` |
//! | `deadlines` | sorted set | token hashes, score = `d` | none: members leave when taken |
//! | `kv:<plugin>:<key>` | string | a plugin's value (`:` and `%` in the plugin name escaped) | `PX` ttl when given |
//! | `kvs:<plugin>` | hash | the plugin's quota usage: each key's bytes (key plus value) | none |
//! | `kvx:<plugin>` | sorted set | the plugin's expiring keys, score = when they lapse (Redis `TIME`) | none: members leave when the next write purges them |
//! | `kvb:<plugin>` | string | the plugin's total bytes (the sum of `kvs`) | none |
//! | `audit` | stream | fields `at`, `plugin`, `session` (optional), `record` (JSON) | `XADD MAXLEN ~ audit_max_len` |
//! | `once:<key>` | string | the audit id written by the first append with idempotency key `<key>` (end hooks: `<end id>:<plugin>:<n>`) | `PX` one day |
//! | `idem:<id>` | hash | an idempotency key of a create or remove (`<id>` = hex SHA-256 of tenant and client key): `q` request digest; for a create also `r` the record JSON as created and `t` its token sealed with the client's key | `PEXPIRE` the key's ttl |
//! | `ends` | stream, consumer group `ends` | end jobs: fields `r`, `v`, `l` (the session as it ended), `why` (reason), `at` (ended at) | entries deleted when acknowledged |
//! | `dead` | stream | end jobs taken out unfinished: `job` (its id in `ends`), `why`, `at`, `deliveries`, and its `r`, `v`, `l`, `reason`, `ended_at` | `XADD MAXLEN ~ 10000` |
//! | `wh:<id>` | hash | a webhook delivery of the outbox: `m` message id, `u` url, `b` body, `c` created_at, `n` attempts, `e` last error (absent until a failure) | none: deleted when removed |
//! | `whq` | sorted set | the outbox's delivery ids, score = when due (a lease moves it to the lease's end) | none: members leave with their delivery |
//! | `whc` | sorted set | the outbox's delivery ids, score = `c` (its lowest is the oldest delivery held) | none: members leave with their delivery |
//!
//! The control plane's keys start with `<prefix>:{%control}:` (a tag no
//! escaped tenant name can produce): `rev` (string, the control revision),
//! `records` (hash, name → record JSON), `revs` (hash, name → the record's
//! revision) and `wasm:<tenant>:<sha256>` (string, an uploaded component).
//! A change is published on the channel `<prefix>:control`.
//!
//! `v` and `l` are authoritative over the copies inside `r`: `touch` changes
//! only those fields (and `d`), never rewriting the JSON in Lua. `merge`
//! does rewrite `r` in Lua, as text (its data's members, and the copies of
//! `v` and `l`), never decoding it: see `lua/merge.lua`.
//!
//! A session past `d` is treated as absent by every read but its key lives on
//! for the grace period, so the sweeper's `take_expired` can still take it and
//! run its end hooks exactly once.

use serde_json::Value as Json;

use crate::session::{Millis, SessionRecord};
use crate::store::{StoreError, StoreResult};

/// The largest time this backend stores (2^53 - 1 ms, about 285,000 years):
/// Lua numbers are doubles, so times are clamped to stay exact.
pub(super) const MAX_MS: Millis = (1 << 53) - 1;

pub(super) fn clamp(ms: Millis) -> Millis {
    ms.min(MAX_MS)
}

/// When a session key with this deadline expires: `d + grace`.
pub(super) fn session_expiry(deadline: Millis, grace_ms: Millis) -> Millis {
    clamp(clamp(deadline).saturating_add(grace_ms))
}

/// Escapes `%`, `{`, `}` and `:` so a name can sit inside a hash tag or
/// between `:` separators without ambiguity.
fn escape(name: &str) -> String {
    if name.is_empty() {
        return "%".into();
    }
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        match c {
            '%' => out.push_str("%25"),
            '{' => out.push_str("%7B"),
            '}' => out.push_str("%7D"),
            ':' => out.push_str("%3A"),
            c => out.push(c),
        }
    }
    out
}

/// The keys of one tenant, all under its key base.
pub(super) struct TenantKeys {
    base: String,
}

impl TenantKeys {
    pub(super) fn new(prefix: &str, tenant: &str) -> Self {
        Self {
            base: format!("{prefix}:{{{}}}:", escape(tenant)),
        }
    }

    /// `<prefix>:{<tenant>}:`, the start of every key of the tenant (the
    /// scripts' `ARGV[1]`).
    pub(super) fn base(&self) -> &str {
        &self.base
    }

    pub(super) fn session(&self, token_hash: &str) -> String {
        format!("{}s:{token_hash}", self.base)
    }

    pub(super) fn user(&self, user: &str) -> String {
        format!("{}u:{user}", self.base)
    }

    pub(super) fn deadlines(&self) -> String {
        format!("{}deadlines", self.base)
    }

    pub(super) fn kv(&self, plugin: &str, key: &str) -> String {
        format!("{}kv:{}:{key}", self.base, escape(plugin))
    }

    /// The prefix of a plugin's value keys ([`TenantKeys::kv`] without the key).
    pub(super) fn kv_prefix(&self, plugin: &str) -> String {
        format!("{}kv:{}:", self.base, escape(plugin))
    }

    /// A plugin's quota keys: entry sizes, expiries, total bytes.
    pub(super) fn kv_usage(&self, plugin: &str) -> [String; 3] {
        let p = escape(plugin);
        [
            format!("{}kvs:{p}", self.base),
            format!("{}kvx:{p}", self.base),
            format!("{}kvb:{p}", self.base),
        ]
    }

    pub(super) fn audit(&self) -> String {
        format!("{}audit", self.base)
    }

    pub(super) fn once(&self, key: &str) -> String {
        format!("{}once:{key}", self.base)
    }

    pub(super) fn idempotency(&self, id: &str) -> String {
        format!("{}idem:{id}", self.base)
    }

    pub(super) fn ends(&self) -> String {
        format!("{}ends", self.base)
    }

    pub(super) fn dead(&self) -> String {
        format!("{}dead", self.base)
    }

    /// The hash of the outbox delivery `id`.
    pub(super) fn delivery(&self, id: &str) -> String {
        format!("{}wh:{id}", self.base)
    }

    /// The outbox's deliveries by when they are due.
    pub(super) fn outbox_due(&self) -> String {
        format!("{}whq", self.base)
    }

    /// The outbox's deliveries by when they were queued.
    pub(super) fn outbox_created(&self) -> String {
        format!("{}whc", self.base)
    }
}

/// The keys of the control plane, in one slot.
pub(super) struct ControlKeys {
    base: String,
    channel: String,
}

impl ControlKeys {
    pub(super) fn new(prefix: &str) -> Self {
        Self {
            base: format!("{prefix}:{{%control}}:"),
            channel: format!("{prefix}:control"),
        }
    }

    pub(super) fn revision(&self) -> String {
        format!("{}rev", self.base)
    }

    pub(super) fn records(&self) -> String {
        format!("{}records", self.base)
    }

    pub(super) fn revisions(&self) -> String {
        format!("{}revs", self.base)
    }

    pub(super) fn component(&self, tenant: &str, sha256: &str) -> String {
        format!("{}wasm:{}:{sha256}", self.base, escape(tenant))
    }

    /// Where every change is published.
    pub(super) fn channel(&self) -> &str {
        &self.channel
    }
}

/// The fields every session write stores, in script argument order:
/// r, v, l, a, i, d, u. A record deeper than the store reads back is
/// refused.
pub(super) fn session_fields(record: &SessionRecord) -> StoreResult<[String; 7]> {
    crate::json::check_stored(record).map_err(StoreError::Backend)?;
    Ok([
        serde_json::to_string(record).map_err(|e| StoreError::Backend(e.to_string()))?,
        record.version.to_string(),
        clamp(record.last_seen_at).to_string(),
        clamp(record.absolute_expires_at).to_string(),
        clamp(record.idle_timeout_ms).to_string(),
        clamp(record.expires_at()).to_string(),
        record.user.clone().unwrap_or_default(),
    ])
}

/// The fields of an audit stream entry: `at`, `plugin`, `session` (when
/// given) and `record`, names and values alternating.
pub(super) fn audit_fields(
    plugin: &str,
    session: Option<&str>,
    record: &Json,
    now: Millis,
) -> Vec<String> {
    let mut fields: Vec<String> = vec!["at".into(), now.to_string(), "plugin".into()];
    fields.push(plugin.to_string());
    if let Some(session) = session {
        fields.push("session".into());
        fields.push(session.to_string());
    }
    fields.push("record".into());
    fields.push(record.to_string());
    fields
}
