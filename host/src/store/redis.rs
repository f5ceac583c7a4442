//! Sessions in Redis (or Redis Cluster), shared by any number of stateless hosts.
//!
//! Every trait call is one round trip: a single command or one atomic Lua
//! script (`EVALSHA`, falling back to loading the script once per server).
//!
//! # Key layout
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
//! | `audit` | stream | fields `at`, `plugin`, `session` (optional), `record` (JSON) | `XADD MAXLEN ~ audit_max_len` |
//! | `once:<key>` | string | the audit id written by the first append with idempotency key `<key>` (end hooks: `<end id>:<plugin>:<n>`) | `PX` one day |
//! | `ends` | stream, consumer group `ends` | end jobs: fields `r`, `v`, `l` (the session as it ended), `why` (reason), `at` (ended at) | entries deleted when acknowledged |
//!
//! `v` and `l` are authoritative over the copies inside `r`: `touch` changes
//! only those fields (and `d`), never rewriting the JSON in Lua.
//!
//! A session past `d` is treated as absent by every read but its key lives on
//! for the grace period, so the sweeper's `take_expired` can still take it and
//! run its end hooks exactly once.
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
//! `<public id>.<entry id>`: the same on every delivery of the job.
//!
//! Scripts receive every key they are given by name in `KEYS`, plus the
//! tenant's key base in `ARGV[1]`; they build the keys of index members
//! (`<base>s:<member>`) and of a stored record's user (`<base>u:<user>`) from
//! that base only, so those keys carry the same hash tag and stay in the slot.

use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, Script, ServerErrorKind, Value};
use serde_json::Value as Json;

use super::{
    AUDIT_ONCE_TTL_MS, AuditPage, AuditStore, CreateOutcome, EndJob, EndQueue, EndQueueStats,
    Expired, KvStore, LimitPolicy, SessionStore, StoreError, StoreResult, UserLimit, WriteOutcome,
};
use crate::session::{AuditRecord, EndReason, Millis, SessionRecord};

/// The largest time this backend stores (2^53 - 1 ms, about 285,000 years):
/// Lua numbers are doubles, so times are clamped to stay exact.
const MAX_MS: Millis = (1 << 53) - 1;

fn clamp(ms: Millis) -> Millis {
    ms.min(MAX_MS)
}

/// How to reach Redis and how to lay keys out in it.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `redis://host:port[/db]` URLs. More than one, or `cluster`, means Redis Cluster.
    pub urls: Vec<String>,
    /// Connect to a Redis Cluster even with a single seed URL.
    pub cluster: bool,
    /// The first part of every key.
    pub prefix: String,
    /// How long a session key outlives its deadline, so the sweeper can still
    /// take it and run its end hooks.
    pub grace: Duration,
    /// About how many records each tenant's audit stream keeps.
    pub audit_max_len: usize,
    /// How long one response may take.
    pub response_timeout: Duration,
    /// How long one connection attempt may take.
    pub connection_timeout: Duration,
    /// The bound on a whole operation, reconnecting included; past it the
    /// call fails with [`StoreError::Unavailable`].
    pub operation_timeout: Duration,
}

impl RedisConfig {
    pub fn new(urls: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            urls: urls.into_iter().map(Into::into).collect(),
            cluster: false,
            prefix: "sessiond".into(),
            grace: Duration::from_secs(3600),
            audit_max_len: 100_000,
            response_timeout: Duration::from_secs(2),
            connection_timeout: Duration::from_secs(1),
            operation_timeout: Duration::from_secs(3),
        }
    }
}

/// One connection handle: a reconnecting single-server connection or a
/// cluster connection. Both are cheap to clone (shared, multiplexed).
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// The Redis-backed session store.
pub struct RedisStore {
    conn: Conn,
    prefix: String,
    grace_ms: Millis,
    audit_max_len: usize,
    operation_timeout: Duration,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field(
                "mode",
                &match self.conn {
                    Conn::Single(_) => "single",
                    Conn::Cluster(_) => "cluster",
                },
            )
            .field("prefix", &self.prefix)
            .field("grace_ms", &self.grace_ms)
            .field("audit_max_len", &self.audit_max_len)
            .finish()
    }
}

