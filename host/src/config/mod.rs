//! The host configuration: one TOML file (`sessiond.toml` by default).
//!
//! Every table rejects unknown keys, so a typo fails startup with the TOML
//! error (line and column) and the file name instead of being ignored. The
//! tables are in [`schema`] and, for `[store]` (a choice of backend, each with
//! its own keys), [`store`]. Every default is in [`defaults`] (the runtime's
//! come from its own module). After parsing, relative plugin paths and the
//! embedded store's relative `store.path` are resolved against the config
//! file's directory, the environment overrides are applied ([`env`]) and the
//! whole config is validated ([`validate`]), each message naming the
//! offending key.
//!
//! Environment overrides:
//! - `SESSIOND_LISTEN`: `server.listen`;
//! - `SESSIOND_REDIS_URL`: comma-separated Redis URLs; sets `store.urls`,
//!   switching another backend to `backend = "redis"` with the default Redis
//!   settings (its `audit_max_len` carries over);
//! - `SESSIOND_DATA_DIR`: the embedded store's data directory (relative to the
//!   working directory); sets `store.path`, switching another backend to
//!   `backend = "embedded"` with the default embedded settings (its
//!   `audit_max_len` carries over). Setting it and `SESSIOND_REDIS_URL` is an
//!   error;
//! - `SESSIOND_API_KEY_<TENANT>`: one plain API key for the tenant, hashed at
//!   startup; it replaces the tenant's `api_keys`. `<TENANT>` is the tenant's
//!   name upper-cased with every character other than `A-Z` and `0-9` turned
//!   into `_` (`demo-eu` reads `SESSIOND_API_KEY_DEMO_EU`);
//! - `SESSIOND_OPERATOR_KEY`: one plain operator key, hashed at startup; it
//!   replaces `operator.api_keys`;
//! - the variable a webhook's `secret_env` names: that webhook's signing
//!   secret.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::runtime::EngineSettings;

pub mod defaults;
mod env;
mod log;
mod metrics;
mod operator;
pub mod quota;
mod schema;
mod store;
mod validate;
mod webhooks;

pub use env::api_key_env_var;
pub use log::{LogConfig, LogFormat, OtlpConfig};
pub use metrics::MetricsConfig;
pub use operator::OperatorConfig;
pub use quota::{Shares, TenantQuota};
pub use schema::{
    API_KEY_HASH_PREFIX, EndsConfig, ProxyNet, ServerConfig, SessmanConfig, SweeperConfig,
    TenantConfig, hash_api_key, parse_api_key_hash,
};
pub use store::{EmbeddedStoreConfig, MemoryStoreConfig, RedisStoreConfig, StoreConfig};
pub use validate::check_origin;
pub use webhooks::{WebhookConfig, WebhookEvent, WebhooksConfig, secret_key};

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
    /// Access to `GET /metrics`.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// How webhook deliveries are sent.
    #[serde(default)]
    pub webhooks: WebhooksConfig,
    /// What is logged, and how.
    #[serde(default)]
    pub log: LogConfig,
    /// The hosting operator's keys (the operator API).
    #[serde(default)]
    pub operator: OperatorConfig,
    /// Tenants by name.
    #[serde(default)]
    pub tenants: BTreeMap<String, TenantConfig>,
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
    /// plugin paths and data directory against `base_dir`. Neither applies
    /// the environment nor validates: see [`Config::apply_env`] and
    /// [`Config::validate`].
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
        // An empty path stays empty, for validation to refuse.
        if let StoreConfig::Embedded(embedded) = &mut config.store
            && embedded.path.is_relative()
            && !embedded.path.as_os_str().is_empty()
        {
            embedded.path = base_dir.join(&embedded.path);
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
        env::apply(self, origin, vars)
    }

    /// Checks everything TOML types cannot express.
    pub fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        validate::check(self, origin)
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

/// What the unit tests of every config module share.
#[cfg(test)]
mod test_support {
    use std::path::Path;

    use super::{Config, ConfigError};

    pub const KEY_HASH: &str =
        "sha256:0000000000000000000000000000000000000000000000000000000000000000";

    /// Parses, applies an empty environment and validates, as from
    /// `/etc/sessiond/test.toml`.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let mut config = Config::parse(text, "test.toml", Path::new("/etc/sessiond"))?;
        config.apply_env("test.toml", Vec::new())?;
        config.validate("test.toml")?;
        Ok(config)
    }

    /// The smallest valid config.
    pub fn minimal() -> String {
        format!("[tenants.demo]\napi_keys = [\"{KEY_HASH}\"]\n")
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::test_support::{minimal, parse};
    use super::*;
    use crate::store::LimitPolicy;

    #[test]
    fn defaults_and_relative_plugin_paths() {
        let text = format!(
            "{}[[tenants.demo.plugins]]\nname = \"a\"\npath = \"plugins/a.wasm\"\n",
            minimal()
        );
        let config = parse(&text).unwrap();
        assert_eq!(config.server.listen, "127.0.0.1:8080");
        assert_eq!(config.server.max_body_bytes, 65536);
        assert_eq!(config.server.header_read_timeout_ms, 30_000);
        assert_eq!(config.server.body_read_timeout_ms, 30_000);
        assert_eq!(config.server.max_connections, 768);
        assert_eq!(config.server.max_connections_per_client, 512);
        assert_eq!(config.server.shutdown_timeout_ms, 10_000);
        assert!(
            matches!(config.store, StoreConfig::Memory(_)),
            "{:?}",
            config.store
        );
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
    fn the_data_directory_is_relative_to_the_config_file() {
        let embedded = |text: &str, base: &str| {
            let config = Config::parse(text, "test.toml", Path::new(base)).unwrap();
            match config.store {
                StoreConfig::Embedded(embedded) => embedded.path,
                other => panic!("{other:?}"),
            }
        };
        let text = "[store]\nbackend = \"embedded\"\n";
        assert_eq!(
            embedded(text, "/etc/sessiond"),
            Path::new("/etc/sessiond/data")
        );
        // `--config sessiond.toml`: the file's directory is the working one.
        assert_eq!(embedded(text, ""), Path::new("data"));
        let text = "[store]\nbackend = \"embedded\"\npath = \"/srv/sessiond\"\n";
        assert_eq!(embedded(text, "/etc/sessiond"), Path::new("/srv/sessiond"));
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
}
