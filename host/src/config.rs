//! The host configuration: one TOML file (`sessiond.toml` by default).
//!
//! Every table rejects unknown keys, so a typo fails startup with the TOML
//! error (line and column) and the file name instead of being ignored. Every
//! default is in [`defaults`] (the store's and the runtime's come from their
//! own modules). After parsing, relative plugin paths are resolved against the
//! config file's directory, the environment overrides are applied and the
//! whole config is validated, each message naming the offending key.
//!
//! Environment overrides:
//! - `SESSIOND_LISTEN`: `server.listen`;
//! - `SESSIOND_REDIS_URL`: comma-separated Redis URLs; sets `store.urls` and
//!   switches `store.backend` to `redis`;
//! - `SESSIOND_API_KEY_<TENANT>`: one plain API key for the tenant, hashed at
//!   startup; it replaces the tenant's `api_keys`. `<TENANT>` is the tenant's
//!   name upper-cased with every character other than `A-Z` and `0-9` turned
//!   into `_` (`demo-eu` reads `SESSIOND_API_KEY_DEMO_EU`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::runtime::{EngineSettings, PluginSpec};
use crate::store::LimitPolicy;
use crate::store::redis::RedisConfig;

/// Every default of the host configuration.
pub mod defaults {
    /// The config file read when `--config` is not given.
    pub const CONFIG_PATH: &str = "sessiond.toml";
    /// `server.listen`.
    pub const LISTEN: &str = "127.0.0.1:8080";
    /// `server.max_body_bytes`: 64 KiB.
    pub const MAX_BODY_BYTES: usize = 64 * 1024;
    /// `runtime.cache_dir`, relative to the working directory.
    pub const CACHE_DIR: &str = ".cache/sessiond";
    /// `sweeper.interval_ms`.
    pub const SWEEP_INTERVAL_MS: u64 = 1_000;
    /// `sweeper.batch`.
    pub const SWEEP_BATCH: usize = 100;
    /// `ends.poll_interval_ms`.
    pub const ENDS_POLL_INTERVAL_MS: u64 = 200;
    /// `ends.batch`.
    pub const ENDS_BATCH: usize = 64;
    /// `ends.reclaim_after_ms`: 30 seconds.
    pub const ENDS_RECLAIM_AFTER_MS: u64 = 30_000;
    /// `ends.shutdown_drain_ms`: 10 seconds.
    pub const ENDS_SHUTDOWN_DRAIN_MS: u64 = 10_000;
    /// `tenants.<name>.ttl_seconds`: one hour.
    pub const TTL_SECONDS: u64 = 3_600;
    /// `tenants.<name>.max_ttl_seconds`: one day.
    pub const MAX_TTL_SECONDS: u64 = 86_400;
    /// `tenants.<name>.idle_timeout_seconds`: 15 minutes.
    pub const IDLE_TIMEOUT_SECONDS: u64 = 900;
}

/// The prefix of a hashed API key in the config.
pub const API_KEY_HASH_PREFIX: &str = "sha256:";

/// The whole host configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub store: StoreConfig,
    /// The plugin engine (see [`EngineSettings`]).
    #[serde(default)]
    pub runtime: EngineSettings,
    #[serde(default)]
    pub sweeper: SweeperConfig,
    #[serde(default)]
    pub ends: EndsConfig,
    /// Tenants by name.
    #[serde(default)]
    pub tenants: BTreeMap<String, TenantConfig>,
}

/// `[server]`: the HTTP listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// The address to listen on, `host:port`.
    pub listen: String,
    /// Peers whose `X-Forwarded-For` header is believed: CIDRs (`10.0.0.0/8`)
    /// or single addresses.
    pub trusted_proxies: Vec<ProxyNet>,
    /// The largest request body accepted; larger ones get 413.
    pub max_body_bytes: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: defaults::LISTEN.into(),
            trusted_proxies: Vec::new(),
            max_body_bytes: defaults::MAX_BODY_BYTES,
        }
    }
}

/// A trusted proxy network: a CIDR, or one address (a /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ProxyNet(pub IpNet);