/// Maps a redis-rs error onto the store's error kinds.
fn map_err(e: RedisError) -> StoreError {
    let unavailable = match e.kind() {
        ErrorKind::Io | ErrorKind::ClusterConnectionNotFound => true,
        ErrorKind::Server(
            ServerErrorKind::BusyLoading
            | ServerErrorKind::TryAgain
            | ServerErrorKind::ClusterDown
            | ServerErrorKind::MasterDown
            | ServerErrorKind::ReadOnly,
        ) => true,
        _ => {
            e.is_timeout()
                || e.is_connection_dropped()
                || e.is_connection_refusal()
                || e.code() == Some("BUSY")
        }
    };
    if unavailable {
        StoreError::Unavailable(e.to_string())
    } else if matches!(e.kind(), ErrorKind::Parse | ErrorKind::UnexpectedReturnType) {
        StoreError::Corrupt(e.to_string())
    } else {
        StoreError::Backend(e.to_string())
    }
}

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
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

// ---------------------------------------------------------------- scripts

/// Helpers shared by the scripts.
const LUA_PRELUDE: &str = r#"
local MAX_MS = 9007199254740991
local function fmt(n) return string.format('%.0f', n) end
-- Pushes the key's expiry out to `at` (ms) unless it already lasts longer.
local function extend(key, at)
  if redis.call('PEXPIRETIME', key) < tonumber(at) then
    redis.call('PEXPIREAT', key, at)
  end
end
local function push3(out, f)
  out[#out + 1] = f[1]; out[#out + 1] = f[2]; out[#out + 1] = f[3]
end
-- Queues the end job of a session just taken out (f = r, v, l) when `on`
-- is '1'. The stream and its consumer group are created together.
local function queue_end(base, on, f, why, now)
  if on ~= '1' then return end
  local key = base .. 'ends'
  if redis.call('EXISTS', key) == 0 then
    redis.call('XGROUP', 'CREATE', key, 'ends', '0', 'MKSTREAM')
  end
  redis.call('XADD', key, '*', 'r', f[1], 'v', f[2], 'l', f[3], 'why', why, 'at', now)
end
"#;

/// KEYS: session, deadlines, [user]. ARGV: base, hash, r, v, l, a, i, d, u,
/// pexpireat, now, max (-1: no limit), policy ('deny' | 'evict'), queue ends
/// ('1' | '0').
/// Returns {'exists'} | {'limit', active} | {'ok', r, v, l, ...evicted}.
const LUA_CREATE: &str = r#"
local base, hash, now = ARGV[1], ARGV[2], tonumber(ARGV[11])
if redis.call('EXISTS', KEYS[1]) == 1 then return {'exists'} end
local out = {'ok'}
local max = tonumber(ARGV[12])
if KEYS[3] and max >= 0 then
  local live = {}
  for _, m in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do
    local d = redis.call('HGET', base .. 's:' .. m, 'd')
    if not d then
      redis.call('ZREM', KEYS[3], m)
      redis.call('ZREM', KEYS[2], m)
    elseif tonumber(d) > now then
      live[#live + 1] = m
    end
  end
  if #live >= max then
    if ARGV[13] ~= 'evict' or max == 0 then return {'limit', #live} end
    for j = 1, #live - max + 1 do
      local m = live[j]
      local sk = base .. 's:' .. m
      local f = redis.call('HMGET', sk, 'r', 'v', 'l')
      push3(out, f)
      queue_end(base, ARGV[14], f, 'evicted', ARGV[11])
      redis.call('DEL', sk)
      redis.call('ZREM', KEYS[3], m)
      redis.call('ZREM', KEYS[2], m)
    end
  end
end
redis.call('HSET', KEYS[1], 'r', ARGV[3], 'v', ARGV[4], 'l', ARGV[5], 'a', ARGV[6],
  'i', ARGV[7], 'd', ARGV[8], 'u', ARGV[9])
redis.call('PEXPIREAT', KEYS[1], ARGV[10])
redis.call('ZADD', KEYS[2], ARGV[8], hash)
if KEYS[3] then
  redis.call('ZADD', KEYS[3], ARGV[5], hash)
  extend(KEYS[3], ARGV[10])
end
return out
"#;

/// KEYS: old session, new session, deadlines, [new user]. ARGV: base, old
/// hash, new hash, expected version, r, v, l, a, i, d, u, pexpireat, now.
/// Returns {'nf'} | {'vm', r, v, l} | {'exists'} | {'ok'}.
const LUA_UPDATE: &str = r#"
local base, old, new = ARGV[1], ARGV[2], ARGV[3]
local f = redis.call('HMGET', KEYS[1], 'r', 'v', 'l', 'd', 'u')
if not f[1] or tonumber(f[4]) <= tonumber(ARGV[13]) then return {'nf'} end
if tonumber(f[2]) ~= tonumber(ARGV[4]) then return {'vm', f[1], f[2], f[3]} end
local moved = old ~= new
if moved then
  if redis.call('EXISTS', KEYS[2]) == 1 then return {'exists'} end
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[3], old)
end
local olduser = f[5] or ''
if olduser ~= '' and (moved or olduser ~= ARGV[11]) then
  redis.call('ZREM', base .. 'u:' .. olduser, old)
end
redis.call('HSET', KEYS[2], 'r', ARGV[5], 'v', ARGV[6], 'l', ARGV[7], 'a', ARGV[8],
  'i', ARGV[9], 'd', ARGV[10], 'u', ARGV[11])
redis.call('PEXPIREAT', KEYS[2], ARGV[12])
redis.call('ZADD', KEYS[3], ARGV[10], new)
if KEYS[4] then
  redis.call('ZADD', KEYS[4], ARGV[7], new)
  extend(KEYS[4], ARGV[12])
end
return {'ok'}
"#;

/// KEYS: session, deadlines. ARGV: base, hash, now, grace.
/// Returns nil | {r, v, l}.
const LUA_TOUCH: &str = r#"
local base, hash, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local f = redis.call('HMGET', KEYS[1], 'r', 'v', 'l', 'a', 'i', 'd', 'u')
if not f[1] or tonumber(f[6]) <= now then return false end
local l = math.max(tonumber(f[3]), now)
local d = math.min(tonumber(f[4]), l + tonumber(f[5]), MAX_MS)
local v, ls, ds = fmt(tonumber(f[2]) + 1), fmt(l), fmt(d)
local exp = fmt(math.min(d + tonumber(ARGV[4]), MAX_MS))
redis.call('HSET', KEYS[1], 'v', v, 'l', ls, 'd', ds)
redis.call('PEXPIREAT', KEYS[1], exp)
redis.call('ZADD', KEYS[2], ds, hash)
if f[7] and f[7] ~= '' then
  local uk = base .. 'u:' .. f[7]
  redis.call('ZADD', uk, ls, hash)
  extend(uk, exp)
end
return {f[1], v, ls}
"#;

/// KEYS: session, deadlines. ARGV: base, hash, now, reason, queue ends.
/// Returns nil | {r, v, l}.
const LUA_REMOVE: &str = r#"
local base, hash = ARGV[1], ARGV[2]
local f = redis.call('HMGET', KEYS[1], 'r', 'v', 'l', 'd', 'u')
if not f[1] or tonumber(f[4]) <= tonumber(ARGV[3]) then return false end
queue_end(base, ARGV[5], f, ARGV[4], ARGV[3])
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], hash)
if f[5] and f[5] ~= '' then redis.call('ZREM', base .. 'u:' .. f[5], hash) end
return {f[1], f[2], f[3]}
"#;

