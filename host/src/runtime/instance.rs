//! The instances of one loaded plugin: creating one (instantiation, then
//! `init`), arming its store's limits for a call, bounding a call by the
//! deadline, and the pool of warm instances between calls.
//!
//! Instance strategy: an instance belongs to one (tenant, plugin) pair and is
//! never shared with another tenant. After a successful call it goes back to
//! a small pool and serves later calls of the same tenant and plugin, because
//! a fresh componentize-py instance costs ~0.65 ms against ~3 µs for a call on
//! a warm one. An instance is discarded after any trap or limit, after
//! `recycle_after_calls` calls, or after every call when the plugin sets
//! `instance_reuse = false`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;
use wasmtime::{Store, UpdateDeadline};

use super::bindings::{Plugin, PluginPre};
use super::convert;
use super::engine::SharedEngine;
use super::error::{FailureKind, HostTrap, PluginFailure, classify};
use super::host::{HostState, PluginEnv};
use super::limits::Limits;

/// Fuel between two yields of a running plugin back to the async runtime
/// (about a millisecond of guest code): a busy plugin then shares its
/// thread with other requests instead of holding it up to its deadline.
const FUEL_YIELD_INTERVAL: u64 = 2_000_000;

/// An instance with its store, and the calls it has served.
pub(crate) struct Warm {
    pub store: Store<HostState>,
    pub bindings: Plugin,
    pub calls: u64,
    /// The tenant's plugin-call slot held by the call under way; given back
    /// when the instance returns to the pool or is dropped.
    pub slot: Option<OwnedSemaphorePermit>,
}

/// What creating and keeping the instances of one plugin takes.
pub(crate) struct Instances {
    /// The plugin's name, for failures.
    plugin: String,
    limits: Limits,
    reuse: bool,
    config: Vec<(String, String)>,
    pre: PluginPre<HostState>,
    env: Arc<PluginEnv>,
    engine: Arc<SharedEngine>,
    pool: Mutex<Vec<Warm>>,
}

impl Instances {
    /// The instances of plugin `plugin`, none created yet. `config` is what
    /// `init` receives; with `reuse` off, every call gets a fresh instance.
    pub fn new(
        plugin: String,
        limits: Limits,
        reuse: bool,
        config: Vec<(String, String)>,
        pre: PluginPre<HostState>,
        env: Arc<PluginEnv>,
        engine: Arc<SharedEngine>,
    ) -> Instances {
        Instances {
            plugin,
            limits,
            reuse,
            config,
            pre,
            env,
            engine,
            pool: Mutex::new(Vec::new()),
        }
    }

    /// Arms every limit of one call on `store`.
    pub fn arm(&self, store: &mut Store<HostState>, session: Option<String>, input: u64) {
        // Fuel is always enabled on this engine, so setting it cannot fail.
        let _ = store.set_fuel(self.limits.fuel);
        // The next tick interrupts the guest, and so does every tick after:
        // the store's epoch callback hands the thread back or, past the
        // deadline, stops the call.
        store.set_epoch_deadline(1);
        let data = store.data_mut();
        data.call.arm(&self.limits, session, input);
        // Output of an earlier call or of instantiation is not this call's.
        let _ = data.output.take();
    }

