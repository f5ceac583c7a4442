//! A plugin loaded for one tenant: its description, limits, policy and
//! stats, and its hooks. A hook call takes an instance (see `instance`),
//! arms its limits, calls the export through `convert` and classifies the
//! outcome; the hooks take and return the host's own types.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::bindings::PluginPre;
use super::breaker::{Admit, Breaker, BreakerSettings, BreakerView};
use super::capability::Capability;
use super::convert::{self, PluginSession};
use super::engine::SharedEngine;
use super::error::{FailureKind, PluginFailure, classify};
use super::host::{HostState, PluginEnv};
use super::instance::{Instances, Warm};
use super::limits::Limits;
use super::quiet::{LogBudget, clip};
use super::types::Hook;
use super::types::{
    Changes, Description, EndInfo, ListedSessions, LogLine, MessageReply, UpdateVerdict, Verdict,
    summary_size,
};
use crate::metrics::{CallCost, PluginMetrics};
use crate::session::SessionSummary;

/// One hook call: [`LoadedPlugin::begin`], the export call bounded by the
/// deadline, then [`LoadedPlugin::finish`]. `|p, s|` name the instance and
/// the store for the call expression.
macro_rules! run_hook {
    ($plugin:expr, $hook:expr, $session:expr, $input:expr, |$p:ident, $s:ident| $call:expr, $size:expr) => {
        run_hook!(@count Count::Now, $plugin, $hook, $session, $input, |$p, $s| $call, $size)
    };
    (@count $count:expr, $plugin:expr, $hook:expr, $session:expr, $input:expr, |$p:ident, $s:ident| $call:expr, $size:expr) => {{
        let plugin = $plugin;
        let count = $count;
        let hook = $hook;
        let span = tracing::debug_span!("plugin", tenant = %plugin.tenant, plugin = %plugin.name,
            hook = hook.as_str(), fuel = tracing::field::Empty,
            wall_us = tracing::field::Empty, memory_bytes = tracing::field::Empty,
            outcome = tracing::field::Empty);
        let call = async {
            match plugin.begin(hook, $session, $input, count).await {
                Err((failure, report)) => Call {
                    result: Err(failure),
                    report,
                },
                Ok((mut warm, report, admitted)) => {
                    let started = Instant::now();
                    let outcome = {
                        let $p = &warm.bindings;
                        let $s = &mut warm.store;
                        plugin.instances.bounded($call).await
                    };
                    plugin.finish(hook, warm, report, admitted, started, outcome, $size, count)
                }
            }
        };
        let call = tracing::Instrument::instrument(call, span.clone()).await;
        // As signed integers: an OTLP collector gets numbers (the
        // OpenTelemetry layer writes unsigned ones as text).
        let signed = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        span.record("fuel", signed(call.report.fuel_consumed));
        span.record("wall_us", signed(call.report.wall_us));
        span.record("memory_bytes", signed(call.report.peak_memory_bytes));
        span.record(
            "outcome",
            call.result.as_ref().err().map_or("ok", |f| f.kind.as_str()),
        );
        call
    }};
}

/// When a call's failure goes into the plugin's [`PluginStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Count {
    /// As soon as the call returns.
    Now,
    /// Later, through [`LoadedPlugin::count_failure`]: an end hook's failure
    /// counts only once its job's acknowledgement shows that this run is the
    /// one that finished it (a host that stalled may run a job another host
    /// has finished meanwhile).
    Later,
}

/// The host's lines about one plugin's failed calls: a second on average,
/// and this many at once.
const FAILURE_LINES_PER_SECOND: u32 = 1;
const FAILURE_LINES_BURST: u32 = 20;

/// What a plugin's failure means for a hook that can veto.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum OnError {
    /// Fail closed: a failure denies, like a veto (the default).
    #[default]
    Deny,
    /// Fail open: a failure is logged and the chain goes on without this
    /// plugin's changes.
    Allow,
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

/// Call and failure counts of one plugin, and the cost of its latest calls,
/// for `GET /v1/plugins`.
#[derive(Debug, Default)]
pub struct PluginStats {
    calls: AtomicU64,
    failures: Mutex<BTreeMap<&'static str, u64>>,
    recent: RecentCosts,
}

/// How many of a plugin's latest calls its percentiles are taken over.
pub const RECENT_CALLS: usize = 1024;

