//! The control plane: tenants created through the operator API, kept in
//! the store ([`crate::store::ControlStore`]) and served by every host.
//!
//! Each host keeps the tenants of the control store in its registry beside
//! those of `sessiond.toml`. [`ControlPlane::refresh`] reads the control
//! revision; when it moved, it reads every record, builds the tenants whose
//! record changed (fetching their components from the store, checking each
//! one's SHA-256, and compiling it off the request path into this host's own
//! cache), then swaps the registry at once. A request holds the tenant it
//! started with, so a call in flight finishes on the version it began on and
//! the old instances go when their last request ends.
//!
//! A host refreshes after each change made through it (so its own answer
//! already holds), every `operator.poll_ms`, and, on Redis, as soon as a
//! change is published (`crate::refresher`). The periodic read is what guarantees the
//! bound: pub/sub loses what is published while a host is disconnected.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use sha2::Digest as _;
use tokio::sync::{Mutex, Notify};
use tokio_util::sync::CancellationToken;

use crate::admission::Admission;
use crate::config::{Config, OperatorConfig, quota};
use crate::runtime::{LoadError, Runtime};
use crate::store::{ControlRecord, ControlStore};
use crate::tenant::{Tenant, TenantRegistry, Tenants};

pub mod record;

pub use record::{
    ChainEntry, ChainRevision, ComponentRecord, KeyRecord, TenantRecord, TenantSettings,
};

/// What this host has applied of the control store.
#[derive(Default)]
struct Applied {
    /// The control revision the registry reflects (none before the first
    /// refresh).
    revision: Option<u64>,
    /// The tenants built from records.
    tenants: BTreeMap<String, Built>,
    /// The records that could not be built, by the revision that failed
    /// (logged once each; retried at every refresh).
    failed: BTreeMap<String, u64>,
}

/// A tenant built from its record.
#[derive(Clone)]
struct Built {
    /// The record's chain revision (its plugins are reused while it holds).
    chain: u64,
    /// Being deleted ([`TenantRecord::deleting`]).
    deleting: bool,
    tenant: Arc<Tenant>,
}

/// What a refresh changes on this host: the registry, the admission gates
/// and the runtime's shares, loading plugins with the runtime.
#[derive(Clone, Copy)]
pub struct Targets<'a> {
    pub runtime: &'a Arc<Runtime>,
    pub tenants: &'a TenantRegistry,
    pub admission: &'a Admission,
}

/// This host's view of the control store.
pub struct ControlPlane {
    store: Arc<dyn ControlStore>,
    /// `[operator]`: upload cap, components per tenant, poll period.
    pub settings: OperatorConfig,
    /// The config, for quota defaults and the end queue's reclaim time.
    config: Config,
    applied: Mutex<Applied>,
    /// Woken by a published change.
    wake: Notify,
    /// Where changes are published (Redis: the URL and the channel).
    notices: Option<(String, String)>,
    /// The components (tenant, SHA-256) this host has compiled into its
    /// disk cache, or is compiling ([`ControlPlane::warm`]).
    warmed: std::sync::Mutex<HashSet<(String, String)>>,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// The lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

impl ControlPlane {
    /// The control plane over `store`, with `config`'s `[operator]`.
    pub fn new(store: Arc<dyn ControlStore>, config: &Config) -> ControlPlane {
        ControlPlane {
            store,
            settings: config.operator.clone(),
            config: config.clone(),
            applied: Mutex::default(),
            wake: Notify::new(),
            notices: None,
            warmed: std::sync::Mutex::default(),
        }
    }

    /// This control plane, listening for changes published on `channel` of
    /// the Redis server at `url`.
    pub fn with_notices(mut self, url: String, channel: String) -> ControlPlane {
        self.notices = Some((url, channel));
        self
    }

    /// The store it reads.
    pub fn store(&self) -> &Arc<dyn ControlStore> {
        &self.store
    }

