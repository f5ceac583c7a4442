//! A plugin loaded for one tenant: its checked component, its limits and
//! policy, and its pool of warm instances.
//!
//! Instance strategy: an instance belongs to one (tenant, plugin) pair and is
//! never shared with another tenant. After a successful call it goes back to
//! a small pool and serves later calls of the same tenant and plugin, because
//! a fresh componentize-py instance costs ~0.65 ms against ~3 µs for a call on
//! a warm one. An instance is discarded after any trap or limit, after
//! `recycle_after_calls` calls, or after every call when the plugin sets
//! `instance_reuse = false`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use wasmtime::Store;

use super::bindings::sessiond::plugin::types;
use super::bindings::{Plugin, PluginPre};
use super::capability::Capability;
use super::engine::SharedEngine;
use super::error::{FailureKind, HostTrap, PluginFailure, classify};
use super::host::{HostState, LogLine, PluginEnv, client_size, summary_size};
use super::limits::Limits;

/// Fuel between two yields of a running plugin back to the async runtime
/// (about a millisecond of guest code): a busy plugin then shares its
/// thread with other requests instead of holding it up to its deadline.
const FUEL_YIELD_INTERVAL: u64 = 2_000_000;

/// One hook call: [`LoadedPlugin::begin`], the export call bounded by the
/// deadline, then [`LoadedPlugin::finish`]. `|h, s|` name the hooks and the
/// store for the call expression.
macro_rules! run_hook {
    ($plugin:expr, $session:expr, $input:expr, |$h:ident, $s:ident| $call:expr, $size:expr) => {{
        let plugin = $plugin;
        match plugin.begin($session, $input).await {
            Err((failure, report)) => Call {
                result: Err(failure),
                report,
            },
            Ok((mut warm, report)) => {
                let started = Instant::now();
                let outcome = {
                    let $h = warm.bindings.sessiond_plugin_hooks();
                    let $s = &mut warm.store;
                    plugin.bounded($call).await
                };
                plugin.finish(warm, report, started, outcome, $size)
            }
        }
    }};
}

/// What a plugin's failure means for a hook that can veto.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnError {
    /// Fail closed: a failure denies, like a veto (the default).
    #[default]
    Deny,
    /// Fail open: a failure is logged and the chain goes on without this
    /// plugin's changes.
    Allow,
}

/// A hook a plugin implements, as listed by `describe`.
pub type Hook = types::Hook;

/// What `describe` returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Description {
    pub name: String,
    pub version: String,
    pub hooks: Vec<&'static str>,
    #[serde(skip)]
    pub(crate) hook_set: Vec<Hook>,
}

/// Every hook's WIT name, in WIT order (the order of [`Hook`]).
pub const HOOK_NAMES: [&str; 6] = [
    "on-session-start",
    "on-session-update",
    "on-session-end",
    "on-event",
    "on-message",
    "on-list-active",
];

pub(crate) fn hook_name(h: Hook) -> &'static str {
    HOOK_NAMES[h as usize]
}

impl Description {
    pub(crate) fn from_wit(info: types::PluginInfo) -> Description {
        let mut hook_set = info.hooks;
        // WIT order, so listings read like the contract.
        hook_set.sort_by_key(|h| *h as u8);
        hook_set.dedup();
        Description {
            name: info.name,
            version: info.version,
            hooks: hook_set.iter().map(|h| hook_name(*h)).collect(),
            hook_set,
        }
    }

    /// Whether the plugin implements `hook`.
    pub fn implements(&self, hook: Hook) -> bool {
        self.hook_set.contains(&hook)
    }
}

/// What one call cost and what the plugin emitted during it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CallReport {
    /// Fuel the call consumed.
    pub fuel_consumed: u64,
    /// Wall time of the call, including instantiation when `fresh_instance`.
    pub wall_us: u64,
    /// The instance's linear memory at the end of the call: its peak, since
    /// linear memory never shrinks.
    pub peak_memory_bytes: u64,
    /// Whether a new instance was created for this call.
    pub fresh_instance: bool,
    /// The end of what the plugin wrote to stdout and stderr.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub output: String,
    pub logs: Vec<LogLine>,
    pub audit: Vec<Value>,
    /// A host call of this call could not reach the store (or the store did
    /// not answer before the deadline).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub store_unavailable: bool,
}

/// The result of one hook call.
#[derive(Debug)]
pub struct Call<R> {
    pub result: Result<R, PluginFailure>,
    pub report: CallReport,
}

/// Call and failure counts of one plugin, for `GET /v1/plugins`.
#[derive(Debug, Default)]
pub struct PluginStats {
    calls: AtomicU64,
    failures: Mutex<BTreeMap<&'static str, u64>>,
}

