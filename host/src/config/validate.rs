//! Validation of a parsed config: everything TOML types cannot express. The
//! first problem found is the error, and its message names the offending key
//! (`tenants.demo.api_keys[0]`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use super::env::api_key_env_var;
use super::schema::parse_api_key_hash;
use super::store::{RedisStoreConfig, StoreConfig};
use super::{Config, ConfigError};

/// A problem with one key; the caller adds the origin.
struct Invalid {
    field: String,
    message: String,
}

type Checked = Result<(), Invalid>;

fn invalid(field: impl Into<String>, message: impl Into<String>) -> Checked {
    Err(Invalid {
        field: field.into(),
        message: message.into(),
    })
}

/// Checks the whole config read from `origin`.
pub(super) fn check(config: &Config, origin: &str) -> Result<(), ConfigError> {
    server(config)
        .and_then(|()| store(config))
        .and_then(|()| workers(config))
        .and_then(|()| tenants(config))
        .and_then(|()| super::quota::check(config).or_else(|(field, why)| invalid(field, why)))
        .and_then(|()| super::operator::check(config).or_else(|(field, why)| invalid(field, why)))
        .and_then(|()| {
            super::metrics::check(&config.metrics)
                .or_else(|(field, message)| invalid(field, message))
        })
        .and_then(|()| {
            config
                .log
                .check()
                .or_else(|(key, message)| invalid(format!("log.{key}"), message))
        })
        .map_err(|Invalid { field, message }| ConfigError::Invalid {
            origin: origin.to_string(),
            field,
            message,
        })
}

fn server(config: &Config) -> Checked {
    if config.server.listen.parse::<SocketAddr>().is_err() {
        return invalid(
            "server.listen",
            format!(
                "{:?} is not a socket address like \"127.0.0.1:8080\"",
                config.server.listen
            ),
        );
    }
    let server = &config.server;
    let at_least_one = [
        ("server.max_body_bytes", server.max_body_bytes as u64),
        (
            "server.header_read_timeout_ms",
            server.header_read_timeout_ms,
        ),
        ("server.body_read_timeout_ms", server.body_read_timeout_ms),
        ("server.max_connections", server.max_connections as u64),
        (
            "server.max_connections_per_client",
            server.max_connections_per_client as u64,
        ),
        (
            "server.idempotency_ttl_seconds",
            server.idempotency_ttl_seconds,
        ),
    ];
    for (field, value) in at_least_one {
        if value == 0 {
            return invalid(field, "must be at least 1");
        }
    }
    let max_ttl = super::defaults::MAX_IDEMPOTENCY_TTL_SECONDS;
    if server.idempotency_ttl_seconds > max_ttl {
        return invalid(
            "server.idempotency_ttl_seconds",
            format!("must be at most {max_ttl} (30 days)"),
        );
    }
    Ok(())
}

/// The shortest Redis grace period accepted, in seconds.
pub const MIN_GRACE_SECONDS: u64 = 60;

/// The shortest grace period for these workers: a session key must outlive
/// its deadline long enough for some host's sweeper to take it (several
/// sweeps), even while the host holding the job is presumed dead
/// (`ends.reclaim_after_ms`), and never less than [`MIN_GRACE_SECONDS`].
pub fn min_grace_ms(config: &Config) -> u64 {
    (config.sweeper.interval_ms.saturating_mul(10))
        .saturating_add(config.ends.reclaim_after_ms)
        .max(MIN_GRACE_SECONDS * 1000)
}

fn store(config: &Config) -> Checked {
    // The memory store has nothing to check; a key of another backend under
    // any backend is already a parse error.
    match &config.store {
        StoreConfig::Memory(_) => Ok(()),
        StoreConfig::Embedded(embedded) if embedded.path.as_os_str().is_empty() => invalid(
            "store.path",
            "backend = \"embedded\" needs the path of its data directory (or SESSIOND_DATA_DIR)",
        ),
        StoreConfig::Embedded(_) => Ok(()),
        StoreConfig::Redis(redis) => redis_store(config, redis),
    }
}

