//! Tenants as the server runs them: each one's settings and plugin chain
//! ([`Tenant`]), one consistent set of them with its API-key index
//! ([`Tenants`]), and the [`TenantRegistry`] that holds the current set.
//!
//! The registry can be swapped while requests run: a request takes the
//! current set once, when its caller is identified, and keeps that
//! `Arc<Tenant>` (settings, chain and loaded plugins) until it ends, even if
//! a newer set replaces it meanwhile. Readers never wait for a swap.

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq};

use crate::config::{TenantConfig, WebhookEvent, parse_api_key_hash};
use crate::runtime::{Chain, Hook, OnError, Runtime};
use crate::session::Millis;
use crate::store::{CreateLimit, UserLimit};

/// One tenant: its config and its plugin chain.
#[derive(Debug)]
pub struct Tenant {
    pub name: String,
    pub config: TenantConfig,
    pub chain: Chain,
    /// Why the tenant cannot serve, when a plugin of its chain with the
    /// fail-closed policy did not load: its requests get 503, its sessions
    /// are kept (not swept) and its end jobs wait in the queue.
    pub degraded: Option<Degraded>,
    /// Where the tenant comes from: none for `sessiond.toml`, else the
    /// revision of its control record (created through the operator API).
    pub revision: Option<u64>,
    /// Disabled by the operator: its requests get 403, its sessions are
    /// kept and its end jobs still run.
    pub disabled: bool,
}

/// A plugin that did not load, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Degraded {
    pub plugin: String,
    pub error: String,
}

impl Tenant {
    /// Loads every plugin of `config`'s chain for tenant `name`.
    ///
    /// A plugin that does not load (a bad file, a component for another
    /// world, a trap in `describe` or `init`) does not stop the host: with
    /// `on_error = "allow"` the tenant runs without it; otherwise the tenant
    /// starts degraded ([`Tenant::degraded`]). Either way the error is
    /// logged with the tenant, plugin, file and reason.
    ///
    /// `reclaim_after_ms` is the end queue's reclaim time: a tenant whose end
    /// chain could outlast half of it is refused (a config error, which
    /// stops startup), since another host could take over a job that is
    /// still running.
    pub async fn load(
        runtime: &Runtime,
        name: &str,
        config: &TenantConfig,
        reclaim_after_ms: Millis,
    ) -> anyhow::Result<Tenant> {
        Tenant::load_with(name, config, reclaim_after_ms, |spec| {
            runtime.load(name, spec)
        })
        .await
    }

    /// [`Tenant::load`], reading each plugin through `load` (the operator
    /// API's tenants load components kept in the store).
    pub async fn load_with<'a, F, Fut>(
        name: &str,
        config: &'a TenantConfig,
        reclaim_after_ms: Millis,
        load: F,
    ) -> anyhow::Result<Tenant>
    where
        F: Fn(&'a crate::runtime::PluginSpec) -> Fut,
        Fut: std::future::Future<
                Output = Result<Arc<crate::runtime::LoadedPlugin>, crate::runtime::LoadError>,
            >,
    {
        let mut plugins = Vec::new();
        let mut degraded = None;
        for spec in &config.plugins {
            let path = spec.path.display().to_string();
            let plugin = match load(spec).await {
                Ok(plugin) => plugin,
                Err(e) if spec.on_error == OnError::Allow => {
                    tracing::error!(tenant = %name, plugin = %spec.name, path = %path,
                        "plugin did not load; on_error = allow, so the tenant runs without it: {e}");
                    continue;
                }
                Err(e) => {
                    tracing::error!(tenant = %name, plugin = %spec.name, path = %path,
                        "plugin did not load; the tenant is degraded (its requests get 503) \
                         until it is fixed: {e}");
                    degraded = Some(Degraded {
                        plugin: spec.name.clone(),
                        error: format!("{path}: {e}"),
                    });
                    break;
                }
            };
            tracing::info!(tenant = %name, plugin = %plugin.name,
                describe = %format!("{} {}", plugin.description.name, plugin.description.version),
                hooks = %plugin.description.hooks.join(","), "plugin loaded");
            plugins.push(plugin);
        }
        if degraded.is_some() {
            plugins.clear();
        }
        let chain = Chain::new(plugins, config.max_ttl_seconds.saturating_mul(1000));
        let end_chain_ms = chain.worst_case_ms(Hook::SessionEnd);
        if reclaim_after_ms <= end_chain_ms.saturating_mul(2) {
            anyhow::bail!(
                "ends.reclaim_after_ms ({reclaim_after_ms}) must be more than twice the longest \
                 end chain: tenant {name:?}'s on-session-end plugins may take {end_chain_ms} ms \
                 (the sum of their deadline_ms)"
            );
        }
        Ok(Tenant {
            name: name.to_string(),
            config: config.clone(),
            chain,
            degraded,
            revision: None,
            disabled: false,
        })
    }

    /// The per-user limit passed to the store, if the tenant has one.
    pub fn user_limit(&self) -> Option<UserLimit> {
        self.config.max_sessions_per_user.map(|max| UserLimit {
            max,
            policy: self.config.limit_policy,
        })
    }

    /// What the store enforces when it creates one of the tenant's
    /// sessions: the per-user limit and `quota.max_sessions`.
    pub fn create_limit(&self) -> CreateLimit {
        CreateLimit {
            user: self.user_limit(),
            tenant_max: self.config.quota.max_sessions,
        }
    }

    /// The lifetime of a new session in milliseconds: the requested one (or
    /// the default), capped at the tenant's maximum.
    pub fn lifetime_ms(&self, requested_seconds: Option<u64>) -> Millis {
        let seconds = requested_seconds
            .unwrap_or(self.config.ttl_seconds)
            .min(self.config.max_ttl_seconds);
        seconds.saturating_mul(1000)
    }

    /// The idle timeout in milliseconds.
    pub fn idle_timeout_ms(&self) -> Millis {
        self.config.idle_timeout_seconds.saturating_mul(1000)
    }

    /// Whether ending one of this tenant's sessions queues an end job: only
    /// when some plugin implements `on-session-end` or some webhook wants
    /// `session.ended` (the end worker queues its deliveries).
    pub fn queues_ends(&self) -> bool {
        self.chain.has(Hook::SessionEnd) || self.wants_webhook(WebhookEvent::SessionEnded)
    }

    /// Whether any of this tenant's webhooks wants `event`.
    pub fn wants_webhook(&self, event: WebhookEvent) -> bool {
        self.config.webhooks.iter().any(|w| w.wants(event))
    }
}

