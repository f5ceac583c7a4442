//! The `SESSIOND_*` environment overrides (listed in the module doc of
//! [`super`]), applied after parsing and before validation.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use super::schema::hash_api_key;
use super::store::{EmbeddedStoreConfig, RedisStoreConfig, StoreConfig};
use super::{Config, ConfigError};

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

/// Applies the overrides found in `vars` to `config`.
pub(super) fn apply(
    config: &mut Config,
    origin: &str,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    let all: HashMap<String, String> = vars.into_iter().collect();
    let vars: BTreeMap<String, String> = all
        .iter()
        .filter(|(k, _)| k.starts_with("SESSIOND_"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let invalid = |field: &str, message: String| ConfigError::Invalid {
        origin: origin.to_string(),
        field: field.to_string(),
        message,
    };
    if let Some(listen) = vars.get("SESSIOND_LISTEN") {
        config.server.listen = listen.trim().to_string();
    }
    if vars.contains_key("SESSIOND_REDIS_URL") && vars.contains_key("SESSIOND_DATA_DIR") {
        return Err(invalid(
            "SESSIOND_DATA_DIR",
            "is set with SESSIOND_REDIS_URL: each chooses a store backend; set one".into(),
        ));
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
        if let StoreConfig::Redis(redis) = &mut config.store {
            redis.urls = urls;
        } else {
            // The settings Redis shares with the other backend carry over.
            config.store = StoreConfig::Redis(RedisStoreConfig {
                urls,
                audit_max_len: config.store.audit_max_len(),
                ..RedisStoreConfig::default()
            });
        }
    }
    if let Some(dir) = vars.get("SESSIOND_DATA_DIR") {
        if dir.is_empty() {
            return Err(invalid("SESSIOND_DATA_DIR", "is set but empty".into()));
        }
        let path = PathBuf::from(dir);
        if let StoreConfig::Embedded(embedded) = &mut config.store {
            embedded.path = path;
        } else {
            config.store = StoreConfig::Embedded(EmbeddedStoreConfig {
                path,
                audit_max_len: config.store.audit_max_len(),
                ..EmbeddedStoreConfig::default()
            });
        }
    }
    if let Some(key) = vars.get("SESSIOND_OPERATOR_KEY") {
        if key.is_empty() {
            return Err(invalid("SESSIOND_OPERATOR_KEY", "is set but empty".into()));
        }
        config.operator.api_keys = vec![hash_api_key(key)];
    }
    for (name, tenant) in &mut config.tenants {
        let var = api_key_env_var(name);
        if let Some(key) = vars.get(&var) {
            if key.is_empty() {
                return Err(invalid(&var, "is set but empty".into()));
            }
            tenant.api_keys = vec![hash_api_key(key)];
        }
        for (i, hook) in tenant.webhooks.iter_mut().enumerate() {
            hook.resolve_secret(&all).map_err(|(key, message)| {
                invalid(&format!("tenants.{name}.webhooks[{i}].{key}"), message)
            })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::parse_api_key_hash;
    use crate::store::embedded::Durability;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn environment_overrides() {
        let mut config = Config::parse("[tenants.demo-eu]\n", "test.toml", Path::new(".")).unwrap();
        let vars = vars(&[
            ("SESSIOND_LISTEN", "0.0.0.0:9000"),
            ("SESSIOND_REDIS_URL", "redis://a:1, redis://b:2"),
            ("SESSIOND_API_KEY_DEMO_EU", "secret"),
            ("OTHER", "x"),
        ]);
        config.apply_env("test.toml", vars).unwrap();
        config.validate("test.toml").unwrap();
        assert_eq!(config.server.listen, "0.0.0.0:9000");
        let StoreConfig::Redis(redis) = &config.store else {
            panic!(
                "SESSIOND_REDIS_URL did not switch to Redis: {:?}",
                config.store
            );
        };
        assert_eq!(redis.urls, ["redis://a:1", "redis://b:2"]);
        assert_eq!(config.tenants["demo-eu"].api_keys, [hash_api_key("secret")]);
        assert!(parse_api_key_hash(&hash_api_key("secret")).is_some());
    }

    #[test]
    fn redis_url_keeps_or_carries_over_the_store_settings() {
        let url = vars(&[("SESSIOND_REDIS_URL", "redis://c:3")]);
        let mut config =
            Config::parse("[store]\naudit_max_len = 9\n", "test.toml", Path::new(".")).unwrap();
        config.apply_env("test.toml", url.clone()).unwrap();
        let expected = RedisStoreConfig {
            urls: vec!["redis://c:3".into()],
            audit_max_len: 9,
            ..RedisStoreConfig::default()
        };
        assert_eq!(config.store, StoreConfig::Redis(expected));

        let text = "[store]\nbackend = \"redis\"\nurls = [\"redis://a:1\"]\nprefix = \"p\"\n";
        let mut config = Config::parse(text, "test.toml", Path::new(".")).unwrap();
        config.apply_env("test.toml", url).unwrap();
        let StoreConfig::Redis(redis) = &config.store else {
            panic!("{:?}", config.store);
        };
        assert_eq!(redis.urls, ["redis://c:3"]);
        assert_eq!(redis.prefix, "p");

        let err = Config::default()
            .apply_env("test.toml", vars(&[("SESSIOND_REDIS_URL", " , ")]))
            .unwrap_err();
        assert!(err.to_string().contains("SESSIOND_REDIS_URL"), "{err}");

        let text = "[store]\nbackend = \"embedded\"\naudit_max_len = 8\n";
        let mut config = Config::parse(text, "test.toml", Path::new(".")).unwrap();
        config
            .apply_env("test.toml", vars(&[("SESSIOND_REDIS_URL", "redis://c:3")]))
            .unwrap();
        let expected = RedisStoreConfig {
            urls: vec!["redis://c:3".into()],
            audit_max_len: 8,
            ..RedisStoreConfig::default()
        };
        assert_eq!(config.store, StoreConfig::Redis(expected));
    }

    #[test]
    fn data_dir_sets_or_switches_to_the_embedded_store() {
        let dir = vars(&[("SESSIOND_DATA_DIR", "/srv/sessiond")]);
        let expected = |audit_max_len| {
            StoreConfig::Embedded(EmbeddedStoreConfig {
                path: "/srv/sessiond".into(),
                audit_max_len,
                ..EmbeddedStoreConfig::default()
            })
        };
        for (text, audit_max_len) in [
            ("[store]\naudit_max_len = 9\n", 9),
            (
                "[store]\nbackend = \"redis\"\nurls = [\"redis://a:1\"]\naudit_max_len = 6\n",
                6,
            ),
        ] {
            let mut config = Config::parse(text, "test.toml", Path::new(".")).unwrap();
            config.apply_env("test.toml", dir.clone()).unwrap();
            assert_eq!(config.store, expected(audit_max_len), "{text}");
        }

        let text = "[store]\nbackend = \"embedded\"\ndurability = \"off\"\n";
        let mut config = Config::parse(text, "test.toml", Path::new("/etc")).unwrap();
        config.apply_env("test.toml", dir.clone()).unwrap();
        let StoreConfig::Embedded(embedded) = &config.store else {
            panic!("{:?}", config.store);
        };
        assert_eq!(embedded.path, Path::new("/srv/sessiond"));
        assert_eq!(embedded.durability, Durability::Off);

        for vars in [
            vars(&[("SESSIOND_DATA_DIR", "")]),
            vars(&[
                ("SESSIOND_DATA_DIR", "/srv/sessiond"),
                ("SESSIOND_REDIS_URL", "redis://a:1"),
            ]),
        ] {
            let err = Config::default().apply_env("test.toml", vars).unwrap_err();
            assert!(err.to_string().contains("SESSIOND_DATA_DIR"), "{err}");
        }
    }
}