    /// Brings the registry up to the control store: builds the tenants
    /// whose record changed and swaps them in. Returns whether anything
    /// changed. A record that cannot be built is logged and its tenant left
    /// as it was (absent when it is new).
    pub async fn refresh(&self, to: Targets<'_>) -> anyhow::Result<bool> {
        let mut applied = self.applied.lock().await;
        let revision = self.store.control_revision().await?;
        if applied.revision == Some(revision) {
            return Ok(false);
        }
        let records = self.store.control_records().await?;
        let current = to.tenants.current();
        let fixed: Vec<Arc<Tenant>> = current
            .iter()
            .filter(|t| t.revision.is_none())
            .cloned()
            .collect();
        let count = fixed.len() + records.len();
        let mut next = BTreeMap::new();
        let mut failed = BTreeMap::new();
        for r in &records {
            if fixed.iter().any(|t| t.name == r.name) {
                tracing::warn!(tenant = %r.name, "the control store has a tenant that \
                    sessiond.toml also defines; the config's is served");
                continue;
            }
            let old = applied.tenants.get(&r.name);
            match self.build(to.runtime, r, count, old).await {
                Ok(built) => {
                    next.insert(r.name.clone(), built);
                }
                Err(e) => {
                    if applied.failed.get(&r.name) != Some(&r.revision) {
                        tracing::error!(tenant = %r.name, revision = r.revision,
                            "cannot apply the tenant's record; it is served as it was \
                             (none when it is new), and tried again at every refresh: {e:#}");
                    }
                    failed.insert(r.name.clone(), r.revision);
                    if let Some(old) = old {
                        next.insert(r.name.clone(), old.clone());
                    }
                }
            }
        }
        for Built { tenant, .. } in next.values() {
            let shares = quota::shares_of(&self.config, &tenant.config.quota, count);
            to.admission.set(&tenant.name, shares);
        }
        to.admission
            .retain(|name| next.contains_key(name) || fixed.iter().any(|t| t.name == name));
        let tenants = Tenants::of_shared(
            fixed
                .into_iter()
                .chain(next.values().map(|b| b.tenant.clone())),
        )?;
        to.tenants.replace(tenants);
        for r in &records {
            self.warm(to.runtime, r);
        }
        let changed = applied.revision.is_some();
        // A record that failed (a store read that timed out, say) is tried
        // again at the next refresh, whatever the revision then.
        applied.revision = failed.is_empty().then_some(revision);
        applied.tenants = next;
        applied.failed = failed;
        if changed {
            tracing::info!(revision, "control revision applied");
        }
        Ok(true)
    }

    /// The tenant of record `r`: its plugins reused from `old` when its
    /// chain did not change, else loaded from the store's components.
    async fn build(
        &self,
        runtime: &Arc<Runtime>,
        r: &ControlRecord,
        count: usize,
        old: Option<&Built>,
    ) -> anyhow::Result<Built> {
        let record: TenantRecord =
            serde_json::from_str(&r.body).context("the record is not readable")?;
        let config = record.config();
        let chain_revision = record.chain_revision();
        let disabled = record.disabled || record.deleting;
        if let Some(old) = old
            && old.chain == chain_revision
        {
            return Ok(Built {
                chain: chain_revision,
                deleting: record.deleting,
                tenant: Arc::new(Tenant {
                    name: r.name.clone(),
                    config,
                    chain: old.tenant.chain.clone(),
                    degraded: old.tenant.degraded.clone(),
                    revision: Some(r.revision),
                    disabled,
                }),
            });
        }
        let shares = quota::shares_of(&self.config, &config.quota, count);
        runtime.set_share(&r.name, shares.max_plugin_calls, shares.memory_mib);
        let mut bytes: HashMap<String, Vec<u8>> = HashMap::new();
        for entry in record
            .chain()
            .map(|c| c.plugins.as_slice())
            .unwrap_or_default()
        {
            let wasm = self.component(runtime, &r.name, &entry.sha256).await?;
            bytes.insert(entry.name.clone(), wasm);
        }
        let mut tenant = Tenant::load_with(
            &r.name,
            &config,
            self.config.ends.reclaim_after_ms,
            |spec| {
                let wasm = bytes.get(&spec.name);
                let name = r.name.as_str();
                async move {
                    let wasm = wasm.ok_or_else(|| {
                        LoadError::Other(format!("component of {:?} not fetched", spec.name))
                    })?;
                    runtime.load_bytes(name, spec, wasm).await
                }
            },
        )
        .await?;
        tenant.revision = Some(r.revision);
        tenant.disabled = disabled;
        Ok(Built {
            chain: chain_revision,
            deleting: record.deleting,
            tenant: Arc::new(tenant),
        })
    }