/// The wall time and fuel of a plugin's latest [`RECENT_CALLS`] calls that
/// ran: a ring of slots that calls write without a lock (a reader may see
/// a slot's wall time from one call and its fuel from the next, which
/// moves no percentile by more than one call).
#[derive(Debug)]
struct RecentCosts {
    next: AtomicU64,
    wall_us: Box<[AtomicU64]>,
    fuel: Box<[AtomicU64]>,
}

impl Default for RecentCosts {
    fn default() -> Self {
        let slots = || (0..RECENT_CALLS).map(|_| AtomicU64::new(0)).collect();
        RecentCosts {
            next: AtomicU64::new(0),
            wall_us: slots(),
            fuel: slots(),
        }
    }
}

/// Percentiles of one cost over a plugin's latest calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Percentiles {
    pub p50: u64,
    pub p99: u64,
    pub max: u64,
}

/// The cost of a plugin's latest calls that ran (calls skipped before they
/// ran, by an open circuit or an exhausted pool, have none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecentCost {
    /// How many calls the percentiles are over: at most [`RECENT_CALLS`].
    pub calls: u64,
    pub wall_us: Percentiles,
    pub fuel: Percentiles,
}

impl RecentCosts {
    fn push(&self, wall_us: u64, fuel: u64) {
        let slot = (self.next.fetch_add(1, Ordering::Relaxed) % RECENT_CALLS as u64) as usize;
        self.wall_us[slot].store(wall_us, Ordering::Relaxed);
        self.fuel[slot].store(fuel, Ordering::Relaxed);
    }

    fn snapshot(&self) -> RecentCost {
        let n = self.next.load(Ordering::Relaxed).min(RECENT_CALLS as u64) as usize;
        let percentiles = |slots: &[AtomicU64]| {
            let mut values: Vec<u64> = slots[..n]
                .iter()
                .map(|v| v.load(Ordering::Relaxed))
                .collect();
            values.sort_unstable();
            // The nearest-rank percentile: the smallest value at least
            // that share of the calls did not exceed.
            let rank = |p: usize| values[(n * p).div_ceil(100).max(1) - 1];
            if n == 0 {
                Percentiles::default()
            } else {
                Percentiles {
                    p50: rank(50),
                    p99: rank(99),
                    max: values[n - 1],
                }
            }
        };
        RecentCost {
            calls: n as u64,
            wall_us: percentiles(&self.wall_us),
            fuel: percentiles(&self.fuel),
        }
    }
}

impl PluginStats {
    /// The wall time and fuel of the plugin's latest calls.
    pub fn recent(&self) -> RecentCost {
        self.recent.snapshot()
    }

    /// Calls made, and failures by kind.
    pub fn snapshot(&self) -> (u64, BTreeMap<&'static str, u64>) {
        let failures = self.failures.lock().map(|m| m.clone()).unwrap_or_default();
        (self.calls.load(Ordering::Relaxed), failures)
    }

    fn record(&self, failure: Option<FailureKind>, count: Count) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if let Some(kind) = failure
            && count == Count::Now
        {
            self.record_failure(kind);
        }
    }

    fn record_failure(&self, kind: FailureKind) {
        if let Ok(mut m) = self.failures.lock() {
            *m.entry(kind.as_str()).or_default() += 1;
        }
    }
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
    instances: Instances,
    /// The server's plugin metrics, when it keeps any.
    metrics: Option<PluginMetrics>,
    breaker: Breaker,
    /// What the host's lines about this plugin's failures may take of the
    /// log.
    failure_lines: LogBudget,
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
    pub metrics: Option<PluginMetrics>,
    pub circuit: BreakerSettings,
}

impl LoadedPlugin {
    /// Creates the first instance, asks it to describe itself and runs
    /// `init`; any failure there means the plugin does not load.
    pub(crate) async fn load(parts: LoadParts) -> Result<LoadedPlugin, PluginFailure> {
        let mut plugin = LoadedPlugin::load_parts(parts);
        let mut warm = plugin.instances.instantiate(true).await?;
        plugin.description = plugin.describe(&mut warm).await?;
        plugin.instances.release(warm);
        Ok(plugin)
    }

