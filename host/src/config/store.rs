//! `[store]`: where sessions live, a choice tagged by `backend`:
//! `"memory"` (the default; only `audit_max_len`) or `"redis"` (with the
//! keys of [`RedisStoreConfig`]).
//!
//! The `Deserialize` is written by hand so that every error keeps its place in
//! the file: serde's internally tagged enums buffer the table before they see
//! the tag, and the buffered keys lose their toml spans. Here the keys are
//! read one by one as the parser hands them over (sorted by name, so
//! `backend` comes before every Redis-only key; in file order with toml's
//! `preserve_order` feature). An unknown key, or a Redis-only key once
//! `backend = "memory"` has been read, fails on that key's own line; a
//! Redis-only key read before `backend = "memory"` fails on the `backend`
//! line, and one in a table without `backend` on the `[store]` line. Each
//! message names the key.

use std::convert::Infallible;
use std::fmt;
use std::time::Duration;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

use super::defaults;
use crate::store::redis::RedisConfig;

/// `[store]`: which backend keeps the sessions, with that backend's settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "backend", rename_all = "kebab-case")]
pub enum StoreConfig {
    /// Everything in this process's memory.
    Memory(MemoryStoreConfig),
    /// Redis or Redis Cluster, shared by any number of hosts.
    Redis(RedisStoreConfig),
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig::Memory(MemoryStoreConfig::default())
    }
}

/// `[store]` with `backend = "memory"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemoryStoreConfig {
    /// About how many records each tenant's audit stream keeps.
    pub audit_max_len: usize,
}

impl Default for MemoryStoreConfig {
    fn default() -> Self {
        MemoryStoreConfig {
            audit_max_len: defaults::AUDIT_MAX_LEN,
        }
    }
}

/// `[store]` with `backend = "redis"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RedisStoreConfig {
    /// `redis://host:port[/db]` URLs. More than one, or `cluster = true`,
    /// means Redis Cluster.
    pub urls: Vec<String>,
    /// Connect to a Redis Cluster even with one seed URL.
    pub cluster: bool,
    /// The first part of every Redis key.
    pub prefix: String,
    /// How long a Redis session key outlives its deadline, so that the
    /// sweeper can still take it and run its end hooks.
    pub grace_seconds: u64,
    /// About how many records each tenant's audit stream keeps.
    pub audit_max_len: usize,
    /// How long one Redis response may take.
    pub response_timeout_ms: u64,
    /// How long one Redis connection attempt may take.
    pub connection_timeout_ms: u64,
    /// The bound on a whole store operation; past it the API answers 503.
    pub operation_timeout_ms: u64,
}

impl Default for RedisStoreConfig {
    /// The default settings, with no URL yet.
    fn default() -> Self {
        RedisStoreConfig {
            urls: Vec::new(),
            cluster: defaults::REDIS_CLUSTER,
            prefix: defaults::REDIS_PREFIX.into(),
            grace_seconds: defaults::REDIS_GRACE_SECONDS,
            audit_max_len: defaults::AUDIT_MAX_LEN,
            response_timeout_ms: defaults::REDIS_RESPONSE_TIMEOUT_MS,
            connection_timeout_ms: defaults::REDIS_CONNECTION_TIMEOUT_MS,
            operation_timeout_ms: defaults::REDIS_OPERATION_TIMEOUT_MS,
        }
    }
}

impl RedisStoreConfig {
    /// The settings of the Redis backend.
    pub fn redis_config(&self) -> RedisConfig {
        let mut config = RedisConfig::new(self.urls.clone());
        config.cluster = self.cluster;
        config.prefix = self.prefix.clone();
        config.grace = Duration::from_secs(self.grace_seconds);
        config.audit_max_len = self.audit_max_len;
        config.response_timeout = Duration::from_millis(self.response_timeout_ms);
        config.connection_timeout = Duration::from_millis(self.connection_timeout_ms);
        config.operation_timeout = Duration::from_millis(self.operation_timeout_ms);
        config
    }
}