    /// Compiles each component of record `r` this host has not seen yet
    /// into its disk cache, in the background: uploaded components are
    /// compiled on every host before a chain names them, so that a swap
    /// to one loads it from the cache (a Python component takes seconds to
    /// compile, a Rust one a fraction of a second).
    fn warm(&self, runtime: &Arc<Runtime>, r: &ControlRecord) {
        let Ok(record) = serde_json::from_str::<TenantRecord>(&r.body) else {
            return;
        };
        let mut warmed = self.warmed.lock().unwrap_or_else(|e| e.into_inner());
        for c in record.components {
            if !warmed.insert((r.name.clone(), c.sha256.clone())) {
                continue;
            }
            let (store, runtime, tenant) = (self.store.clone(), runtime.clone(), r.name.clone());
            tokio::spawn(async move {
                let Ok(Some(wasm)) = store.component_get(&tenant, &c.sha256).await else {
                    return;
                };
                if sha256_hex(&wasm) != c.sha256 {
                    tracing::error!(tenant = %tenant, sha256 = %c.sha256,
                        "a component read from the store does not match its SHA-256; not compiled");
                    return;
                }
                let compiled = tokio::task::spawn_blocking(move || runtime.warm(&wasm)).await;
                if let Ok(Err(e)) = compiled {
                    tracing::warn!(tenant = %tenant, sha256 = %c.sha256,
                        "cannot compile an uploaded component ahead of use: {e}");
                }
            });
        }
    }

    /// The tenants being deleted, as this host serves them.
    pub async fn deleting(&self) -> Vec<Arc<Tenant>> {
        let applied = self.applied.lock().await;
        applied
            .tenants
            .values()
            .filter(|b| b.deleting)
            .map(|b| b.tenant.clone())
            .collect()
    }

    /// Removes the record of `tenant` (being deleted) and its components,
    /// unless its record changed since this host applied it. Returns
    /// whether this call removed it.
    pub async fn remove(&self, tenant: &Tenant) -> anyhow::Result<bool> {
        let Some(revision) = tenant.revision else {
            return Ok(false);
        };
        let record = self.store.control_record(&tenant.name).await?;
        let Some(record) = record.filter(|r| r.revision == revision) else {
            return Ok(false);
        };
        let parsed: TenantRecord = serde_json::from_str(&record.body)?;
        if self
            .store
            .control_remove(&tenant.name, revision)
            .await?
            .is_err()
        {
            return Ok(false);
        }
        for c in &parsed.components {
            self.store.component_remove(&tenant.name, &c.sha256).await?;
        }
        tracing::info!(tenant = %tenant.name, "tenant deleted");
        Ok(true)
    }

    /// Component `sha256` of `tenant` from the store, checked against its
    /// digest and compiled into this host's cache on a blocking thread.
    pub async fn component(
        &self,
        runtime: &Arc<Runtime>,
        tenant: &str,
        sha256: &str,
    ) -> anyhow::Result<Vec<u8>> {
        let wasm = self
            .store
            .component_get(tenant, sha256)
            .await?
            .with_context(|| format!("component {sha256} is not in the store"))?;
        let actual = sha256_hex(&wasm);
        anyhow::ensure!(
            actual == sha256,
            "component {sha256} read from the store has SHA-256 {actual}: refused"
        );
        compile_off_thread(runtime, wasm).await
    }

    /// Refreshes at once (after a change made through this host).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Waits until a refresh is asked for ([`ControlPlane::wake`], or a
    /// published change).
    pub async fn woken(&self) {
        self.wake.notified().await;
    }

    /// Listens for published changes until `stop`, when the store
    /// publishes them (Redis); none otherwise.
    pub fn listen(
        self: &Arc<Self>,
        stop: CancellationToken,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let (url, channel) = self.notices.clone()?;
        Some(tokio::spawn(listen(self.clone(), url, channel, stop)))
    }
}

/// Compiles `wasm` into the runtime's cache on a blocking thread (a
/// component can take seconds to compile); returns the bytes.
pub async fn compile_off_thread(runtime: &Arc<Runtime>, wasm: Vec<u8>) -> anyhow::Result<Vec<u8>> {
    let runtime = runtime.clone();
    tokio::task::spawn_blocking(move || runtime.precompile(&wasm).map(|()| wasm))
        .await
        .context("the compile task failed")?
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// Wakes the refresh on every change published on `channel`, reconnecting
/// after a lost connection.
async fn listen(control: Arc<ControlPlane>, url: String, channel: String, stop: CancellationToken) {
    use futures_util::StreamExt as _;
    while !stop.is_cancelled() {
        let subscribed = async {
            let client = redis::Client::open(url.as_str())?;
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        }
        .await;
        match subscribed {
            Ok(mut pubsub) => {
                // Anything published while we were away: the poll finds it,
                // and this wakes it now.
                control.wake();
                let mut messages = pubsub.on_message();
                loop {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        m = messages.next() => match m {
                            Some(_) => control.wake(),
                            None => break,
                        },
                    }
                }
            }
            Err(e) => tracing::debug!("cannot subscribe to control notices: {e}"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}