    async fn describe(&self, warm: &mut Warm) -> Result<Description, PluginFailure> {
        self.instances
            .bounded(convert::call_describe(&warm.bindings, &mut warm.store))
            .await
            .map_err(|e| classify(&self.name, &e))
    }

    fn load_parts(parts: LoadParts) -> LoadedPlugin {
        let failure_lines = LogBudget::new(
            FAILURE_LINES_PER_SECOND,
            FAILURE_LINES_BURST,
            parts
                .metrics
                .as_ref()
                .map(|m| m.dropped_lines(&parts.tenant, &parts.name, "failure")),
        );
        LoadedPlugin {
            breaker: Breaker::new(parts.circuit),
            failure_lines,
            instances: Instances::new(
                parts.name.clone(),
                parts.limits,
                parts.reuse,
                parts.config,
                parts.pre,
                parts.env,
                parts.engine,
            ),
            name: parts.name,
            tenant: parts.tenant,
            description: Description::default(),
            imports: parts.imports,
            limits: parts.limits,
            on_error: parts.on_error,
            stats: PluginStats::default(),
            metrics: parts.metrics,
        }
    }

    /// Instantiates the component without calling `init` and returns what
    /// `describe` says (for `sessiond plugin check`).
    pub(crate) async fn describe_only(mut parts: LoadParts) -> Result<Description, PluginFailure> {
        parts.reuse = false;
        let plugin = LoadedPlugin::load_parts(parts);
        let mut warm = plugin.instances.instantiate(false).await?;
        plugin.describe(&mut warm).await
    }

    /// Drops every idle instance (the next call creates a fresh one).
    pub fn clear_pool(&self) {
        self.instances.clear();
    }

    /// Checks the input cap and takes an instance (warm, or fresh) with
    /// every limit armed for one call; or the failure that ends the call
    /// before it starts.
    async fn begin(
        &self,
        hook: Hook,
        session: Option<&str>,
        input_bytes: u64,
        count: Count,
    ) -> Result<(Warm, CallReport, Admit), (PluginFailure, CallReport)> {
        let started = Instant::now();
        let mut report = CallReport::default();
        let admitted = self.breaker.admit();
        if let Admit::Skip(wait) = admitted {
            let f = self.failure(
                FailureKind::CircuitOpen,
                format!(
                    "the plugin's circuit breaker is open: most of its recent calls failed \
                     (next try in {} ms)",
                    wait.as_millis()
                ),
            );
            self.record(hook, Some(f.kind), count);
            return Err((f, report));
        }
        if input_bytes > self.limits.max_input_bytes {
            let f = self.failure(
                FailureKind::InputTooLarge,
                format!(
                    "the hook's arguments are {input_bytes} bytes, over the input cap of {} bytes",
                    self.limits.max_input_bytes
                ),
            );
            self.record(hook, Some(f.kind), count);
            return Err((f, report));
        }
        let Some(slot) = self.instances.call_slot(hook == Hook::SessionEnd).await else {
            let f = self.failure(
                FailureKind::Busy,
                format!(
                    "all {} of the tenant's plugin-call slots stayed taken for the call's \
                     deadline of {} ms (quota.max_plugin_calls)",
                    self.instances.max_calls(),
                    self.limits.deadline_ms
                ),
            );
            self.record(hook, Some(f.kind), count);
            report.wall_us = started.elapsed().as_micros() as u64;
            return Err((f, report));
        };
        let mut warm = match self.instances.take() {
            Some(w) => w,
            None => {
                report.fresh_instance = true;
                match self.instances.instantiate(true).await {
                    Ok(w) => w,
                    Err(f) => {
                        self.record(hook, Some(f.kind), count);
                        self.trip(admitted, f.kind.is_plugins_fault());
                        report.wall_us = started.elapsed().as_micros() as u64;
                        return Err((f, report));
                    }
                }
            }
        };
        warm.slot = Some(slot);
        if let Some(m) = &self.metrics {
            m.instance(&self.tenant, &self.name, report.fresh_instance);
        }
        self.instances
            .arm(&mut warm.store, session.map(str::to_string), input_bytes);
        // The report's wall time counts instantiation too.
        report.wall_us = started.elapsed().as_micros() as u64;
        Ok((warm, report, admitted))
    }