    /// Bounds a call into the component by the plugin's deadline.
    ///
    /// Epoch interruption stops guest code at the deadline; this also stops a
    /// plugin that waits in the host past it (a WASI sleep or poll, say).
    /// The instance is then discarded with the future.
    pub async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = wasmtime::Result<T>>,
    ) -> wasmtime::Result<T> {
        let deadline = self.limits.deadline_ms;
        let grace = self.engine.settings.epoch_tick_ms.max(1) * 2;
        match tokio::time::timeout(Duration::from_millis(deadline + grace), call).await {
            Ok(result) => result,
            Err(_) => Err(HostTrap::Deadline(deadline).into()),
        }
    }

    /// A fresh instance, after `init` when `init` is set.
    pub async fn instantiate(&self, init: bool) -> Result<Warm, PluginFailure> {
        let state = HostState::new(self.env.clone(), self.limits.memory_bytes());
        let mut store = Store::new(&self.engine.engine, state);
        store.limiter(|s| &mut s.limiter);
        // Guest code runs on the request's task: hand the thread back to
        // other tasks every so often, so a busy plugin delays nobody else.
        // Fuel is always enabled on this engine, so this cannot fail.
        let _ = store.fuel_async_yield_interval(Some(FUEL_YIELD_INTERVAL));
        // Fuel alone does not bound how long guest code holds the thread: a
        // call that touches fresh memory pages burns little fuel per
        // millisecond. So every epoch tick (`runtime.epoch_tick_ms`) the call
        // also yields to the other tasks, and at its deadline it stops.
        store.epoch_deadline_callback(|ctx| {
            let call = &ctx.data().call;
            let over = call
                .started
                .is_some_and(|t| t.elapsed().as_millis() as u64 >= call.deadline_ms);
            if over {
                return Err(wasmtime::Trap::Interrupt.into());
            }
            Ok(UpdateDeadline::YieldCustom(
                1,
                Box::pin(tokio::task::yield_now()),
            ))
        });
        self.arm(&mut store, None, 0);
        let bindings = self
            .bounded(self.pre.instantiate_async(&mut store))
            .await
            .map_err(|e| {
                let mut f = classify(&self.plugin, &e);
                if f.kind == FailureKind::Trap {
                    f.kind = FailureKind::Instantiate;
                }
                f.message = format!("instantiation failed: {}", f.message);
                f
            })?;
        if !init {
            return Ok(Warm {
                store,
                bindings,
                calls: 0,
                slot: None,
            });
        }
        match self
            .bounded(convert::call_init(&bindings, &mut store, &self.config))
            .await
        {
            Ok(Ok(())) => Ok(Warm {
                store,
                bindings,
                calls: 0,
                slot: None,
            }),
            Ok(Err(message)) => Err(PluginFailure {
                plugin: self.plugin.clone(),
                kind: FailureKind::Instantiate,
                message: format!("init failed: {message}"),
                backtrace: None,
                output: None,
                store_unavailable: false,
            }),
            Err(e) => {
                let mut f = classify(&self.plugin, &e);
                f.message = format!("init failed: {}", f.message);
                Err(f)
            }
        }
    }

    /// One of the tenant's plugin-call slots, waiting for one up to the
    /// plugin's deadline (or for as long as it takes, when `patient`: an end
    /// hook runs in the background, bounded by the end worker's own
    /// per-tenant slots, and must not fail for want of a slot); none when
    /// they all stayed taken.
    pub async fn call_slot(&self, patient: bool) -> Option<OwnedSemaphorePermit> {
        let wait = (!patient).then(|| Duration::from_millis(self.limits.deadline_ms));
        self.env.share.call_slot(wait).await
    }

    /// What every instance of the plugin shares.
    pub fn env(&self) -> &PluginEnv {
        &self.env
    }

    /// Plugin calls the tenant may run at once.
    pub fn max_calls(&self) -> usize {
        self.env.share.max_calls()
    }

    /// A warm instance from the pool, if reuse is on and one is idle.
    pub fn take(&self) -> Option<Warm> {
        if !self.reuse {
            return None;
        }
        self.pool.lock().ok()?.pop()
    }

    /// Puts an instance back in the pool, or drops it when reuse is off, it
    /// served its share of calls or the pool is full.
    pub fn release(&self, mut warm: Warm) {
        warm.slot = None;
        if !self.reuse || warm.calls >= self.engine.settings.recycle_after_calls {
            return;
        }
        if let Ok(mut pool) = self.pool.lock()
            && pool.len() < self.engine.settings.max_idle_instances
        {
            pool.push(warm);
        }
    }

    /// Drops every idle instance.
    pub fn clear(&self) {
        if let Ok(mut pool) = self.pool.lock() {
            pool.clear();
        }
    }
}
