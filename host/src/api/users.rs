//! `/v1/users/{user}/sessions`: a user's active sessions, and revoking them
//! (all of them, or one by its public id).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use super::auth::Caller;
use super::error::{ApiResult, Problem};
use super::extract::ApiPath;
use super::model::{Ended, SessionList, SummaryView};
use crate::app::App;
use crate::service;

/// List a user's active sessions.
///
/// Summaries (public ids, never tokens), oldest first, as the tenant's
/// `on-list-active` chain leaves them (plugins may annotate, filter or
/// reorder). A failing plugin with `on_error = "deny"` fails the listing.
#[utoipa::path(get, path = "/v1/users/{user}/sessions", tag = "users",
    params(("user" = String, Path, min_length = 1, description = "The user")),
    responses(
        (status = 200, description = "The user's active sessions", body = SessionList),
        (status = 422, description = "A plugin returned an error", body = Problem, content_type = "application/problem+json"),
        (status = 502, description = "A plugin trapped or hit a limit", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn list_user_sessions(
    State(app): State<Arc<App>>,
    Caller(tenant): Caller,
    ApiPath(user): ApiPath<String>,
) -> ApiResult<Json<SessionList>> {
    let listed = service::users::list_active(&app, &tenant, &user).await?;
    Ok(Json(SessionList {
        sessions: listed.into_iter().map(SummaryView::from).collect(),
    }))
}

/// End every session of a user.
///
/// Each one's `on-session-end` runs once with reason `revoked`.
#[utoipa::path(delete, path = "/v1/users/{user}/sessions", tag = "users",
    params(("user" = String, Path, min_length = 1, description = "The user")),
    responses((status = 200, description = "How many sessions ended", body = Ended)),
    security(("api_key" = [])))]
pub async fn revoke_user_sessions(
    State(app): State<Arc<App>>,
    Caller(tenant): Caller,
    ApiPath(user): ApiPath<String>,
) -> ApiResult<Json<Ended>> {
    let ended = service::users::revoke(&app, &tenant, &user).await?;
    Ok(Json(Ended { ended }))
}

/// End one session of a user, by its public id.
///
/// Its `on-session-end` runs once with reason `revoked`. For clients that
/// hold no token: the web console, an admin tool.
#[utoipa::path(delete, path = "/v1/users/{user}/sessions/{public_id}", tag = "users",
    params(
        ("user" = String, Path, min_length = 1, description = "The user"),
        ("public_id" = String, Path, min_length = 1, description = "The session's public id"),
    ),
    responses(
        (status = 204, description = "The session ended"),
        (status = 404, description = "The user has no live session with this public id", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn revoke_user_session(
    State(app): State<Arc<App>>,
    Caller(tenant): Caller,
    ApiPath((user, public_id)): ApiPath<(String, String)>,
) -> ApiResult<StatusCode> {
    if service::users::revoke_one(&app, &tenant, &user, &public_id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Problem::session_not_found())
    }
}
