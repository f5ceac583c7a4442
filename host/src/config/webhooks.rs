//! `[webhooks]`, how this host sends every tenant's webhook deliveries, and
//! `[[tenants.<name>.webhooks]]`, the endpoints one tenant's events go to.
//! Both are checked at load, each message naming its key.

use serde::{Deserialize, Serialize};

use super::defaults;

/// `[webhooks]`: the sender of webhook deliveries (see
/// [`crate::webhooks`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// How often each tenant's outbox is polled when nothing local wakes
    /// the sender.
    pub poll_interval_ms: u64,
    /// How long one delivery may take, connecting included; then it counts
    /// as failed and is retried.
    pub timeout_ms: u64,
    /// How many attempts a delivery gets before it is given up on (logged
    /// and counted in `sessiond_webhook_deliveries_total{outcome="gave-up"}`).
    pub max_attempts: u32,
    /// The wait before the first retry; each later wait doubles, up to
    /// `retry_max_ms`, with up to a fifth of it added at random.
    pub retry_base_ms: u64,
    /// The longest wait between two attempts.
    pub retry_max_ms: u64,
    /// Most deliveries of one tenant in flight at once on this host, so one
    /// tenant's slow endpoint does not hold up another's.
    pub max_concurrent_per_tenant: usize,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            poll_interval_ms: defaults::WEBHOOKS_POLL_INTERVAL_MS,
            timeout_ms: defaults::WEBHOOKS_TIMEOUT_MS,
            max_attempts: defaults::WEBHOOKS_MAX_ATTEMPTS,
            retry_base_ms: defaults::WEBHOOKS_RETRY_BASE_MS,
            retry_max_ms: defaults::WEBHOOKS_RETRY_MAX_MS,
            max_concurrent_per_tenant: defaults::WEBHOOKS_MAX_CONCURRENT_PER_TENANT,
        }
    }
}

impl WebhooksConfig {
    /// How long a leased delivery is held before another host may send it
    /// again: two timeouts and a second, so only a sender that died or
    /// stalled loses its lease.
    pub fn lease_ms(&self) -> u64 {
        self.timeout_ms.saturating_mul(2).saturating_add(1000)
    }

    /// The key and message of the first bad setting, if any.
    pub(super) fn check(&self) -> Result<(), (&'static str, String)> {
        if self.poll_interval_ms == 0 {
            return Err(("poll_interval_ms", "must be at least 1".into()));
        }
        if self.timeout_ms == 0 {
            return Err(("timeout_ms", "must be at least 1".into()));
        }
        if self.max_attempts == 0 {
            return Err(("max_attempts", "must be at least 1".into()));
        }
        if self.retry_base_ms == 0 {
            return Err(("retry_base_ms", "must be at least 1".into()));
        }
        if self.retry_max_ms < self.retry_base_ms {
            return Err((
                "retry_max_ms",
                format!("must be at least retry_base_ms ({})", self.retry_base_ms),
            ));
        }
        if self.max_concurrent_per_tenant == 0 {
            return Err(("max_concurrent_per_tenant", "must be at least 1".into()));
        }
        Ok(())
    }
}

/// An event a webhook can subscribe to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum WebhookEvent {
    /// A session was created.
    #[serde(rename = "session.created")]
    SessionCreated,
    /// A session ended, for any reason (logout, expired, idle-timeout,
    /// revoked, evicted).
    #[serde(rename = "session.ended")]
    SessionEnded,
    /// The tenant's `idle_warning_seconds` before a session's idle timeout,
    /// once per idle period.
    #[serde(rename = "session.idle-warning")]
    SessionIdleWarning,
}

impl WebhookEvent {
    /// The event's name, as the config and the delivery's `type` spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookEvent::SessionCreated => "session.created",
            WebhookEvent::SessionEnded => "session.ended",
            WebhookEvent::SessionIdleWarning => "session.idle-warning",
        }
    }
}

/// `[[tenants.<name>.webhooks]]`: one endpoint of a tenant's events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where deliveries are POSTed: an `https://` (or `http://`) URL.
    pub url: String,
    /// The events sent there.
    pub events: Vec<WebhookEvent>,
    /// The signing secret, as Standard Webhooks gives it: `whsec_` and the
    /// base64 of 24 to 64 random bytes. Set this or `secret_env`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// The environment variable that holds the secret instead, so that it
    /// need not be written in the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_env: Option<String>,
}

/// The shortest and longest signing secret, in bytes.
const SECRET_BYTES: std::ops::RangeInclusive<usize> = 24..=64;

impl WebhookConfig {
    /// Whether `event` goes to this endpoint.
    pub fn wants(&self, event: WebhookEvent) -> bool {
        self.events.contains(&event)
    }

