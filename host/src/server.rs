//! The server: builds the store, the plugin runtime and each tenant's chain
//! from a [`Config`], then serves the API until shut down.
//!
//! Shutdown (the `shutdown` future of [`serve`]) stops accepting connections,
//! lets in-flight requests finish, stops the sweeper between two sweeps, then
//! lets the end worker drain the end queue (bounded by
//! `ends.shutdown_drain_ms`) and finish every job it claimed, then returns.

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
use crate::ends::EndWorker;
use crate::runtime::Hook;
use crate::runtime::{Chain, Runtime};
use crate::session::{EndReason, Millis, SessionRecord};
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

    /// Whether ending one of this tenant's sessions queues an end job: only
    /// when some plugin implements `on-session-end`.
    pub fn queues_ends(&self) -> bool {
        self.chain.has(Hook::SessionEnd)
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
    /// Background work tied to requests; shutdown waits for it.
    pub tasks: TaskTracker,
    /// This host's end worker.
    pub ends: Arc<EndWorker>,
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
    /// Records that the store ended `records` (and, for a tenant with end
    /// hooks, queued their end jobs in the same step): logs each and wakes
    /// the end worker, which runs the hooks.
    pub fn ended(&self, tenant: &TenantState, records: &[SessionRecord], reason: EndReason) {
        for record in records {
            tracing::info!(tenant = %tenant.name, session = %record.public_id,
                reason = reason.as_str(), "session ended");
        }
        if !records.is_empty() && tenant.queues_ends() {
            self.ends.wake();
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
        Runtime::new(config.runtime.clone(), store.clone())
            .context("starting the plugin runtime")?,
    );
    let mut tenants = BTreeMap::new();
    let mut api_keys = Vec::new();
    for (name, tenant_config) in &config.tenants {
        let mut plugins = Vec::new();
        for spec in &tenant_config.plugins {
            let (plugin, path) = (spec.name.clone(), spec.path.display().to_string());
            let plugin = runtime
                .load(name, spec)
                .await
                .map_err(|e| anyhow::anyhow!("tenant {name:?}: plugin {plugin:?} ({path}): {e}"))?;
            tracing::info!(tenant = %name, plugin = %plugin.name,
                describe = %format!("{} {}", plugin.description.name, plugin.description.version),
                hooks = %plugin.description.hooks.join(","), "plugin loaded");
            plugins.push(plugin);
        }
        let max_lifetime = tenant_config.max_ttl_seconds.saturating_mul(1000);
        let chain = Chain::new(plugins, max_lifetime);
        // A job still running must never be taken over by another host.
        let end_chain_ms = chain.worst_case_ms(Hook::SessionEnd);
        if config.ends.reclaim_after_ms <= end_chain_ms.saturating_mul(2) {
            anyhow::bail!(
                "ends.reclaim_after_ms ({}) must be more than twice the longest end chain: \
                 tenant {name:?}'s on-session-end plugins may take {end_chain_ms} ms \
                 (the sum of their deadline_ms)",
                config.ends.reclaim_after_ms
            );
        }
        let tenant = Arc::new(TenantState {
            name: name.clone(),
            config: tenant_config.clone(),
            chain,
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
        ends: Arc::new(EndWorker::new(config.ends.clone())),
    }));
    Ok(Server {
        state,
        sweeper: config.sweeper,
    })
}

impl Server {
    /// Starts the sweeper and the end worker; `stop` stops both.
    fn start_background(&self, stop: &CancellationToken) -> Vec<tokio::task::JoinHandle<()>> {
        vec![
            tokio::spawn(crate::sweeper::run(
                self.state.clone(),
                self.sweeper.clone(),
                stop.clone(),
            )),
            tokio::spawn(crate::ends::run(self.state.clone(), stop.clone())),
        ]
    }

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
        let stop_background = CancellationToken::new();
        let background = self.start_background(&stop_background);
        let state = self.state;
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
        stop_background.cancel();
        for task in background {
            if let Err(e) = task.await {
                tracing::error!("a background task failed: {e}");
            }
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