/// KEYS: user, deadlines. ARGV: base, now, take ('1' removes the live
/// sessions), reason, queue ends. Drops index members whose key is gone.
/// Returns {r, v, l, ...}.
const LUA_USER: &str = r#"
local base, now, take = ARGV[1], tonumber(ARGV[2]), ARGV[3] == '1'
local out = {}
for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local sk = base .. 's:' .. m
  local f = redis.call('HMGET', sk, 'r', 'v', 'l', 'd')
  if not f[1] then
    redis.call('ZREM', KEYS[1], m)
    redis.call('ZREM', KEYS[2], m)
  elseif tonumber(f[4]) > now then
    push3(out, f)
    if take then
      queue_end(base, ARGV[5], f, ARGV[4], ARGV[2])
      redis.call('DEL', sk)
      redis.call('ZREM', KEYS[1], m)
      redis.call('ZREM', KEYS[2], m)
    end
  end
end
return out
"#;

/// KEYS: deadlines. ARGV: base, now, max, queue ends. Returns {r, v, l, ...}.
const LUA_TAKE_EXPIRED: &str = r#"
local base, now = ARGV[1], tonumber(ARGV[2])
local out = {}
for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'LIMIT', 0, ARGV[3])) do
  local sk = base .. 's:' .. m
  local f = redis.call('HMGET', sk, 'r', 'v', 'l', 'd', 'u', 'a', 'i')
  if not f[1] then
    redis.call('ZREM', KEYS[1], m)
  elseif tonumber(f[4]) > now then
    redis.call('ZADD', KEYS[1], f[4], m)
  else
    push3(out, f)
    local why = 'idle-timeout'
    if tonumber(f[6]) <= tonumber(f[3]) + tonumber(f[7]) then why = 'expired' end
    queue_end(base, ARGV[4], f, why, ARGV[2])
    redis.call('DEL', sk)
    redis.call('ZREM', KEYS[1], m)
    if f[5] and f[5] ~= '' then redis.call('ZREM', base .. 'u:' .. f[5], m) end
  end