/// The value of `backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Backend {
    Memory,
    Redis,
}

/// Every key of `[store]`; any other is an unknown field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum Key {
    Backend,
    AuditMaxLen,
    Urls,
    Cluster,
    Prefix,
    GraceSeconds,
    ResponseTimeoutMs,
    ConnectionTimeoutMs,
    OperationTimeoutMs,
}

impl Key {
    fn name(self) -> &'static str {
        match self {
            Key::Backend => "backend",
            Key::AuditMaxLen => "audit_max_len",
            Key::Urls => "urls",
            Key::Cluster => "cluster",
            Key::Prefix => "prefix",
            Key::GraceSeconds => "grace_seconds",
            Key::ResponseTimeoutMs => "response_timeout_ms",
            Key::ConnectionTimeoutMs => "connection_timeout_ms",
            Key::OperationTimeoutMs => "operation_timeout_ms",
        }
    }
}

fn redis_only<E: de::Error>(key: Key) -> E {
    E::custom(format!(
        "store.{} is only used with backend = \"redis\"",
        key.name()
    ))
}

/// Fails on the value of a Redis-only key under `backend = "memory"`, so
/// that the error points at that value.
struct Misplaced(Key);

impl<'de> DeserializeSeed<'de> for Misplaced {
    type Value = Infallible;

    fn deserialize<D: Deserializer<'de>>(self, _: D) -> Result<Infallible, D::Error> {
        Err(redis_only(self.0))
    }
}

/// Reads `backend`; `memory` fails when a Redis-only key came before it.
struct BackendAfter(Option<Key>);

impl<'de> DeserializeSeed<'de> for BackendAfter {
    type Value = Backend;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Backend, D::Error> {
        let backend = Backend::deserialize(deserializer)?;
        match (backend, self.0) {
            (Backend::Memory, Some(key)) => Err(redis_only(key)),
            _ => Ok(backend),
        }
    }
}

struct StoreVisitor;

impl<'de> Visitor<'de> for StoreVisitor {
    type Value = StoreConfig;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a [store] table")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StoreConfig, A::Error> {
        let mut backend: Option<Backend> = None;
        // The first Redis-only key read while the backend is still unknown.
        let mut first_redis_key: Option<Key> = None;
        let mut redis = RedisStoreConfig::default();
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Backend => backend = Some(map.next_value_seed(BackendAfter(first_redis_key))?),
                Key::AuditMaxLen => redis.audit_max_len = map.next_value()?,
                _ if backend == Some(Backend::Memory) => {
                    match map.next_value_seed(Misplaced(key))? {}
                }
                _ => {
                    first_redis_key.get_or_insert(key);
                    match key {
                        Key::Urls => redis.urls = map.next_value()?,
                        Key::Cluster => redis.cluster = map.next_value()?,
                        Key::Prefix => redis.prefix = map.next_value()?,
                        Key::GraceSeconds => redis.grace_seconds = map.next_value()?,
                        Key::ResponseTimeoutMs => redis.response_timeout_ms = map.next_value()?,
                        Key::ConnectionTimeoutMs => {
                            redis.connection_timeout_ms = map.next_value()?
                        }
                        Key::OperationTimeoutMs => redis.operation_timeout_ms = map.next_value()?,
                        Key::Backend | Key::AuditMaxLen => unreachable!("matched above"),
                    }
                }
            }
        }
        match backend.unwrap_or(Backend::Memory) {
            Backend::Redis => Ok(StoreConfig::Redis(redis)),
            Backend::Memory => match first_redis_key {
                // No `backend` key at all: the error can only point at the table.
                Some(key) => Err(de::Error::custom(format!(
                    "store.{} is only used with backend = \"redis\" (without `backend`, \
                     the store is \"memory\")",
                    key.name()
                ))),
                None => Ok(StoreConfig::Memory(MemoryStoreConfig {
                    audit_max_len: redis.audit_max_len,
                })),
            },
        }
    }
}

