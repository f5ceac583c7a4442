//! `[metrics]`: who may read `GET /metrics`. Metrics name tenants and
//! plugins, so the endpoint has an access setting of its own, apart from
//! the tenants' API keys: by default it answers loopback clients only.

use serde::{Deserialize, Serialize};

use super::schema::{ProxyNet, parse_api_key_hash};

/// `[metrics]`: the Prometheus endpoint `GET /metrics`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Count and serve `GET /metrics`. When off, it is 404 like any
    /// unknown route, and nothing is counted: no request, store or plugin
    /// metrics (the `store` spans go with the store metrics).
    pub enabled: bool,
    /// The client addresses that may scrape: CIDRs or single addresses. The
    /// client's address is the one the API sees (behind a trusted proxy,
    /// from `X-Forwarded-For`; see `server.trusted_proxies`). Others get
    /// 403.
    pub allow: Vec<ProxyNet>,
    /// When set, a scrape must also send `Authorization: Bearer <token>`
    /// whose SHA-256 this is (`sha256:<64 hex digits>`); others get 401.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bearer_token_sha256: Option<String>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: true,
            allow: super::defaults::METRICS_ALLOW
                .iter()
                .map(|net| ProxyNet::try_from(net.to_string()).expect("a valid default network"))
                .collect(),
            bearer_token_sha256: None,
        }
    }
}

impl MetricsConfig {
    /// The 32 bytes of `bearer_token_sha256`, if set (and valid: see
    /// [`check`]).
    pub fn token_hash(&self) -> Option<[u8; 32]> {
        self.bearer_token_sha256
            .as_deref()
            .and_then(parse_api_key_hash)
    }
}

/// The offending key and what is wrong with it.
pub(super) fn check(metrics: &MetricsConfig) -> Result<(), (&'static str, String)> {
    if let Some(hash) = &metrics.bearer_token_sha256
        && parse_api_key_hash(hash).is_none()
    {
        return Err((
            "metrics.bearer_token_sha256",
            format!(
                "{hash:?} is not \"sha256:\" followed by the 64 hex digits of the token's SHA-256"
            ),
        ));
    }
    if metrics.enabled && metrics.allow.is_empty() {
        return Err((
            "metrics.allow",
            "is empty, so no client could scrape: list the scrapers' networks \
             (\"0.0.0.0/0\" and \"::/0\" for any address) or set enabled = false"
                .into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{KEY_HASH, minimal, parse};

    #[test]
    fn loopback_only_by_default() {
        let config = parse(&minimal()).unwrap();
        assert!(config.metrics.enabled);
        let nets: Vec<String> = config
            .metrics
            .allow
            .iter()
            .map(|n| n.0.to_string())
            .collect();
        assert_eq!(nets, ["127.0.0.0/8", "::1/128"]);
        assert_eq!(config.metrics.token_hash(), None);
    }

    #[test]
    fn settings_are_checked_by_name() {
        let with = |table: &str| parse(&format!("[metrics]\n{table}\n{}", minimal()));
        let config = with(&format!(
            "allow = [\"10.0.0.0/8\"]\nbearer_token_sha256 = \"{KEY_HASH}\""
        ))
        .unwrap();
        assert_eq!(config.metrics.token_hash(), Some([0; 32]));

        let err = with("bearer_token_sha256 = \"sha256:abc\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("metrics.bearer_token_sha256"), "{err}");
        let err = with("allow = []").unwrap_err().to_string();
        assert!(err.contains("metrics.allow"), "{err}");
        with("allow = []\nenabled = false").unwrap();
        let err = with("allow = [\"nonsense\"]").unwrap_err().to_string();
        assert!(err.contains("nonsense"), "{err}");
        let err = with("token = \"x\"").unwrap_err().to_string();
        assert!(err.contains("token"), "{err}");
    }
}
