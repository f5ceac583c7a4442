//! The composition root: builds the store, the plugin runtime, every tenant
//! and the shared [`App`] from a [`Config`], then serves the API and runs
//! the sweeper and the end worker until shut down. Only the CLI and the
//! tests import this module; nothing else builds anything.
//!
//! The API is served by [`crate::http`]. Shutdown (the `shutdown` future of
//! [`serve`]) stops accepting connections, lets in-flight requests finish and
//! closes what is still open after `server.shutdown_timeout_ms`, stops the
//! sweeper between two sweeps, then lets the end worker drain the end queue
//! (bounded by `ends.shutdown_drain_ms`) and finish every job it claimed,
//! then returns.

use std::future::Future;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api;
use crate::app::App;
use crate::config::{Config, StoreConfig, SweeperConfig};
use crate::ends::{EndWork, EndWorker};
use crate::http;
use crate::metrics::Metrics;
use crate::runtime::{HostStores, Runtime};
use crate::store::StoreBackend;
use crate::store::embedded::EmbeddedStore;
use crate::store::memory::MemoryStore;
use crate::store::metered::MeteredStore;
use crate::store::redis::RedisStore;
use crate::tenant::{Tenant, TenantRegistry, Tenants};

/// A built server, ready to run.
#[derive(Debug)]
pub struct Server {
    app: Arc<App>,
    sweeper: SweeperConfig,
}

/// Builds the store from `[store]`. The embedded store is opened (and its
/// data directory taken) here: a directory another process holds fails the
/// build with that process's PID.
pub async fn build_store(config: &Config) -> anyhow::Result<Arc<dyn StoreBackend>> {
    Ok(match &config.store {
        StoreConfig::Memory(memory) => {
            Arc::new(MemoryStore::with_audit_max_len(memory.audit_max_len.max(1)))
        }
        StoreConfig::Embedded(embedded) => {
            let mut settings = embedded.embedded_config();
            // Absolute, so that every message names the directory unmistakably.
            if let Ok(dir) = std::path::absolute(&settings.dir) {
                settings.dir = dir;
            }
            let dir = settings.dir.display().to_string();
            // Opening does a few blocking file operations (lock, schema check).
            let opened = tokio::task::spawn_blocking(move || EmbeddedStore::open(settings))
                .await
                .context("opening the embedded store")?;
            Arc::new(opened.with_context(|| format!("opening the embedded store in {dir}"))?)
        }
        StoreConfig::Redis(redis) => Arc::new(
            RedisStore::connect_with(redis.redis_config())
                .await
                .with_context(|| format!("connecting to Redis at {}", redis.urls.join(",")))?,
        ),
    })
}

/// Builds the store, the runtime and every tenant's chain. A plugin that does
/// not load fails the build with its tenant, name and reason.
pub async fn build(config: Config) -> anyhow::Result<Server> {
    let metrics = Arc::new(Metrics::new());
    // With `[metrics] enabled = false` nothing is counted: no store or
    // plugin metrics, and no per-request counters (see api::router).
    let counted = config.metrics.enabled;
    let store: Arc<dyn StoreBackend> = if counted {
        Arc::new(MeteredStore::new(
            build_store(&config).await?,
            metrics.store.clone(),
        ))
    } else {
        build_store(&config).await?
    };
    let runtime = Runtime::new(config.runtime.clone(), HostStores::of(store.clone()))
        .context("starting the plugin runtime")?;
    let runtime = Arc::new(if counted {
        runtime.with_metrics(metrics.plugins.clone())
    } else {
        runtime
    });
    let mut tenants = Vec::with_capacity(config.tenants.len());
    let mut gates = Vec::with_capacity(config.tenants.len());
    for (name, tenant) in &config.tenants {
        let shares = crate::config::quota::shares(&config, name);
        runtime.set_share(name, shares.max_plugin_calls, shares.memory_mib);
        gates.push((name.clone(), shares));
        tenants.push(Tenant::load(&runtime, name, tenant, config.ends.reclaim_after_ms).await?);
    }
    let mut control = crate::control::ControlPlane::new(store.clone(), &config);
    if let StoreConfig::Redis(redis) = &config.store
        && let Some(url) = redis.urls.first()
    {
        control = control.with_notices(url.clone(), format!("{}:control", redis.prefix));
    }
    let app = App::new(
        store,
        runtime,
        TenantRegistry::new(Tenants::new(tenants)?),
        config.server.clone(),
        EndWorker::new(config.ends.clone()),
        metrics,
        config.metrics.clone(),
    )
    .with_webhooks(config.webhooks.clone())
    .with_operator_keys(config.operator.key_hashes())
    .with_control(control)
    .with_admission({
        let admission = crate::admission::Admission::new(gates);
        if config.server.fair_cpu {
            let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
            admission.with_fair_cpu(cpus)
        } else {
            admission
        }
    });
    // The operator API's tenants are served from the first request on.
    crate::service::control::refresh(&app)
        .await
        .context("reading the tenants of the control store")?;
    Ok(Server {
        app: Arc::new(app),
        sweeper: config.sweeper,
    })
}

impl Server {
    /// Starts the sweeper, the end worker and the webhook sender; `stop`
    /// stops them.
    fn start_background(&self, stop: &CancellationToken) -> Vec<tokio::task::JoinHandle<()>> {
        let work = EndWork {
            worker: self.app.ends.clone(),
            tenants: self.app.tenants.clone(),
            queue: self.app.end_queue.clone(),
            webhooks: Some(self.app.webhooks.clone()),
        };
        vec![
            tokio::spawn(crate::sweeper::run(
                self.app.clone(),
                self.sweeper.clone(),
                stop.clone(),
            )),
            tokio::spawn(crate::ends::run(work, stop.clone())),
            tokio::spawn(crate::refresher::run(self.app.clone(), stop.clone())),
            tokio::spawn(crate::webhooks::sender::run(
                self.app.webhooks.clone(),
                self.app.tenants.clone(),
                stop.clone(),
            )),
        ]
    }

    /// The shared handles (for tests and embedding).
    pub fn app(&self) -> &Arc<App> {
        &self.app
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
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, tenants = self.app.tenants.current().len(), "sessiond listening");
        }
        let router = api::router(self.app.clone());
        let limits = http::Limits::of(&self.app.server);
        http::serve(listener, router, limits, shutdown).await;
        tracing::info!("no longer accepting requests; finishing end hooks");
        stop_background.cancel();
        for task in background {
            if let Err(e) = task.await {
                tracing::error!("a background task failed: {e}");
            }
        }
        tracing::info!("sessiond stopped");
        Ok(())
    }
}

/// Builds everything from `config` and serves on `listener` until `shutdown`
/// completes; returns once in-flight requests (or the shutdown deadline) and
/// end hooks are done.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    build(config).await?.run(listener, shutdown).await
}