impl PluginStats {
    /// Calls made, and failures by kind.
    pub fn snapshot(&self) -> (u64, BTreeMap<&'static str, u64>) {
        let failures = self.failures.lock().map(|m| m.clone()).unwrap_or_default();
        (self.calls.load(Ordering::Relaxed), failures)
    }

    fn record(&self, failure: Option<FailureKind>) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if let Some(kind) = failure
            && let Ok(mut m) = self.failures.lock()
        {
            *m.entry(kind.as_str()).or_default() += 1;
        }
    }
}

struct Warm {
    store: Store<HostState>,
    bindings: Plugin,
    calls: u64,
}

/// A plugin ready to run for one tenant.
pub struct LoadedPlugin {
    /// The plugin's name in the tenant's chain (also the key of its private
    /// state and kv namespace).
    pub name: String,
    pub tenant: String,
    pub description: Description,
    /// The capabilities the component imports (all granted).
    pub imports: Vec<Capability>,
    pub limits: Limits,
    pub on_error: OnError,
    pub stats: PluginStats,
    reuse: bool,
    config: Vec<(String, String)>,
    pre: PluginPre<HostState>,
    env: Arc<PluginEnv>,
    engine: Arc<SharedEngine>,
    pool: Mutex<Vec<Warm>>,
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("tenant", &self.tenant)
            .field("name", &self.name)
            .field("description", &self.description)
            .finish_non_exhaustive()
    }
}

pub(crate) struct LoadParts {
    pub name: String,
    pub tenant: String,
    pub imports: Vec<Capability>,
    pub limits: Limits,
    pub on_error: OnError,
    pub reuse: bool,
    pub config: Vec<(String, String)>,
    pub pre: PluginPre<HostState>,
    pub env: Arc<PluginEnv>,
    pub engine: Arc<SharedEngine>,
}

impl LoadedPlugin {
    /// Creates the first instance, asks it to describe itself and runs
    /// `init`; any failure there means the plugin does not load.
    pub(crate) async fn load(parts: LoadParts) -> Result<LoadedPlugin, PluginFailure> {
        let mut plugin = LoadedPlugin::load_parts(parts);
        let mut warm = plugin.instantiate(true).await?;
        plugin.description = plugin.describe(&mut warm).await?;
        plugin.release(warm);
        Ok(plugin)
    }

    async fn describe(&self, warm: &mut Warm) -> Result<Description, PluginFailure> {
        let hooks = warm.bindings.sessiond_plugin_hooks();
        let info = self
            .bounded(hooks.call_describe(&mut warm.store))
            .await
            .map_err(|e| classify(&self.name, &e))?;
        Ok(Description::from_wit(info))
    }

    fn load_parts(parts: LoadParts) -> LoadedPlugin {
        LoadedPlugin {
            name: parts.name,
            tenant: parts.tenant,
            description: Description::from_wit(types::PluginInfo {
                name: String::new(),
                version: String::new(),
                hooks: Vec::new(),
            }),
            imports: parts.imports,
            limits: parts.limits,
            on_error: parts.on_error,
            stats: PluginStats::default(),
            reuse: parts.reuse,
            config: parts.config,
            pre: parts.pre,
            env: parts.env,
            engine: parts.engine,
            pool: Mutex::new(Vec::new()),
        }
    }

    fn arm(&self, store: &mut Store<HostState>, session: Option<String>, input: u64) {
        // Fuel is always enabled on this engine, so setting it cannot fail.
        let _ = store.set_fuel(self.limits.fuel);
        store.set_epoch_deadline(self.engine.ticks(self.limits.deadline_ms));
        let data = store.data_mut();
        data.call.arm(&self.limits, session, input);
        // Output of an earlier call or of instantiation is not this call's.
        let _ = data.output.take();
    }

    /// Instantiates the component without calling `init` and returns what
    /// `describe` says (for `sessiond plugin check`).
    pub(crate) async fn describe_only(parts: LoadParts) -> Result<Description, PluginFailure> {
        let mut plugin = LoadedPlugin::load_parts(parts);
        plugin.reuse = false;
        let mut warm = plugin.instantiate(false).await?;
        plugin.describe(&mut warm).await
    }

