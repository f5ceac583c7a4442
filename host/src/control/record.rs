//! What the control store keeps of one tenant of the operator API: its
//! settings, keys, uploaded components and the numbered revisions of its
//! plugin chain ([`TenantRecord`], stored as JSON).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::config::{SessmanConfig, TenantConfig, TenantQuota, check_origin};
use crate::runtime::{BreakerSettings, Capability, LimitOverrides, OnError, PluginSpec};
use crate::session::Millis;
use crate::store::LimitPolicy;

/// Chain revisions a record keeps (the oldest go first).
pub const KEPT_CHAIN_REVISIONS: usize = 50;

/// Keys a tenant may hold at once (two overlap during a rotation).
pub const MAX_KEYS: usize = 8;

/// A tenant's settings: what `[tenants.<name>]` sets in the config, except
/// keys, plugins and webhooks. Every field left out takes the config's
/// default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TenantSettings {
    /// The lifetime of a session that asks for none.
    pub ttl_seconds: u64,
    /// The longest lifetime a session (or a plugin) may ask for.
    pub max_ttl_seconds: u64,
    /// A session not used for this long ends.
    pub idle_timeout_seconds: u64,
    /// Warn this long before the idle timeout ends a session.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_warning_seconds: Option<u64>,
    /// Whether an event or message that changes nothing counts as use.
    pub unchanged_events_are_activity: bool,
    /// Most live sessions per user; none: no limit.
    pub max_sessions_per_user: Option<u32>,
    /// `deny` or `evict-lru`: what happens to a new session of a user at
    /// the limit.
    pub limit_policy: LimitPolicy,
    /// The `/sessman/*` compatibility API (`enabled`; requests without a
    /// key are for config tenants only).
    pub sessman: SessmanConfig,
    /// What the tenant may take of each host, as `[tenants.<name>.quota]`.
    pub quota: TenantQuota,
    /// Browser origins whose pages may call the API with the tenant's keys.
    pub cors_origins: Vec<String>,
    /// Components the tenant may keep; none: `operator.max_components_per_tenant`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_components: Option<usize>,
    /// The largest component it may upload, in bytes; none:
    /// `operator.max_component_bytes`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_component_bytes: Option<usize>,
}

impl Default for TenantSettings {
    fn default() -> Self {
        TenantSettings::of(&TenantConfig::default())
    }
}

impl TenantSettings {
    /// The settings of a config tenant.
    pub fn of(c: &TenantConfig) -> TenantSettings {
        TenantSettings {
            ttl_seconds: c.ttl_seconds,
            max_ttl_seconds: c.max_ttl_seconds,
            idle_timeout_seconds: c.idle_timeout_seconds,
            idle_warning_seconds: c.idle_warning_seconds,
            unchanged_events_are_activity: c.unchanged_events_are_activity,
            max_sessions_per_user: c.max_sessions_per_user,
            limit_policy: c.limit_policy,
            sessman: c.sessman.clone(),
            quota: c.quota.clone(),
            cors_origins: c.cors_origins.clone(),
            max_components: None,
            max_component_bytes: None,
        }
    }

