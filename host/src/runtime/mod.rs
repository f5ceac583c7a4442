//! The sandboxed plugin runtime.
//!
//! One wasmtime [`wasmtime::Engine`] per process (pooling allocator, fuel and
//! epoch interruption on), each component compiled once (and cached on disk),
//! pre-instantiated once ([`wasmtime::component::InstancePre`]), then run for
//! one tenant at a time with every limit in [`Limits`] armed on each call.
//! Plugins run as an ordered [`Chain`] per tenant.
//!
//! Calls are async and run on the caller's task: wasmtime runs each call on
//! a fiber that suspends while a host capability waits on the session store,
//! and hands the thread back every so often while guest code runs (fuel
//! yields). Each call is bounded by its plugin's deadline. Loading compiles
//! the component first, which is CPU-bound (seconds for a Python component
//! on a cache miss): load plugins before serving.
//!
//! The types generated from `wit/` stay inside: `bindings` generates them,
//! `convert` alone converts them to and from the host's own types (in
//! `types`, plus the session model of [`crate::session`]), implements the
//! imported interfaces over `host`'s capabilities and wraps the exports.
//! Everything else, this module's API included, speaks host types only.
//! `instance` creates and pools a plugin's instances, `plugin` runs its
//! hooks with every limit armed, `chain` runs a tenant's plugins in order.

mod bindings;
mod breaker;
mod capability;
mod chain;
pub mod cli_support;
mod convert;
mod engine;
mod error;
mod host;
mod instance;
mod limits;
mod output;
mod plugin;
mod quiet;
mod share;
mod types;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use serde::{Deserialize, Serialize};

pub use breaker::{BreakerSettings, BreakerView};
pub use capability::{Capability, ComponentError, WIT_PACKAGE, WIT_VERSION};
pub use chain::{Chain, Decision, EndOutcome, MessageOutcome};
pub(crate) use chain::{check_changes, check_reply};
pub use convert::PluginSession;
pub use engine::CacheUse;
pub use error::{FailureKind, PluginFailure};
pub use limits::{EngineSettings, LimitOverrides, Limits};
pub use plugin::{
    Call, CallReport, LoadedPlugin, OnError, Percentiles, PluginStats, RECENT_CALLS, RecentCost,
};
pub use types::{
    Changes, Denial, Description, EndInfo, HOOK_NAMES, Hook, ListedSessions, LogLevel, LogLine,
    MessageReply, UpdateVerdict, Verdict,
};

use bindings::PluginPre;
use engine::SharedEngine;
use host::{HostState, PluginEnv};
pub use share::{MemoryPool, TenantShare};

use crate::metrics::PluginMetrics;
use crate::store::{AuditStore, KvStore, SessionStore, StoreBackend};

/// The stores behind the capabilities plugins import: `sessions` (listing a
/// user's sessions), `kv` and `audit`.
#[derive(Clone)]
pub struct HostStores {
    pub sessions: Arc<dyn SessionStore>,
    pub kv: Arc<dyn KvStore>,
    pub audit: Arc<dyn AuditStore>,
}

impl HostStores {
    /// All three from one backend.
    pub fn of(backend: Arc<dyn StoreBackend>) -> HostStores {
        HostStores {
            sessions: backend.clone(),
            kv: backend.clone(),
            audit: backend,
        }
    }
}

impl std::fmt::Debug for HostStores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostStores").finish_non_exhaustive()
    }
}

/// How a tenant's config describes one plugin of its chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginSpec {
    /// The plugin's name in the chain: the key of its private state and kv.
    pub name: String,
    /// The component file.
    pub path: PathBuf,
    /// Configuration attributes passed to `init`.
    #[serde(default)]
    pub config: std::collections::BTreeMap<String, String>,
    /// Capabilities the plugin may import. `log` and `clock` are granted
    /// unless listed in `deny`.
    #[serde(default)]
    pub grants: Vec<Capability>,
    /// Per-plugin limit overrides.
    #[serde(default)]
    pub limits: LimitOverrides,
    /// What a failure means for hooks that can veto.
    #[serde(default)]
    pub on_error: OnError,
    /// Keep warm instances between calls (default). With `false`, every
    /// call gets a fresh instance: slower, but nothing survives a call.
    #[serde(default = "yes")]
    pub instance_reuse: bool,
    /// When the plugin's circuit breaker opens, and for how long.
    #[serde(default)]
    pub circuit: BreakerSettings,
}

