//! Typed failures of a plugin call, each carrying the plugin's name.

use serde::Serialize;

/// What went wrong in a plugin call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum FailureKind {
    /// The call used up its fuel budget.
    FuelExhausted,
    /// The call ran past its wall-clock deadline (in wasm or in a host call).
    DeadlineExceeded,
    /// The instance tried to grow its memory past its cap.
    MemoryLimit,
    /// The instance's memory would have taken its tenant past its memory
    /// share, or the host past `runtime.memory_budget_mib`.
    MemoryBudget,
    /// Every plugin-call slot of the tenant stayed taken for the whole
    /// deadline of the call (`quota.max_plugin_calls`); the call never ran.
    Busy,
    /// The wasm stack limit was hit (unbounded recursion).
    StackOverflow,
    /// The arguments for the call, or what host calls returned, exceeded the
    /// input byte cap.
    InputTooLarge,
    /// The call's result, or what it sent through host calls, exceeded the
    /// output byte cap.
    OutputTooLarge,
    /// The call made more host calls than allowed.
    HostCallLimit,
    /// Any other trap: a panic, `unreachable`, an out-of-bounds access.
    Trap,
    /// The plugin returned an error with its own message.
    PluginError,
    /// The plugin returned something the host cannot use (invalid JSON, a
    /// non-object data patch).
    InvalidOutput,
    /// No instance could be created (instantiation or `init` failed).
    Instantiate,
    /// The plugin's circuit breaker is open (most of its recent calls
    /// failed): the call was skipped and spent nothing.
    CircuitOpen,
}

impl FailureKind {
    /// Whether this failure is a limit or a trap (as opposed to the plugin's
    /// own error): the instance involved is discarded.
    pub fn is_trap_or_limit(self) -> bool {
        !matches!(self, FailureKind::PluginError | FailureKind::InvalidOutput)
    }

    /// Whether this failure is the plugin's own doing, and so counts
    /// towards opening its circuit breaker. A call refused for want of a
    /// slot or of memory, skipped by the breaker, or given too large an
    /// input by the host says nothing about the plugin.
    pub fn is_plugins_fault(self) -> bool {
        !matches!(
            self,
            FailureKind::Busy
                | FailureKind::MemoryBudget
                | FailureKind::CircuitOpen
                | FailureKind::InputTooLarge
        )
    }

    /// The kebab-case name used in JSON and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::FuelExhausted => "fuel-exhausted",
            FailureKind::DeadlineExceeded => "deadline-exceeded",
            FailureKind::MemoryLimit => "memory-limit",
            FailureKind::MemoryBudget => "memory-budget",
            FailureKind::Busy => "busy",
            FailureKind::StackOverflow => "stack-overflow",
            FailureKind::InputTooLarge => "input-too-large",
            FailureKind::OutputTooLarge => "output-too-large",
            FailureKind::HostCallLimit => "host-call-limit",
            FailureKind::Trap => "trap",
            FailureKind::PluginError => "plugin-error",
            FailureKind::InvalidOutput => "invalid-output",
            FailureKind::Instantiate => "instantiate",
            FailureKind::CircuitOpen => "circuit-open",
        }
    }
}

/// A failed plugin call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("plugin {plugin}: {}: {message}", kind.as_str())]
pub struct PluginFailure {
    /// The plugin's name in the tenant's chain.
    pub plugin: String,
    pub kind: FailureKind,
    /// The plugin's own message for `PluginError`; a description otherwise.
    pub message: String,
    /// The wasm backtrace of a trap, with function names where the component
    /// keeps them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backtrace: Option<String>,
    /// The end of what the plugin wrote to stdout and stderr during the call
    /// (a panic message, a Python traceback), when it wrote anything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// A host call of the failed call could not reach the session store (or
    /// the store did not answer before the deadline): the failure may be the
    /// store's rather than the plugin's, and the request should be answered
    /// as one the store could not serve.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub store_unavailable: bool,
}

/// Errors that abort a call from inside a host function; they become traps
/// and are recognised again when classifying the failure.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum HostTrap {
    #[error("memory limit of {limit} bytes reached (asked for {requested} bytes)")]
    MemoryLimit { limit: u64, requested: u64 },
    #[error("{0}")]
    MemoryBudget(String),
    #[error("host call limit of {0} reached")]
    HostCallLimit(u32),
    #[error("deadline of {0} ms passed during a host call")]
    Deadline(u64),
    #[error("{what} of {size} bytes exceeds the input cap of {limit} bytes")]
    InputTooLarge {
        what: &'static str,
        size: u64,
        limit: u64,
    },
    #[error("{what} of {size} bytes exceeds the output cap of {limit} bytes")]
    OutputTooLarge {
        what: &'static str,
        size: u64,
        limit: u64,
    },
}

/// Turns the error of a failed call into a typed failure.
pub(crate) fn classify(plugin: &str, err: &wasmtime::Error) -> PluginFailure {
    let backtrace = err
        .downcast_ref::<wasmtime::WasmBacktrace>()
        .map(|bt| bt.to_string());
    let (kind, message) = if let Some(host) = err.downcast_ref::<HostTrap>() {
        let kind = match host {
            HostTrap::MemoryLimit { .. } => FailureKind::MemoryLimit,
            HostTrap::MemoryBudget(_) => FailureKind::MemoryBudget,
            HostTrap::HostCallLimit(_) => FailureKind::HostCallLimit,
            HostTrap::Deadline(_) => FailureKind::DeadlineExceeded,
            HostTrap::InputTooLarge { .. } => FailureKind::InputTooLarge,
            HostTrap::OutputTooLarge { .. } => FailureKind::OutputTooLarge,
        };
        (kind, host.to_string())
    } else if let Some(trap) = err.downcast_ref::<wasmtime::Trap>() {
        let kind = match trap {
            wasmtime::Trap::OutOfFuel => FailureKind::FuelExhausted,
            wasmtime::Trap::Interrupt => FailureKind::DeadlineExceeded,
            wasmtime::Trap::StackOverflow => FailureKind::StackOverflow,
            _ => FailureKind::Trap,
        };
        (kind, trap.to_string())
    } else {
        (FailureKind::Trap, format!("{err:#}"))
    };
    PluginFailure {
        plugin: plugin.to_string(),
        kind,
        message,
        backtrace,
        output: None,
        store_unavailable: false,
    }
}
