//! The per-store host state and the capabilities plugins import: `log`,
//! `clock`, `kv`, `sessions` and `audit`, written against the host's own
//! types (`convert` adapts the WIT interfaces to them). Every host call
//! counts against the call's host-call cap, byte caps and deadline.

use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::HostStores;
use super::error::HostTrap;
use super::limits::Limits;
use super::output::TailPipe;
use super::quiet::{LogBudget, clip};
use super::share::{Refused, TenantShare};
use super::types::{LogLevel, LogLine, summary_size};
use crate::session::{SessionRecord, SessionSummary, now_ms};
use crate::store::{KvQuota, StoreError, StoreResult};

/// What every instance of one plugin in one tenant shares.
pub(crate) struct PluginEnv {
    pub tenant: String,
    pub plugin: String,
    pub stores: HostStores,
    /// The tenant's share of plugin-call slots and memory.
    pub share: Arc<TenantShare>,
    /// What the plugin's `log.log` lines may take of the host's log.
    pub lines: LogBudget,
}

/// Tracks an instance's linear memory and refuses growth past its cap, its
/// tenant's memory share or the host's budget. What it reserved in the
/// share is given back when the instance (its store) is dropped.
pub(crate) struct MemoryLimiter {
    pub cap: u64,
    /// Bytes of linear memory across all of the instance's memories.
    pub total: u64,
    share: Arc<TenantShare>,
}

impl Drop for MemoryLimiter {
    fn drop(&mut self) {
        self.share.release(self.total);
    }
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let grown = self.total + (desired.saturating_sub(current)) as u64;
        if grown > self.cap {
            return Err(HostTrap::MemoryLimit {
                limit: self.cap,
                requested: grown,
            }
            .into());
        }
        let more = grown - self.total;
        if let Err(refused) = self.share.reserve(more) {
            let why = match refused {
                Refused::Tenant { limit } => format!(
                    "the tenant's plugin instances hold its whole memory share of {} MiB \
                     (growing by {more} bytes refused)",
                    limit >> 20
                ),
                Refused::Host { limit } => format!(
                    "the host's plugin instances hold its whole memory budget of {} MiB \
                     (growing by {more} bytes refused)",
                    limit >> 20
                ),
            };
            return Err(HostTrap::MemoryBudget(why).into());
        }
        self.total = grown;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// The state of the call under way; reset before every call.
#[derive(Default)]
pub(crate) struct CallState {
    pub session: Option<String>,
    pub started: Option<Instant>,
    pub deadline_ms: u64,
    pub host_calls: u32,
    pub max_host_calls: u32,
    pub bytes_in: u64,
    pub max_in: u64,
    pub bytes_out: u64,
    pub max_out: u64,
    pub logs: Vec<LogLine>,
    pub audit: Vec<Value>,
    /// In `on-session-end`: the end id. Audit records are then appended
    /// with idempotency keys `<end id>:<plugin>:<n>` (the n-th append of the
    /// call), so a hook run again for the same end writes each record once.
    pub end_id: Option<String>,
    pub audit_appends: u32,
    /// The plugin's kv quota (from its limits).
    pub kv_quota: KvQuota,
    /// A store operation of this call failed because the store could not be
    /// reached or did not answer in time.
    pub store_unavailable: bool,
}

impl CallState {
    pub fn arm(&mut self, limits: &Limits, session: Option<String>, input_bytes: u64) {
        *self = CallState {
            session,
            started: Some(Instant::now()),
            deadline_ms: limits.deadline_ms,
            kv_quota: KvQuota {
                max_bytes: limits.kv_max_bytes,
                max_keys: limits.kv_max_keys,
            },
            host_calls: 0,
            max_host_calls: limits.max_host_calls,
            bytes_in: input_bytes,
            max_in: limits.max_input_bytes,
            bytes_out: 0,
            max_out: limits.max_output_bytes,
            logs: Vec::new(),
            audit: Vec::new(),
            end_id: None,
            audit_appends: 0,
            store_unavailable: false,
        };
    }

    fn remaining(&self) -> Option<std::time::Duration> {
        let started = self.started?;
        self.deadline_ms
            .checked_sub(started.elapsed().as_millis() as u64)
            .filter(|ms| *ms > 0)
            .map(std::time::Duration::from_millis)
    }