    /// Counts the outcome of a call the breaker let run, and says so when
    /// it opened the breaker.
    fn trip(&self, admitted: Admit, failed: bool) {
        self.opened(self.breaker.record(admitted, failed));
    }

    /// Writes the one line of a breaker's opening (`backoff`: it just
    /// opened, for that long).
    fn opened(&self, backoff: Option<std::time::Duration>) {
        if let Some(backoff) = backoff {
            tracing::warn!(tenant = %self.tenant, plugin = %self.name,
                backoff_ms = backoff.as_millis() as u64,
                "most of the plugin's recent calls failed: its circuit breaker is open, \
                 its calls are skipped (on_error applies) until a probe call succeeds");
        }
    }

    /// The breaker's state, for the operator.
    pub fn circuit(&self) -> BreakerView {
        self.breaker.view()
    }

    /// Log lines dropped over the plugin's rates: its own `log.log` lines,
    /// and the host's lines about its failed calls.
    pub fn dropped_lines(&self) -> (u64, u64) {
        (
            self.instances.env().lines.dropped(),
            self.failure_lines.dropped(),
        )
    }

    /// Writes the one line of a failed call (`what` says what the failure
    /// did, e.g. that the chain went on without the plugin), within the
    /// plugin's failure-line rate; lines over it are dropped and counted.
    pub fn log_failure(&self, hook: Hook, failure: &PluginFailure, what: &str) {
        self.warn(
            hook,
            Some(failure.kind),
            &format!("{what}: {}", failure.message),
        );
    }

    /// A warning about the plugin, within its failure-line rate.
    pub fn warn(&self, hook: Hook, kind: Option<FailureKind>, message: &str) {
        if let Some(dropped) = self.failure_lines.admit() {
            tracing::warn!(tenant = %self.tenant, plugin = %self.name, hook = hook.as_str(),
                kind = kind.map(FailureKind::as_str), dropped, "{}", clip(message));
        }
    }

    /// The failure of a call whose result the chain found unusable: counts
    /// it as `invalid-output` (in the stats, the metrics and the circuit
    /// breaker; the call itself was counted as a success).
    pub fn invalid_output(&self, hook: Hook, message: String) -> PluginFailure {
        let kind = FailureKind::InvalidOutput;
        if hook != Hook::SessionEnd {
            self.stats.record_failure(kind);
            if let Some(m) = &self.metrics {
                m.failure(&self.tenant, &self.name, hook.as_str(), kind.as_str());
            }
        }
        self.opened(self.breaker.record_late_failure());
        self.failure(kind, message)
    }

    /// Counts a failure of [`on_session_end`](Self::on_session_end) in the
    /// plugin's stats, once the end job it ran for is known to have been
    /// finished by this run.
    pub fn count_failure(&self, kind: FailureKind) {
        self.stats.record_failure(kind);
        if let Some(m) = &self.metrics {
            m.failure(
                &self.tenant,
                &self.name,
                Hook::SessionEnd.as_str(),
                kind.as_str(),
            );
        }
    }

    /// Counts a call of `hook` in the plugin's stats and the server's
    /// metrics, with its failure when it failed and counts now.
    fn record(&self, hook: Hook, failure: Option<FailureKind>, count: Count) {
        self.stats.record(failure, count);
        let Some(m) = &self.metrics else {
            return;
        };
        m.call(&self.tenant, &self.name, hook.as_str());
        if let Some(kind) = failure
            && count == Count::Now
        {
            m.failure(&self.tenant, &self.name, hook.as_str(), kind.as_str());
        }
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
    #[allow(clippy::too_many_arguments)]
    fn finish<R>(
        &self,
        hook: Hook,
        mut warm: Warm,
        mut report: CallReport,
        admitted: Admit,
        call_started: Instant,
        outcome: wasmtime::Result<Result<R, String>>,
        output_bytes: impl FnOnce(&R) -> u64,
        count: Count,
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
            _ => self.instances.release(warm),
        }
        if let Some(m) = &self.metrics {
            let cost = CallCost {
                fuel: report.fuel_consumed,
                wall_us: report.wall_us,
                peak_memory_bytes: report.peak_memory_bytes,
            };
            m.cost(&self.tenant, &self.name, hook.as_str(), cost);
        }
        self.stats.recent.push(report.wall_us, report.fuel_consumed);
        self.record(hook, result.as_ref().err().map(|f| f.kind), count);
        match &result {
            Ok(_) => self.trip(admitted, false),
            Err(f) if f.kind.is_plugins_fault() && !f.store_unavailable => {
                self.trip(admitted, true)
            }
            // Says nothing about the plugin; a probe still has to end.
            Err(_) if admitted == Admit::Probe => self.trip(admitted, false),
            Err(_) => {}
        }
        Call { result, report }
    }