impl TryFrom<String> for ProxyNet {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        if let Ok(net) = text.parse::<IpNet>() {
            return Ok(ProxyNet(net.trunc()));
        }
        match text.parse::<IpAddr>() {
            Ok(addr) => Ok(ProxyNet(IpNet::from(addr))),
            Err(_) => Err(format!(
                "{text:?} is neither a CIDR (like \"10.0.0.0/8\") nor an IP address"
            )),
        }
    }
}

impl From<ProxyNet> for String {
    fn from(net: ProxyNet) -> String {
        net.0.to_string()
    }
}

/// Which session store to use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    /// Everything in this process's memory.
    #[default]
    Memory,
    /// Redis or Redis Cluster, shared by any number of hosts.
    Redis,
}

/// `[store]`: where sessions live.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    pub backend: Backend,
    /// `redis://host:port[/db]` URLs (backend `redis`). More than one, or
    /// `cluster = true`, means Redis Cluster.
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

impl Default for StoreConfig {
    fn default() -> Self {
        // The Redis defaults live with the store.
        let redis = RedisConfig::new(Vec::<String>::new());
        StoreConfig {
            backend: Backend::Memory,
            urls: Vec::new(),
            cluster: redis.cluster,
            prefix: redis.prefix,
            grace_seconds: redis.grace.as_secs(),
            audit_max_len: redis.audit_max_len,
            response_timeout_ms: millis(redis.response_timeout),
            connection_timeout_ms: millis(redis.connection_timeout),
            operation_timeout_ms: millis(redis.operation_timeout),
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl StoreConfig {
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

/// `[sweeper]`: ends sessions that ran out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SweeperConfig {
    /// How often each tenant is swept, in milliseconds.
    pub interval_ms: u64,
    /// Most sessions taken from the store in one go.
    pub batch: usize,
}

impl Default for SweeperConfig {
    fn default() -> Self {
        SweeperConfig {
            interval_ms: defaults::SWEEP_INTERVAL_MS,
            batch: defaults::SWEEP_BATCH,
        }
    }
}

/// `[ends]`: the end-job worker that runs `on-session-end` hooks from the
/// store's durable end queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EndsConfig {
    /// How often the queue is polled when nothing local wakes the worker.
    pub poll_interval_ms: u64,
    /// Most jobs claimed in one go.
    pub batch: usize,
    /// How long a job may stay claimed without being finished before another
    /// host takes it over (the claiming host is presumed dead). Longer than
    /// any end chain can take; shorter means faster recovery after a crash.
    pub reclaim_after_ms: u64,
    /// On shutdown, how long to keep running queued jobs before stopping.
    pub shutdown_drain_ms: u64,
    /// This host's consumer name in the queue; unique per process. Default:
    /// `<hostname>-<pid>-<random>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consumer: Option<String>,
}

impl Default for EndsConfig {
    fn default() -> Self {
        EndsConfig {
            poll_interval_ms: defaults::ENDS_POLL_INTERVAL_MS,
            batch: defaults::ENDS_BATCH,
            reclaim_after_ms: defaults::ENDS_RECLAIM_AFTER_MS,
            shutdown_drain_ms: defaults::ENDS_SHUTDOWN_DRAIN_MS,
            consumer: None,
        }
    }
}

/// `[tenants.<name>]`: one tenant's keys, timeouts, limit and plugins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenantConfig {
    /// API keys as `sha256:<64 hex digits>` hashes of the plain keys.
    pub api_keys: Vec<String>,
    /// The lifetime of a session that asks for none.
    pub ttl_seconds: u64,
    /// The longest lifetime a session (or a plugin) may ask for.
    pub max_ttl_seconds: u64,
    /// A session not used for this long ends.
    pub idle_timeout_seconds: u64,
    /// Most live sessions per user; none: no limit.
    pub max_sessions_per_user: Option<u32>,
    /// What happens to a new session of a user at the limit.
    pub limit_policy: LimitPolicy,
    /// The plugin chain, in order (`[[tenants.<name>.plugins]]`).
    pub plugins: Vec<PluginSpec>,
    /// The `/sessman/*` compatibility API.
    pub sessman: SessmanConfig,
}

impl Default for TenantConfig {
    fn default() -> Self {
        TenantConfig {
            api_keys: Vec::new(),
            ttl_seconds: defaults::TTL_SECONDS,
            max_ttl_seconds: defaults::MAX_TTL_SECONDS,
            idle_timeout_seconds: defaults::IDLE_TIMEOUT_SECONDS,
            max_sessions_per_user: None,
            limit_policy: LimitPolicy::Deny,
            plugins: Vec::new(),
            sessman: SessmanConfig::default(),
        }
    }
}

/// `[tenants.<name>.sessman]`: the `/sessman/*` compatibility API.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessmanConfig {
    /// Serve `/sessman/*` to this tenant's API keys.
    pub enabled: bool,
    /// Serve `/sessman/*` requests that carry no API key as this tenant's.
    /// The published sessman JavaScript `Session` class cannot send its key
    /// (it reads `self.options.auth`), so it only works unmodified with this.
    /// At most one tenant may set it, and only with `enabled`.
    pub allow_unauthenticated: bool,
}

