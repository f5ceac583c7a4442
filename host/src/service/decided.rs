//! What a chain decided, turned into what a write stores and does after.
//!
//! A chain that allows may also have asked to end the session (a plugin's
//! `end` change); one that denies may carry the denying plugin's new state,
//! which is stored although the request is refused. Writes plan with
//! [`decide`] inside their compare-and-set and act with [`settle`] after it.

use super::end::Ending;
use super::error::refusal;
use super::{Error, Result};
use crate::app::App;
use crate::runtime::Decision;
use crate::session::{EndReason, SessionRecord, now_ms};
use crate::tenant::Tenant;

/// What to do once the record a chain left has been stored.
#[derive(Debug)]
pub(crate) enum After {
    /// Nothing: the operation succeeded.
    Done,
    /// End the session with this reason (a plugin asked to).
    End(EndReason),
    /// Fail with this refusal: what was stored is the refusing plugin's
    /// state change alone.
    Refuse(Error),
}

/// The record to store for `decision` and what to do after; `current` is the
/// session as read, before the chain ran. A refusal without a state change
/// stores nothing: it is the error.
pub(crate) fn decide(
    current: &SessionRecord,
    decision: Decision,
) -> Result<(SessionRecord, After)> {
    match decision {
        Decision::Allow(record) => Ok((*record, After::Done)),
        Decision::End { record, reason, .. } => Ok((*record, After::End(reason))),
        Decision::Deny {
            plugin,
            message,
            failure,
            state: Some(state),
        } if failure.is_none() => {
            let mut kept = current.clone();
            kept.plugin_state.insert(plugin.clone(), state);
            Ok((kept, After::Refuse(refusal(plugin, message, None))))
        }
        Decision::Deny {
            plugin,
            message,
            failure,
            ..
        } => Err(refusal(plugin, message, failure)),
    }
}

/// Acts on `after` once `stored` is written: ends the session, or fails
/// with the refusal. Returns the session as stored.
pub(crate) async fn settle(
    app: &App,
    tenant: &Tenant,
    stored: SessionRecord,
    after: After,
) -> Result<SessionRecord> {
    match after {
        After::Done => Ok(stored),
        After::End(reason) => {
            // Its end hooks run once, on the end worker, like any end's. A
            // session that ended meanwhile (a race with a logout) is over
            // either way.
            Ending::of(app, tenant)
                .one(&stored.token_hash, reason, now_ms())
                .await?;
            Ok(stored)
        }
        After::Refuse(error) => Err(error),
    }
}
