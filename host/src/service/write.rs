//! The compare-and-set write every change of a live session goes through.
//!
//! Read the session, let the operation compute its next state (running the
//! chain over it), store that if the version has not moved on. With a
//! [`Precondition`] a lost race fails at once; without one the write starts
//! over from a fresh read, chain included, so concurrent writers lose no
//! update. The writers of one session on one host take turns, first come
//! first served ([`super::turns::WriteTurns`]), so they do not race each
//! other through the chain; the compare-and-set settles races with other
//! hosts. A write keeps starting over while the session exists, pausing a
//! random while that grows with each lost race up to [`MAX_BACKOFF`], for up
//! to [`WRITE_DEADLINE`]; only a write still losing then fails with
//! [`Error::WriteConflict`]. Every state is checked against the bounds on
//! sessions ([`crate::json::check_session`]) before it is stored.
//!
//! A plain merge patch of a tenant without `on-session-update` plugins
//! does not come here: the store applies it atomically
//! ([`crate::store::SessionStore::merge`]).

use std::future::Future;
use std::time::{Duration, Instant};

use rand::TryRng as _;

use super::input::{check_session, keep_fixed};
use super::{Error, Precondition, Result, SessionKey};
use crate::app::App;
use crate::session::{Millis, SessionRecord, now_ms};
use crate::store::WriteOutcome;
use crate::tenant::Tenant;

/// How long a write without a precondition keeps starting over after lost
/// races. Requests carry no deadline of their own, so this bounds them: far
/// longer than contended writes take to get through (each lost race means
/// another writer's went through), short enough that every client hears back.
pub const WRITE_DEADLINE: Duration = Duration::from_secs(10);

/// The longest pause between two attempts of a write.
pub const MAX_BACKOFF: Duration = Duration::from_millis(4);

/// The first bound of the pause, doubled with each lost race up to
/// [`MAX_BACKOFF`].
const FIRST_BACKOFF_US: u64 = 100;

/// The pause after `lost` lost races: uniformly random below a bound that
/// doubles with each race, so that racing writers spread out and none is
/// kept waiting longer than the others.
fn backoff(lost: u32) -> Duration {
    let max_us = u64::try_from(MAX_BACKOFF.as_micros()).unwrap_or(u64::MAX);
    let bound = (FIRST_BACKOFF_US << lost.min(16)).min(max_us);
    let mut r = [0u8; 8];
    let _ = rand::rngs::SysRng.try_fill_bytes(&mut r);
    Duration::from_micros(u64::from_le_bytes(r) % (bound + 1))
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
    plan: F,
) -> Result<(SessionRecord, X)>
where
    F: FnMut(SessionRecord, Millis) -> Fut,
    Fut: Future<Output = Result<(SessionRecord, X)>>,
{
    write_unless_unchanged(app, tenant, key, precondition, false, plan).await
}

/// [`write_session`], but when `keep_unchanged` is set and `plan` changed
/// nothing (the session as planned is the session as read), nothing is
/// written: no version bump, no write round trip, and the idle deadline
/// does not slide. Returns the session as read.
pub(crate) async fn write_unless_unchanged<X, F, Fut>(
    app: &App,
    tenant: &Tenant,
    key: &SessionKey,
    precondition: &Precondition,
    keep_unchanged: bool,
    mut plan: F,
) -> Result<(SessionRecord, X)>
where
    F: FnMut(SessionRecord, Millis) -> Fut,
    Fut: Future<Output = Result<(SessionRecord, X)>>,
{
    let key = key.as_str();
    // The deadline counts from this writer's turn: waiting for it is not
    // losing a race.
    let _turn = app.turns.take(&tenant.name, key).await;
    let started = Instant::now();
    let mut lost: u32 = 0;
    loop {
        let now = now_ms();
        let current = app
            .sessions
            .get(&tenant.name, key, now)
            .await?
            .ok_or(Error::NotFound)?;
        precondition.check(current.version)?;
        let (mut next, extra) = plan(current.clone(), now).await?;
        if keep_unchanged && next == current {
            return Ok((current, extra));
        }
        if current.idle_warned_at.is_some() {
            // Used again after an idle warning: a new idle period.
            next = super::idle::reset(tenant, next, now).await;
        }
        next.version = current.version + 1;
        next.last_seen_at = now.max(current.last_seen_at);
        keep_fixed(&mut next, &current);
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
                lost = lost.saturating_add(1);
                let pause = backoff(lost);
                if started.elapsed() + pause >= WRITE_DEADLINE {
                    return Err(Error::WriteConflict {
                        attempts: lost as usize,
                    });
                }
                tracing::debug!(session = %current.public_id, lost, "lost a write race; retrying");
                tokio::time::sleep(pause).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap() {
        for lost in [0, 1, 3, 10, 40, u32::MAX] {
            let bound = Duration::from_micros(FIRST_BACKOFF_US << lost.min(16)).min(MAX_BACKOFF);
            for _ in 0..100 {
                assert!(backoff(lost) <= bound, "lost {lost}");
            }
        }
    }
}
