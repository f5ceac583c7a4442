//! The server: builds the store, the plugin runtime and each tenant's chain
//! from a [`Config`], then serves the API until shut down.
//!
//! Shutdown (the `shutdown` future of [`serve`]) stops accepting connections,
//! lets in-flight requests finish, stops the sweeper between two sweeps and
//! waits for every end hook still running, then returns.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api;
use crate::config::{Backend, Config, ServerConfig, SweeperConfig, TenantConfig};
use crate::runtime::Hook;
use crate::runtime::{Chain, Runtime};
use crate::session::{EndReason, Millis, SessionRecord, now_ms};
use crate::store::memory::MemoryStore;
use crate::store::redis::RedisStore;
use crate::store::{SessionStore, UserLimit};

/// One tenant: its config and its plugin chain.
#[derive(Debug)]
pub struct TenantState {
    pub name: String,
    pub config: TenantConfig,
    pub chain: Chain,
}

impl TenantState {
    /// The per-user limit passed to the store, if the tenant has one.
    pub fn user_limit(&self) -> Option<UserLimit> {
        self.config.max_sessions_per_user.map(|max| UserLimit {
            max,
            policy: self.config.limit_policy,
        })
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
}

/// What every request handler shares.
pub struct Shared {
    pub store: Arc<dyn SessionStore>,
    pub runtime: Arc<Runtime>,
    pub tenants: BTreeMap<String, Arc<TenantState>>,
    /// SHA-256 of each configured API key, with its tenant.
    pub api_keys: Vec<([u8; 32], Arc<TenantState>)>,
    pub server: ServerConfig,
    /// End hooks in flight; shutdown waits for them.
    pub tasks: TaskTracker,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("tenants", &self.tenants.keys().collect::<Vec<_>>())
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

/// The state of the axum app (cheap to clone).
#[derive(Debug, Clone)]
pub struct AppState(pub Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    /// Runs `on-session-end` for a session that this caller took out of the
    /// store (so exactly once), on a blocking thread, tracked for shutdown.
    /// The returned handle may be awaited or dropped: the hook runs anyway.
    pub fn end_session(
        &self,
        tenant: &Arc<TenantState>,
        record: SessionRecord,
        reason: EndReason,
    ) -> tokio::task::JoinHandle<()> {
        let tenant = tenant.clone();
        self.tasks.spawn(async move {
            let end_id = api::ids::new_end_id();
            let ended_at = now_ms();
            tracing::info!(tenant = %tenant.name, session = %record.public_id,
                reason = reason.as_str(), end_id = %end_id, "session ended");
            if !tenant.chain.has(Hook::SessionEnd) {
                return;
            }
            let task = tokio::task::spawn_blocking(move || {
                tenant.chain.session_end(&record, reason, &end_id, ended_at)
            });
            if let Err(e) = task.await {
                tracing::error!("an on-session-end task failed: {e}");
            }
        })
    }

    /// Ends several sessions and waits until every end hook has run.
    pub async fn end_sessions(
        &self,
        tenant: &Arc<TenantState>,
        records: Vec<SessionRecord>,
        reason: EndReason,
    ) {
        let handles: Vec<_> = records
            .into_iter()
            .map(|r| self.end_session(tenant, r, reason))
            .collect();
        for h in handles {
            let _ = h.await;
        }
    }
}

/// A built server, ready to run.
#[derive(Debug)]
pub struct Server {
    state: AppState,
    sweeper: SweeperConfig,
}

/// Builds the store from `[store]`.
pub async fn build_store(config: &Config) -> anyhow::Result<Arc<dyn SessionStore>> {
    Ok(match config.store.backend {
        Backend::Memory => Arc::new(MemoryStore::with_audit_max_len(
            config.store.audit_max_len.max(1),
        )),
        Backend::Redis => Arc::new(
            RedisStore::connect_with(config.store.redis_config())
                .await
                .with_context(|| {
                    format!("connecting to Redis at {}", config.store.urls.join(","))
                })?,
        ),
    })
}

/// Builds the store, the runtime and every tenant's chain. A plugin that does
/// not load fails the build with its tenant, name and reason.
pub async fn build(config: Config) -> anyhow::Result<Server> {
    let store = build_store(&config).await?;
    let runtime = Arc::new(
        Runtime::new(
            config.runtime.clone(),
            store.clone(),
            tokio::runtime::Handle::current(),
        )
        .context("starting the plugin runtime")?,
    );
    let mut tenants = BTreeMap::new();
    let mut api_keys = Vec::new();
    for (name, tenant_config) in &config.tenants {
        let mut plugins = Vec::new();
        for spec in &tenant_config.plugins {
            let (rt, tenant, spec) = (runtime.clone(), name.clone(), spec.clone());
            let (plugin, path) = (spec.name.clone(), spec.path.display().to_string());
            let plugin = tokio::task::spawn_blocking(move || rt.load(&tenant, &spec))
                .await
                .context("loading a plugin")?
                .map_err(|e| anyhow::anyhow!("tenant {name:?}: plugin {plugin:?} ({path}): {e}"))?;
            tracing::info!(tenant = %name, plugin = %plugin.name,
                describe = %format!("{} {}", plugin.description.name, plugin.description.version),
                hooks = %plugin.description.hooks.join(","), "plugin loaded");
            plugins.push(plugin);
        }
        let max_lifetime = tenant_config.max_ttl_seconds.saturating_mul(1000);
        let tenant = Arc::new(TenantState {
            name: name.clone(),
            config: tenant_config.clone(),
            chain: Chain::new(plugins, max_lifetime),
        });
        for key in &tenant_config.api_keys {
            let hash = crate::config::parse_api_key_hash(key)
                .with_context(|| format!("tenants.{name}.api_keys: not a sha256:<hex> hash"))?;
            api_keys.push((hash, tenant.clone()));
        }
        tenants.insert(name.clone(), tenant);
    }
    let state = AppState(Arc::new(Shared {
        store,
        runtime,
        tenants,
        api_keys,
        server: config.server.clone(),
        tasks: TaskTracker::new(),
    }));
    Ok(Server {
        state,
        sweeper: config.sweeper,
    })
}

impl Server {
    /// The shared state (for tests and embedding).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves the API on `listener` until `shutdown` completes, then shuts
    /// down gracefully.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Server { state, sweeper } = self;
        let stop_sweeper = CancellationToken::new();
        let sweeper_task = tokio::spawn(crate::sweeper::run(
            state.clone(),
            sweeper,
            stop_sweeper.clone(),
        ));
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, tenants = state.tenants.len(), "sessiond listening");
        }
        let app = api::router(state.clone());
        let served = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await;
        tracing::info!("no longer accepting requests; finishing end hooks");
        stop_sweeper.cancel();
        if let Err(e) = sweeper_task.await {
            tracing::error!("the sweeper failed: {e}");
        }
        state.tasks.close();
        state.tasks.wait().await;
        tracing::info!("sessiond stopped");
        served.context("serving HTTP")
    }
}

/// Builds everything from `config` and serves on `listener` until `shutdown`
/// completes; returns once in-flight requests and end hooks are done.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    build(config).await?.run(listener, shutdown).await
}
