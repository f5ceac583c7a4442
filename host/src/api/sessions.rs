//! `/v1/sessions`: create, read, patch, touch, authenticate, events,
//! messages and logout. Each handler extracts its input, calls one
//! operation of [`crate::service::sessions`] and renders the result; the
//! rules (limits, retries, rotation, plugin chains) live in the service.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::auth::Caller;
use super::client::Client;
use super::error::{ApiResult, Problem};
use super::extract::{
    ApiPath, Idempotency, IfMatch, JsonBody, OptionalJsonBody, OptionalJsonValue, session_key,
};
use super::model::{MessageReply, SessionView, session_response, with_etag};
use super::schema::{EntityTags, IdempotencyKeyHeader, Name, Roles, SessionId, TtlSeconds};
use crate::app::App;
use crate::service::{self, DataChange, Login, NewSession};

/// The body of `POST /v1/sessions` (every field optional).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSession {
    /// The session's user; none for an anonymous session.
    #[serde(default)]
    #[schema(value_type = Option<Name>)]
    pub user: Option<String>,
    #[serde(default)]
    #[schema(value_type = Roles)]
    pub roles: Vec<String>,
    /// Initial shared data (a JSON object).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub data: Map<String, Value>,
    /// The absolute lifetime; capped at the tenant's `max_ttl_seconds`.
    #[serde(default, deserialize_with = "super::extract::optional_whole_number")]
    #[schema(value_type = TtlSeconds)]
    pub ttl_seconds: Option<u64>,
    /// A free-form device name (`mobile`, `kiosk-3`...).
    #[serde(default)]
    #[schema(value_type = Option<Name>)]
    pub device: Option<String>,
}

/// The body of `POST /v1/sessions/{id}/authenticate`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Authenticate {
    #[schema(value_type = Name)]
    pub user: String,
    /// The session's roles from now on; left out: unchanged.
    #[serde(default)]
    #[schema(value_type = Option<Roles>)]
    pub roles: Option<Vec<String>>,
}

/// The body of `POST /v1/sessions/{id}/events`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// The event's name (`page-view`, `logout`...). `authenticated` is
    /// reserved for the authenticate endpoint.
    #[schema(value_type = Name)]
    pub name: String,
    /// Any JSON value (null when left out), nested at most 32 levels.
    #[serde(default)]
    pub payload: Value,
}

impl CreateSession {
    /// The service's input, with the client the request came from.
    pub fn into_new(self, client: crate::session::ClientInfo) -> NewSession {
        let mut client = client;
        client.device = self.device;
        NewSession {
            user: self.user,
            roles: self.roles,
            data: self.data,
            ttl_seconds: self.ttl_seconds,
            client,
        }
    }
}

/// Create a session.
///
/// Runs the tenant's `on-session-start` chain; a plugin may veto (403) or
/// change the session. Applies the tenant's per-user limit (409 with policy
/// `deny`; with `evict-lru` the least recently used sessions end with reason
/// `evicted`). The answer carries the token as `id`: keep it secret.
#[utoipa::path(post, path = "/v1/sessions", tag = "sessions",
    params(("Idempotency-Key" = Option<IdempotencyKeyHeader>, Header, description = "1-255 visible ASCII characters; a retry with the same key gets the first answer again (`Idempotent-Replayed: true`) and runs nothing")),
    request_body(content = Option<CreateSession>, description = "Optional; an empty body creates an anonymous session"),
    responses(
        (status = 201, description = "Created; `Location` names the session", body = SessionView),
        (status = 400, description = "Malformed Idempotency-Key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "A plugin denied", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The user is at the session limit, or a request with this Idempotency-Key is still running", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid body, or the Idempotency-Key was used for another request", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`store-unavailable`: nothing was changed; `outcome-unknown`: the session may or may not have been created (retry with the same Idempotency-Key)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn create_session(
    State(app): State<Arc<App>>,
    Caller(tenant): Caller,
    Client(client): Client,
    Idempotency(key): Idempotency,
    OptionalJsonBody(body): OptionalJsonBody<CreateSession>,
) -> ApiResult<Response> {
    let issued =
        service::sessions::create(&app, &tenant, body.into_new(client), key.as_ref()).await?;
    let mut response = session_response(StatusCode::CREATED, &issued.record, Some(&issued.token));
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/sessions/{}", issued.token)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    if issued.replayed {
        replayed(&mut response);
    }
    Ok(response)
}