fn redis_store(config: &Config, redis: &RedisStoreConfig) -> Checked {
    if redis.urls.is_empty() {
        return invalid(
            "store.urls",
            "backend = \"redis\" needs at least one URL (or SESSIOND_REDIS_URL)",
        );
    }
    for (i, url) in redis.urls.iter().enumerate() {
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
    if redis.operation_timeout_ms == 0 {
        return invalid("store.operation_timeout_ms", "must be at least 1");
    }
    let min_ms = min_grace_ms(config);
    if redis.grace_seconds.saturating_mul(1000) < min_ms {
        return invalid(
            "store.grace_seconds",
            format!(
                "{} is too short: at least {} s (ten sweeper intervals plus \
                 ends.reclaim_after_ms, and never under {MIN_GRACE_SECONDS} s). Redis drops a \
                 session key this long after its deadline; a session whose key goes before \
                 a sweeper took it ends without its end hooks, so the grace period is also \
                 the longest outage of every host that loses none",
                redis.grace_seconds,
                min_ms.div_ceil(1000)
            ),
        );
    }
    Ok(())
}

/// `[sweeper]`, `[ends]` and `[webhooks]`.
fn workers(config: &Config) -> Checked {
    let (sweeper, ends) = (&config.sweeper, &config.ends);
    if sweeper.interval_ms == 0 {
        return invalid("sweeper.interval_ms", "must be at least 1");
    }
    if sweeper.batch == 0 {
        return invalid("sweeper.batch", "must be at least 1");
    }
    if ends.poll_interval_ms == 0 {
        return invalid("ends.poll_interval_ms", "must be at least 1");
    }
    if ends.batch == 0 {
        return invalid("ends.batch", "must be at least 1");
    }
    if ends.max_concurrent_per_tenant == 0 {
        return invalid("ends.max_concurrent_per_tenant", "must be at least 1");
    }
    if ends.reclaim_after_ms < 1_000 {
        return invalid(
            "ends.reclaim_after_ms",
            "must be at least 1000: a job still running must not be taken over",
        );
    }
    if ends.max_deliveries == 0 {
        return invalid("ends.max_deliveries", "must be at least 1");
    }
    if let Err((key, message)) = config.webhooks.check() {
        return invalid(format!("webhooks.{key}"), message);
    }
    if let Some(c) = &ends.consumer
        && (c.is_empty() || c.chars().any(|ch| ch.is_whitespace() || ch.is_control()))
    {
        return invalid(
            "ends.consumer",
            format!("{c:?} must be non-empty, without spaces or control characters"),
        );
    }
    Ok(())
}

fn tenants(config: &Config) -> Checked {
    if config.tenants.is_empty() && config.operator.api_keys.is_empty() {
        return invalid(
            "tenants",
            "no tenant is configured: add a [tenants.<name>] table, or an operator key \
             ([operator] api_keys, SESSIOND_OPERATOR_KEY) to create tenants through the \
             operator API",
        );
    }
    let mut key_owner: BTreeMap<[u8; 32], &str> = BTreeMap::new();
    let mut unauthenticated_sessman: Option<&str> = None;
    for (name, t) in &config.tenants {
        let field = |key: &str| format!("tenants.{name}.{key}");
        if name.is_empty() || name.chars().any(char::is_control) {
            return invalid(
                format!("tenants.{name:?}"),
                "a tenant name must be non-empty and printable",
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
                     of the key (e.g. `printf %s KEY | sha256sum`)",
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
            return invalid(field("ttl_seconds"), "must be at least 1");
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
            return invalid(field("idle_timeout_seconds"), "must be at least 1");
        }
        if t.max_sessions_per_user == Some(0) {
            return invalid(
                field("max_sessions_per_user"),
                "must be at least 1 (leave it out for no limit)",
            );
        }
        if t.sessman.allow_unauthenticated {
            if !t.sessman.enabled {
                return invalid(
                    field("sessman.allow_unauthenticated"),
                    "needs sessman.enabled = true",
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
        if let Some(warning) = t.idle_warning_seconds
            && (warning == 0 || warning >= t.idle_timeout_seconds)
        {
            return invalid(
                field("idle_warning_seconds"),
                format!(
                    "{warning} must be at least 1 and less than idle_timeout_seconds ({})",
                    t.idle_timeout_seconds
                ),
            );
        }
        for (i, hook) in t.webhooks.iter().enumerate() {
            if let Err((key, message)) = hook.check() {
                return invalid(format!("tenants.{name}.webhooks[{i}].{key}"), message);
            }
        }
        for (i, origin) in t.cors_origins.iter().enumerate() {
            if let Err(message) = check_origin(origin) {
                return invalid(format!("tenants.{name}.cors_origins[{i}]"), message);
            }
        }
        let mut names = BTreeSet::new();
        for (i, p) in t.plugins.iter().enumerate() {
            if p.name.trim().is_empty() {
                return invalid(
                    format!("tenants.{name}.plugins[{i}].name"),
                    "must not be empty",
                );
            }
            if !names.insert(p.name.as_str()) {
                return invalid(
                    format!("tenants.{name}.plugins[{i}].name"),
                    format!("plugin name {:?} is used twice in this tenant", p.name),
                );
            }
            if let Err((key, message)) = p.circuit.check() {
                return invalid(
                    format!("tenants.{name}.plugins[{i}].circuit.{key}"),
                    message,
                );
            }
        }
    }
    Ok(())
}

/// Checks one entry of `cors_origins`: `"*"`, or an origin as browsers send
/// it: `http://` or `https://`, a lowercase host, an optional port, and
/// nothing after.
pub fn check_origin(entry: &str) -> Result<(), String> {
    if entry == "*" {
        return Ok(());
    }
    let Some(rest) = entry
        .strip_prefix("https://")
        .or_else(|| entry.strip_prefix("http://"))
    else {
        return Err(format!(
            "{entry:?} must start with https:// or http:// (or be \"*\" for any origin)"
        ));
    };
    if rest.ends_with('/') {
        return Err(format!(
            "{entry:?} ends with '/': an origin has no path; write {:?}",
            entry.trim_end_matches('/')
        ));
    }
    if rest.contains(['/', '?', '#', '@']) || rest.chars().any(|c| c.is_whitespace()) {
        return Err(format!(
            "{entry:?} is not an origin: scheme, host and port only"
        ));
    }
    if rest.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(format!(
            "{entry:?} has capitals: browsers send origins in lowercase; write {:?}",
            entry.to_ascii_lowercase()
        ));
    }
    let (host, port) = match rest.rsplit_once(':') {
        // An IPv6 literal's colons sit inside its brackets.
        Some((h, p)) if !p.contains(']') => (h, Some(p)),
        _ => (rest, None),
    };
    if host.is_empty() {
        return Err(format!("{entry:?} has no host"));
    }
    if let Some(port) = port
        && port.parse::<u16>().is_err()
    {
        return Err(format!("{entry:?} has a bad port {port:?}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{minimal, parse};
    use super::check_origin;

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
                format!(
                    "{}[[tenants.demo.plugins]]\nname = \"a\"\npath = \"a.wasm\"\n\
                     circuit = {{ open_ms = 5000, max_open_ms = 1000 }}\n",
                    minimal()
                ),
                "tenants.demo.plugins[0].circuit.max_open_ms",
            ),
            (
                format!("[server]\nlisten = \"nowhere\"\n{}", minimal()),
                "server.listen",
            ),
            (
                format!("[store]\nbackend = \"redis\"\n{}", minimal()),
                "store.urls",
            ),
            (
                format!(
                    "[store]\nbackend = \"embedded\"\npath = \"\"\n{}",
                    minimal()
                ),
                "store.path",
            ),
            (String::new(), "tenants"),
            (
                format!(
                    "{}cors_origins = [\"https://app.example\", \"https://app.example/\"]\n",
                    minimal()
                ),
                "tenants.demo.cors_origins[1]",
            ),
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
    fn http_limits_must_be_at_least_one() {
        for key in [
            "max_body_bytes",
            "header_read_timeout_ms",
            "body_read_timeout_ms",
            "max_connections",
            "max_connections_per_client",
            "idempotency_ttl_seconds",
        ] {
            let err = parse(&format!("[server]\n{key} = 0\n{}", minimal()))
                .unwrap_err()
                .to_string();
            assert!(err.contains(&format!("server.{key}")), "{key}: {err}");
        }
        let err = parse(&format!(
            "[server]\nidempotency_ttl_seconds = 2592001\n{}",
            minimal()
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("server.idempotency_ttl_seconds"), "{err}");
        // No time to finish requests in flight: connections close at once.
        let config = parse(&format!("[server]\nshutdown_timeout_ms = 0\n{}", minimal())).unwrap();
        assert_eq!(config.server.shutdown_timeout_ms, 0);
    }

    #[test]
    fn the_grace_period_outlasts_sweeps_and_reclaims() {
        let redis = "[store]\nbackend = \"redis\"\nurls = [\"redis://a:1\"]\n";
        let with = |grace: u64, reclaim_ms: u64| {
            parse(&format!(
                "{redis}grace_seconds = {grace}\n[ends]\nreclaim_after_ms = {reclaim_ms}\n{}",
                minimal()
            ))
        };
        assert!(with(60, 30_000).is_ok());
        let err = with(100, 120_000).unwrap_err().to_string();
        assert!(err.contains("store.grace_seconds"), "{err}");
        assert!(err.contains("at least 130 s"), "{err}");
        assert!(with(130, 120_000).is_ok());
    }

    #[test]
    fn redis_urls_and_timeout_are_checked() {
        let redis = "[store]\nbackend = \"redis\"\n";
        let cases = [
            ("urls = [\"http://a:1\"]\n", "store.urls[0]"),
            ("urls = [\"redis://a:1\", \"redis:a\"]\n", "store.urls[1]"),
            (
                "urls = [\"redis://a:1\"]\noperation_timeout_ms = 0\n",
                "store.operation_timeout_ms",
            ),
            (
                "urls = [\"redis://a:1\"]\ngrace_seconds = 0\n",
                "store.grace_seconds",
            ),
            (
                "urls = [\"redis://a:1\"]\ngrace_seconds = 59\n",
                "store.grace_seconds",
            ),
        ];
        for (keys, field) in cases {
            let err = parse(&format!("{redis}{keys}{}", minimal()))
                .unwrap_err()
                .to_string();
            assert!(err.contains(field), "{field}: {err}");
        }
        for url in [
            "redis://a:1",
            "rediss://a:1",
            "redis+unix:///s",
            "unix:///s",
        ] {
            parse(&format!("{redis}urls = [\"{url}\"]\n{}", minimal())).unwrap();
        }
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
    fn origins_are_checked() {
        for good in [
            "*",
            "https://app.example",
            "http://localhost:3000",
            "https://[::1]:8443",
            "http://[::1]",
        ] {
            assert_eq!(check_origin(good), Ok(()), "{good}");
        }
        for (bad, says) in [
            ("app.example", "must start with https://"),
            ("https://app.example/", "has no path"),
            ("https://app.example/login", "scheme, host and port only"),
            ("https://App.Example", "write \"https://app.example\""),
            ("https://", "has no host"),
            ("https://app.example:99999", "bad port"),
            ("ftp://app.example", "must start with"),
        ] {
            let err = check_origin(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
