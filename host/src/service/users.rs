//! A user's sessions: listing them and revoking them.

use super::end::Ending;
use super::{Error, Result};
use crate::app::App;
use crate::session::{EndReason, SessionSummary, now_ms};
use crate::tenant::Tenant;

/// The user's live sessions (summaries, oldest first) as the tenant's
/// `on-list-active` chain leaves them: plugins may annotate, filter or
/// reorder. A failing plugin with `on_error = "deny"` fails the listing.
pub async fn list_active(app: &App, tenant: &Tenant, user: &str) -> Result<Vec<SessionSummary>> {
    let records = app.sessions.list_user(&tenant.name, user, now_ms()).await?;
    let summaries = records.iter().map(|r| r.summary()).collect();
    tenant
        .chain
        .list_active(user, summaries)
        .await
        .map_err(Error::plugin)
}

/// Ends every live session of `user` with reason `revoked`; returns how
/// many ended.
pub async fn revoke(app: &App, tenant: &Tenant, user: &str) -> Result<usize> {
    let ended = Ending::of(app, tenant)
        .user(user, EndReason::Revoked, now_ms())
        .await?
        .len();
    tracing::info!(tenant = %tenant.name, ended, "revoked a user's sessions");
    Ok(ended)
}

/// Ends the live session of `user` whose public id is `public_id`, with
/// reason `revoked`; returns whether it ended (false: the user has no such
/// live session, or it ended meanwhile).
pub async fn revoke_one(app: &App, tenant: &Tenant, user: &str, public_id: &str) -> Result<bool> {
    let now = now_ms();
    let records = app.sessions.list_user(&tenant.name, user, now).await?;
    let Some(record) = records.into_iter().find(|r| r.public_id == public_id) else {
        return Ok(false);
    };
    let ended = Ending::of(app, tenant)
        .one(&record.token_hash, EndReason::Revoked, now)
        .await?
        .is_some();
    if ended {
        tracing::info!(tenant = %tenant.name, session = %public_id, "revoked a session");
    }
    Ok(ended)
}
