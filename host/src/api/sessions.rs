//! `/v1/sessions`: create, read, patch, touch, authenticate, events,
//! messages and logout.
//!
//! Plugin chains run on blocking threads (their host calls wait on the
//! store). Chains never write: each write here reads the session, runs the
//! chain over it and stores the result with a compare-and-set on its version.
//! With `If-Match`, a lost compare-and-set answers 412; without it, the write
//! starts over from a fresh read (chain included), so concurrent writers lose
//! no update.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rand::TryRng as _;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use utoipa::ToSchema;

use super::auth::Caller;
use super::client::Client;
use super::error::{ApiResult, Problem};
use super::extract::{ApiPath, IfMatch, JsonBody, OptionalJsonBody, session_key};
use super::ids;
use super::model::{MessageReply, SessionView, session_response, with_etag};
use crate::runtime::{Decision, MessageOutcome};
use crate::server::{AppState, TenantState};
use crate::session::{EndReason, Millis, SessionRecord, now_ms};
use crate::store::{CreateOutcome, LimitPolicy, WriteOutcome};

/// How often a write without `If-Match` starts over after losing a race.
pub const MAX_WRITE_ATTEMPTS: usize = 32;

/// Longest user, role, device, event or handler name, in bytes.
const MAX_NAME: usize = 256;
/// Most roles per session.
const MAX_ROLES: usize = 64;

/// The body of `POST /v1/sessions` (every field optional).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSession {
    /// The session's user; none for an anonymous session.
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    /// Initial shared data (a JSON object).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub data: Map<String, Value>,
    /// The absolute lifetime; capped at the tenant's `max_ttl_seconds`.
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
    /// A free-form device name (`mobile`, `kiosk-3`...).
    #[serde(default)]
    pub device: Option<String>,
}

/// The body of `POST /v1/sessions/{id}/authenticate`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Authenticate {
    pub user: String,
    /// The session's roles from now on; left out: unchanged.
    #[serde(default)]
    pub roles: Option<Vec<String>>,
}

/// The body of `POST /v1/sessions/{id}/events`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// The event's name (`page-view`, `logout`...). `authenticated` is
    /// reserved for the authenticate endpoint.
    pub name: String,
    /// Any JSON.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub payload: Value,
}

/// The event that authentication sends through `on-event`.
pub const AUTHENTICATED_EVENT: &str = "authenticated";

// ---------------------------------------------------------------- helpers

/// The session a chain allowed, or the plugin's veto as 403. A plugin that
/// failed (rather than denied) may have failed because the store is down
/// (its host calls wait on it): then the answer is 503, as for any request
/// the store cannot serve.
pub(crate) async fn allowed(state: &AppState, decision: Decision) -> ApiResult<SessionRecord> {
    match decision {
        Decision::Allow(record) => Ok(*record),
        Decision::Deny {
            plugin,
            message,
            failure,
        } => {
            if failure.is_some() {
                store_answers(state).await?;
            }
            Err(Problem::plugin_denied(
                &plugin,
                &message,
                failure.as_deref(),
            ))
        }
    }
}

/// 503 unless the store answers a ping within a second.
pub(crate) async fn store_answers(state: &AppState) -> ApiResult<()> {
    match tokio::time::timeout(Duration::from_secs(1), state.store.ping()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => Err(Problem::store_unavailable()),
    }
}