    /// Reads `secret_env` into `secret`, from `vars`.
    pub(super) fn resolve_secret(
        &mut self,
        vars: &std::collections::HashMap<String, String>,
    ) -> Result<(), (&'static str, String)> {
        match (&self.secret, &self.secret_env) {
            (Some(_), Some(_)) => Err((
                "secret_env",
                "set either secret or secret_env, not both".into(),
            )),
            (None, None) => Err(("secret", "is required (or set secret_env)".into())),
            (Some(_), None) => Ok(()),
            (None, Some(var)) => match vars.get(var) {
                Some(value) => {
                    self.secret = Some(value.clone());
                    Ok(())
                }
                None => Err((
                    "secret_env",
                    format!("the environment variable {var} is not set"),
                )),
            },
        }
    }

    /// The key and message of the first bad setting, if any.
    pub(super) fn check(&self) -> Result<(), (&'static str, String)> {
        check_url(&self.url).map_err(|m| ("url", m))?;
        if self.events.is_empty() {
            return Err((
                "events",
                "must name at least one event (\"session.created\", \"session.ended\", \"session.idle-warning\")".into(),
            ));
        }
        match (&self.secret, &self.secret_env) {
            (Some(secret), _) => secret_key(secret).map(drop).map_err(|m| ("secret", m)),
            (None, Some(_)) => Ok(()),
            (None, None) => Err(("secret", "is required (or set secret_env)".into())),
        }
    }
}

/// The signing key a secret holds: the bytes of its base64 after `whsec_`.
pub fn secret_key(secret: &str) -> Result<Vec<u8>, String> {
    use base64::Engine as _;
    let Some(encoded) = secret.strip_prefix("whsec_") else {
        return Err(
            "must start with whsec_, followed by the base64 of 24 to 64 random bytes \
             (for example: echo whsec_$(head -c 32 /dev/urandom | base64))"
                .into(),
        );
    };
    let key = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|e| format!("the part after whsec_ is not base64: {e}"))?;
    if !SECRET_BYTES.contains(&key.len()) {
        return Err(format!(
            "holds {} bytes; a signing secret has 24 to 64",
            key.len()
        ));
    }
    Ok(key)
}

/// Checks a webhook URL: absolute, `http` or `https`, with a host and no
/// credentials or fragment.
fn check_url(text: &str) -> Result<(), String> {
    let url = reqwest::Url::parse(text).map_err(|e| format!("{text:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(format!("{text:?} must start with https:// (or http://)"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{text:?} has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "{text:?} holds credentials; deliveries are authenticated by their signature"
        ));
    }
    if url.fragment().is_some() {
        return Err(format!("{text:?} has a fragment (#…), which is never sent"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn hook(url: &str, secret: &str) -> WebhookConfig {
        WebhookConfig {
            url: url.into(),
            events: vec![WebhookEvent::SessionEnded],
            secret: Some(secret.into()),
            secret_env: None,
        }
    }

    #[test]
    fn accepts_a_good_endpoint() {
        assert_eq!(
            hook("https://hooks.example/sessiond", SECRET).check(),
            Ok(())
        );
        assert_eq!(hook("http://127.0.0.1:9000/in", SECRET).check(), Ok(()));
    }

    #[test]
    fn names_what_is_wrong() {
        let cases = [
            (hook("hooks.example/x", SECRET), "url", "not a URL"),
            (hook("ftp://hooks.example/x", SECRET), "url", "https://"),
            (
                hook("https://u:p@hooks.example/x", SECRET),
                "url",
                "credentials",
            ),
            (hook("https://hooks.example/x#a", SECRET), "url", "fragment"),
            (hook("https://hooks.example/x", "plain"), "secret", "whsec_"),
            (
                hook("https://hooks.example/x", "whsec_!!"),
                "secret",
                "base64",
            ),
            (
                hook("https://hooks.example/x", "whsec_c2hvcnQ="),
                "secret",
                "5 bytes",
            ),
        ];
        for (config, key, words) in cases {
            let (k, message) = config.check().unwrap_err();
            assert_eq!(k, key, "{message}");
            assert!(message.contains(words), "{key}: {message}");
        }
        let mut none = hook("https://hooks.example/x", SECRET);
        none.events.clear();
        assert_eq!(none.check().unwrap_err().0, "events");
    }

    #[test]
    fn secret_from_the_environment() {
        let vars = [("HOOK_SECRET".to_string(), SECRET.to_string())].into();
        let mut from_env = hook("https://hooks.example/x", SECRET);
        from_env.secret = None;
        from_env.secret_env = Some("HOOK_SECRET".into());
        from_env.resolve_secret(&vars).unwrap();
        assert_eq!(from_env.secret.as_deref(), Some(SECRET));
        from_env.secret_env = Some("MISSING".into());
        from_env.secret = None;
        let (key, message) = from_env.resolve_secret(&vars).unwrap_err();
        assert_eq!(key, "secret_env");
        assert!(message.contains("MISSING"), "{message}");
    }
}