end
return out
"#;

/// KEYS: ends. ARGV: consumer, max, reclaim after (ms).
/// Returns {abandoned entries taken over, new entries}, each entry
/// {id, {field, value, ...}}.
const LUA_CLAIM_ENDS: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return {{}, {}} end
local ac = redis.pcall('XAUTOCLAIM', KEYS[1], 'ends', ARGV[1], ARGV[3], '0-0', 'COUNT', ARGV[2])
if ac['err'] then
  if not string.find(ac['err'], 'NOGROUP', 1, true) then return ac end
  redis.call('XGROUP', 'CREATE', KEYS[1], 'ends', '0')
  ac = {'0-0', {}}
end
local old = {}
for _, e in ipairs(ac[2]) do
  if type(e) == 'table' then old[#old + 1] = e end
end
local fresh = {}
local left = tonumber(ARGV[2]) - #old
if left > 0 then
  local r = redis.call('XREADGROUP', 'GROUP', 'ends', ARGV[1], 'COUNT', left,
    'STREAMS', KEYS[1], '>')
  if r then fresh = r[1][2] end
end
return {old, fresh}
"#;

/// KEYS: ends. ARGV: entry ids. Acknowledges and deletes them.
const LUA_ACK_ENDS: &str = r#"
redis.call('XACK', KEYS[1], 'ends', unpack(ARGV))
redis.call('XDEL', KEYS[1], unpack(ARGV))
return 1
"#;

/// KEYS: ends. Returns {waiting, claimed}.
const LUA_END_QUEUE: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, 0} end
local len = redis.call('XLEN', KEYS[1])
local p = redis.pcall('XPENDING', KEYS[1], 'ends')
local claimed = 0
if not p['err'] then claimed = p[1] end
return {len - claimed, claimed}
"#;

/// KEYS: ends. ARGV: consumer to keep, idle ms. Deletes the group's
/// consumers that hold nothing and were idle longer. Returns how many.
const LUA_PRUNE_CONSUMERS: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local cs = redis.pcall('XINFO', 'CONSUMERS', KEYS[1], 'ends')
if cs['err'] then return 0 end
local n = 0
for _, c in ipairs(cs) do
  local f = {}
  for i = 1, #c, 2 do f[c[i]] = c[i + 1] end
  if f['name'] ~= ARGV[1] and tonumber(f['pending']) == 0
      and tonumber(f['idle']) > tonumber(ARGV[2]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], 'ends', f['name'])
    n = n + 1
  end
end
return n
"#;

/// KEYS: audit, idempotency key. ARGV: max len, key ttl (ms), fields...
/// Returns the id written now or by the first append with the key.
const LUA_AUDIT_ONCE: &str = r#"
local prev = redis.call('GET', KEYS[2])
if prev then return prev end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', unpack(ARGV, 3))
redis.call('SET', KEYS[2], id, 'PX', ARGV[2])
return id
"#;

struct Scripts {
    prune_consumers: Script,
    claim_ends: Script,
    ack_ends: Script,
    end_queue: Script,
    audit_once: Script,
    create: Script,
    update: Script,
    touch: Script,
    remove: Script,
    user: Script,
    take_expired: Script,
}

static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| {
    let s = |body: &str| Script::new(&format!("{LUA_PRELUDE}{body}"));
    Scripts {
        prune_consumers: s(LUA_PRUNE_CONSUMERS),
        claim_ends: s(LUA_CLAIM_ENDS),
        ack_ends: s(LUA_ACK_ENDS),
        end_queue: s(LUA_END_QUEUE),
        audit_once: s(LUA_AUDIT_ONCE),
        create: s(LUA_CREATE),
        update: s(LUA_UPDATE),
        touch: s(LUA_TOUCH),
        remove: s(LUA_REMOVE),
        user: s(LUA_USER),
        take_expired: s(LUA_TAKE_EXPIRED),
    }
});

// ---------------------------------------------------------------- replies

fn text(v: &Value) -> StoreResult<&str> {
    match v {
        Value::BulkString(b) => std::str::from_utf8(b).map_err(corrupt),
        Value::SimpleString(s) => Ok(s),
        Value::VerbatimString { text, .. } => Ok(text),
        other => Err(corrupt(format_args!("expected a string, got {other:?}"))),
    }
}

