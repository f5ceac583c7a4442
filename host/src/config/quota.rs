//! `[tenants.<name>.quota]`: what one tenant may take of a host it shares
//! with others, and how the defaults divide the host between the tenants.
//!
//! Every bound holds per host: `n` hosts behind a load balancer give a
//! tenant up to `n` times each of them. The defaults are fair shares: the
//! host-wide totals (`server.max_in_flight`, `runtime.max_plugin_calls`,
//! `runtime.memory_budget_mib`) divided by the number of tenants, so one
//! tenant alone can never take the whole host from the others.

use serde::{Deserialize, Serialize};

use super::Config;

/// `[tenants.<name>.quota]`. Unset keys take the tenant's fair share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TenantQuota {
    /// Requests of this tenant handled at once on this host. Default: its
    /// share of `server.max_in_flight` (at least 8).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<usize>,
    /// Requests that may wait for a slot when `max_in_flight` are running;
    /// further ones get 429 at once. Default: `max_in_flight`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_queued: Option<usize>,
    /// How long a request waits for a slot before it gets 429.
    pub queue_timeout_ms: u64,
    /// Plugin calls of this tenant running at once on this host (a call
    /// waiting for the store holds its slot). Default: its share of
    /// `runtime.max_plugin_calls` (at least 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_plugin_calls: Option<usize>,
    /// Sustained requests per second on this host (a token bucket). Unset:
    /// no rate limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests_per_second: Option<u32>,
    /// The bucket's size: requests that may arrive at once after a quiet
    /// spell. Default: `requests_per_second`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// MiB of linear memory this tenant's live plugin instances (running
    /// and warm) may hold together. Default: its share of
    /// `runtime.memory_budget_mib`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u64>,
    /// Sessions the tenant may have stored at once, across every host:
    /// checked by the store in the step that creates a session, so exact
    /// under concurrency. Sessions past their deadline count until the
    /// sweeper takes them. Unset: no quota.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_sessions: Option<u64>,
}

/// `tenants.<name>.quota.queue_timeout_ms`.
pub const QUEUE_TIMEOUT_MS: u64 = 100;

/// The least in-flight requests a default share gives a tenant.
const MIN_IN_FLIGHT: usize = 8;

impl Default for TenantQuota {
    fn default() -> Self {
        TenantQuota {
            max_in_flight: None,
            max_queued: None,
            queue_timeout_ms: QUEUE_TIMEOUT_MS,
            max_plugin_calls: None,
            requests_per_second: None,
            burst: None,
            memory_mib: None,
            max_sessions: None,
        }
    }
}

/// A tenant's quota with every default filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shares {
    pub max_in_flight: usize,
    pub max_queued: usize,
    pub queue_timeout_ms: u64,
    pub max_plugin_calls: usize,
    /// Requests per second and burst, when rate-limited.
    pub rate: Option<(u32, u32)>,
    pub memory_mib: u64,
}

/// The resolved quota of tenant `name` of `config` (which must have it).
pub fn shares(config: &Config, name: &str) -> Shares {
    let quota = config
        .tenants
        .get(name)
        .map(|t| t.quota.clone())
        .unwrap_or_default();
    shares_of(config, &quota, config.tenants.len())
}

/// The shares of a tenant with `quota` on a host serving `tenants` tenants
/// (a tenant of the operator API, whose quota is in its record).
pub fn shares_of(config: &Config, quota: &TenantQuota, tenants: usize) -> Shares {
    let tenants = tenants.max(1);
    let max_in_flight = quota
        .max_in_flight
        .unwrap_or((config.server.max_in_flight / tenants).max(MIN_IN_FLIGHT));
    Shares {
        max_in_flight,
        max_queued: quota.max_queued.unwrap_or(max_in_flight),
        queue_timeout_ms: quota.queue_timeout_ms,
        max_plugin_calls: quota
            .max_plugin_calls
            .unwrap_or((config.runtime.max_plugin_calls / tenants).max(1)),
        rate: quota
            .requests_per_second
            .map(|rps| (rps, quota.burst.unwrap_or(rps))),
        memory_mib: quota
            .memory_mib
            .unwrap_or(config.runtime.memory_budget_mib / tenants as u64),
    }
}

/// Checks the host-wide totals and every tenant's quota; the error names
/// the key.
pub(super) fn check(config: &Config) -> Result<(), (String, String)> {
    let bad = |field: String, message: String| Err((field, message));
    let totals = [
        ("server.max_in_flight", config.server.max_in_flight as u64),
        (
            "runtime.max_plugin_calls",
            config.runtime.max_plugin_calls as u64,
        ),
        (
            "runtime.memory_budget_mib",
            config.runtime.memory_budget_mib,
        ),
    ];
    for (field, value) in totals {
        if value == 0 {
            return bad(field.into(), "must be at least 1".into());
        }
    }
    for (name, tenant) in &config.tenants {
        let field = |key: &str| format!("tenants.{name}.quota.{key}");
        let q = &tenant.quota;
        let set = [
            ("max_in_flight", q.max_in_flight.map(|v| v as u64)),
            ("max_plugin_calls", q.max_plugin_calls.map(|v| v as u64)),
            ("requests_per_second", q.requests_per_second.map(u64::from)),
            ("burst", q.burst.map(u64::from)),
            ("memory_mib", q.memory_mib),
            ("max_sessions", q.max_sessions),
        ];
        for (key, value) in set {
            if value == Some(0) {
                return bad(
                    field(key),
                    "must be at least 1 (leave it out for the default)".into(),
                );
            }
        }
        if q.burst.is_some() && q.requests_per_second.is_none() {
            return bad(field("burst"), "needs requests_per_second".into());
        }
        let share = shares(config, name).memory_mib;
        let defaults = config.runtime.default_limits;
        for plugin in &tenant.plugins {
            let need = defaults.with(&plugin.limits).memory_mib;
            if need > share {
                let why = if q.memory_mib.is_some() {
                    format!(
                        "{share} MiB is less than plugin {:?}'s memory_mib ({need}): one \
                         instance could not run",
                        plugin.name
                    )
                } else {
                    format!(
                        "unset, so the tenant gets runtime.memory_budget_mib ({}) / {} tenants = \
                         {share} MiB, less than plugin {:?}'s memory_mib ({need}): raise \
                         runtime.memory_budget_mib or set this key",
                        config.runtime.memory_budget_mib,
                        config.tenants.len(),
                        plugin.name
                    )
                };
                return bad(field("memory_mib"), why);
            }
        }
    }
    Ok(())
}
