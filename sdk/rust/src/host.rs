//! The host's capabilities, as typed functions.
//!
//! Each capability is granted per plugin in the host config; a plugin that
//! uses one it was not granted does not load. Inside a sessiond host they
//! call the host; in native builds (your plugin's `cargo test`) they use the
//! in-memory fakes of [`testing`](crate::testing).

/// Writes to the host's structured log. The host tags every line with the
/// tenant, the plugin and the session.
///
/// Each level has a function taking anything [`Display`](std::fmt::Display)
/// and a macro of the same name taking format arguments:
///
/// ```
/// use sessiond_sdk::log;
///
/// let user = "alice";
/// log::info("plain text");
/// log::warn!("refusing a second session for {user}");
/// ```
pub mod log {
    use std::fmt::Display;

    /// How severe a log line is.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
    pub enum Level {
        /// Very detailed tracing.
        Trace,
        /// Debugging detail.
        Debug,
        /// Normal operation.
        Info,
        /// Something unexpected that the plugin handled.
        Warn,
        /// A failure.
        Error,
    }

    /// Writes one line at `level`.
    pub fn log(level: Level, message: impl Display) {
        super::backend::log(level, &message.to_string());
    }

    /// Writes one line at [`Level::Trace`].
    pub fn trace(message: impl Display) {
        log(Level::Trace, message);
    }

    /// Writes one line at [`Level::Debug`].
    pub fn debug(message: impl Display) {
        log(Level::Debug, message);
    }

    /// Writes one line at [`Level::Info`].
    pub fn info(message: impl Display) {
        log(Level::Info, message);
    }

    /// Writes one line at [`Level::Warn`].
    pub fn warn(message: impl Display) {
        log(Level::Warn, message);
    }

    /// Writes one line at [`Level::Error`].
    pub fn error(message: impl Display) {
        log(Level::Error, message);
    }

    #[doc(inline)]
    pub use crate::{
        __log_debug as debug, __log_error as error, __log_info as info, __log_trace as trace,
        __log_warn as warn,
    };
}

/// `log::trace!("format", args...)`: formats and writes a trace line.
#[doc(hidden)]
#[macro_export]
macro_rules! __log_trace {
    ($($arg:tt)+) => { $crate::log::trace(::core::format_args!($($arg)+)) };
}

/// `log::debug!("format", args...)`: formats and writes a debug line.
#[doc(hidden)]
#[macro_export]
macro_rules! __log_debug {
    ($($arg:tt)+) => { $crate::log::debug(::core::format_args!($($arg)+)) };
}

/// `log::info!("format", args...)`: formats and writes an info line.
#[doc(hidden)]
#[macro_export]
macro_rules! __log_info {
    ($($arg:tt)+) => { $crate::log::info(::core::format_args!($($arg)+)) };
}

/// `log::warn!("format", args...)`: formats and writes a warning line.
#[doc(hidden)]
#[macro_export]
macro_rules! __log_warn {
    ($($arg:tt)+) => { $crate::log::warn(::core::format_args!($($arg)+)) };
}

/// `log::error!("format", args...)`: formats and writes an error line.
#[doc(hidden)]
#[macro_export]
macro_rules! __log_error {
    ($($arg:tt)+) => { $crate::log::error(::core::format_args!($($arg)+)) };
}

/// The host's wall clock.
pub mod clock {
    use crate::Timestamp;

    /// The current time, in milliseconds since the Unix epoch (UTC).
    pub fn now() -> Timestamp {
        super::backend::now()
    }
}

/// A key-value store private to this plugin in this tenant: no other plugin
/// and no other tenant can read it. Keys and values are UTF-8 text; the
/// `_json` functions store any serde value as JSON text.
///
/// ```
/// use sessiond_sdk::kv;
///
/// # fn main() -> sessiond_sdk::Result<()> {
/// kv::set_json("logins/alice", &3u32, Some(86_400))?;
/// let logins: Option<u32> = kv::get_json("logins/alice")?;
/// assert_eq!(logins, Some(3));
/// assert!(kv::delete("logins/alice")?);
/// # Ok(())
/// # }
/// ```
pub mod kv {
    use serde::Serialize;
    use serde::de::DeserializeOwned;

    use crate::{Error, Result};

    /// Reads a value; `None` if the key is not set or has expired.
    pub fn get(key: &str) -> Result<Option<String>> {
        super::backend::kv_get(key)
            .map_err(|error| Error::new(error).context(format!("kv get `{key}`")))
    }