impl<'de> Deserialize<'de> for StoreConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(StoreVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{minimal, parse};
    use super::*;

    fn store(text: &str) -> Result<StoreConfig, String> {
        parse(&format!("{text}{}", minimal()))
            .map(|c| c.store)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn memory_is_the_default() {
        assert_eq!(store("").unwrap(), StoreConfig::default());
        assert_eq!(
            store("[store]\naudit_max_len = 5\n").unwrap(),
            StoreConfig::Memory(MemoryStoreConfig { audit_max_len: 5 })
        );
        assert_eq!(
            store("[store]\nbackend = \"memory\"\n").unwrap(),
            StoreConfig::Memory(MemoryStoreConfig::default())
        );
    }

    #[test]
    fn redis_keys_in_any_order() {
        let expected = StoreConfig::Redis(RedisStoreConfig {
            urls: vec!["redis://a:1".into()],
            prefix: "p".into(),
            audit_max_len: 7,
            ..RedisStoreConfig::default()
        });
        for text in [
            "[store]\nbackend = \"redis\"\nurls = [\"redis://a:1\"]\nprefix = \"p\"\naudit_max_len = 7\n",
            "[store]\naudit_max_len = 7\nurls = [\"redis://a:1\"]\nprefix = \"p\"\nbackend = \"redis\"\n",
        ] {
            assert_eq!(store(text).unwrap(), expected, "{text}");
        }
    }

    #[test]
    fn errors_keep_their_line() {
        let cases: [(&str, &[&str], &str); 7] = [
            // A typo, under either backend.
            (
                "[store]\nbackend = \"redis\"\nurl = [\"redis://a:1\"]\n",
                &["line 3"],
                "`url`",
            ),
            ("[store]\nprefx = \"p\"\n", &["line 2"], "`prefx`"),
            // A Redis-only key under memory: its own line, or the backend's
            // when the parser hands the keys over in file order.
            (
                "[store]\nbackend = \"memory\"\nurls = [\"redis://a:1\"]\n",
                &["line 3"],
                "store.urls",
            ),
            (
                "[store]\ncluster = true\nbackend = \"memory\"\n",
                &["line 2", "line 3"],
                "store.cluster",
            ),
            // No backend at all: the table's line.
            (
                "\n[store]\nurls = [\"redis://a:1\"]\n",
                &["line 2"],
                "store.urls",
            ),
            ("[store]\nbackend = \"disk\"\n", &["line 2"], "`disk`"),
            (
                "[store]\nbackend = \"redis\"\ngrace_seconds = \"1h\"\n",
                &["line 3"],
                "expected u64",
            ),
        ];
        for (text, lines, needle) in cases {
            let err = store(text).unwrap_err();
            assert!(err.starts_with("test.toml: "), "{err}");
            assert!(lines.iter().any(|l| err.contains(l)), "{lines:?}: {err}");
            assert!(err.contains(needle), "{needle}: {err}");
        }
    }

    #[test]
    fn serializes_back_to_the_same_table() {
        for config in [
            StoreConfig::default(),
            StoreConfig::Redis(RedisStoreConfig {
                urls: vec!["redis://a:1".into(), "redis://b:2".into()],
                cluster: true,
                ..RedisStoreConfig::default()
            }),
        ] {
            let text = toml::to_string(&config).unwrap();
            let back: StoreConfig = toml::from_str(&text).unwrap();
            assert_eq!(back, config, "{text}");
        }
    }

    #[test]
    fn defaults_agree_with_the_backends() {
        let redis = RedisConfig::new(Vec::<String>::new());
        let ours = RedisStoreConfig::default().redis_config();
        assert_eq!(ours.cluster, redis.cluster);
        assert_eq!(ours.prefix, redis.prefix);
        assert_eq!(ours.grace, redis.grace);
        assert_eq!(ours.audit_max_len, redis.audit_max_len);
        assert_eq!(ours.response_timeout, redis.response_timeout);
        assert_eq!(ours.connection_timeout, redis.connection_timeout);
        assert_eq!(ours.operation_timeout, redis.operation_timeout);
    }
}