    /// Bounds a call into the component by the plugin's deadline.
    ///
    /// Epoch interruption stops guest code at the deadline; this also stops a
    /// plugin that waits in the host past it (a WASI sleep or poll, say).
    /// The instance is then discarded with the future.
    async fn bounded<T>(
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

    async fn instantiate(&self, init: bool) -> Result<Warm, PluginFailure> {
        let state = HostState::new(self.env.clone(), self.limits.memory_bytes());
        let mut store = Store::new(&self.engine.engine, state);
        store.limiter(|s| &mut s.limiter);
        // Guest code runs on the request's task: hand the thread back to
        // other tasks every so often, so a busy plugin delays nobody else.
        // Fuel is always enabled on this engine, so this cannot fail.
        let _ = store.fuel_async_yield_interval(Some(FUEL_YIELD_INTERVAL));
        self.arm(&mut store, None, 0);
        let bindings = self
            .bounded(self.pre.instantiate_async(&mut store))
            .await
            .map_err(|e| {
                let mut f = classify(&self.name, &e);
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
            });
        }
        let hooks = bindings.sessiond_plugin_hooks();
        match self
            .bounded(hooks.call_init(&mut store, &self.config))
            .await
        {
            Ok(Ok(())) => Ok(Warm {
                store,
                bindings,
                calls: 0,
            }),
            Ok(Err(message)) => Err(PluginFailure {
                plugin: self.name.clone(),
                kind: FailureKind::Instantiate,
                message: format!("init failed: {message}"),
                backtrace: None,
                output: None,
                store_unavailable: false,
            }),
            Err(e) => {
                let mut f = classify(&self.name, &e);
                f.message = format!("init failed: {}", f.message);
                Err(f)
            }
        }
    }

    fn take(&self) -> Option<Warm> {
        if !self.reuse {
            return None;
        }
        self.pool.lock().ok()?.pop()
    }

    fn release(&self, warm: Warm) {
        if !self.reuse || warm.calls >= self.engine.settings.recycle_after_calls {
            return;
        }
        if let Ok(mut pool) = self.pool.lock()
            && pool.len() < self.engine.settings.max_idle_instances
        {
            pool.push(warm);
        }
    }

    /// Drops every idle instance (the next call creates a fresh one).
    pub fn clear_pool(&self) {
        if let Ok(mut pool) = self.pool.lock() {
            pool.clear();
        }
    }

    /// Checks the input cap and takes an instance (warm, or fresh) with
    /// every limit armed for one call; or the failure that ends the call
    /// before it starts.
    async fn begin(
        &self,
        session: Option<&str>,
        input_bytes: u64,
    ) -> Result<(Warm, CallReport), (PluginFailure, CallReport)> {
        let started = Instant::now();
        let mut report = CallReport::default();
        if input_bytes > self.limits.max_input_bytes {
            let f = self.failure(
                FailureKind::InputTooLarge,
                format!(
                    "the hook's arguments are {input_bytes} bytes, over the input cap of {} bytes",
                    self.limits.max_input_bytes
                ),
            );
            self.stats.record(Some(f.kind));
            return Err((f, report));
        }
        let mut warm = match self.take() {
            Some(w) => w,
            None => {
                report.fresh_instance = true;
                match self.instantiate(true).await {
                    Ok(w) => w,
                    Err(f) => {
                        self.stats.record(Some(f.kind));
                        report.wall_us = started.elapsed().as_micros() as u64;
                        return Err((f, report));
                    }
                }
            }
        };
        self.arm(&mut warm.store, session.map(str::to_string), input_bytes);
        // The report's wall time counts instantiation too.
        report.wall_us = started.elapsed().as_micros() as u64;
        Ok((warm, report))
    }

    fn failure(&self, kind: FailureKind, message: String) -> PluginFailure {
        PluginFailure {
            plugin: self.name.clone(),
            kind,
            message,
            backtrace: None,
            output: None,
            store_unavailable: false,
        }
    }

    /// Classifies the outcome of a call [`begin`](Self::begin) armed, fills
    /// its report and puts the instance back (or drops it).
    fn finish<R>(
        &self,
        mut warm: Warm,
        mut report: CallReport,
        call_started: Instant,
        outcome: wasmtime::Result<Result<R, String>>,
        output_bytes: impl FnOnce(&R) -> u64,
    ) -> Call<R> {
        warm.calls += 1;
        report.fuel_consumed = self
            .limits
            .fuel
            .saturating_sub(warm.store.get_fuel().unwrap_or(0));
        report.wall_us += call_started.elapsed().as_micros() as u64;
        let data = warm.store.data_mut();
        report.peak_memory_bytes = data.limiter.total;
        report.logs = std::mem::take(&mut data.call.logs);
        report.audit = std::mem::take(&mut data.call.audit);
        report.store_unavailable = data.call.store_unavailable;
        report.output = data.output.take();

        let result = match outcome {
            Err(trap) => Err(classify(&self.name, &trap)),
            Ok(Err(message)) => Err(self.failure(FailureKind::PluginError, message)),
            Ok(Ok(value)) => {
                let out = output_bytes(&value) + data.call.bytes_out;
                if out > self.limits.max_output_bytes {
                    Err(self.failure(
                        FailureKind::OutputTooLarge,
                        format!(
                            "the plugin returned {out} bytes, over the output cap of {} bytes",
                            self.limits.max_output_bytes
                        ),
                    ))
                } else {
                    Ok(value)
                }
            }
        };
        let result = result.map_err(|mut f| {
            if !report.output.is_empty() {
                f.output = Some(report.output.clone());
            }
            f.store_unavailable = report.store_unavailable;
            f
        });
        match &result {
            // A trapped or over-limit instance is never reused.
            Err(f) if f.kind.is_trap_or_limit() => drop(warm),
            _ => self.release(warm),
        }
        self.stats.record(result.as_ref().err().map(|f| f.kind));
        Call { result, report }
    }