fn number(v: &Value) -> StoreResult<u64> {
    match v {
        Value::Int(i) => u64::try_from(*i).map_err(corrupt),
        other => text(other)?
            .parse()
            .map_err(|e| corrupt(format_args!("bad number: {e}"))),
    }
}

fn items(v: Value) -> StoreResult<Vec<Value>> {
    match v {
        Value::Array(a) | Value::Set(a) => Ok(a),
        Value::Nil => Ok(Vec::new()),
        other => Err(corrupt(format_args!("expected an array, got {other:?}"))),
    }
}

/// A record from its JSON (`r`) and its authoritative version (`v`) and
/// last_seen_at (`l`).
fn parse_record(r: &Value, v: &Value, l: &Value) -> StoreResult<SessionRecord> {
    let mut record: SessionRecord = serde_json::from_str(text(r)?).map_err(corrupt)?;
    record.version = number(v)?;
    record.last_seen_at = number(l)?;
    Ok(record)
}

/// Records from a flat `r, v, l, r, v, l, …` list.
fn records(flat: &[Value]) -> StoreResult<Vec<SessionRecord>> {
    if !flat.len().is_multiple_of(3) {
        return Err(corrupt("record list length is not a multiple of 3"));
    }
    flat.chunks(3)
        .map(|c| parse_record(&c[0], &c[1], &c[2]))
        .collect()
}

fn oldest_first(records: &mut [SessionRecord]) {
    records.sort_by(|a, b| (a.created_at, &a.public_id).cmp(&(b.created_at, &b.public_id)));
}

// ---------------------------------------------------------------- store

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
        if config.urls.is_empty() {
            return Err(StoreError::Backend("no Redis URL given".into()));
        }
        let connect = async {
            if config.cluster || config.urls.len() > 1 {
                let client = redis::cluster::ClusterClient::builder(config.urls.iter().cloned())
                    .connection_timeout(config.connection_timeout)
                    .response_timeout(config.response_timeout)
                    .build()?;
                Ok(Conn::Cluster(client.get_async_connection().await?))
            } else {
                let client = redis::Client::open(config.urls[0].as_str())?;
                let manager_config = ConnectionManagerConfig::new()
                    .set_response_timeout(Some(config.response_timeout))
                    .set_connection_timeout(Some(config.connection_timeout))
                    .set_number_of_retries(2)
                    .set_max_delay(Duration::from_millis(500));
                Ok(Conn::Single(
                    ConnectionManager::new_with_config(client, manager_config).await?,
                ))
            }
        };
        let conn = tokio::time::timeout(config.operation_timeout, connect)
            .await
            .map_err(|_| StoreError::Unavailable("connecting to Redis timed out".into()))?
            .map_err(map_err)?;
        Ok(Self {
            conn,
            prefix: config.prefix,
            grace_ms: config.grace.as_millis().min(u128::from(MAX_MS)) as Millis,
            audit_max_len: config.audit_max_len.max(1),
            operation_timeout: config.operation_timeout,
        })
    }

    /// `<prefix>:{<tenant>}:`, the start of every key of the tenant.
    fn base(&self, tenant: &str) -> String {
        format!("{}:{{{}}}:", self.prefix, escape(tenant))
    }

    fn pexpireat(&self, deadline: Millis) -> Millis {
        clamp(clamp(deadline).saturating_add(self.grace_ms))
    }

    /// Runs one request under the operation timeout.
    async fn run<T>(
        &self,
        f: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> StoreResult<T> {
        match tokio::time::timeout(self.operation_timeout, f).await {
            Ok(r) => r.map_err(map_err),
            Err(_) => Err(StoreError::Unavailable(
                "Redis did not answer in time".into(),
            )),
        }
    }

    async fn query(&self, cmd: &Cmd) -> StoreResult<Value> {
        let mut conn = self.conn.clone();
        self.run(cmd.query_async::<Value>(&mut conn)).await
    }

    async fn invoke(&self, inv: &redis::ScriptInvocation<'_>) -> StoreResult<Value> {
        let mut conn = self.conn.clone();
        self.run(inv.invoke_async::<Value>(&mut conn)).await
    }
}

