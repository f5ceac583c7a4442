//! The compare-and-set write every change of a live session goes through.
//!
//! Read the session, let the operation compute its next state (running the
//! chain over it), store that if the version has not moved on. With a
//! [`Precondition`] a lost race fails at once; without one the write starts
//! over from a fresh read, chain included, so concurrent writers lose no
//! update. Every state is checked against the bounds on sessions
//! ([`crate::json::check_session`]) before it is stored.

use std::future::Future;
use std::time::Duration;

use rand::TryRng as _;

use super::input::check_session;
use super::{Error, Precondition, Result, SessionKey};
use crate::app::App;
use crate::session::{Millis, SessionRecord, now_ms};
use crate::store::WriteOutcome;
use crate::tenant::Tenant;

/// How often a write without a precondition starts over after losing a race.
pub const MAX_WRITE_ATTEMPTS: usize = 32;

/// A random pause that grows with the attempt, so racing writers spread out.
async fn backoff(attempt: usize) {
    let mut r = [0u8; 1];
    let _ = rand::rngs::SysRng.try_fill_bytes(&mut r);
    let ms = u64::from(r[0]) % (2 * attempt as u64 + 2);
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// Reads the session under `key`, lets `plan` compute its next state and
/// stores that with a compare-and-set. `plan` may change the token hash
/// (rotation); the version, `last_seen_at` and the fields that never change
/// are set here. Returns the record as stored with what `plan` returned
/// besides it.
pub(crate) async fn write_session<X, F, Fut>(
    app: &App,
    tenant: &Tenant,
    key: &SessionKey,
    precondition: &Precondition,
    mut plan: F,
) -> Result<(SessionRecord, X)>
where
    F: FnMut(SessionRecord, Millis) -> Fut,
    Fut: Future<Output = Result<(SessionRecord, X)>>,
{
    let key = key.as_str();
    for attempt in 0..MAX_WRITE_ATTEMPTS {
        let now = now_ms();
        let current = app
            .sessions
            .get(&tenant.name, key, now)
            .await?
            .ok_or(Error::NotFound)?;
        precondition.check(current.version)?;
        let (mut next, extra) = plan(current.clone(), now).await?;
        next.version = current.version + 1;
        next.last_seen_at = now.max(current.last_seen_at);
        next.tenant = current.tenant.clone();
        next.public_id = current.public_id.clone();
        next.created_at = current.created_at;
        next.idle_timeout_ms = current.idle_timeout_ms;
        // Whatever the input and the chain made of it, no session over the
        // bounds is stored.
        check_session(&next)?;
        match app
            .sessions
            .update(key, &next, current.version, now)
            .await?
        {
            WriteOutcome::Written(stored) => return Ok((stored, extra)),
            WriteOutcome::NotFound => return Err(Error::NotFound),
            WriteOutcome::VersionMismatch(now_stored) => {
                if precondition.is_given() {
                    return Err(Error::PreconditionFailed {
                        current_version: now_stored.version,
                    });
                }
                tracing::debug!(session = %current.public_id, attempt, "lost a write race; retrying");
                backoff(attempt).await;
            }
        }
    }
    Err(Error::WriteConflict {
        attempts: MAX_WRITE_ATTEMPTS,
    })
}
