//! Idle warnings and idle resets (a tenant's `idle_warning_seconds`).
//!
//! Every host's sweeper calls [`warn`] each round. For each tenant with a
//! warning it reads the sessions whose deadline falls within the warning's
//! lead time from now ([`crate::store::SessionStore::deadlines_between`]),
//! starting where its previous round stopped, so a host reads each
//! session about once per idle period. A session whose deadline is its idle
//! deadline (not its absolute one) and that was not yet warned in this idle
//! period gets, in order:
//!
//! 1. its `session.idle-warning` webhooks queued, with ids made from the
//!    session and its idle period, so several hosts queue them once (a
//!    host that dies between this step and the next leaves the session
//!    unmarked: another host, or this one restarted, queues the same
//!    deliveries again and marks it);
//! 2. the event `idle-warning` through `on-event`, whose changes are stored
//!    with the warning's mark (`idle_warned_at` = the period's
//!    `last_seen_at`) in one compare-and-set write that leaves the idle
//!    deadline where it is. Of several hosts, the one whose write lands
//!    sent the event; the others find the mark and stop.
//!
//! The next write that slides the idle deadline (touch, update, event,
//! message, authenticate) clears the mark and sends `idle-reset` through
//! `on-event` in the same write ([`reset`]).

use std::collections::HashMap;

use serde_json::json;

use super::Result;
use super::decided::{After, decide, settle};
use super::input::{check_session, keep_fixed};
use crate::app::App;
use crate::config::WebhookEvent;
use crate::session::{Millis, SessionRecord, now_ms, rfc3339};
use crate::store::WriteOutcome;
use crate::tenant::Tenant;

/// The event the `on-event` chain gets before an idle timeout.
pub const IDLE_WARNING_EVENT: &str = "idle-warning";
/// The event the `on-event` chain gets when a warned session is used again.
pub const IDLE_RESET_EVENT: &str = "idle-reset";

/// How many reads of one tenant a round makes at most (each of up to the
/// sweeper's batch); the rest waits for the next round.
const READS_PER_ROUND: usize = 16;

/// Where this host's scan of each tenant stopped: the latest deadline it has
/// read, by tenant.
#[derive(Debug, Default)]
pub struct Cursors(HashMap<String, Millis>);

/// Warns every tenant's sessions whose idle deadline is near; returns how
/// many this host warned. A tenant whose store read fails is logged and
/// read again from the same place next round.
pub async fn warn(app: &App, cursors: &mut Cursors, batch: usize) -> usize {
    let batch = batch.max(1);
    let mut warned = 0;
    let tenants = app.tenants.current();
    for tenant in tenants.iter().filter(|t| t.degraded.is_none()) {
        let Some(lead_s) = tenant.config.idle_warning_seconds else {
            cursors.0.remove(&tenant.name);
            continue;
        };
        let now = now_ms();
        let until = now.saturating_add(lead_s.saturating_mul(1000));
        let mut after = cursors.0.get(&tenant.name).copied().unwrap_or(now);
        for _ in 0..READS_PER_ROUND {
            let read = app
                .sessions
                .deadlines_between(&tenant.name, after, until, batch)
                .await;
            let records = match read {
                Ok(records) => records,
                Err(e) => {
                    tracing::warn!(tenant = %tenant.name, "reading idle deadlines failed: {e}");
                    break;
                }
            };
            let full = records.len() >= batch;
            let last = records.last().map(SessionRecord::expires_at);
            let mut failed = false;
            for record in records {
                match warn_one(app, tenant, record, now).await {
                    Ok(true) => warned += 1,
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(tenant = %tenant.name, "an idle warning failed: {e}");
                        failed = true;
                        break;
                    }
                }
            }
            if failed {
                break;
            }
            after = match (full, last) {
                // Read again from just before the last deadline read, so
                // that sessions sharing it are not skipped (those warned
                // are passed over); unless the whole batch shares it.
                (true, Some(last)) if last.saturating_sub(1) > after => last - 1,
                (true, Some(last)) => last,
                _ => until,
            };
            if !full {
                break;
            }
        }
        cursors.0.insert(tenant.name.clone(), after);
    }
    warned
}