/// The fields every session write stores, in script argument order:
/// r, v, l, a, i, d, u.
fn fields(record: &SessionRecord) -> StoreResult<[String; 7]> {
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

#[async_trait]
impl SessionStore for RedisStore {
    async fn ping(&self) -> StoreResult<()> {
        let reply = self.query(&redis::cmd("PING")).await?;
        match text(&reply)? {
            "PONG" => Ok(()),
            other => Err(corrupt(format_args!("PING answered {other:?}"))),
        }
    }

    async fn create(
        &self,
        record: &SessionRecord,
        limit: Option<UserLimit>,
        queue_ends: bool,
        now: Millis,
    ) -> StoreResult<CreateOutcome> {
        let base = self.base(&record.tenant);
        let mut inv = SCRIPTS.create.prepare_invoke();
        inv.key(format!("{base}s:{}", record.token_hash))
            .key(format!("{base}deadlines"));
        if let Some(user) = &record.user {
            inv.key(format!("{base}u:{user}"));
        }
        let (max, policy) = match limit {
            Some(l) if record.user.is_some() => (
                i64::from(l.max),
                match l.policy {
                    LimitPolicy::Deny => "deny",
                    LimitPolicy::EvictLru => "evict",
                },
            ),
            _ => (-1, "deny"),
        };
        inv.arg(&base).arg(&record.token_hash);
        for f in fields(record)? {
            inv.arg(f);
        }
        inv.arg(self.pexpireat(record.expires_at()))
            .arg(now)
            .arg(max)
            .arg(policy)
            .arg(flag(queue_ends));
        let reply = items(self.invoke(&inv).await?)?;
        match reply.first().map(text).transpose()? {
            Some("ok") => Ok(CreateOutcome::Created {
                evicted: records(&reply[1..])?,
            }),
            Some("limit") => Ok(CreateOutcome::LimitReached {
                active: reply
                    .get(1)
                    .map(number)
                    .transpose()?
                    .unwrap_or_default()
                    .try_into()
                    .map_err(corrupt)?,
            }),
            Some("exists") => Err(StoreError::Backend(
                "a session with this token hash exists".into(),
            )),
            other => Err(corrupt(format_args!("create answered {other:?}"))),
        }
    }

    async fn get(
        &self,
        tenant: &str,
        token_hash: &str,
        now: Millis,
    ) -> StoreResult<Option<SessionRecord>> {
        let key = format!("{}s:{token_hash}", self.base(tenant));
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(key).arg("r").arg("v").arg("l").arg("d");
        let f = items(self.query(&cmd).await?)?;
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
        let base = self.base(&record.tenant);
        let mut inv = SCRIPTS.update.prepare_invoke();
        inv.key(format!("{base}s:{token_hash}"))
            .key(format!("{base}s:{}", record.token_hash))
            .key(format!("{base}deadlines"));
        if let Some(user) = &record.user {
            inv.key(format!("{base}u:{user}"));
        }
        inv.arg(&base)
            .arg(token_hash)
            .arg(&record.token_hash)
            .arg(expected_version);
        for f in fields(record)? {
            inv.arg(f);
        }
        inv.arg(self.pexpireat(record.expires_at())).arg(now);
        let reply = items(self.invoke(&inv).await?)?;
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

    async fn touch(
        &self,
        tenant: &str,
        token_hash: &str,
        now: Millis,
    ) -> StoreResult<Option<SessionRecord>> {
        let base = self.base(tenant);
        let mut inv = SCRIPTS.touch.prepare_invoke();
        inv.key(format!("{base}s:{token_hash}"))
            .key(format!("{base}deadlines"))
            .arg(&base)
            .arg(token_hash)
            .arg(now)
            .arg(self.grace_ms);
        let reply = items(self.invoke(&inv).await?)?;
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
        let base = self.base(tenant);
        let mut inv = SCRIPTS.remove.prepare_invoke();
        inv.key(format!("{base}s:{token_hash}"))
            .key(format!("{base}deadlines"))
            .arg(&base)
            .arg(token_hash)
            .arg(now)
            .arg(reason.as_str())
            .arg(flag(queue_ends));
        let reply = items(self.invoke(&inv).await?)?;
        one_record(&reply)
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
        let base = self.base(tenant);
        let mut inv = SCRIPTS.take_expired.prepare_invoke();
        inv.key(format!("{base}deadlines"))
            .arg(&base)
            .arg(now)
            .arg(max)
            .arg(flag(queue_ends));
        let reply = items(self.invoke(&inv).await?)?;
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
impl EndQueue for RedisStore {
    async fn claim_ends(
        &self,
        tenant: &str,
        consumer: &str,
        max: usize,
        reclaim_after_ms: Millis,
        _now: Millis,
    ) -> StoreResult<Vec<EndJob>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let mut inv = SCRIPTS.claim_ends.prepare_invoke();
        inv.key(self.ends_key(tenant))
            .arg(consumer)
            .arg(max)
            .arg(reclaim_after_ms.max(1));
        let reply = items(self.invoke(&inv).await?)?;
        let mut out = Vec::new();
        for (list, reclaimed) in reply.into_iter().zip([true, false]) {
            for entry in items(list)? {
                if !matches!(entry, Value::Nil) {
                    out.push(end_job(entry, reclaimed)?);
                }
            }
        }
        Ok(out)
    }

    async fn ack_ends(&self, tenant: &str, ids: &[String]) -> StoreResult<()> {
        for chunk in ids.chunks(1000) {
            let mut inv = SCRIPTS.ack_ends.prepare_invoke();
            inv.key(self.ends_key(tenant));
            for id in chunk {
                inv.arg(id);
            }
            self.invoke(&inv).await?;
        }
        Ok(())
    }

    async fn end_queue(&self, tenant: &str) -> StoreResult<EndQueueStats> {
        let mut inv = SCRIPTS.end_queue.prepare_invoke();
        inv.key(self.ends_key(tenant));
        match items(self.invoke(&inv).await?)?.as_slice() {
            [waiting, claimed] => Ok(EndQueueStats {
                waiting: number(waiting)?,
                claimed: number(claimed)?,
            }),
            _ => Err(corrupt("end queue stats: expected two numbers")),
        }
    }

    async fn prune_end_consumers(
        &self,
        tenant: &str,
        keep: &str,
        idle_ms: Millis,
    ) -> StoreResult<u64> {
        let mut inv = SCRIPTS.prune_consumers.prepare_invoke();
        inv.key(self.ends_key(tenant)).arg(keep).arg(idle_ms);
        number(&self.invoke(&inv).await?)
    }
}

#[async_trait]
impl KvStore for RedisStore {
    async fn kv_get(&self, tenant: &str, plugin: &str, key: &str) -> StoreResult<Option<String>> {
        let reply = self
            .query(redis::cmd("GET").arg(self.kv_key(tenant, plugin, key)))
            .await?;
        match reply {
            Value::Nil => Ok(None),
            v => text(&v).map(|s| Some(s.to_string())),
        }
    }

    async fn kv_set(
        &self,
        tenant: &str,
        plugin: &str,
        key: &str,
        value: &str,
        ttl_seconds: Option<u32>,
    ) -> StoreResult<()> {
        let k = self.kv_key(tenant, plugin, key);
        let cmd = match ttl_seconds {
            // A TTL of 0 expires the entry at once.
            Some(0) => redis::cmd("DEL").arg(k).clone(),
            Some(s) => redis::cmd("SET")
                .arg(k)
                .arg(value)
                .arg("PX")
                .arg(u64::from(s) * 1000)
                .clone(),
            None => redis::cmd("SET").arg(k).arg(value).clone(),
        };
        self.query(&cmd).await?;
        Ok(())
    }

    async fn kv_delete(&self, tenant: &str, plugin: &str, key: &str) -> StoreResult<bool> {
        let reply = self
            .query(redis::cmd("DEL").arg(self.kv_key(tenant, plugin, key)))
            .await?;
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
        let base = self.base(tenant);
        let mut fields: Vec<String> = vec!["at".into(), now.to_string(), "plugin".into()];
        fields.push(plugin.to_string());
        if let Some(session) = session {
            fields.push("session".into());
            fields.push(session.to_string());
        }
        fields.push("record".into());
        fields.push(record.to_string());
        let reply = match once {
            None => {
                let mut cmd = redis::cmd("XADD");
                cmd.arg(format!("{base}audit"))
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(self.audit_max_len)
                    .arg("*")
                    .arg(fields);
                self.query(&cmd).await?
            }
            Some(key) => {
                let mut inv = SCRIPTS.audit_once.prepare_invoke();
                inv.key(format!("{base}audit"))
                    .key(format!("{base}once:{key}"))
                    .arg(self.audit_max_len)
                    .arg(AUDIT_ONCE_TTL_MS)
                    .arg(fields);
                self.invoke(&inv).await?
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
        let start = match after {
            Some(id) => format!("({id}"),
            None => "-".into(),
        };
        let mut cmd = redis::cmd("XRANGE");
        cmd.arg(format!("{}audit", self.base(tenant)))
            .arg(start)
            .arg("+")
            .arg("COUNT")
            .arg(limit + 1);
        let entries = items(self.query(&cmd).await?)?;
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

impl RedisStore {
    fn kv_key(&self, tenant: &str, plugin: &str, key: &str) -> String {
        format!("{}kv:{}:{key}", self.base(tenant), escape(plugin))
    }

    fn ends_key(&self, tenant: &str) -> String {
        format!("{}ends", self.base(tenant))
    }

    /// Lists (`take` none) or takes a user's live sessions.
    async fn user_sessions(
        &self,
        tenant: &str,
        user: &str,
        now: Millis,
        take: Option<(EndReason, bool)>,
    ) -> StoreResult<Vec<SessionRecord>> {
        let base = self.base(tenant);
        let mut inv = SCRIPTS.user.prepare_invoke();
        inv.key(format!("{base}u:{user}"))
            .key(format!("{base}deadlines"))
            .arg(&base)
            .arg(now);
        match take {
            Some((reason, queue)) => inv.arg("1").arg(reason.as_str()).arg(flag(queue)),
            None => inv.arg("0").arg("").arg("0"),
        };
        let reply = items(self.invoke(&inv).await?)?;
        let mut out = records(&reply)?;
        oldest_first(&mut out);
        Ok(out)
    }
}

/// A script flag.
fn flag(on: bool) -> &'static str {
    if on { "1" } else { "0" }
}

/// An end job from a stream entry `[id, [field, value, …]]` of the ends
/// stream (fields `r`, `v`, `l`, `why`, `at`).
fn end_job(entry: Value, reclaimed: bool) -> StoreResult<EndJob> {
    let mut parts = items(entry)?.into_iter();
    let (Some(id), Some(fields)) = (parts.next(), parts.next()) else {
        return Err(corrupt("malformed end job"));
    };
    let id = text(&id)?.to_string();
    let fields = match fields {
        Value::Map(pairs) => pairs.into_iter().flat_map(|(k, v)| [k, v]).collect(),
        other => items(other)?,
    };
    let (mut r, mut v, mut l, mut why, mut at) = (None, None, None, None, None);
    for pair in fields.chunks(2) {
        let [k, val] = pair else {
            return Err(corrupt("odd end job field list"));
        };
        match text(k)? {
            "r" => r = Some(val),
            "v" => v = Some(val),
            "l" => l = Some(val),
            "why" => why = Some(text(val)?),
            "at" => at = Some(number(val)?),
            _ => {}
        }
    }
    let (Some(r), Some(v), Some(l), Some(why), Some(at)) = (r, v, l, why, at) else {
        return Err(corrupt(format_args!("end job {id} lacks a field")));
    };
    let record = parse_record(r, v, l)?;
    let reason = EndReason::parse(why)
        .ok_or_else(|| corrupt(format_args!("end job {id}: unknown reason {why:?}")))?;
    Ok(EndJob {
        end_id: format!("{}.{id}", record.public_id),
        id,
        record,
        reason,
        ended_at: at,
        reclaimed,
    })
}

/// `None` for an empty reply, else the one record in it.
fn one_record(reply: &[Value]) -> StoreResult<Option<SessionRecord>> {
    match reply {
        [] => Ok(None),
        [r, v, l] => parse_record(r, v, l).map(Some),
        _ => Err(corrupt("expected one record")),
    }
}

/// An audit record from an XRANGE entry: `[id, [field, value, …]]`.
fn audit_record(tenant: &str, entry: Value) -> StoreResult<AuditRecord> {
    let mut parts = items(entry)?.into_iter();
    let (Some(id), Some(fields), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(corrupt("malformed audit entry"));
    };
    let id = text(&id)?.to_string();
    let (mut at, mut plugin, mut session, mut record) = (None, None, None, None);
    let fields = match fields {
        Value::Map(pairs) => pairs.into_iter().flat_map(|(k, v)| [k, v]).collect(),
        other => items(other)?,
    };
    for pair in fields.chunks(2) {
        let [k, v] = pair else {
            return Err(corrupt("odd audit field list"));
        };
        match text(k)? {
            "at" => at = Some(number(v)?),
            "plugin" => plugin = Some(text(v)?.to_string()),
            "session" => session = Some(text(v)?.to_string()),
            "record" => record = Some(serde_json::from_str(text(v)?).map_err(corrupt)?),
            _ => {}
        }
    }
    match (at, plugin, record) {
        (Some(at), Some(plugin), Some(record)) => Ok(AuditRecord {
            id,
            at,
            tenant: tenant.to_string(),
            plugin,
            session,
            record,
        }),
        _ => Err(corrupt(format_args!("audit entry {id} lacks a field"))),
    }
}