    /// Counts one host call; traps past the cap or the deadline.
    fn enter(&mut self) -> wasmtime::Result<std::time::Duration> {
        self.host_calls += 1;
        if self.host_calls > self.max_host_calls {
            return Err(HostTrap::HostCallLimit(self.max_host_calls).into());
        }
        self.remaining()
            .ok_or_else(|| HostTrap::Deadline(self.deadline_ms).into())
    }

    fn take_in(&mut self, what: &'static str, n: usize) -> wasmtime::Result<()> {
        self.bytes_in += n as u64;
        if self.bytes_in > self.max_in {
            return Err(HostTrap::InputTooLarge {
                what,
                size: self.bytes_in,
                limit: self.max_in,
            }
            .into());
        }
        Ok(())
    }

    fn give_out(&mut self, what: &'static str, n: usize) -> wasmtime::Result<()> {
        self.bytes_out += n as u64;
        if self.bytes_out > self.max_out {
            return Err(HostTrap::OutputTooLarge {
                what,
                size: self.bytes_out,
                limit: self.max_out,
            }
            .into());
        }
        Ok(())
    }
}

/// The data of every `Store` the runtime creates.
pub(crate) struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    /// The plugin's stdout and stderr, newest bytes only.
    pub output: TailPipe,
    pub limiter: MemoryLimiter,
    pub call: CallState,
    pub env: Arc<PluginEnv>,
}

