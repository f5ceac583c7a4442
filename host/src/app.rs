//! The handles every part of a running server shares: the stores (one
//! handle per concern), the plugin runtime, the tenant registry, the HTTP
//! settings and this host's end worker. [`crate::server`] builds one
//! [`App`]; the service layer, the API, the sweeper and the end worker read
//! it and never build anything themselves.

use std::sync::Arc;

use crate::config::ServerConfig;
use crate::ends::EndWorker;
use crate::runtime::Runtime;
use crate::service::turns::WriteTurns;
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
    /// The queues of this host's writers of each session.
    pub turns: WriteTurns,
}

impl App {
    /// An app over one store backend.
    pub fn new(
        store: Arc<dyn StoreBackend>,
        runtime: Arc<Runtime>,
        tenants: TenantRegistry,
        server: ServerConfig,
        ends: EndWorker,
    ) -> App {
        App {
            sessions: store.clone(),
            end_queue: store.clone(),
            audit: store,
            runtime,
            tenants: Arc::new(tenants),
            server,
            ends: Arc::new(ends),
            turns: WriteTurns::default(),
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
