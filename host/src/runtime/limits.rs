//! Limits on every hook call. The defaults live here and nowhere else; each
//! plugin may override any of them in the host config.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The limits armed for one hook call (and for the instantiation and `init`
/// of a fresh instance).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Fuel budget: wasm instructions the call may execute (deterministic CPU).
    pub fuel: u64,
    /// Wall-clock deadline in milliseconds, enforced by epoch interruption in
    /// wasm code and checked by every host call.
    pub deadline_ms: u64,
    /// Cap on an instance's linear memory, in MiB.
    pub memory_mib: u64,
    /// Cap on the bytes the host passes to the plugin in one call: the
    /// hook's arguments plus what host calls return.
    pub max_input_bytes: u64,
    /// Cap on the bytes the plugin passes to the host in one call: the hook's
    /// result plus what it sends through host calls.
    pub max_output_bytes: u64,
    /// Cap on the number of host calls in one call.
    pub max_host_calls: u32,
    /// The plugin's kv quota in this tenant: most bytes (keys plus values)
    /// its live entries may hold, across calls and hosts.
    #[serde(default = "default_kv_max_bytes")]
    pub kv_max_bytes: u64,
    /// The plugin's kv quota in this tenant: most live entries.
    #[serde(default = "default_kv_max_keys")]
    pub kv_max_keys: u64,
    /// Lines a second the plugin may write to the host's log through
    /// `log.log`, on average (per tenant, per host); lines over it are
    /// dropped and counted. 0 drops every line.
    #[serde(default = "default_log_lines_per_second")]
    pub log_lines_per_second: u32,
    /// Lines the plugin may write at once before `log_lines_per_second`
    /// holds it back.
    #[serde(default = "default_log_burst")]
    pub log_burst: u32,
}

/// `log_lines_per_second`.
fn default_log_lines_per_second() -> u32 {
    5
}

/// `log_burst`.
fn default_log_burst() -> u32 {
    50
}

/// `kv_max_bytes`: 1 MiB.
fn default_kv_max_bytes() -> u64 {
    1 << 20
}

/// `kv_max_keys`.
fn default_kv_max_keys() -> u64 {
    1_000
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            fuel: 50_000_000,
            deadline_ms: 250,
            memory_mib: 64,
            max_input_bytes: 1 << 20,
            max_output_bytes: 1 << 20,
            max_host_calls: 1_000,
            kv_max_bytes: default_kv_max_bytes(),
            kv_max_keys: default_kv_max_keys(),
            log_lines_per_second: default_log_lines_per_second(),
            log_burst: default_log_burst(),
        }
    }
}

impl Limits {
    /// The deadline as a [`Duration`].
    pub fn deadline(&self) -> Duration {
        Duration::from_millis(self.deadline_ms)
    }

    /// The memory cap in bytes.
    pub fn memory_bytes(&self) -> u64 {
        self.memory_mib.saturating_mul(1 << 20)
    }

    /// These limits with `overrides` applied.
    pub fn with(mut self, overrides: &LimitOverrides) -> Limits {
        let o = overrides;
        if let Some(v) = o.fuel {
            self.fuel = v;
        }
        if let Some(v) = o.deadline_ms {
            self.deadline_ms = v;
        }
        if let Some(v) = o.memory_mib {
            self.memory_mib = v;
        }
        if let Some(v) = o.max_input_bytes {
            self.max_input_bytes = v;
        }
        if let Some(v) = o.max_output_bytes {
            self.max_output_bytes = v;
        }
        if let Some(v) = o.max_host_calls {
            self.max_host_calls = v;
        }
        if let Some(v) = o.kv_max_bytes {
            self.kv_max_bytes = v;
        }
        if let Some(v) = o.kv_max_keys {
            self.kv_max_keys = v;
        }
        if let Some(v) = o.log_lines_per_second {
            self.log_lines_per_second = v;
        }
        if let Some(v) = o.log_burst {
            self.log_burst = v;
        }
        self
    }
}

/// Per-plugin overrides of [`Limits`]; every field left out keeps the default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitOverrides {
    pub fuel: Option<u64>,
    pub deadline_ms: Option<u64>,
    pub memory_mib: Option<u64>,
    pub max_input_bytes: Option<u64>,
    pub max_output_bytes: Option<u64>,
    pub max_host_calls: Option<u32>,
    pub kv_max_bytes: Option<u64>,
    pub kv_max_keys: Option<u64>,
    pub log_lines_per_second: Option<u32>,
    pub log_burst: Option<u32>,
}

/// Settings of the engine shared by every plugin in the process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineSettings {
    /// Where precompiled components are cached. None: not cached on disk.
    pub cache_dir: Option<std::path::PathBuf>,
    /// Most instances alive at once in the process (pooling allocator slots).
    pub max_instances: u32,
    /// The largest linear memory any plugin may be given, in MiB. Per-plugin
    /// `memory_mib` limits must not exceed it.
    pub max_memory_mib: u64,
    /// Linear memory all live instances (running and warm) may hold
    /// together, in MiB; shared out between the tenants as their default
    /// `quota.memory_mib`. A call that would take more fails with
    /// `memory-budget`.
    pub memory_budget_mib: u64,
    /// Plugin calls running at once on this host, shared out between the
    /// tenants as their default `quota.max_plugin_calls`. A call waiting on
    /// the store or sleeping holds its slot, so the default leaves room for
    /// hooks that wait: 16 per CPU (the CPU itself is shared by the epoch
    /// yield every millisecond).
    pub max_plugin_calls: usize,
    /// The wasm stack limit in KiB. wasmtime applies it per engine, so it is
    /// the same for every plugin.
    pub wasm_stack_kib: u64,
    /// How often the epoch advances, in milliseconds: the resolution of
    /// deadlines.
    pub epoch_tick_ms: u64,
    /// Bytes of each pooled linear memory kept resident between instances,
    /// in KiB; only dirty pages are reset. Larger values make fresh
    /// instances cheaper and cost resident memory per pool slot.
    pub keep_resident_kib: u64,
    /// Idle warm instances kept per (tenant, plugin). Size it to the number
    /// of hook calls that run at once: below that, busy periods keep
    /// creating and discarding instances (about 1 ms each for Python).
    pub max_idle_instances: usize,
    /// A warm instance is replaced after this many calls, bounding how long
    /// state can build up inside one instance.
    pub recycle_after_calls: u64,
    /// The limits used where a plugin does not override them.
    pub default_limits: Limits,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            cache_dir: None,
            max_instances: 1_000,
            max_memory_mib: 256,
            memory_budget_mib: 2048,
            max_plugin_calls: 16 * std::thread::available_parallelism().map_or(2, |n| n.get()),
            wasm_stack_kib: 512,
            epoch_tick_ms: 1,
            keep_resident_kib: 2048,
            max_idle_instances: 64,
            recycle_after_calls: 10_000,
            default_limits: Limits::default(),
        }
    }
}
