//! The tables of the config file as serde structs, each with
//! `deny_unknown_fields` and its defaults from [`super::defaults`], and the
//! `sha256:<hex>` format of API keys. `[store]` has a module of its own
//! ([`super::store`]) because its keys depend on its backend.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::net::IpAddr;

use super::defaults;
use super::quota::TenantQuota;
use super::webhooks::WebhookConfig;
use crate::runtime::PluginSpec;
use crate::store::LimitPolicy;

/// The prefix of a hashed API key in the config.
pub const API_KEY_HASH_PREFIX: &str = "sha256:";

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
    /// How long a client may take to send a request's headers, and how long
    /// an idle keep-alive connection waits for the next request; then the
    /// connection is closed.
    pub header_read_timeout_ms: u64,
    /// How long a request's body may take to arrive, from the first read;
    /// then it gets 408 and the connection is closed.
    pub body_read_timeout_ms: u64,
    /// The most connections open at once; more are closed at once.
    pub max_connections: usize,
    /// The most connections open at once from one client address (the TCP
    /// peer's, a proxy's behind a proxy); more are closed at once.
    pub max_connections_per_client: usize,
    /// On shutdown, how long requests in flight may take to finish before
    /// every connection still open is closed.
    pub shutdown_timeout_ms: u64,
    /// How long the store keeps an `Idempotency-Key` of a create or a
    /// logout; a retry after that runs as a new request.
    pub idempotency_ttl_seconds: u64,
    /// Requests handled at once on this host, shared out between the
    /// tenants as their default `quota.max_in_flight`.
    pub max_in_flight: usize,
    /// While more than one tenant is busy, hold each to an equal share of
    /// the host's CPU (see [`crate::cpu`]). Off by default: the attack
    /// benchmark shows it halves a flood's throughput but has not yet shown
    /// it lowering the other tenants' p99 (docs/attack.md).
    pub fair_cpu: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: defaults::LISTEN.into(),
            trusted_proxies: Vec::new(),
            max_body_bytes: defaults::MAX_BODY_BYTES,
            header_read_timeout_ms: defaults::HEADER_READ_TIMEOUT_MS,
            body_read_timeout_ms: defaults::BODY_READ_TIMEOUT_MS,
            max_connections: defaults::MAX_CONNECTIONS,
            max_connections_per_client: defaults::MAX_CONNECTIONS_PER_CLIENT,
            shutdown_timeout_ms: defaults::SHUTDOWN_TIMEOUT_MS,
            idempotency_ttl_seconds: defaults::IDEMPOTENCY_TTL_SECONDS,
            max_in_flight: defaults::MAX_IN_FLIGHT,
            fair_cpu: false,
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
    /// Most end jobs of one tenant whose hooks run at once on this host;
    /// each tenant's jobs are claimed in turn up to this bound, so one
    /// tenant's slow or failing end hooks do not hold up another's.
    pub max_concurrent_per_tenant: usize,
    /// How long a job may stay claimed without being finished before another
    /// host takes it over (the claiming host is presumed dead). Longer than
    /// any end chain can take; shorter means faster recovery after a crash.
    pub reclaim_after_ms: u64,
    /// How many times a job is handed out before it goes to the tenant's
    /// dead-letter list: a job whose hooks failed to finish that often (its
    /// host died, or the hooks could not reach the store) runs no more.
    pub max_deliveries: u64,
    /// On shutdown, how long to keep running queued jobs before stopping;
    /// hooks still running then are abandoned, their jobs left claimed for
    /// another host (or this one, restarted) to take over.
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
            max_concurrent_per_tenant: defaults::ENDS_MAX_CONCURRENT_PER_TENANT,
            reclaim_after_ms: defaults::ENDS_RECLAIM_AFTER_MS,
            max_deliveries: defaults::ENDS_MAX_DELIVERIES,
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
    /// Warn this long before the idle timeout ends a session: once per idle
    /// period, through `on-event` (`idle-warning`) and the webhooks that
    /// want `session.idle-warning`. None: no warning.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_warning_seconds: Option<u64>,
    /// Whether an event or message whose chain changes nothing counts as
    /// use of the session: stored with a new version and the idle deadline
    /// slid (true, the default), or not written at all (false: no version
    /// bump, no write to the store, the idle deadline stays).
    pub unchanged_events_are_activity: bool,
    /// Most live sessions per user; none: no limit.
    pub max_sessions_per_user: Option<u32>,
    /// What happens to a new session of a user at the limit.
    pub limit_policy: LimitPolicy,
    /// The plugin chain, in order (`[[tenants.<name>.plugins]]`).
    pub plugins: Vec<PluginSpec>,
    /// The `/sessman/*` compatibility API.
    pub sessman: SessmanConfig,
    /// What this tenant may take of the host (`[tenants.<name>.quota]`).
    pub quota: TenantQuota,
    /// The browser origins (`https://app.example`, `http://localhost:3000`,
    /// or `"*"` for any) whose pages may call the API with this tenant's
    /// keys; none: no cross-origin access.
    pub cors_origins: Vec<String>,
    /// The endpoints this tenant's session events are sent to
    /// (`[[tenants.<name>.webhooks]]`).
    pub webhooks: Vec<WebhookConfig>,
}

impl Default for TenantConfig {
    fn default() -> Self {
        TenantConfig {
            api_keys: Vec::new(),
            ttl_seconds: defaults::TTL_SECONDS,
            max_ttl_seconds: defaults::MAX_TTL_SECONDS,
            idle_timeout_seconds: defaults::IDLE_TIMEOUT_SECONDS,
            idle_warning_seconds: None,
            unchanged_events_are_activity: true,
            max_sessions_per_user: None,
            limit_policy: LimitPolicy::Deny,
            plugins: Vec::new(),
            sessman: SessmanConfig::default(),
            quota: TenantQuota::default(),
            cors_origins: Vec::new(),
            webhooks: Vec::new(),
        }
    }
}

/// `[tenants.<name>.sessman]`: the `/sessman/*` compatibility API.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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

#[cfg(test)]
mod tests {
    use super::super::test_support::{minimal, parse};

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