    /// The field (under `settings.`) that is wrong, and why.
    pub fn check(&self) -> Result<(), (String, String)> {
        let bad = |field: &str, why: String| Err((format!("settings.{field}"), why));
        if self.ttl_seconds == 0 {
            return bad("ttl_seconds", "must be at least 1".into());
        }
        if self.max_ttl_seconds < self.ttl_seconds {
            return bad(
                "max_ttl_seconds",
                format!(
                    "{} is less than ttl_seconds ({})",
                    self.max_ttl_seconds, self.ttl_seconds
                ),
            );
        }
        if self.idle_timeout_seconds == 0 {
            return bad("idle_timeout_seconds", "must be at least 1".into());
        }
        if let Some(w) = self.idle_warning_seconds
            && (w == 0 || w >= self.idle_timeout_seconds)
        {
            return bad(
                "idle_warning_seconds",
                format!(
                    "{w} must be at least 1 and less than idle_timeout_seconds ({})",
                    self.idle_timeout_seconds
                ),
            );
        }
        if self.max_sessions_per_user == Some(0) {
            return bad(
                "max_sessions_per_user",
                "must be at least 1 (leave it out for no limit)".into(),
            );
        }
        if self.sessman.allow_unauthenticated {
            return bad(
                "sessman.allow_unauthenticated",
                "only a tenant of sessiond.toml may serve requests without a key".into(),
            );
        }
        let q = &self.quota;
        for (field, value) in [
            ("max_in_flight", q.max_in_flight),
            ("max_plugin_calls", q.max_plugin_calls),
        ] {
            if value == Some(0) {
                return bad(&format!("quota.{field}"), "must be at least 1".into());
            }
        }
        if q.requests_per_second == Some(0) || q.burst == Some(0) {
            return bad("quota.requests_per_second", "must be at least 1".into());
        }
        if q.memory_mib == Some(0) {
            return bad("quota.memory_mib", "must be at least 1".into());
        }
        if q.max_sessions == Some(0) {
            return bad("quota.max_sessions", "must be at least 1".into());
        }
        if self.max_components == Some(0) {
            return bad("max_components", "must be at least 1".into());
        }
        if self.max_component_bytes == Some(0) {
            return bad("max_component_bytes", "must be at least 1".into());
        }
        for (i, origin) in self.cors_origins.iter().enumerate() {
            if let Err(why) = check_origin(origin) {
                return bad(&format!("cors_origins[{i}]"), why);
            }
        }
        Ok(())
    }
}

/// One API key: its id and the SHA-256 of the plain key (never the key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub id: String,
    /// Lower-case hex.
    pub sha256: String,
    pub created_at: Millis,
}

/// An uploaded component, as its check described it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ComponentRecord {
    /// The SHA-256 of the component (lower-case hex): its name in the store.
    pub sha256: String,
    pub size_bytes: u64,
    /// What `describe` answered: the plugin's name and version.
    pub name: String,
    pub version: String,
    /// The hooks it implements.
    pub hooks: Vec<String>,
    /// The host interfaces it imports (each must be granted in a chain).
    pub imports: Vec<String>,
    pub uploaded_at: Millis,
}

/// One plugin of a chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChainEntry {
    /// The plugin's name in the chain: the key of its private state and kv.
    pub name: String,
    /// The component, one of the tenant's uploads.
    pub sha256: String,
    /// Capabilities beyond `log` and `clock` (`kv`, `sessions`, `audit`).
    #[serde(default)]
    pub grants: Vec<Capability>,
    /// Configuration attributes passed to `init`.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// Limit overrides, as `limits` of a plugin in the config.
    #[serde(default)]
    pub limits: LimitOverrides,
    /// `deny` (fail closed, the default) or `allow` (fail open), as in the
    /// config.
    #[serde(default)]
    pub on_error: OnError,
    /// Keep warm instances between calls (the default).
    #[serde(default = "yes")]
    pub instance_reuse: bool,
    /// The circuit breaker's settings, as in the config.
    #[serde(default)]
    pub circuit: BreakerSettings,
}

fn yes() -> bool {
    true
}

impl ChainEntry {
    /// The spec the runtime loads; its path names the component.
    pub fn spec(&self) -> PluginSpec {
        PluginSpec {
            name: self.name.clone(),
            path: PathBuf::from(format!("sha256:{}", self.sha256)),
            config: self.config.clone(),
            grants: self.grants.clone(),
            limits: self.limits.clone(),
            on_error: self.on_error,
            instance_reuse: self.instance_reuse,
            circuit: self.circuit,
        }
    }
}

/// One numbered revision of a tenant's chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ChainRevision {
    /// 1 for the first chain set, then one more for every change.
    pub revision: u64,
    pub created_at: Millis,
    /// The revision this one rolled back to, when it is a rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_of: Option<u64>,
    /// The plugins, in order.
    pub plugins: Vec<ChainEntry>,
}