/// One consistent set of tenants, with the index of their API keys.
#[derive(Debug, Default)]
pub struct Tenants {
    by_name: BTreeMap<String, Arc<Tenant>>,
    /// SHA-256 of each API key, with its tenant.
    keys: Vec<([u8; 32], Arc<Tenant>)>,
}

impl Tenants {
    /// The set of `tenants`, indexing each one's `api_keys` (`sha256:<hex>`
    /// hashes). Fails on a key that is not such a hash.
    pub fn new(tenants: impl IntoIterator<Item = Tenant>) -> anyhow::Result<Tenants> {
        Tenants::of_shared(tenants.into_iter().map(Arc::new))
    }

    /// [`Tenants::new`] of tenants already shared (a new set that keeps the
    /// unchanged tenants of the one before).
    pub fn of_shared(tenants: impl IntoIterator<Item = Arc<Tenant>>) -> anyhow::Result<Tenants> {
        let mut set = Tenants::default();
        for tenant in tenants {
            for key in &tenant.config.api_keys {
                let hash = parse_api_key_hash(key).ok_or_else(|| {
                    anyhow::anyhow!("tenants.{}.api_keys: not a sha256:<hex> hash", tenant.name)
                })?;
                set.keys.push((hash, tenant.clone()));
            }
            set.by_name.insert(tenant.name.clone(), tenant);
        }
        Ok(set)
    }

    /// The tenant named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Tenant>> {
        self.by_name.get(name)
    }

    /// Every tenant, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Tenant>> {
        self.by_name.values()
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// The tenant owning the plain API key `key`. The key's hash is compared
    /// in constant time against every configured hash (all of them, whatever
    /// matches), so timing tells nothing about the keys.
    pub fn by_key(&self, key: &str) -> Option<Arc<Tenant>> {
        let presented: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let mut found = u32::MAX;
        for (i, (hash, _)) in self.keys.iter().enumerate() {
            let index = u32::try_from(i).unwrap_or(u32::MAX);
            let hit = hash.ct_eq(&presented);
            found = u32::conditional_select(&found, &index, hit);
        }
        self.keys
            .get(usize::try_from(found).ok()?)
            .map(|(_, t)| t.clone())
    }

    /// The one tenant that serves `/sessman/*` requests without an API key,
    /// if any.
    pub fn sessman_without_key(&self) -> Option<Arc<Tenant>> {
        self.iter()
            .find(|t| t.config.sessman.enabled && t.config.sessman.allow_unauthenticated)
            .cloned()
    }
}

/// The current set of tenants, which can be replaced while requests run.
#[derive(Debug)]
pub struct TenantRegistry {
    current: ArcSwap<Tenants>,
}

impl TenantRegistry {
    pub fn new(tenants: Tenants) -> TenantRegistry {
        TenantRegistry {
            current: ArcSwap::from_pointee(tenants),
        }
    }

    /// The current set. Holding it keeps it (and its tenants) alive however
    /// often the registry is swapped meanwhile.
    pub fn current(&self) -> Arc<Tenants> {
        self.current.load_full()
    }

    /// Makes `tenants` the current set; requests that already hold the old
    /// one finish with it.
    pub fn replace(&self, tenants: Tenants) {
        self.current.store(Arc::new(tenants));
    }
}
