//! What the control plane ([`crate::control`]) does to a running server:
//! applying the control store on this host, and taking the deletion of a
//! tenant one step on.

use crate::app::App;
use crate::control::Targets;
use crate::session::{EndReason, now_ms};

use super::end::Ending;

/// How many sessions one read of a deletion ends.
const DELETE_BATCH: usize = 500;

/// What a refresh of `app`'s control plane changes.
pub fn targets(app: &App) -> Targets<'_> {
    Targets {
        runtime: &app.runtime,
        tenants: &app.tenants,
        admission: &app.admission,
    }
}

/// Applies the latest control revision on this host (see
/// [`crate::control::ControlPlane::refresh`]).
pub async fn refresh(app: &App) -> anyhow::Result<bool> {
    app.control.refresh(targets(app)).await
}

/// Takes each tenant being deleted one step on: ends its live sessions
/// (reason `revoked`, so their end hooks run) and, once none is stored and
/// its end queue is empty, removes its record and components. Every host
/// does this; each step is safe to repeat, and the record's compare-and-set
/// lets one host remove it.
pub async fn finish_deletions(app: &App) -> anyhow::Result<()> {
    let mut removed = false;
    for tenant in app.control.deleting().await {
        let now = now_ms();
        let ending = Ending::of(app, &tenant);
        loop {
            // Every live session: deadline after now, up to the largest
            // time a store keeps.
            let live = app
                .sessions
                .deadlines_between(&tenant.name, now, u64::MAX >> 11, DELETE_BATCH)
                .await?;
            if live.is_empty() {
                break;
            }
            for record in &live {
                ending
                    .one(&record.token_hash, EndReason::Revoked, now)
                    .await?;
            }
        }
        let stored = app.sessions.stored_sessions(&tenant.name).await?;
        let queue = app.end_queue.end_queue(&tenant.name).await?;
        if stored > 0 || queue.waiting > 0 || queue.claimed > 0 {
            continue;
        }
        removed |= app.control.remove(&tenant).await?;
    }
    if removed {
        refresh(app).await?;
    }
    Ok(())
}