/// Why the configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The TOML error carries the line and column.
    #[error("{origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("{origin}: {field}: {message}")]
    Invalid {
        origin: String,
        field: String,
        message: String,
    },
}

/// `sha256:<hex>` of a plain API key, as the config stores it.
pub fn hash_api_key(key: &str) -> String {
    format!(
        "{API_KEY_HASH_PREFIX}{}",
        hex::encode(Sha256::digest(key.as_bytes()))
    )
}

/// The 32 bytes of a `sha256:<hex>` key hash, if it is one.
pub fn parse_api_key_hash(text: &str) -> Option<[u8; 32]> {
    let hex_part = text.strip_prefix(API_KEY_HASH_PREFIX)?;
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_part, &mut out).ok()?;
    Some(out)
}

/// The environment variable that overrides a tenant's API keys.
pub fn api_key_env_var(tenant: &str) -> String {
    let name: String = tenant
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("SESSIOND_API_KEY_{name}")
}

impl Config {
    /// Reads, parses, resolves and validates a config file, applying the
    /// process environment's overrides.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let origin = path.display().to_string();
        let base = path.parent().unwrap_or(Path::new("."));
        let mut config = Config::parse(&text, &origin, base)?;
        config.apply_env(&origin, std::env::vars())?;
        config.validate(&origin)?;
        Ok(config)
    }

    /// Parses TOML text (from `origin`, named in errors) and resolves relative
    /// plugin paths against `base_dir`. Neither applies the environment nor
    /// validates: see [`Config::apply_env`] and [`Config::validate`].
    pub fn parse(text: &str, origin: &str, base_dir: &Path) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            origin: origin.to_string(),
            message: e.to_string().trim_end().to_string(),
        })?;
        for tenant in config.tenants.values_mut() {
            for plugin in &mut tenant.plugins {
                if plugin.path.is_relative() {
                    plugin.path = base_dir.join(&plugin.path);
                }
            }
        }
        if config.runtime.cache_dir.is_none() {
            config.runtime.cache_dir = Some(PathBuf::from(defaults::CACHE_DIR));
        }
        Ok(config)
    }

    /// Applies the `SESSIOND_*` overrides found in `vars`.
    pub fn apply_env(
        &mut self,
        origin: &str,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(), ConfigError> {
        let vars: BTreeMap<String, String> = vars
            .into_iter()
            .filter(|(k, _)| k.starts_with("SESSIOND_"))
            .collect();
        let invalid = |field: &str, message: String| ConfigError::Invalid {
            origin: origin.to_string(),
            field: field.to_string(),
            message,
        };
        if let Some(listen) = vars.get("SESSIOND_LISTEN") {
            self.server.listen = listen.trim().to_string();
        }
        if let Some(urls) = vars.get("SESSIOND_REDIS_URL") {
            let urls: Vec<String> = urls
                .split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(String::from)
                .collect();
            if urls.is_empty() {
                return Err(invalid(
                    "SESSIOND_REDIS_URL",
                    "is set but names no URL".into(),
                ));
            }
            self.store.backend = Backend::Redis;
            self.store.urls = urls;
        }
        for (name, tenant) in &mut self.tenants {
            let var = api_key_env_var(name);
            if let Some(key) = vars.get(&var) {
                if key.is_empty() {
                    return Err(invalid(&var, "is set but empty".into()));
                }
                tenant.api_keys = vec![hash_api_key(key)];
            }
        }
        Ok(())
    }

    /// Checks everything TOML types cannot express.
    pub fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |field: String, message: String| {
            Err(ConfigError::Invalid {
                origin: origin.to_string(),
                field,
                message,
            })
        };
        if self.server.listen.parse::<SocketAddr>().is_err() {
            return invalid(
                "server.listen".into(),
                format!(
                    "{:?} is not a socket address like \"127.0.0.1:8080\"",
                    self.server.listen
                ),
            );
        }
        if self.server.max_body_bytes == 0 {
            return invalid("server.max_body_bytes".into(), "must be at least 1".into());
        }
        match self.store.backend {
            Backend::Memory if !self.store.urls.is_empty() => {
                return invalid(
                    "store.urls".into(),
                    "is only used with backend = \"redis\"".into(),
                );
            }
            Backend::Redis if self.store.urls.is_empty() => {
                return invalid(
                    "store.urls".into(),
                    "backend = \"redis\" needs at least one URL (or SESSIOND_REDIS_URL)".into(),
                );
            }
            _ => {}
        }
        for (i, url) in self.store.urls.iter().enumerate() {
            if !(url.starts_with("redis://")
                || url.starts_with("rediss://")
                || url.starts_with("redis+unix://")
                || url.starts_with("unix://"))
            {
                return invalid(
                    format!("store.urls[{i}]"),
                    format!("{url:?} is not a redis:// or rediss:// URL"),
                );
            }
        }
        if self.store.operation_timeout_ms == 0 {
            return invalid(
                "store.operation_timeout_ms".into(),
                "must be at least 1".into(),
            );
        }
        if self.sweeper.interval_ms == 0 {
            return invalid("sweeper.interval_ms".into(), "must be at least 1".into());
        }
        if self.sweeper.batch == 0 {
            return invalid("sweeper.batch".into(), "must be at least 1".into());
        }
        if self.ends.poll_interval_ms == 0 {
            return invalid("ends.poll_interval_ms".into(), "must be at least 1".into());
        }
        if self.ends.batch == 0 {
            return invalid("ends.batch".into(), "must be at least 1".into());
        }
        if self.ends.reclaim_after_ms < 1_000 {
            return invalid(
                "ends.reclaim_after_ms".into(),
                "must be at least 1000: a job still running must not be taken over".into(),
            );
        }
        if let Some(c) = &self.ends.consumer
            && (c.is_empty() || c.chars().any(|ch| ch.is_whitespace() || ch.is_control()))
        {
            return invalid(
                "ends.consumer".into(),
                format!("{c:?} must be non-empty, without spaces or control characters"),
            );
        }
        if self.tenants.is_empty() {
            return invalid(
                "tenants".into(),
                "no tenant is configured: add a [tenants.<name>] table".into(),
            );
        }
        let mut key_owner: BTreeMap<[u8; 32], &str> = BTreeMap::new();
        let mut unauthenticated_sessman: Option<&str> = None;
        for (name, t) in &self.tenants {
            let field = |key: &str| format!("tenants.{name}.{key}");
            if name.is_empty() || name.chars().any(char::is_control) {
                return invalid(
                    format!("tenants.{name:?}"),
                    "a tenant name must be non-empty and printable".into(),
                );
            }
            if t.api_keys.is_empty() {
                return invalid(
                    field("api_keys"),
                    format!(
                        "no API key: add a \"sha256:<hex>\" hash of a key, or set {}",
                        api_key_env_var(name)
                    ),
                );
            }
            for (i, key) in t.api_keys.iter().enumerate() {
                let Some(bytes) = parse_api_key_hash(key) else {
                    return invalid(
                        format!("tenants.{name}.api_keys[{i}]"),
                        "must be \"sha256:\" followed by the 64 hex digits of the SHA-256 \
                         of the key (e.g. `printf %s KEY | sha256sum`)"
                            .into(),
                    );
                };
                if let Some(other) = key_owner.insert(bytes, name)
                    && other != name
                {
                    return invalid(
                        format!("tenants.{name}.api_keys[{i}]"),
                        format!("the same key is also configured for tenant {other:?}"),
                    );
                }
            }
            if t.ttl_seconds == 0 {
                return invalid(field("ttl_seconds"), "must be at least 1".into());
            }
            if t.max_ttl_seconds < t.ttl_seconds {
                return invalid(
                    field("max_ttl_seconds"),
                    format!(
                        "{} is less than ttl_seconds ({})",
                        t.max_ttl_seconds, t.ttl_seconds
                    ),
                );
            }
            if t.idle_timeout_seconds == 0 {
                return invalid(field("idle_timeout_seconds"), "must be at least 1".into());
            }
            if t.max_sessions_per_user == Some(0) {
                return invalid(
                    field("max_sessions_per_user"),
                    "must be at least 1 (leave it out for no limit)".into(),
                );
            }
            if t.sessman.allow_unauthenticated {
                if !t.sessman.enabled {
                    return invalid(
                        field("sessman.allow_unauthenticated"),
                        "needs sessman.enabled = true".into(),
                    );
                }
                if let Some(other) = unauthenticated_sessman.replace(name) {
                    return invalid(
                        field("sessman.allow_unauthenticated"),
                        format!(
                            "tenant {other:?} already sets it: requests without a key \
                             can belong to one tenant only"
                        ),
                    );
                }
            }
            let mut names = BTreeSet::new();
            for (i, p) in t.plugins.iter().enumerate() {
                if p.name.trim().is_empty() {
                    return invalid(
                        format!("tenants.{name}.plugins[{i}].name"),
                        "must not be empty".into(),
                    );
                }
                if !names.insert(p.name.as_str()) {
                    return invalid(
                        format!("tenants.{name}.plugins[{i}].name"),
                        format!("plugin name {:?} is used twice in this tenant", p.name),
                    );
                }
            }
        }
        Ok(())
    }

    /// The address `server.listen` names (checked by [`Config::validate`]).
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.server
            .listen
            .parse()
            .map_err(|_| ConfigError::Invalid {
                origin: "config".into(),
                field: "server.listen".into(),
                message: format!("{:?} is not a socket address", self.server.listen),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_HASH: &str =
        "sha256:0000000000000000000000000000000000000000000000000000000000000000";

    fn parse(text: &str) -> Result<Config, ConfigError> {
        let mut config = Config::parse(text, "test.toml", Path::new("/etc/sessiond"))?;
        config.apply_env("test.toml", Vec::new())?;
        config.validate("test.toml")?;
        Ok(config)
    }

    fn minimal() -> String {
        format!("[tenants.demo]\napi_keys = [\"{KEY_HASH}\"]\n")
    }

    #[test]
    fn defaults_and_relative_plugin_paths() {
        let text = format!(
            "{}[[tenants.demo.plugins]]\nname = \"a\"\npath = \"plugins/a.wasm\"\n",
            minimal()
        );
        let config = parse(&text).unwrap();
        assert_eq!(config.server.listen, "127.0.0.1:8080");
        assert_eq!(config.server.max_body_bytes, 65536);
        assert_eq!(config.store.backend, Backend::Memory);
        assert_eq!(config.sweeper.interval_ms, 1000);
        assert_eq!(
            config.runtime.cache_dir.as_deref(),
            Some(Path::new(".cache/sessiond"))
        );
        let demo = &config.tenants["demo"];
        assert_eq!(demo.ttl_seconds, 3600);
        assert_eq!(demo.limit_policy, LimitPolicy::Deny);
        assert!(!demo.sessman.enabled);
        assert!(!demo.sessman.allow_unauthenticated);
        assert_eq!(
            demo.plugins[0].path,
            Path::new("/etc/sessiond/plugins/a.wasm")
        );
    }

    #[test]
    fn unknown_keys_name_file_line_and_column() {
        let err = parse(&format!("{}ttl_secs = 5\n", minimal()))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("test.toml: "), "{err}");
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("ttl_secs"), "{err}");
        let err = parse("[server]\nlisten = 5\n").unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn validation_names_the_field() {
        let cases = [
            (
                format!("{}ttl_seconds = 100\nmax_ttl_seconds = 10\n", minimal()),
                "tenants.demo.max_ttl_seconds",
            ),
            (
                "[tenants.demo]\napi_keys = [\"plain-key\"]\n".to_string(),
                "tenants.demo.api_keys[0]",
            ),
            (
                format!(
                    "{}[[tenants.demo.plugins]]\nname = \"a\"\npath = \"a.wasm\"\n\
                     [[tenants.demo.plugins]]\nname = \"a\"\npath = \"b.wasm\"\n",
                    minimal()
                ),
                "tenants.demo.plugins[1].name",
            ),
            (
                format!("[server]\nlisten = \"nowhere\"\n{}", minimal()),
                "server.listen",
            ),
            (
                format!("[store]\nbackend = \"redis\"\n{}", minimal()),
                "store.urls",
            ),
            (String::new(), "tenants"),
            (
                format!(
                    "{}[tenants.demo.sessman]\nallow_unauthenticated = true\n",
                    minimal()
                ),
                "tenants.demo.sessman.allow_unauthenticated",
            ),
            (
                format!(
                    "{}[tenants.demo.sessman]\nenabled = true\nallow_unauthenticated = true\n\
                     [tenants.other]\napi_keys = [\"sha256:{}\"]\n\
                     [tenants.other.sessman]\nenabled = true\nallow_unauthenticated = true\n",
                    minimal(),
                    "1".repeat(64)
                ),
                "tenants.other.sessman.allow_unauthenticated",
            ),
        ];
        for (text, field) in cases {
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.contains(field), "{field}: {err}");
        }
        let err = parse("[server]\ntrusted_proxies = [\"10.0.0.0/33\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("neither a CIDR"), "{err}");
    }

    #[test]
    fn sessman_without_a_key_for_one_tenant() {
        let config = parse(&format!(
            "{}[tenants.demo.sessman]\nenabled = true\nallow_unauthenticated = true\n\
             [tenants.other]\napi_keys = [\"sha256:{}\"]\n\
             [tenants.other.sessman]\nenabled = true\n",
            minimal(),
            "1".repeat(64)
        ))
        .unwrap();
        assert!(config.tenants["demo"].sessman.allow_unauthenticated);
        assert!(config.tenants["other"].sessman.enabled);
        assert!(!config.tenants["other"].sessman.allow_unauthenticated);
    }

    #[test]
    fn environment_overrides() {
        let mut config = Config::parse("[tenants.demo-eu]\n", "test.toml", Path::new(".")).unwrap();
        let vars = [
            ("SESSIOND_LISTEN", "0.0.0.0:9000"),
            ("SESSIOND_REDIS_URL", "redis://a:1, redis://b:2"),
            ("SESSIOND_API_KEY_DEMO_EU", "secret"),
            ("OTHER", "x"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        config.apply_env("test.toml", vars).unwrap();
        config.validate("test.toml").unwrap();
        assert_eq!(config.server.listen, "0.0.0.0:9000");
        assert_eq!(config.store.backend, Backend::Redis);
        assert_eq!(config.store.urls, ["redis://a:1", "redis://b:2"]);
        assert_eq!(config.tenants["demo-eu"].api_keys, [hash_api_key("secret")]);
        assert!(parse_api_key_hash(&hash_api_key("secret")).is_some());
    }

    #[test]
    fn proxies_accept_cidrs_and_addresses() {
        let config = parse(&format!(
            "[server]\ntrusted_proxies = [\"10.1.2.3/8\", \"::1\", \"192.168.0.7\"]\n{}",
            minimal()
        ))
        .unwrap();
        let nets: Vec<String> = config
            .server
            .trusted_proxies
            .iter()
            .map(|n| n.0.to_string())
            .collect();
        assert_eq!(nets, ["10.0.0.0/8", "::1/128", "192.168.0.7/32"]);
    }
}
