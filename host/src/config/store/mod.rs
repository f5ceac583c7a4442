//! `[store]`: where sessions live, a choice tagged by `backend`:
//! `"memory"` (the default when `[store]` says none; only `audit_max_len`),
//! `"embedded"` (with the keys of [`EmbeddedStoreConfig`]) or `"redis"` (with
//! the keys of [`RedisStoreConfig`]). `audit_max_len` is read by every
//! backend; every other key belongs to one. The table is read by the
//! hand-written `Deserialize` of [`de`], which keeps every error on its line.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use super::defaults;
use crate::store::embedded::{Durability, EmbeddedConfig};
use crate::store::redis::RedisConfig;

mod de;

/// `[store]`: which backend keeps the sessions, with that backend's settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "backend", rename_all = "kebab-case")]
pub enum StoreConfig {
    /// Everything in this process's memory.
    Memory(MemoryStoreConfig),
    /// SQLite in a data directory owned by this process.
    Embedded(EmbeddedStoreConfig),
    /// Redis or Redis Cluster, shared by any number of hosts.
    Redis(RedisStoreConfig),
}

impl Default for StoreConfig {
    /// Memory: a config without `[store]` needs no directory or server.
    fn default() -> Self {
        StoreConfig::Memory(MemoryStoreConfig::default())
    }
}

impl StoreConfig {
    /// `audit_max_len`, which every backend has.
    pub fn audit_max_len(&self) -> usize {
        match self {
            StoreConfig::Memory(memory) => memory.audit_max_len,
            StoreConfig::Embedded(embedded) => embedded.audit_max_len,
            StoreConfig::Redis(redis) => redis.audit_max_len,
        }
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

/// `[store]` with `backend = "embedded"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EmbeddedStoreConfig {
    /// The data directory. A relative path in the file is resolved against
    /// the file's directory.
    pub path: PathBuf,
    /// When a committed write reaches the disk.
    pub durability: Durability,
    /// How many audit records each tenant's stream keeps.
    pub audit_max_len: usize,
}

impl Default for EmbeddedStoreConfig {
    fn default() -> Self {
        EmbeddedStoreConfig {
            path: PathBuf::from(defaults::EMBEDDED_PATH),
            durability: defaults::EMBEDDED_DURABILITY,
            audit_max_len: defaults::AUDIT_MAX_LEN,
        }
    }
}

impl EmbeddedStoreConfig {
    /// The settings of the embedded backend.
    pub fn embedded_config(&self) -> EmbeddedConfig {
        EmbeddedConfig {
            durability: self.durability,
            audit_max_len: self.audit_max_len,
            ..EmbeddedConfig::new(&self.path)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_back_to_the_same_table() {
        for config in [
            StoreConfig::default(),
            StoreConfig::Redis(RedisStoreConfig {
                urls: vec!["redis://a:1".into(), "redis://b:2".into()],
                cluster: true,
                ..RedisStoreConfig::default()
            }),
            StoreConfig::Embedded(EmbeddedStoreConfig {
                path: "/var/lib/sessiond".into(),
                durability: Durability::Off,
                audit_max_len: 3,
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

        let embedded = EmbeddedConfig::new("d");
        let ours = EmbeddedStoreConfig {
            path: "d".into(),
            ..EmbeddedStoreConfig::default()
        }
        .embedded_config();
        assert_eq!(ours.durability, embedded.durability);
        assert_eq!(ours.durability, Durability::default());
        assert_eq!(ours.audit_max_len, embedded.audit_max_len);
        assert_eq!(ours.readers, embedded.readers);
    }
}