    /// Calls `on-session-start`.
    pub async fn on_session_start(
        &self,
        session: &types::Session,
        client: &types::ClientInfo,
    ) -> Call<types::Verdict> {
        let input = session_size(session) + client_size(client) as u64;
        run_hook!(
            self,
            Some(&session.id),
            input,
            |h, s| h.call_on_session_start(s, session, client),
            verdict_size
        )
    }

    /// Calls `on-session-update`.
    pub async fn on_session_update(
        &self,
        session: &types::Session,
        proposed: &types::Changes,
    ) -> Call<types::UpdateVerdict> {
        let input = session_size(session) + changes_size(proposed);
        run_hook!(
            self,
            Some(&session.id),
            input,
            |h, s| h.call_on_session_update(s, session, proposed),
            |v: &types::UpdateVerdict| match v {
                types::UpdateVerdict::Accept => 0,
                types::UpdateVerdict::Rewrite(c) => changes_size(c),
                types::UpdateVerdict::Reject(m) => m.len() as u64,
            }
        )
    }

    /// Calls `on-session-end`; audit appends made during the call carry
    /// idempotency keys derived from the end id.
    pub async fn on_session_end(&self, session: &types::Session, end: &types::EndInfo) -> Call<()> {
        let input = session_size(session) + end.end_id.len() as u64;
        run_hook!(
            self,
            Some(&session.id),
            input,
            |h, s| {
                s.data_mut().call.end_id = Some(end.end_id.clone());
                h.call_on_session_end(s, session, end)
            },
            |_: &()| 0
        )
    }

    /// Calls `on-event`.
    pub async fn on_event(
        &self,
        session: &types::Session,
        name: &str,
        payload: &str,
    ) -> Call<types::Verdict> {
        let input = session_size(session) + (name.len() + payload.len()) as u64;
        let payload = payload.to_string();
        run_hook!(
            self,
            Some(&session.id),
            input,
            |h, s| h.call_on_event(s, session, name, &payload),
            verdict_size
        )
    }

    /// Calls `on-message`.
    pub async fn on_message(
        &self,
        session: &types::Session,
        handler: &str,
        payload: &str,
    ) -> Call<types::MessageReply> {
        let input = session_size(session) + (handler.len() + payload.len()) as u64;
        let payload = payload.to_string();
        run_hook!(
            self,
            Some(&session.id),
            input,
            |h, s| h.call_on_message(s, session, handler, &payload),
            |r: &types::MessageReply| r.reply.len() as u64 + changes_size(&r.changes)
        )
    }

    /// Calls `on-list-active`.
    pub async fn on_list_active(
        &self,
        user: &str,
        sessions: &[types::SessionSummary],
    ) -> Call<Vec<types::SessionSummary>> {
        let input = user.len() as u64 + sessions.iter().map(summary_size).sum::<usize>() as u64;
        run_hook!(
            self,
            None,
            input,
            |h, s| h.call_on_list_active(s, user, sessions),
            |list: &Vec<types::SessionSummary>| list.iter().map(summary_size).sum::<usize>() as u64
        )
    }
}

pub(crate) fn session_size(s: &types::Session) -> u64 {
    (s.id.len()
        + s.tenant.len()
        + s.user.as_ref().map_or(0, String::len)
        + s.roles.iter().map(String::len).sum::<usize>()
        + client_size(&s.client)
        + s.data.len()
        + s.state.len()
        + 40) as u64
}

fn changes_size(c: &types::Changes) -> u64 {
    (c.data_patch.as_ref().map_or(0, String::len)
        + c.roles
            .as_ref()
            .map_or(0, |r| r.iter().map(String::len).sum::<usize>())
        + c.state.as_ref().map_or(0, String::len)
        + 4) as u64
}

fn verdict_size(v: &types::Verdict) -> u64 {
    match v {
        types::Verdict::Allow(c) => changes_size(c),
        types::Verdict::Deny(m) => m.len() as u64,
    }
}
