//! The service layer: one function per session operation, between the edges
//! that receive requests (the REST API, the `/sessman` adapter) and the
//! parts that do the work (the store, the plugin chains).
//!
//! Each operation takes typed input ([`NewSession`], [`SessionKey`],
//! [`Precondition`], ...) and returns a typed result or an [`Error`]; none
//! knows HTTP. The edges parse a request, call one operation and render its
//! result; `api/error.rs` is the one place where an [`Error`] becomes a
//! status.
//!
//! - [`sessions`]: create, get, update, touch, authenticate, event, message
//!   and logout of one session;
//! - [`users`]: a user's live sessions, and revoking them;
//! - [`tenant`]: what a tenant may read about itself (audit stream, end
//!   queue) and readiness;
//! - [`once`]: idempotency keys (`Idempotency-Key`) of create and logout;
//! - [`end`]: every store step that ends sessions. It passes the tenant's
//!   end policy to the store (so the step queues the end jobs atomically)
//!   and reports what ended (log line, end worker woken). Create (evicting),
//!   logout, authenticate (evicting), revoke and the sweeper all end
//!   sessions through it, so none can forget either half.
//!
//! Writes read the session, run the chain over it and store the result with
//! a compare-and-set on its version ([`write`]); chains never write.
//! [`decided`] turns a chain's decision into what the write stores and what
//! follows it: ending the session when a plugin asked to (through
//! [`end::Ending`]), or refusing after storing the refusing plugin's state.

pub mod control;
mod decided;
pub mod end;
mod error;
pub mod idle;
mod input;
pub mod once;
pub mod sessions;
pub mod tenant;
pub mod turns;
pub mod users;
mod write;

pub use error::{Error, Result};
pub use input::{MAX_NAME, MAX_ROLES};
pub use once::IdempotencyKey;
pub use sessions::{DataChange, Issued, Login, NewSession, Replied};
pub use turns::WriteTurns;
pub use write::{MAX_BACKOFF, WRITE_DEADLINE};

use crate::ids;

/// The store key of a session: the SHA-256 of its token. Only
/// [`SessionKey::of_token`] makes one, so a key always comes from a
/// well-formed token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionKey(String);

impl SessionKey {
    /// The key of `token`, or `None` when it is not shaped like a token (43
    /// base64url characters).
    pub fn of_token(token: &str) -> Option<SessionKey> {
        ids::is_token(token).then(|| SessionKey(ids::token_hash(token)))
    }

    /// The hex token hash, as the store keys sessions.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The version a write expects the session to be at (`If-Match`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Precondition {
    /// Any version: a write that loses a race starts over.
    #[default]
    Any,
    /// One of these versions, or the write fails with
    /// [`Error::PreconditionFailed`]. An empty list matches none.
    OneOf(Vec<u64>),
}

impl Precondition {
    /// Whether a version was named (then a lost race is not retried).
    pub fn is_given(&self) -> bool {
        matches!(self, Precondition::OneOf(_))
    }

    /// Fails unless `version` meets the precondition.
    pub fn check(&self, version: u64) -> Result<()> {
        match self {
            Precondition::OneOf(versions) if !versions.contains(&version) => {
                Err(Error::PreconditionFailed {
                    current_version: version,
                })
            }
            _ => Ok(()),
        }
    }
}
