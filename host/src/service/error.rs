//! What a session operation can fail with. The HTTP edge maps each variant
//! to a problem in one place (`api/error.rs`); nothing here knows statuses.

use crate::runtime::{Decision, FailureKind, PluginFailure};
use crate::session::SessionRecord;
use crate::store::StoreError;

/// Why an operation did not happen. Nothing was written unless the variant
/// says otherwise.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input breaks a rule; `field` names the member (`user`,
    /// `roles[2]`, ...), empty for the input as a whole.
    #[error("{message}")]
    Invalid { field: String, message: String },
    /// A JSON value of the input (or the session it would make) is over one
    /// of the bounds of [`crate::json`]; the error names the value and the
    /// bound.
    #[error(transparent)]
    OverLimit(crate::json::OverLimit),
    /// No live session has this id: it never existed, ended or expired.
    #[error("no live session has this id")]
    NotFound,
    /// The caller's precondition names another version.
    #[error("the session is at version {current_version}")]
    PreconditionFailed { current_version: u64 },
    /// The user has as many sessions as the tenant allows, and the policy
    /// is `deny`.
    #[error("user {user:?} already has {active} active session(s); at most {max} allowed")]
    LimitReached { user: String, active: u32, max: u32 },
    /// The tenant has its quota of stored sessions (`quota.max_sessions`).
    #[error("the tenant has {stored} sessions stored; its quota is {max}")]
    SessionQuota { stored: u64, max: u64 },
    /// A plugin vetoed (or failed under `on_error = "deny"`: then `kind` is
    /// the failure's).
    #[error("denied by plugin {plugin}: {message}")]
    Denied {
        plugin: String,
        message: String,
        kind: Option<FailureKind>,
    },
    /// A plugin failed where no verdict was asked (a message, a listing).
    #[error(transparent)]
    PluginFailed(PluginFailure),
    /// No plugin of the tenant handles messages.
    #[error("no plugin of this tenant handles messages")]
    NoMessageHandler,
    /// Every attempt within the write deadline
    /// ([`crate::service::WRITE_DEADLINE`]) lost its compare-and-set to
    /// another writer.
    #[error("the session changed under each of {attempts} attempts")]
    WriteConflict { attempts: usize },
    /// The store cannot be reached or refused the request without running
    /// it, whether the host found out itself or a plugin's host call did:
    /// nothing was changed.
    #[error("store unavailable: {0}")]
    StoreUnavailable(String),
    /// The write was sent to the store but no answer came: it may or may
    /// not have happened (and may still happen). A retry with the same
    /// idempotency key answers as the write did, if it happened.
    #[error("store outcome unknown: {0}")]
    OutcomeUnknown(String),
    /// The idempotency key was used for another request of the tenant
    /// (another body, another session, another operation); nothing ran.
    #[error("the idempotency key was used for another request")]
    IdempotencyKeyReused,
    /// A request with this idempotency key is still running on this host;
    /// nothing ran.
    #[error("a request with this idempotency key is still running")]
    IdempotencyKeyInUse,
    /// Any other store failure (a bug or corrupt data).
    #[error(transparent)]
    Store(StoreError),
}

/// The result of a session operation.
pub type Result<T> = std::result::Result<T, Error>;

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Error {
        match e {
            StoreError::Unavailable(reason) => Error::StoreUnavailable(reason),
            StoreError::OutcomeUnknown(reason) => Error::OutcomeUnknown(reason),
            other => Error::Store(other),
        }
    }
}

impl From<crate::json::OverLimit> for Error {
    fn from(e: crate::json::OverLimit) -> Error {
        Error::OverLimit(e)
    }
}

impl Error {
    /// An input rule broken by `field`.
    pub fn invalid(field: &str, message: impl Into<String>) -> Error {
        Error::Invalid {
            field: field.to_string(),
            message: message.into(),
        }
    }

    /// A plugin failure: the store's, when a host call of the plugin could
    /// not reach it (the plugin never had a fair chance), else the plugin's.
    pub(crate) fn plugin(failure: PluginFailure) -> Error {
        if failure.store_unavailable {
            Error::StoreUnavailable(format!("plugin {}: {}", failure.plugin, failure.message))
        } else {
            Error::PluginFailed(failure)
        }
    }
}

/// The session a chain allowed, or why not. For `on-session-start`, whose
/// chain never asks to end the session and drops a denial's state.
pub(crate) fn allowed(decision: Decision) -> Result<SessionRecord> {
    match decision {
        Decision::Allow(record) | Decision::End { record, .. } => Ok(*record),
        Decision::Deny {
            plugin,
            message,
            failure,
            ..
        } => Err(refusal(plugin, message, failure)),
    }
}

/// The error of a chain's deny (a denial's state is the caller's to store).
pub(crate) fn refusal(
    plugin: String,
    message: String,
    failure: Option<Box<PluginFailure>>,
) -> Error {
    match failure {
        Some(f) if f.store_unavailable => Error::plugin(*f),
        failure => Error::Denied {
            plugin,
            message,
            kind: failure.map(|f| f.kind),
        },
    }
}