fn check_name(field: &str, value: &str) -> ApiResult<()> {
    if value.trim().is_empty() {
        return Err(Problem::invalid_field(
            field,
            format!("{field}: must not be empty"),
        ));
    }
    if value.len() > MAX_NAME {
        return Err(Problem::invalid_field(
            field,
            format!("{field}: longer than {MAX_NAME} bytes"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(Problem::invalid_field(
            field,
            format!("{field}: must not contain control characters"),
        ));
    }
    Ok(())
}

fn check_roles(roles: &[String]) -> ApiResult<()> {
    if roles.len() > MAX_ROLES {
        return Err(Problem::invalid_field(
            "roles",
            format!("roles: at most {MAX_ROLES} roles"),
        ));
    }
    for (i, role) in roles.iter().enumerate() {
        check_name(&format!("roles[{i}]"), role)?;
    }
    Ok(())
}

async fn backoff(attempt: usize) {
    let mut r = [0u8; 1];
    let _ = rand::rngs::SysRng.try_fill_bytes(&mut r);
    let ms = u64::from(r[0]) % (2 * attempt as u64 + 2);
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// Reads the session under `key`, lets `plan` compute its next state and
/// stores that with a compare-and-set, starting over when another writer got
/// there first (unless `If-Match` was given: then 412). `plan` may change
/// the token hash (rotation); the version, `last_seen_at` and the fields that
/// never change are set here.
pub(crate) async fn write_session<X, F, Fut>(
    state: &AppState,
    tenant: &TenantState,
    key: &str,
    if_match: &IfMatch,
    mut plan: F,
) -> ApiResult<(SessionRecord, X)>
where
    F: FnMut(SessionRecord, Millis) -> Fut,
    Fut: Future<Output = ApiResult<(SessionRecord, X)>>,
{
    for attempt in 0..MAX_WRITE_ATTEMPTS {
        let now = now_ms();
        let current = state
            .store
            .get(&tenant.name, key, now)
            .await?
            .ok_or_else(Problem::session_not_found)?;
        if_match.check(current.version)?;
        let (mut next, extra) = plan(current.clone(), now).await?;
        next.version = current.version + 1;
        next.last_seen_at = now.max(current.last_seen_at);
        next.tenant = current.tenant.clone();
        next.public_id = current.public_id.clone();
        next.created_at = current.created_at;
        next.idle_timeout_ms = current.idle_timeout_ms;
        match state.store.update(key, &next, current.version, now).await? {
            WriteOutcome::Written(stored) => return Ok((stored, extra)),
            WriteOutcome::NotFound => return Err(Problem::session_not_found()),
            WriteOutcome::VersionMismatch(now_stored) => {
                if if_match.is_given() {
                    return Err(Problem::precondition_failed(now_stored.version));
                }
                tracing::debug!(session = %current.public_id, attempt, "lost a write race; retrying");
                backoff(attempt).await;
            }
        }
    }
    Err(Problem::write_conflict(MAX_WRITE_ATTEMPTS))
}

// ---------------------------------------------------------------- handlers

/// Create a session.
///
/// Runs the tenant's `on-session-start` chain; a plugin may veto (403) or
/// change the session. Applies the tenant's per-user limit (409 with policy
/// `deny`; with `evict-lru` the least recently used sessions end with reason
/// `evicted`). The answer carries the token as `id`: keep it secret.
#[utoipa::path(post, path = "/v1/sessions", tag = "sessions",
    request_body(content = CreateSession, description = "Optional; an empty body creates an anonymous session"),
    responses(
        (status = 201, description = "Created; `Location` names the session", body = SessionView),
        (status = 403, description = "A plugin denied", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The user is at the session limit", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid body", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn create_session(
    State(state): State<AppState>,
    Caller(tenant): Caller,
    Client(mut client): Client,
    OptionalJsonBody(body): OptionalJsonBody<CreateSession>,
) -> ApiResult<Response> {
    if let Some(user) = &body.user {
        check_name("user", user)?;
    }
    check_roles(&body.roles)?;
    if let Some(device) = &body.device {
        check_name("device", device)?;
    }
    if body.ttl_seconds == Some(0) {
        return Err(Problem::invalid_field(
            "ttl_seconds",
            "ttl_seconds: must be at least 1",
        ));
    }
    client.device = body.device;
    let limit = tenant.user_limit();
    let now = now_ms();
    // With policy deny, refuse before running any plugin; the store checks
    // again atomically when it creates the session.
    if let (Some(user), Some(limit)) = (&body.user, limit)
        && limit.policy == LimitPolicy::Deny
    {
        let active = state.store.list_user(&tenant.name, user, now).await?.len();
        let active = u32::try_from(active).unwrap_or(u32::MAX);
        if active >= limit.max {
            return Err(Problem::session_limit(user, active, limit.max));
        }
    }
    let token = ids::new_token();
    let record = SessionRecord {
        token_hash: ids::token_hash(&token),
        public_id: ids::new_public_id(),
        tenant: tenant.name.clone(),
        user: body.user.clone(),
        roles: body.roles,
        created_at: now,
        last_seen_at: now,
        absolute_expires_at: now.saturating_add(tenant.lifetime_ms(body.ttl_seconds)),
        idle_timeout_ms: tenant.idle_timeout_ms(),
        version: 1,
        client,
        data: body.data,
        plugin_state: Default::default(),
    };
    let decision = tenant.chain.session_start(record, now).await;
    let mut record = allowed(&state, decision).await?;
    // Plugins change data, roles, their state and the lifetime; nothing else.
    record.version = 1;
    match state
        .store
        .create(&record, limit, tenant.queues_ends(), now)
        .await?
    {
        CreateOutcome::Created { evicted } => {
            tracing::info!(tenant = %tenant.name, session = %record.public_id,
                token = %ids::log_prefix(&token), user = ?record.user, "session created");
            state.ended(&tenant, &evicted, EndReason::Evicted);
        }
        CreateOutcome::LimitReached { active } => {
            let user = record.user.as_deref().unwrap_or_default();
            let max = limit.map(|l| l.max).unwrap_or_default();
            return Err(Problem::session_limit(user, active, max));
        }
    }
    let mut response = session_response(StatusCode::CREATED, &record, Some(&token));
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/sessions/{token}")) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// Read a session.
///
/// Expired sessions are never returned. Reading does not count as use (it
/// does not slide the idle deadline); `touch` does.
#[utoipa::path(get, path = "/v1/sessions/{id}", tag = "sessions",
    params(("id" = String, Path, description = "The session token")),
    responses(
        (status = 200, description = "The session; ETag is its version", body = SessionView),
        (status = 400, description = "Not a session id", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such live session", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn get_session(
    State(state): State<AppState>,
    Caller(tenant): Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    let key = session_key(&id)?;
    match state.store.get(&tenant.name, &key, now_ms()).await? {
        Some(record) => Ok(session_response(StatusCode::OK, &record, None)),
        None => Err(Problem::session_not_found()),
    }
}

/// Change a session's data.
///
/// The body is a JSON merge patch (RFC 7386) of `data`, sent as
/// `application/merge-patch+json` or `application/json`. Runs
/// `on-session-update`; a plugin may reject (403) or rewrite the change.
/// Slides the idle deadline.
#[utoipa::path(patch, path = "/v1/sessions/{id}", tag = "sessions",
    params(("id" = String, Path, description = "The session token"),
        ("If-Match" = Option<String>, Header, description = "Only if the session's ETag is this")),
    request_body(content = Object, content_type = "application/merge-patch+json"),
    responses(
        (status = 200, description = "The changed session", body = SessionView),
        (status = 403, description = "A plugin rejected the change", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such live session", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "If-Match did not match", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn patch_session(
    State(state): State<AppState>,
    Caller(tenant): Caller,
    ApiPath(id): ApiPath<String>,
    if_match: IfMatch,
    JsonBody(patch): JsonBody<Value>,
) -> ApiResult<Response> {
    let key = session_key(&id)?;
    if !patch.is_object() {
        return Err(Problem::invalid_field(
            "",
            "a merge patch of the session's data must be a JSON object",
        ));
    }
    let patch = Arc::new(patch);
    let (record, ()) = write_session(&state, &tenant, &key, &if_match, |current, now| {
        let (state, tenant, patch) = (state.clone(), tenant.clone(), patch.clone());
        async move {
            let decision = tenant
                .chain
                .session_update(current, Some(&patch), None, now)
                .await;
            Ok((allowed(&state, decision).await?, ()))
        }
    })
    .await?;
    Ok(session_response(StatusCode::OK, &record, None))
}

/// End a session (logout).
///
/// Runs `on-session-end` with reason `logout`, exactly once.
#[utoipa::path(delete, path = "/v1/sessions/{id}", tag = "sessions",
    params(("id" = String, Path, description = "The session token"),
        ("If-Match" = Option<String>, Header, description = "Only if the session's ETag is this")),
    responses(
        (status = 204, description = "Ended"),
        (status = 404, description = "No such live session", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "If-Match did not match", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn delete_session(
    State(state): State<AppState>,
    Caller(tenant): Caller,
    ApiPath(id): ApiPath<String>,
    if_match: IfMatch,
) -> ApiResult<Response> {
    let key = session_key(&id)?;
    let now = now_ms();
    if if_match.is_given() {
        // Check-then-act: the store has no conditional remove.
        let current = state
            .store
            .get(&tenant.name, &key, now)
            .await?
            .ok_or_else(Problem::session_not_found)?;
        if_match.check(current.version)?;
    }
    let record = state
        .store
        .remove(
            &tenant.name,
            &key,
            EndReason::Logout,
            tenant.queues_ends(),
            now,
        )
        .await?
        .ok_or_else(Problem::session_not_found)?;
    state.ended(&tenant, &[record], EndReason::Logout);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Keep a session alive.
///
/// Slides the idle deadline (`last_seen_at` = now) and bumps the version.
#[utoipa::path(post, path = "/v1/sessions/{id}/touch", tag = "sessions",
    params(("id" = String, Path, description = "The session token"),
        ("If-Match" = Option<String>, Header, description = "Only if the session's ETag is this")),
    responses(
        (status = 200, description = "The session", body = SessionView),
        (status = 404, description = "No such live session", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "If-Match did not match", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn touch_session(
    State(state): State<AppState>,
    Caller(tenant): Caller,
    ApiPath(id): ApiPath<String>,
    if_match: IfMatch,
) -> ApiResult<Response> {
    let key = session_key(&id)?;
    let record = if if_match.is_given() {
        write_session(&state, &tenant, &key, &if_match, |current, _| async move {
            Ok((current, ()))
        })
        .await?
        .0
    } else {
        state
            .store
            .touch(&tenant.name, &key, now_ms())
            .await?
            .ok_or_else(Problem::session_not_found)?
    };
    Ok(session_response(StatusCode::OK, &record, None))
}

/// Authenticate a session as a user.
///
/// Sets the user (and roles), sends the event `authenticated` with
/// `{"user", "roles"}` through `on-event` before anything is written (a veto
/// is 403 and changes nothing), then rotates the token: the old id stops
/// working and the answer carries the new one. Moving the session to a user
/// at the tenant's limit follows the limit policy; unlike create, this check
/// is not atomic (it reads the user's sessions, then writes).
#[utoipa::path(post, path = "/v1/sessions/{id}/authenticate", tag = "sessions",
    params(("id" = String, Path, description = "The session token"),
        ("If-Match" = Option<String>, Header, description = "Only if the session's ETag is this")),
    request_body = Authenticate,
    responses(
        (status = 200, description = "Authenticated; `id` is the new token", body = SessionView),
        (status = 403, description = "A plugin denied", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such live session", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The user is at the session limit", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "If-Match did not match", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn authenticate_session(
    State(state): State<AppState>,
    Caller(tenant): Caller,
    ApiPath(id): ApiPath<String>,
    if_match: IfMatch,
    JsonBody(body): JsonBody<Authenticate>,
) -> ApiResult<Response> {
    let key = session_key(&id)?;
    check_name("user", &body.user)?;
    if let Some(roles) = &body.roles {
        check_roles(roles)?;
    }
    let new_token = ids::new_token();
    let new_hash = ids::token_hash(&new_token);
    let (record, ()) = write_session(&state, &tenant, &key, &if_match, |current, now| {
        let (state, tenant, new_hash) = (state.clone(), tenant.clone(), new_hash.clone());
        let (user, roles) = (body.user.clone(), body.roles.clone());
        async move {
            let victims = limit_victims(&state, &tenant, &current, &user, now).await?;
            let mut next = current;
            next.user = Some(user.clone());
            if let Some(roles) = roles {
                next.roles = roles;
            }
            let payload = json!({"user": user, "roles": next.roles});
            let decision = tenant
                .chain
                .event(next, AUTHENTICATED_EVENT, &payload, now)
                .await;
            let mut next = allowed(&state, decision).await?;
            let mut evicted = Vec::new();
            for victim in victims {
                if let Some(r) = state
                    .store
                    .remove(
                        &tenant.name,
                        &victim.token_hash,
                        EndReason::Evicted,
                        tenant.queues_ends(),
                        now,
                    )
                    .await?
                {
                    evicted.push(r);
                }
            }
            state.ended(&tenant, &evicted, EndReason::Evicted);
            next.token_hash = new_hash;
            Ok((next, ()))
        }
    })
    .await?;
    tracing::info!(tenant = %tenant.name, session = %record.public_id,
        token = %ids::log_prefix(&new_token), user = ?record.user, "session authenticated; token rotated");
    Ok(session_response(StatusCode::OK, &record, Some(&new_token)))
}

/// The sessions to evict so that `current` may become one of `user`'s, or
/// 409 when the policy is `deny`. Check-then-act: see authenticate.
async fn limit_victims(
    state: &AppState,
    tenant: &TenantState,
    current: &SessionRecord,
    user: &str,
    now: Millis,
) -> ApiResult<Vec<SessionRecord>> {
    let Some(limit) = tenant.user_limit() else {
        return Ok(Vec::new());
    };
    if current.user.as_deref() == Some(user) {
        return Ok(Vec::new());
    }
    let mut active = state.store.list_user(&tenant.name, user, now).await?;
    active.retain(|r| r.token_hash != current.token_hash);
    let max = usize::try_from(limit.max).unwrap_or(usize::MAX);
    if active.len() < max {
        return Ok(Vec::new());
    }
    match limit.policy {
        LimitPolicy::Deny => Err(Problem::session_limit(
            user,
            u32::try_from(active.len()).unwrap_or(u32::MAX),
            limit.max,
        )),
        LimitPolicy::EvictLru => {
            active.sort_by(|a, b| {
                (a.last_seen_at, &a.token_hash).cmp(&(b.last_seen_at, &b.token_hash))
            });
            let excess = active.len() + 1 - max;
            active.truncate(excess);
            Ok(active)
        }
    }
}

/// Send an event.
///
/// Runs `on-event`; a veto is 403. Otherwise the plugins' changes are stored
/// and the idle deadline slides.
#[utoipa::path(post, path = "/v1/sessions/{id}/events", tag = "sessions",
    params(("id" = String, Path, description = "The session token"),
        ("If-Match" = Option<String>, Header, description = "Only if the session's ETag is this")),
    request_body = Event,
    responses(
        (status = 200, description = "The session after the event", body = SessionView),
        (status = 403, description = "A plugin denied", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such live session", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "If-Match did not match", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn post_event(
    State(state): State<AppState>,
    Caller(tenant): Caller,
    ApiPath(id): ApiPath<String>,
    if_match: IfMatch,
    JsonBody(event): JsonBody<Event>,
) -> ApiResult<Response> {
    let key = session_key(&id)?;
    check_name("name", &event.name)?;
    if event.name == AUTHENTICATED_EVENT {
        return Err(Problem::invalid_field(
            "name",
            "name: the event `authenticated` is sent by POST /v1/sessions/{id}/authenticate",
        ));
    }
    let event = Arc::new(event);
    let (record, ()) = write_session(&state, &tenant, &key, &if_match, |current, now| {
        let (state, tenant, event) = (state.clone(), tenant.clone(), event.clone());
        async move {
            let decision = tenant
                .chain
                .event(current, &event.name, &event.payload, now)
                .await;
            Ok((allowed(&state, decision).await?, ()))
        }
    })
    .await?;
    Ok(session_response(StatusCode::OK, &record, None))
}

/// Send a message to a plugin handler.
///
/// The body is the payload (any JSON; empty means null). The first plugin
/// whose `on-message` answers wins; its changes are stored. No plugin
/// handles messages: 404. A plugin error: 422; a trap or limit: 502.
#[utoipa::path(post, path = "/v1/sessions/{id}/messages/{handler}", tag = "sessions",
    params(("id" = String, Path, description = "The session token"),
        ("handler" = String, Path, description = "The handler's name"),
        ("If-Match" = Option<String>, Header, description = "Only if the session's ETag is this")),
    request_body(content = Object, description = "The payload (any JSON)"),
    responses(
        (status = 200, description = "The plugin's reply", body = MessageReply),
        (status = 404, description = "No such session, or no plugin handles messages", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "If-Match did not match", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The plugin returned an error", body = Problem, content_type = "application/problem+json"),
        (status = 502, description = "The plugin trapped or hit a limit", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn post_message(
    State(state): State<AppState>,
    Caller(tenant): Caller,
    ApiPath((id, handler)): ApiPath<(String, String)>,
    if_match: IfMatch,
    OptionalJsonBody(payload): OptionalJsonBody<Value>,
) -> ApiResult<Response> {
    let key = session_key(&id)?;
    check_name("handler", &handler)?;
    let payload = Arc::new(payload);
    let handler = Arc::new(handler);
    let (record, (plugin, reply)) =
        write_session(&state, &tenant, &key, &if_match, |current, now| {
            let (state, tenant) = (state.clone(), tenant.clone());
            let (payload, handler) = (payload.clone(), handler.clone());
            async move {
                let outcome = tenant.chain.message(current, &handler, &payload, now).await;
                match outcome {
                    MessageOutcome::Reply {
                        plugin,
                        reply,
                        record,
                    } => Ok((*record, (plugin, reply))),
                    MessageOutcome::NoHandler => Err(Problem::new(
                        StatusCode::NOT_FOUND,
                        "no-message-handler",
                        "No message handler",
                        "no plugin of this tenant handles messages",
                    )),
                    MessageOutcome::Failed(failure) => {
                        store_answers(&state).await?;
                        Err(Problem::plugin_failed(&failure))
                    }
                }
            }
        })
        .await?;
    let body = MessageReply {
        reply,
        plugin,
        version: record.version,
    };
    Ok(with_etag(StatusCode::OK, record.version, &body))
}
