//! The handles every part of a running server shares: the stores (one
//! handle per concern), the plugin runtime, the tenant registry, the HTTP
//! settings and this host's end worker. [`crate::server`] builds one
//! [`App`]; the service layer, the API, the sweeper and the end worker read
//! it and never build anything themselves.

use std::sync::Arc;

use crate::config::{MetricsConfig, ServerConfig};
use crate::ends::EndWorker;
use crate::metrics::Metrics;
use crate::runtime::Runtime;
use crate::store::{AuditStore, EndQueue, SessionStore, StoreBackend};
use crate::tenant::TenantRegistry;

/// What a running server shares.
pub struct App {
    /// Sessions, and the steps that end them.
    pub sessions: Arc<dyn SessionStore>,
    /// The durable end queue (read for `GET /v1/ends`; worked by the end
    /// worker).
    pub end_queue: Arc<dyn EndQueue>,
    /// The tenants' audit streams (`GET /v1/audit`).
    pub audit: Arc<dyn AuditStore>,
    pub runtime: Arc<Runtime>,
    pub tenants: Arc<TenantRegistry>,
    pub server: ServerConfig,
    /// This host's end worker: woken when this host queues end jobs.
    pub ends: Arc<EndWorker>,
    /// What `GET /metrics` exports, and who may read it.
    pub metrics: Arc<Metrics>,
    pub metrics_access: MetricsConfig,
}

impl App {
    /// An app over one store backend (which records into `metrics` when
    /// it is a [`crate::store::metered::MeteredStore`]).
    pub fn new(
        store: Arc<dyn StoreBackend>,
        runtime: Arc<Runtime>,
        tenants: TenantRegistry,
        server: ServerConfig,
        ends: EndWorker,
        metrics: Arc<Metrics>,
        metrics_access: MetricsConfig,
    ) -> App {
        App {
            sessions: store.clone(),
            end_queue: store.clone(),
            audit: store,
            runtime,
            tenants: Arc::new(tenants),
            server,
            ends: Arc::new(ends),
            metrics,
            metrics_access,
        }
    }
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("tenants", &self.tenants.current().len())
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}