    /// Writes a value. With `ttl_seconds` the key expires after that many
    /// seconds; with `None` it stays until deleted.
    pub fn set(key: &str, value: &str, ttl_seconds: Option<u32>) -> Result<()> {
        super::backend::kv_set(key, value, ttl_seconds)
            .map_err(|error| Error::new(error).context(format!("kv set `{key}`")))
    }

    /// Removes a key. Returns whether it was set.
    pub fn delete(key: &str) -> Result<bool> {
        super::backend::kv_delete(key)
            .map_err(|error| Error::new(error).context(format!("kv delete `{key}`")))
    }

    /// Reads a value stored as JSON and deserializes it as a `T`; `None` if
    /// the key is not set or has expired.
    pub fn get_json<T: DeserializeOwned>(key: &str) -> Result<Option<T>> {
        get(key)?
            .map(|text| {
                serde_json::from_str(&text).map_err(|error| {
                    Error::new(format!(
                        "kv get `{key}`: the value is not the expected JSON: {error}"
                    ))
                })
            })
            .transpose()
    }

    /// Serializes `value` to JSON and writes it, like [`set`].
    pub fn set_json<T: Serialize + ?Sized>(
        key: &str,
        value: &T,
        ttl_seconds: Option<u32>,
    ) -> Result<()> {
        let text = serde_json::to_string(value).map_err(|error| {
            Error::new(format!(
                "kv set `{key}`: the value cannot be serialized to JSON: {error}"
            ))
        })?;
        set(key, &text, ttl_seconds)
    }
}

/// Read-only access to the active sessions of this plugin's tenant.
pub mod sessions {
    use crate::{Error, Result, SessionSummary};

    /// The active sessions of `user` in this tenant, oldest first. During
    /// `on_session_start` the session being created is not in the list yet.
    pub fn list_active(user: &str) -> Result<Vec<SessionSummary>> {
        super::backend::list_active(user).map_err(|error| {
            Error::new(error).context(format!("listing the active sessions of {user:?}"))
        })
    }
}

/// The tenant's audit stream, which operators read with `GET /v1/audit`.
pub mod audit {
    use serde::Serialize;

    use crate::Result;
    use crate::types::{to_object, to_text};

    /// Appends a record, which must serialize to a JSON object. The host adds
    /// the time, the tenant, the plugin and the session's public id.
    ///
    /// ```
    /// use sessiond_sdk::audit;
    /// use sessiond_sdk::serde_json::json;
    ///
    /// audit::append(&json!({"event": "login", "user": "alice"})).unwrap();
    /// assert!(audit::append(&"not an object").is_err());
    /// ```
    pub fn append<T: Serialize + ?Sized>(record: &T) -> Result<()> {
        let record = to_object("an audit record", record)?;
        super::backend::audit_append(&to_text(&record))
            .map_err(|error| crate::Error::new(error).context("appending an audit record"))
    }
}

/// The calls into the host, inside a component.
#[cfg(target_arch = "wasm32")]
mod backend {
    use super::log::Level;
    use crate::wit::sessiond::plugin as host;
    use crate::{SessionSummary, Timestamp};

    pub(super) fn log(level: Level, message: &str) {
        let level = match level {
            Level::Trace => host::log::Level::Trace,
            Level::Debug => host::log::Level::Debug,
            Level::Info => host::log::Level::Info,
            Level::Warn => host::log::Level::Warn,
            Level::Error => host::log::Level::Error,
        };
        host::log::log(level, message);
    }

    pub(super) fn now() -> Timestamp {
        host::clock::now()
    }

    pub(super) fn kv_get(key: &str) -> Result<Option<String>, String> {
        host::kv::get(key)
    }

    pub(super) fn kv_set(key: &str, value: &str, ttl_seconds: Option<u32>) -> Result<(), String> {
        host::kv::set(key, value, ttl_seconds)
    }

    pub(super) fn kv_delete(key: &str) -> Result<bool, String> {
        host::kv::delete(key)
    }

    pub(super) fn list_active(user: &str) -> Result<Vec<SessionSummary>, String> {
        host::sessions::list_active(user)?
            .into_iter()
            .map(|summary| SessionSummary::from_wit(summary).map_err(String::from))
            .collect()
    }

    pub(super) fn audit_append(record: &str) -> Result<(), String> {
        host::audit::append(record)
    }
}

/// The in-memory fakes, in native builds.
#[cfg(not(target_arch = "wasm32"))]
mod backend {
    pub(super) use crate::testing::fake::*;
}
