//! `/v1/users/{user}/sessions`: a user's active sessions, and revoking them.

use axum::Json;
use axum::extract::State;

use super::auth::Caller;
use super::error::{ApiResult, Problem};
use super::extract::ApiPath;
use super::model::{Ended, SessionList, SummaryView};
use super::sessions::store_answers;
use crate::server::AppState;
use crate::session::{EndReason, now_ms};

/// List a user's active sessions.
///
/// Summaries (public ids, never tokens), oldest first, as the tenant's
/// `on-list-active` chain leaves them (plugins may annotate, filter or
/// reorder). A failing plugin with `on_error = "deny"` fails the listing.
#[utoipa::path(get, path = "/v1/users/{user}/sessions", tag = "users",
    params(("user" = String, Path, description = "The user")),
    responses(
        (status = 200, description = "The user's active sessions", body = SessionList),
        (status = 422, description = "A plugin returned an error", body = Problem, content_type = "application/problem+json"),
        (status = 502, description = "A plugin trapped or hit a limit", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn list_user_sessions(
    State(state): State<AppState>,
    Caller(tenant): Caller,
    ApiPath(user): ApiPath<String>,
) -> ApiResult<Json<SessionList>> {
    let records = state.store.list_user(&tenant.name, &user, now_ms()).await?;
    let summaries = records.iter().map(|r| r.summary()).collect();
    let listed = match tenant.chain.list_active(&user, summaries).await {
        Ok(listed) => listed,
        Err(failure) => {
            store_answers(&state).await?;
            return Err(Problem::plugin_failed(&failure));
        }
    };
    Ok(Json(SessionList {
        sessions: listed.into_iter().map(SummaryView::from).collect(),
    }))
}

/// End every session of a user.
///
/// Each one's `on-session-end` runs once with reason `revoked`.
#[utoipa::path(delete, path = "/v1/users/{user}/sessions", tag = "users",
    params(("user" = String, Path, description = "The user")),
    responses((status = 200, description = "How many sessions ended", body = Ended)),
    security(("api_key" = [])))]
pub async fn revoke_user_sessions(
    State(state): State<AppState>,
    Caller(tenant): Caller,
    ApiPath(user): ApiPath<String>,
) -> ApiResult<Json<Ended>> {
    let removed = state
        .store
        .remove_user(
            &tenant.name,
            &user,
            EndReason::Revoked,
            tenant.queues_ends(),
            now_ms(),
        )
        .await?;
    let ended = removed.len();
    tracing::info!(tenant = %tenant.name, ended, "revoked a user's sessions");
    state.ended(&tenant, &removed, EndReason::Revoked);
    Ok(Json(Ended { ended }))
}