fn yes() -> bool {
    true
}

impl PluginSpec {
    /// The capabilities this spec grants: `log` and `clock` always, plus the
    /// listed ones.
    pub fn granted(&self) -> Vec<Capability> {
        let mut caps = vec![Capability::Log, Capability::Clock];
        caps.extend(self.grants.iter().copied());
        caps.sort();
        caps.dedup();
        caps
    }
}

/// Why a plugin did not load.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Component(#[from] ComponentError),
    #[error("{}", .0.message)]
    Start(PluginFailure),
    #[error("{0}")]
    Other(String),
}

/// What `sessiond plugin check` reports about a component.
#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    pub name: String,
    pub version: String,
    pub hooks: Vec<&'static str>,
    pub capabilities: Vec<Capability>,
    pub world: String,
    pub cache: CacheUse,
    pub size_bytes: u64,
}

struct Compiled {
    pre: PluginPre<HostState>,
    imports: Vec<Capability>,
    cache: CacheUse,
}

/// A compiled component and the plugins loaded from it.
type CompiledUse = (Arc<Compiled>, Vec<Weak<LoadedPlugin>>);

/// The plugin runtime of the process.
pub struct Runtime {
    engine: Arc<SharedEngine>,
    stores: HostStores,
    /// Compiled components by SHA-256, with the plugins loaded from each
    /// (see [`Runtime::prune`]).
    compiled: Mutex<HashMap<[u8; 32], CompiledUse>>,
    metrics: Option<PluginMetrics>,
    /// `runtime.memory_budget_mib`, shared by every tenant.
    memory: Arc<MemoryPool>,
    /// Each tenant's share, set before its plugins load.
    shares: Mutex<HashMap<String, Arc<TenantShare>>>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").finish_non_exhaustive()
    }
}

impl Runtime {
    /// Creates the engine. `stores` back the `kv`, `sessions` and `audit`
    /// capabilities.
    pub fn new(settings: EngineSettings, stores: HostStores) -> anyhow::Result<Runtime> {
        let memory = Arc::new(MemoryPool::new(
            settings.memory_budget_mib.saturating_mul(1 << 20),
        ));
        Ok(Runtime {
            engine: Arc::new(SharedEngine::new(settings)?),
            stores,
            compiled: Mutex::new(HashMap::new()),
            metrics: None,
            memory,
            shares: Mutex::new(HashMap::new()),
        })
    }

    /// Sets `tenant`'s share of the host (`quota.max_plugin_calls` and
    /// `quota.memory_mib`) for the plugins loaded from now on. A tenant
    /// without one gets every call slot and the whole budget.
    pub fn set_share(&self, tenant: &str, max_calls: usize, memory_mib: u64) -> Arc<TenantShare> {
        let share = Arc::new(TenantShare::new(
            max_calls,
            memory_mib.saturating_mul(1 << 20),
            self.memory.clone(),
        ));
        if let Ok(mut shares) = self.shares.lock() {
            shares.insert(tenant.to_string(), share.clone());
        }
        share
    }

    /// `tenant`'s share (see [`set_share`](Self::set_share)).
    pub fn share(&self, tenant: &str) -> Arc<TenantShare> {
        let found = self
            .shares
            .lock()
            .ok()
            .and_then(|shares| shares.get(tenant).cloned());
        found.unwrap_or_else(|| {
            self.set_share(
                tenant,
                self.engine.settings.max_plugin_calls,
                self.engine.settings.memory_budget_mib,
            )
        })
    }

    /// The host's memory budget and what live instances hold of it.
    pub fn memory(&self) -> &MemoryPool {
        &self.memory
    }

