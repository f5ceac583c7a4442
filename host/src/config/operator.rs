//! `[operator]`: the hosting operator's keys. They open the operator API
//! under `/admin/v1/` (and the console's view of every tenant), and
//! nothing else: an operator key is no tenant's key, and a tenant's key
//! gets 403 there.

use serde::{Deserialize, Serialize};

use super::Config;
use super::schema::parse_api_key_hash;

/// `[operator]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OperatorConfig {
    /// SHA-256 hashes of the operator's keys (`sha256:<64 hex digits>`,
    /// from `printf %s KEY | sha256sum`). `SESSIOND_OPERATOR_KEY`, when
    /// set, replaces them with the hash of the key it holds. None: the
    /// operator API answers 401 to everyone.
    pub api_keys: Vec<String>,
    /// The largest component the operator API takes, in bytes.
    pub max_component_bytes: usize,
    /// Components a tenant of the operator API may keep.
    pub max_components_per_tenant: usize,
    /// How often each host reads the control revision, in milliseconds: a
    /// change made through another host is in effect here at most this
    /// long (plus the time to load its plugins) after it is written. On
    /// Redis a published notice usually brings it sooner.
    pub poll_ms: u64,
}

impl Default for OperatorConfig {
    fn default() -> Self {
        OperatorConfig {
            api_keys: Vec::new(),
            max_component_bytes: 64 << 20,
            max_components_per_tenant: 16,
            poll_ms: 500,
        }
    }
}

impl OperatorConfig {
    /// The keys' hashes (the valid ones: see [`check`]).
    pub fn key_hashes(&self) -> Vec<[u8; 32]> {
        self.api_keys
            .iter()
            .filter_map(|k| parse_api_key_hash(k))
            .collect()
    }
}

/// The offending key and what is wrong with it: a key that is not a hash,
/// or one that is also a tenant's.
pub(super) fn check(config: &Config) -> Result<(), (String, String)> {
    let o = &config.operator;
    if o.max_component_bytes == 0 {
        return Err((
            "operator.max_component_bytes".into(),
            "must be at least 1".into(),
        ));
    }
    if o.max_components_per_tenant == 0 {
        return Err((
            "operator.max_components_per_tenant".into(),
            "must be at least 1".into(),
        ));
    }
    if !(10..=60_000).contains(&o.poll_ms) {
        return Err((
            "operator.poll_ms".into(),
            format!("{} must be between 10 and 60000", o.poll_ms),
        ));
    }
    for (i, key) in config.operator.api_keys.iter().enumerate() {
        let field = format!("operator.api_keys[{i}]");
        let Some(hash) = parse_api_key_hash(key) else {
            return Err((
                field,
                "must be \"sha256:\" followed by the 64 hex digits of the SHA-256 of the key \
                 (e.g. `printf %s KEY | sha256sum`)"
                    .into(),
            ));
        };
        for (tenant, t) in &config.tenants {
            if t.api_keys
                .iter()
                .any(|k| parse_api_key_hash(k) == Some(hash))
            {
                return Err((
                    field,
                    format!(
                        "is also an API key of tenant {tenant:?}; operator keys and tenant keys \
                         must differ"
                    ),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::schema::hash_api_key;
    use super::super::test_support::{minimal, parse};

    #[test]
    fn operator_keys_are_hashes_and_no_tenants() {
        let config = parse(&format!(
            "[operator]\napi_keys = [\"{}\"]\n{}",
            hash_api_key("op-key"),
            minimal()
        ))
        .unwrap();
        assert_eq!(config.operator.key_hashes().len(), 1);
        let err = parse(&format!(
            "[operator]\napi_keys = [\"op-key\"]\n{}",
            minimal()
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("operator.api_keys[0]"), "{err}");
        let tenant_key = minimal()
            .lines()
            .find_map(|l| l.strip_prefix("api_keys = [\"")?.strip_suffix("\"]"))
            .expect("the minimal config has a tenant key")
            .to_string();
        let err = parse(&format!(
            "[operator]\napi_keys = [\"{tenant_key}\"]\n{}",
            minimal()
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("operator.api_keys[0]") && err.contains("also an API key of tenant"),
            "{err}"
        );
    }
}