/// Everything the control store keeps of one tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TenantRecord {
    pub settings: TenantSettings,
    #[serde(default)]
    pub disabled: bool,
    /// Being deleted: it serves nothing, its sessions are ended (reason
    /// `revoked`) and, once their end hooks have run, the record goes.
    #[serde(default)]
    pub deleting: bool,
    pub created_at: Millis,
    #[serde(default)]
    pub keys: Vec<KeyRecord>,
    #[serde(default)]
    pub components: Vec<ComponentRecord>,
    /// Oldest first; the last is the chain in effect (none: no plugins).
    #[serde(default)]
    pub chains: Vec<ChainRevision>,
}

impl TenantRecord {
    /// A new tenant with `settings` and nothing else.
    pub fn new(settings: TenantSettings, now: Millis) -> TenantRecord {
        TenantRecord {
            settings,
            disabled: false,
            deleting: false,
            created_at: now,
            keys: Vec::new(),
            components: Vec::new(),
            chains: Vec::new(),
        }
    }

    /// The chain in effect.
    pub fn chain(&self) -> Option<&ChainRevision> {
        self.chains.last()
    }

    /// Its number (0 before the first).
    pub fn chain_revision(&self) -> u64 {
        self.chain().map_or(0, |c| c.revision)
    }

    /// Makes `plugins` the chain in effect as the next revision, keeping at
    /// most [`KEPT_CHAIN_REVISIONS`].
    pub fn push_chain(&mut self, plugins: Vec<ChainEntry>, rollback_of: Option<u64>, now: Millis) {
        let revision = self.chain_revision() + 1;
        self.chains.push(ChainRevision {
            revision,
            created_at: now,
            rollback_of,
            plugins,
        });
        let over = self.chains.len().saturating_sub(KEPT_CHAIN_REVISIONS);
        self.chains.drain(..over);
    }

    /// The components some kept chain revision uses.
    pub fn components_in_use(&self) -> BTreeSet<&str> {
        self.chains
            .iter()
            .flat_map(|c| c.plugins.iter().map(|p| p.sha256.as_str()))
            .collect()
    }

    /// The config the server runs the tenant with.
    pub fn config(&self) -> TenantConfig {
        let s = &self.settings;
        TenantConfig {
            api_keys: self
                .keys
                .iter()
                .map(|k| format!("sha256:{}", k.sha256))
                .collect(),
            ttl_seconds: s.ttl_seconds,
            max_ttl_seconds: s.max_ttl_seconds,
            idle_timeout_seconds: s.idle_timeout_seconds,
            idle_warning_seconds: s.idle_warning_seconds,
            unchanged_events_are_activity: s.unchanged_events_are_activity,
            max_sessions_per_user: s.max_sessions_per_user,
            limit_policy: s.limit_policy,
            plugins: self
                .chain()
                .map(|c| c.plugins.iter().map(ChainEntry::spec).collect())
                .unwrap_or_default(),
            sessman: s.sessman.clone(),
            quota: s.quota.clone(),
            cors_origins: s.cors_origins.clone(),
            webhooks: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_name_the_bad_field() {
        let mut s = TenantSettings {
            ttl_seconds: 100,
            max_ttl_seconds: 10,
            ..TenantSettings::default()
        };
        assert_eq!(s.check().unwrap_err().0, "settings.max_ttl_seconds");
        s.max_ttl_seconds = 100;
        s.cors_origins = vec!["not an origin".into()];
        assert_eq!(s.check().unwrap_err().0, "settings.cors_origins[0]");
        s.cors_origins.clear();
        assert!(s.check().is_ok());
    }

    #[test]
    fn chains_keep_their_latest_revisions() {
        let mut r = TenantRecord::new(TenantSettings::default(), 0);
        for i in 0..(KEPT_CHAIN_REVISIONS as u64 + 5) {
            r.push_chain(Vec::new(), None, i);
        }
        assert_eq!(r.chains.len(), KEPT_CHAIN_REVISIONS);
        assert_eq!(r.chain_revision(), KEPT_CHAIN_REVISIONS as u64 + 5);
        assert_eq!(r.chains[0].revision, 6);
    }
}