impl HostState {
    pub fn new(env: Arc<PluginEnv>, memory_cap: u64) -> HostState {
        // WASI is linked because guest toolchains import it, but it grants
        // nothing: no preopened directories, no environment, no arguments,
        // no network. Standard output and error go to a small buffer that
        // reports and failures carry.
        let output = TailPipe::default();
        let wasi = WasiCtx::builder()
            .stdout(output.clone())
            .stderr(output.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        HostState {
            wasi,
            table: ResourceTable::new(),
            output,
            limiter: MemoryLimiter {
                cap: memory_cap,
                total: 0,
                share: env.share.clone(),
            },
            call: CallState::default(),
            env,
        }
    }

    /// Runs one store operation for a host call, bounded by what is left of
    /// the call's deadline. The plugin's fiber is suspended meanwhile: the
    /// request's task waits, no thread does. Notes in the call state when the
    /// store could not be reached (or did not answer before the deadline), so
    /// that callers such as the end worker can tell a plugin failure from an
    /// outage.
    async fn store_call<T>(
        &mut self,
        remaining: std::time::Duration,
        fut: impl std::future::Future<Output = StoreResult<T>>,
    ) -> wasmtime::Result<StoreResult<T>> {
        let deadline_ms = self.call.deadline_ms;
        let result = tokio::time::timeout(remaining, fut).await;
        match result {
            Ok(r) => {
                if matches!(
                    r,
                    Err(StoreError::Unavailable(_) | StoreError::OutcomeUnknown(_))
                ) {
                    self.call.store_unavailable = true;
                }
                Ok(r)
            }
            Err(_) => {
                self.call.store_unavailable = true;
                Err(HostTrap::Deadline(deadline_ms).into())
            }
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

// The capabilities. Each returns `Err` to trap the call (a limit, the
// deadline) and `Ok(Err(message))` for an error the plugin sees.
impl HostState {
    /// `log.log`
    pub fn write_log(&mut self, level: LogLevel, message: String) -> wasmtime::Result<()> {
        self.call.enter()?;
        self.call.give_out("log message", message.len())?;
        let env = &self.env;
        // Only lines the log level lets through take from the budget.
        let written = match level {
            LogLevel::Trace => tracing::enabled!(tracing::Level::TRACE),
            LogLevel::Debug => tracing::enabled!(tracing::Level::DEBUG),
            LogLevel::Info => tracing::enabled!(tracing::Level::INFO),
            LogLevel::Warn => tracing::enabled!(tracing::Level::WARN),
            LogLevel::Error => tracing::enabled!(tracing::Level::ERROR),
        };
        if let Some(dropped) = written.then(|| env.lines.admit()).flatten() {
            let session = self.call.session.as_deref().unwrap_or("");
            let text = clip(&message);
            let (tenant, plugin) = (&env.tenant, &env.plugin);
            // `dropped`: lines over the plugin's log rate since the last
            // one written.
            match level {
                LogLevel::Trace => {
                    tracing::trace!(%tenant, %plugin, session, dropped, "{text}")
                }
                LogLevel::Debug => {
                    tracing::debug!(%tenant, %plugin, session, dropped, "{text}")
                }
                LogLevel::Info => tracing::info!(%tenant, %plugin, session, dropped, "{text}"),
                LogLevel::Warn => tracing::warn!(%tenant, %plugin, session, dropped, "{text}"),
                LogLevel::Error => {
                    tracing::error!(%tenant, %plugin, session, dropped, "{text}")
                }
            }
        }
        self.call.logs.push(LogLine {
            level: level.as_str(),
            message,
        });
        Ok(())
    }

    /// `clock.now`
    pub fn clock_now(&mut self) -> wasmtime::Result<u64> {
        self.call.enter()?;
        Ok(now_ms())
    }

    /// `kv.get`
    pub async fn kv_get(
        &mut self,
        key: String,
    ) -> wasmtime::Result<Result<Option<String>, String>> {
        let remaining = self.call.enter()?;
        self.call.give_out("kv key", key.len())?;
        let env = self.env.clone();
        let got = self
            .store_call(
                remaining,
                env.stores.kv.kv_get(&env.tenant, &env.plugin, &key),
            )
            .await?;
        match got {
            Ok(value) => {
                self.call
                    .take_in("kv value", value.as_ref().map_or(0, String::len))?;
                Ok(Ok(value))
            }
            Err(e) => Ok(Err(e.to_string())),
        }
    }

    /// `kv.set`
    pub async fn kv_set(
        &mut self,
        key: String,
        value: String,
        ttl_seconds: Option<u32>,
    ) -> wasmtime::Result<Result<(), String>> {
        let remaining = self.call.enter()?;
        self.call.give_out("kv entry", key.len() + value.len())?;
        let env = self.env.clone();
        let res = self
            .store_call(
                remaining,
                env.stores.kv.kv_set_within(
                    &env.tenant,
                    &env.plugin,
                    &key,
                    &value,
                    ttl_seconds,
                    self.call.kv_quota,
                ),
            )
            .await?;
        Ok(res.map_err(|e| e.to_string()))
    }

    /// `kv.delete`
    pub async fn kv_delete(&mut self, key: String) -> wasmtime::Result<Result<bool, String>> {
        let remaining = self.call.enter()?;
        self.call.give_out("kv key", key.len())?;
        let env = self.env.clone();
        let res = self
            .store_call(
                remaining,
                env.stores.kv.kv_delete(&env.tenant, &env.plugin, &key),
            )
            .await?;
        Ok(res.map_err(|e| e.to_string()))
    }

    /// `sessions.list-active`
    pub async fn list_sessions(
        &mut self,
        user: String,
    ) -> wasmtime::Result<Result<Vec<SessionSummary>, String>> {
        let remaining = self.call.enter()?;
        let env = self.env.clone();
        let res = self
            .store_call(
                remaining,
                env.stores.sessions.list_user(&env.tenant, &user, now_ms()),
            )
            .await?;
        match res {
            Ok(records) => {
                let list: Vec<SessionSummary> =
                    records.iter().map(SessionRecord::summary).collect();
                let size: usize = list.iter().map(summary_size).sum();
                self.call.take_in("session list", size)?;
                Ok(Ok(list))
            }
            Err(e) => Ok(Err(e.to_string())),
        }
    }

    /// `audit.append`
    pub async fn audit_append(&mut self, entry: String) -> wasmtime::Result<Result<(), String>> {
        let remaining = self.call.enter()?;
        self.call.give_out("audit entry", entry.len())?;
        let value: Value = match serde_json::from_str(&entry) {
            Ok(v @ Value::Object(_)) => v,
            Ok(_) => return Ok(Err("audit entry must be a JSON object".into())),
            Err(e) => return Ok(Err(format!("audit entry is not valid JSON: {e}"))),
        };
        if let Err(e) = crate::json::check("audit entry", &value) {
            return Ok(Err(e.to_string()));
        }
        let env = self.env.clone();
        let session = self.call.session.clone();
        self.call.audit_appends += 1;
        let once = self
            .call
            .end_id
            .as_ref()
            .map(|end| format!("{end}:{}:{}", env.plugin, self.call.audit_appends));
        let res = self
            .store_call(
                remaining,
                env.stores.audit.audit_append(
                    &env.tenant,
                    &env.plugin,
                    session.as_deref(),
                    &value,
                    once.as_deref(),
                    now_ms(),
                ),
            )
            .await?;
        match res {
            Ok(_) => {
                self.call.audit.push(value);
                Ok(Ok(()))
            }
            Err(e) => Ok(Err(e.to_string())),
        }
    }
}