    /// Calls `on-session-start` (the session's client fields say where it
    /// comes from).
    pub async fn on_session_start(&self, session: &PluginSession) -> Call<Verdict> {
        let input = session.size();
        run_hook!(
            self,
            Hook::SessionStart,
            Some(session.id()),
            input,
            |p, s| convert::call_on_session_start(p, s, session),
            Verdict::size
        )
    }

    /// Calls `on-session-update`.
    pub async fn on_session_update(
        &self,
        session: &PluginSession,
        proposed: &Changes,
    ) -> Call<UpdateVerdict> {
        let input = session.size() + proposed.size();
        run_hook!(
            self,
            Hook::SessionUpdate,
            Some(session.id()),
            input,
            |p, s| convert::call_on_session_update(p, s, session, proposed),
            UpdateVerdict::size
        )
    }

    /// Calls `on-session-end`; audit appends made during the call carry
    /// idempotency keys derived from the end id.
    ///
    /// A failure is not counted in the plugin's stats until the caller
    /// knows the run counts: see [`count_failure`](Self::count_failure).
    pub async fn on_session_end(&self, session: &PluginSession, end: &EndInfo) -> Call<()> {
        let input = session.size() + end.end_id.len() as u64;
        run_hook!(
            @count Count::Later,
            self,
            Hook::SessionEnd,
            Some(session.id()),
            input,
            |p, s| {
                s.data_mut().call.end_id = Some(end.end_id.clone());
                convert::call_on_session_end(p, s, session, end)
            },
            |_: &()| 0
        )
    }

    /// Calls `on-event`.
    pub async fn on_event(
        &self,
        session: &PluginSession,
        name: &str,
        payload: &str,
    ) -> Call<Verdict> {
        let input = session.size() + (name.len() + payload.len()) as u64;
        run_hook!(
            self,
            Hook::Event,
            Some(session.id()),
            input,
            |p, s| convert::call_on_event(p, s, session, name, payload),
            Verdict::size
        )
    }

    /// Calls `on-message`.
    pub async fn on_message(
        &self,
        session: &PluginSession,
        handler: &str,
        payload: &str,
    ) -> Call<MessageReply> {
        let input = session.size() + (handler.len() + payload.len()) as u64;
        run_hook!(
            self,
            Hook::Message,
            Some(session.id()),
            input,
            |p, s| convert::call_on_message(p, s, session, handler, payload),
            MessageReply::size
        )
    }

    /// Calls `on-list-active`. The summaries come back as the plugin sent
    /// them: [`ListedSessions::into_checked`] checks them.
    pub async fn on_list_active(
        &self,
        user: &str,
        sessions: &[SessionSummary],
    ) -> Call<ListedSessions> {
        let input = user.len() as u64 + sessions.iter().map(summary_size).sum::<usize>() as u64;
        run_hook!(
            self,
            Hook::ListActive,
            None,
            input,
            |p, s| convert::call_on_list_active(p, s, user, sessions),
            ListedSessions::size
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_over_the_latest_calls_only() {
        let stats = PluginStats::default();
        assert_eq!(stats.recent(), RecentCost::default());
        for wall in 1..=100 {
            stats.recent.push(wall, wall * 10);
        }
        let r = stats.recent();
        assert_eq!(r.calls, 100);
        assert_eq!(
            r.wall_us,
            Percentiles {
                p50: 50,
                p99: 99,
                max: 100
            }
        );
        assert_eq!(r.fuel.p99, 990);
        // A window's worth of cheap calls pushes the slow ones out.
        for _ in 0..RECENT_CALLS {
            stats.recent.push(7, 1);
        }
        let r = stats.recent();
        assert_eq!(r.calls, RECENT_CALLS as u64);
        assert_eq!(
            r.wall_us,
            Percentiles {
                p50: 7,
                p99: 7,
                max: 7
            }
        );
    }
}