/// Read a session.
///
/// Expired sessions are never returned. Reading does not count as use (it
/// does not slide the idle deadline); `touch` does.
#[utoipa::path(get, path = "/v1/sessions/{id}", tag = "sessions",
    params(("id" = SessionId, Path, description = "The session token")),
    responses(
        (status = 200, description = "The session; ETag is its version", body = SessionView),
        (status = 400, description = "Not a session id", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such live session", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn get_session(
    State(app): State<Arc<App>>,
    Caller(tenant): Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    let record = service::sessions::get(&app, &tenant, &session_key(&id)?).await?;
    Ok(session_response(StatusCode::OK, &record, None))
}

/// Change a session's data.
///
/// The body is a JSON merge patch (RFC 7386) of `data`, sent as
/// `application/merge-patch+json` or `application/json`. Runs
/// `on-session-update`; a plugin may reject (403) or rewrite the change.
/// Without `If-Match`, for a tenant with no such plugin, the store applies
/// the patch atomically; concurrent PATCHes all apply. Slides the idle
/// deadline.
#[utoipa::path(patch, path = "/v1/sessions/{id}", tag = "sessions",
    params(("id" = SessionId, Path, description = "The session token"),
        ("If-Match" = Option<EntityTags>, Header, description = "Only if the session's ETag is this")),
    request_body(content = Object, content_type = "application/merge-patch+json"),
    responses(
        (status = 200, description = "The changed session", body = SessionView),
        (status = 403, description = "A plugin rejected the change", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Concurrent writes won every attempt", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such live session", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Still losing to concurrent writers after the write deadline", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "If-Match did not match", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid patch, or the session would be over a bound", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn patch_session(
    State(app): State<Arc<App>>,
    Caller(tenant): Caller,
    ApiPath(id): ApiPath<String>,
    if_match: IfMatch,
    JsonBody(patch): JsonBody<Map<String, Value>>,
) -> ApiResult<Response> {
    let key = session_key(&id)?;
    let record = service::sessions::update(
        &app,
        &tenant,
        &key,
        &if_match.precondition(),
        DataChange::Patch(patch),
    )
    .await?;
    Ok(session_response(StatusCode::OK, &record, None))
}

/// End a session (logout).
///
/// Runs `on-session-end` with reason `logout`, exactly once.
#[utoipa::path(delete, path = "/v1/sessions/{id}", tag = "sessions",
    params(("id" = SessionId, Path, description = "The session token"),
        ("If-Match" = Option<EntityTags>, Header, description = "Only if the session's ETag is this"),
        ("Idempotency-Key" = Option<IdempotencyKeyHeader>, Header, description = "1-255 visible ASCII characters; a retry with the same key gets the first answer again (`Idempotent-Replayed: true`) and runs nothing")),
    responses(
        (status = 204, description = "Ended"),
        (status = 400, description = "Not a session id, or a malformed Idempotency-Key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such live session", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A request with this Idempotency-Key is still running", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "If-Match did not match", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The Idempotency-Key was used for another request", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`store-unavailable`: nothing was changed; `outcome-unknown`: the session may or may not have ended (retry with the same Idempotency-Key)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn delete_session(
    State(app): State<Arc<App>>,
    Caller(tenant): Caller,
    ApiPath(id): ApiPath<String>,
    if_match: IfMatch,
    Idempotency(idempotency): Idempotency,
) -> ApiResult<Response> {
    let key = session_key(&id)?;
    let replay = service::sessions::logout(
        &app,
        &tenant,
        &key,
        &if_match.precondition(),
        idempotency.as_ref(),
    )
    .await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    if replay {
        replayed(&mut response);
    }
    Ok(response)
}

/// Marks an answer given again for an idempotency key.
fn replayed(response: &mut Response) {
    response.headers_mut().insert(
        header::HeaderName::from_static("idempotent-replayed"),
        HeaderValue::from_static("true"),
    );
}

/// Keep a session alive.
///
/// Slides the idle deadline (`last_seen_at` = now) and bumps the version.
#[utoipa::path(post, path = "/v1/sessions/{id}/touch", tag = "sessions",
    params(("id" = SessionId, Path, description = "The session token"),
        ("If-Match" = Option<EntityTags>, Header, description = "Only if the session's ETag is this")),
    responses(
        (status = 200, description = "The session", body = SessionView),
        (status = 409, description = "Concurrent writes won every attempt", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such live session", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "If-Match did not match", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn touch_session(
    State(app): State<Arc<App>>,
    Caller(tenant): Caller,
    ApiPath(id): ApiPath<String>,
    if_match: IfMatch,
) -> ApiResult<Response> {
    let key = session_key(&id)?;
    let record = service::sessions::touch(&app, &tenant, &key, &if_match.precondition()).await?;
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
    params(("id" = SessionId, Path, description = "The session token"),
        ("If-Match" = Option<EntityTags>, Header, description = "Only if the session's ETag is this")),
    request_body = Authenticate,
    responses(
        (status = 200, description = "Authenticated; `id` is the new token", body = SessionView),
        (status = 403, description = "A plugin denied", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such live session", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The user is at the session limit, or concurrent writes won every attempt", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "If-Match did not match", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn authenticate_session(
    State(app): State<Arc<App>>,
    Caller(tenant): Caller,
    ApiPath(id): ApiPath<String>,
    if_match: IfMatch,
    JsonBody(body): JsonBody<Authenticate>,
) -> ApiResult<Response> {
    let key = session_key(&id)?;
    let login = Login {
        user: body.user,
        roles: body.roles,
    };
    let issued =
        service::sessions::authenticate(&app, &tenant, &key, &if_match.precondition(), login)
            .await?;
    Ok(session_response(
        StatusCode::OK,
        &issued.record,
        Some(&issued.token),
    ))
}

/// Send an event.
///
/// Runs `on-event`; a veto is 403. Otherwise the plugins' changes are stored
/// and the idle deadline slides.
#[utoipa::path(post, path = "/v1/sessions/{id}/events", tag = "sessions",
    params(("id" = SessionId, Path, description = "The session token"),
        ("If-Match" = Option<EntityTags>, Header, description = "Only if the session's ETag is this")),
    request_body = Event,
    responses(
        (status = 200, description = "The session after the event", body = SessionView),
        (status = 403, description = "A plugin denied", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Concurrent writes won every attempt", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such live session", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "If-Match did not match", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn post_event(
    State(app): State<Arc<App>>,
    Caller(tenant): Caller,
    ApiPath(id): ApiPath<String>,
    if_match: IfMatch,
    JsonBody(event): JsonBody<Event>,
) -> ApiResult<Response> {
    let key = session_key(&id)?;
    let record = service::sessions::event(
        &app,
        &tenant,
        &key,
        &if_match.precondition(),
        &event.name,
        &event.payload,
    )
    .await?;
    Ok(session_response(StatusCode::OK, &record, None))
}

/// Send a message to a plugin handler.
///
/// The body is the payload (any JSON; empty means null). The first plugin
/// whose `on-message` answers wins; its changes are stored. No plugin
/// handles messages: 404. A plugin error: 422; a trap or limit: 502.
#[utoipa::path(post, path = "/v1/sessions/{id}/messages/{handler}", tag = "sessions",
    params(("id" = SessionId, Path, description = "The session token"),
        ("handler" = Name, Path, description = "The handler's name"),
        ("If-Match" = Option<EntityTags>, Header, description = "Only if the session's ETag is this")),
    request_body(content = Option<Value>, description = "The payload: any JSON value, nested at most 32 levels; an empty body is null"),
    responses(
        (status = 200, description = "The plugin's reply", body = MessageReply),
        (status = 409, description = "Concurrent writes won every attempt", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such session, or no plugin handles messages", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "If-Match did not match", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The plugin returned an error", body = Problem, content_type = "application/problem+json"),
        (status = 502, description = "The plugin trapped or hit a limit", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn post_message(
    State(app): State<Arc<App>>,
    Caller(tenant): Caller,
    ApiPath((id, handler)): ApiPath<(String, String)>,
    if_match: IfMatch,
    OptionalJsonValue(payload): OptionalJsonValue,
) -> ApiResult<Response> {
    let key = session_key(&id)?;
    let replied = service::sessions::message(
        &app,
        &tenant,
        &key,
        &if_match.precondition(),
        &handler,
        &payload,
    )
    .await?;
    let body = MessageReply {
        reply: replied.reply,
        plugin: replied.plugin,
        version: replied.record.version,
    };
    Ok(with_etag(StatusCode::OK, replied.record.version, &body))
}