/// Warns one session unless it needs none (its absolute deadline comes
/// first, it ran out, it was warned in this idle period); returns whether
/// this call warned it.
async fn warn_one(app: &App, tenant: &Tenant, record: SessionRecord, now: Millis) -> Result<bool> {
    if !needs_warning(&record, now) {
        return Ok(false);
    }
    let mut queued = false;
    let _turn = app.turns.take(&tenant.name, &record.token_hash).await;
    // A few rounds: each lost race re-reads; a session used meanwhile
    // starts a new idle period and is warned (or not) for that one.
    for _ in 0..3 {
        let Some(current) = app
            .sessions
            .get(&tenant.name, &record.token_hash, now)
            .await?
        else {
            return Ok(false);
        };
        if current.last_seen_at != record.last_seen_at || !needs_warning(&current, now) {
            return Ok(false);
        }
        if !queued && tenant.wants_webhook(WebhookEvent::SessionIdleWarning) {
            app.webhooks.idle_warning(tenant, &current).await?;
            queued = true;
        }
        let idle_at = current.idle_expires_at();
        let payload = json!({
            "idle_expires_at": rfc3339(idle_at),
            "idle_expires_at_ms": idle_at,
            "seconds_left": idle_at.saturating_sub(now) / 1000,
        });
        let decision = tenant
            .chain
            .event(current.clone(), IDLE_WARNING_EVENT, &payload, now)
            .await;
        // A veto of a warning vetoes nothing: the mark is stored alone.
        let (mut next, after) =
            decide(&current, decision).unwrap_or((current.clone(), After::Done));
        keep_identity(&mut next, &current);
        next.idle_warned_at = Some(current.last_seen_at);
        if check_session(&next).is_err() {
            next = current.clone();
            next.idle_warned_at = Some(current.last_seen_at);
        }
        next.version = current.version + 1;
        match app
            .sessions
            .update(&record.token_hash, &next, current.version, now)
            .await?
        {
            WriteOutcome::Written(stored) => {
                tracing::debug!(tenant = %tenant.name, session = %stored.public_id,
                    idle_expires_at = idle_at, "idle warning sent");
                if let After::End(_) = after {
                    settle(app, tenant, stored, after).await?;
                }
                return Ok(true);
            }
            WriteOutcome::NotFound => return Ok(false),
            WriteOutcome::VersionMismatch(_) => {}
        }
    }
    Ok(false)
}

/// Whether `record` is due a warning at `now`: live, bound by its idle
/// deadline, and not warned in this idle period.
fn needs_warning(record: &SessionRecord, now: Millis) -> bool {
    !record.is_expired(now)
        && record.idle_expires_at() <= record.absolute_expires_at
        && record.idle_warned_at != Some(record.last_seen_at)
}

/// What a warning leaves as it was, besides what no write changes
/// ([`keep_fixed`]): the token, and when the session was last used (a
/// warning is not activity).
fn keep_identity(next: &mut SessionRecord, current: &SessionRecord) {
    keep_fixed(next, current);
    next.token_hash = current.token_hash.clone();
    next.last_seen_at = current.last_seen_at;
}

/// For a write that slides the idle deadline of a session that was warned:
/// `next` after the `idle-reset` event through `on-event`, with the mark
/// cleared. The event cannot refuse the write it rides on: a veto or a
/// failure keeps `next` as it was.
pub(crate) async fn reset(tenant: &Tenant, next: SessionRecord, now: Millis) -> SessionRecord {
    let warned = next.idle_warned_at;
    let payload = json!({ "warned_for_last_seen_at_ms": warned });
    let decision = tenant
        .chain
        .event(next.clone(), IDLE_RESET_EVENT, &payload, now)
        .await;
    let mut out = match decision {
        crate::runtime::Decision::Allow(record) => *record,
        crate::runtime::Decision::End { record, .. } => *record,
        _ => next,
    };
    out.idle_warned_at = None;
    out
}
