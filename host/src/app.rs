//! The handles every part of a running server shares: the stores (one
//! handle per concern), the plugin runtime, the tenant registry, the HTTP
//! settings and this host's end worker. [`crate::server`] builds one
//! [`App`]; the service layer, the API, the sweeper and the end worker read
//! it and never build anything themselves.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use crate::admission::Admission;
use crate::config::{Config, MetricsConfig, ServerConfig, WebhooksConfig};
use crate::control::ControlPlane;
use crate::ends::EndWorker;
use crate::metrics::Metrics;
use crate::runtime::Runtime;
use crate::service::turns::WriteTurns;
use crate::store::{AuditStore, EndQueue, SessionStore, StoreBackend};
use crate::tenant::TenantRegistry;
use crate::webhooks::Webhooks;

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
    /// The idempotency keys of the requests running on this host.
    pub keys_in_flight: KeysInFlight,
    /// The queues of this host's writers of each session.
    pub turns: WriteTurns,
    /// Each tenant's admission gate (its requests in flight and rate).
    pub admission: Admission,
    pub webhooks: Arc<Webhooks>,
    /// The SHA-256 hashes of the operator's keys (`[operator]`).
    pub operator_keys: Vec<[u8; 32]>,
    /// The tenants of the operator API, as this host applies them.
    pub control: Arc<ControlPlane>,
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
        let webhooks = Arc::new(Webhooks::new(
            store.clone(),
            WebhooksConfig::default(),
            metrics.clone(),
        ));
        let control = Arc::new(ControlPlane::new(store.clone(), &Config::default()));
        App {
            control,
            sessions: store.clone(),
            end_queue: store.clone(),
            audit: store,
            runtime,
            tenants: Arc::new(tenants),
            server,
            ends: Arc::new(ends),
            metrics,
            metrics_access,
            keys_in_flight: KeysInFlight::default(),
            turns: WriteTurns::default(),
            admission: Admission::default(),
            webhooks,
            operator_keys: Vec::new(),
        }
    }

    /// The same app, sending webhooks with `config`.
    pub fn with_webhooks(mut self, config: WebhooksConfig) -> App {
        self.webhooks = Arc::new(Webhooks::new(
            self.webhooks.outbox.clone(),
            config,
            self.metrics.clone(),
        ));
        self
    }

    /// This app with the operator's keys (their SHA-256 hashes).
    pub fn with_operator_keys(mut self, hashes: Vec<[u8; 32]>) -> App {
        self.operator_keys = hashes;
        self
    }

    /// Whether `key` is one of the operator's, compared in constant time
    /// against every operator key.
    pub fn is_operator_key(&self, key: &str) -> bool {
        use sha2::Digest as _;
        use subtle::ConstantTimeEq as _;
        let presented: [u8; 32] = sha2::Sha256::digest(key.as_bytes()).into();
        self.operator_keys
            .iter()
            .fold(subtle::Choice::from(0), |found, hash| {
                found | hash.ct_eq(&presented)
            })
            .into()
    }

    /// This app with its control plane.
    pub fn with_control(mut self, control: ControlPlane) -> App {
        self.control = Arc::new(control);
        self
    }

    /// This app with the tenants' admission gates.
    pub fn with_admission(mut self, admission: Admission) -> App {
        self.admission = admission;
        self
    }
}

/// The idempotency keys of requests running on this host (their store
/// ids), so that a retry sent while the first request still runs is told
/// so instead of racing it.
#[derive(Debug, Default)]
pub struct KeysInFlight(Mutex<HashSet<String>>);

impl KeysInFlight {
    /// Marks `id` as running until the guard drops; none when it already is.
    pub(crate) fn enter(&self, id: &str) -> Option<InFlight<'_>> {
        let mut set = self.0.lock().unwrap_or_else(|e| e.into_inner());
        set.insert(id.to_string()).then(|| InFlight {
            keys: self,
            id: id.to_string(),
        })
    }
}

/// A running request's hold on its idempotency key.
pub(crate) struct InFlight<'a> {
    keys: &'a KeysInFlight,
    id: String,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut set = self.keys.0.lock().unwrap_or_else(|e| e.into_inner());
        set.remove(&self.id);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_request_per_key_at_a_time() {
        let keys = KeysInFlight::default();
        let first = keys.enter("k").unwrap();
        assert!(keys.enter("k").is_none());
        assert!(keys.enter("j").is_some());
        drop(first);
        assert!(keys.enter("k").is_some());
    }
}