    /// Every tenant's share set so far, by tenant name.
    pub fn shares(&self) -> Vec<(String, Arc<TenantShare>)> {
        let shares = self.shares.lock().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<_> = shares
            .iter()
            .map(|(name, share)| (name.clone(), share.clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Records every hook call of the plugins loaded from now on in
    /// `metrics`.
    pub fn with_metrics(mut self, metrics: PluginMetrics) -> Runtime {
        self.metrics = Some(metrics);
        self
    }

    /// The engine settings in force.
    pub fn settings(&self) -> &EngineSettings {
        &self.engine.settings
    }

    fn compile(&self, bytes: &[u8]) -> Result<Arc<Compiled>, LoadError> {
        use sha2::Digest;
        let key: [u8; 32] = sha2::Sha256::digest(bytes).into();
        if let Some(c) = self
            .compiled
            .lock()
            .ok()
            .and_then(|m| m.get(&key).map(|(c, _)| c.clone()))
        {
            return Ok(c);
        }
        capability::check_header(bytes)?;
        let (component, cache) = self
            .engine
            .compile(bytes)
            .map_err(|e| ComponentError::Invalid(format!("{e:#}")))?;
        let imports = capability::check_world(&self.engine.engine, &component)?;
        let pre = self
            .engine
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::Other(format!("cannot link the component: {e:#}")))?;
        let pre = PluginPre::new(pre).map_err(|e| {
            LoadError::Other(format!("the component does not fit the world: {e:#}"))
        })?;
        let compiled = Arc::new(Compiled {
            pre,
            imports,
            cache,
        });
        if let Ok(mut m) = self.compiled.lock() {
            m.entry(key)
                .or_insert_with(|| (compiled.clone(), Vec::new()));
        }
        Ok(compiled)
    }

    /// Notes that `plugin` was loaded from the component `key`.
    fn used_by(&self, key: [u8; 32], plugin: &Arc<LoadedPlugin>) {
        if let Ok(mut m) = self.compiled.lock()
            && let Some((_, users)) = m.get_mut(&key)
        {
            users.retain(|w| w.strong_count() > 0);
            users.push(Arc::downgrade(plugin));
        }
    }

    /// Drops the compiled components no loaded plugin uses any more: a
    /// version a swap replaced, once its last request has ended, or one
    /// compiled only to be checked. Loading one again reads it from the
    /// disk cache (`runtime.cache_dir`) instead of compiling it.
    pub fn prune(&self) -> usize {
        let Ok(mut m) = self.compiled.lock() else {
            return 0;
        };
        let before = m.len();
        m.retain(|_, (_, users)| {
            users.retain(|w| w.strong_count() > 0);
            !users.is_empty()
        });
        before - m.len()
    }

    /// Compiles `bytes` into the disk cache (`runtime.cache_dir`) only, so
    /// that a later load on this host reads it instead of compiling; keeps
    /// nothing in memory. Call it from a blocking task. Without a disk
    /// cache it does nothing.
    pub fn warm(&self, bytes: &[u8]) -> Result<(), LoadError> {
        let key: [u8; 32] = {
            use sha2::Digest as _;
            sha2::Sha256::digest(bytes).into()
        };
        let in_memory = self.compiled.lock().is_ok_and(|m| m.contains_key(&key));
        if self.engine.settings.cache_dir.is_none() || in_memory {
            return Ok(());
        }
        capability::check_header(bytes)?;
        self.engine
            .compile(bytes)
            .map(drop)
            .map_err(|e| LoadError::Component(ComponentError::Invalid(format!("{e:#}"))))
    }

    fn read(path: &Path) -> Result<Vec<u8>, LoadError> {
        std::fs::read(path).map_err(|source| LoadError::Read {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Loads one plugin for `tenant`: checks the component against the world
    /// and the spec's grants, then instantiates it, calls `describe` and
    /// `init`.
    pub async fn load(
        &self,
        tenant: &str,
        spec: &PluginSpec,
    ) -> Result<Arc<LoadedPlugin>, LoadError> {
        let bytes = Self::read(&spec.path)?;
        self.load_bytes(tenant, spec, &bytes).await
    }

    /// [`Runtime::load`] from bytes in memory.
    pub async fn load_bytes(
        &self,
        tenant: &str,
        spec: &PluginSpec,
        bytes: &[u8],
    ) -> Result<Arc<LoadedPlugin>, LoadError> {
        let compiled = self.compile(bytes)?;
        let key: [u8; 32] = {
            use sha2::Digest as _;
            sha2::Sha256::digest(bytes).into()
        };
        capability::check_grants(&compiled.imports, &spec.granted())?;
        let limits = self.engine.settings.default_limits.with(&spec.limits);
        if limits.memory_mib > self.engine.settings.max_memory_mib {
            return Err(LoadError::Other(format!(
                "memory_mib {} exceeds the host's max_memory_mib {}",
                limits.memory_mib, self.engine.settings.max_memory_mib
            )));
        }
        let env = Arc::new(PluginEnv {
            tenant: tenant.to_string(),
            plugin: spec.name.clone(),
            stores: self.stores.clone(),
            share: self.share(tenant),
            lines: quiet::LogBudget::new(
                limits.log_lines_per_second,
                limits.log_burst,
                self.metrics
                    .as_ref()
                    .map(|m| m.dropped_lines(tenant, &spec.name, "plugin")),
            ),
        });
        let plugin = LoadedPlugin::load(plugin::LoadParts {
            name: spec.name.clone(),
            tenant: tenant.to_string(),
            imports: compiled.imports.clone(),
            limits,
            on_error: spec.on_error,
            reuse: spec.instance_reuse,
            config: spec
                .config
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            pre: compiled.pre.clone(),
            env,
            engine: self.engine.clone(),
            metrics: self.metrics.clone(),
            circuit: spec.circuit,
        })
        .await
        .map_err(LoadError::Start)?;
        let plugin = Arc::new(plugin);
        self.used_by(key, &plugin);
        Ok(plugin)
    }

    /// Checks a component file without a config: validates it against the
    /// world, instantiates it and asks it to describe itself (`init` is not
    /// called).
    pub async fn inspect(&self, path: &Path) -> Result<Inspection, LoadError> {
        let bytes = Self::read(path)?;
        self.inspect_bytes(&bytes).await
    }

    /// Compiles `bytes` into this host's cache of compiled components, so
    /// that loading them later does not compile on the caller's thread
    /// (call it from a blocking task).
    pub fn precompile(&self, bytes: &[u8]) -> Result<(), LoadError> {
        self.compile(bytes).map(drop)
    }

    /// [`Runtime::inspect`] of a component in memory (an upload to the
    /// operator API).
    pub async fn inspect_bytes(&self, bytes: &[u8]) -> Result<Inspection, LoadError> {
        let compiled = self.compile(bytes)?;
        let env = Arc::new(PluginEnv {
            tenant: "check".into(),
            plugin: "check".into(),
            stores: self.stores.clone(),
            share: Arc::new(TenantShare::unbounded()),
            lines: quiet::LogBudget::unbounded(),
        });
        let description = LoadedPlugin::describe_only(plugin::LoadParts {
            name: "check".into(),
            tenant: "check".into(),
            imports: compiled.imports.clone(),
            limits: self.engine.settings.default_limits,
            on_error: OnError::Deny,
            reuse: false,
            config: Vec::new(),
            pre: compiled.pre.clone(),
            env,
            engine: self.engine.clone(),
            metrics: None,
            circuit: BreakerSettings::default(),
        })
        .await
        .map_err(LoadError::Start)?;
        Ok(Inspection {
            name: description.name,
            version: description.version,
            hooks: description.hooks,
            capabilities: compiled.imports.clone(),
            world: format!("{WIT_PACKAGE}/plugin@{WIT_VERSION}"),
            cache: compiled.cache,
            size_bytes: bytes.len() as u64,
        })
    }
}
