//! `/sessman/*`: compatibility with the "sessman" session manager, so that
//! its published JavaScript `Session` class works against sessiond
//! unmodified. See `docs/sessman.md`.
//!
//! - `POST /sessman/new?user=U` (or `userid=U`) creates a session for `U`
//!   with the body's `data`, through the same service operation as
//!   `POST /v1/sessions` (`on-session-start` chain, per-user limit, audit...).
//! - `POST /sessman/update?session_id=T` (or `sessionid=T`) replaces the
//!   session's data wholesale with the body's `data`: the merge patch from
//!   the stored data to the new data goes through `on-session-update` as a
//!   `PATCH` would, with the same compare-and-set retries. Every update slides
//!   the idle deadline, as every sessman update resets the expiry. Without
//!   `data` (an empty body, `null`, `{}` or `{"data": null}`) the data stay
//!   as they are and only the deadline slides.
//! - `GET` or `POST /sessman/get?sessionid=T&userid=U` answers the session
//!   only if it is live and belongs to `U` (404 otherwise, as for an unknown
//!   one). Reading does not slide the idle deadline.
//!
//! Bodies are read as JSON `{"data": {...}}` whatever their content type:
//! the class sends `Content-type: text/javascript`. Other members are
//! ignored. Every success is `200 {"session_id", "user", "data",
//! "expires_at", "expires_at_ms"}` (`session_id` is the token, as `id` in
//! `/v1`); every error is a problem, which the class sees as "not ok".
//!
//! Callers: a bearer API key acts for its tenant, which must set
//! `[tenants.<name>.sessman] enabled = true` (403 otherwise). A request
//! without `Authorization` acts for the one tenant that sets
//! `allow_unauthenticated = true` (401 when none does): the published class
//! can never send its key, since it reads `self.options.auth`.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::auth::Caller;
use super::client::Client;
use super::error::{ApiResult, Problem};
use super::extract::{ApiQuery, parse_json, session_key};
use super::model::rfc3339;
use super::schema::{Name, SessionId};
use crate::app::App;
use crate::service::{self, DataChange, NewSession, Precondition};
use crate::session::{Millis, SessionRecord};
use crate::tenant::Tenant;

/// `/sessman/new`, `/sessman/update` and `/sessman/get`.
pub fn router() -> Router<Arc<App>> {
    Router::new()
        .route("/sessman/new", post(new_session))
        .route("/sessman/update", post(update_session))
        .route("/sessman/get", get(get_session).post(get_session))
}

// ---------------------------------------------------------------- caller

/// The tenant a sessman request acts for (see the module docs).
#[derive(Debug, Clone)]
pub struct SessmanCaller(pub Arc<Tenant>);

impl FromRequestParts<Arc<App>> for SessmanCaller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<App>) -> Result<Self, Problem> {
        if parts.headers.contains_key(AUTHORIZATION) {
            let Caller(tenant) = Caller::from_request_parts(parts, state).await?;
            if !tenant.config.sessman.enabled {
                return Err(Problem::new(
                    StatusCode::FORBIDDEN,
                    "sessman-disabled",
                    "Sessman API not enabled",
                    "this API key's tenant does not enable the /sessman API \
                     ([tenants.<name>.sessman] enabled = true)",
                ));
            }
            return Ok(SessmanCaller(tenant));
        }
        state
            .tenants
            .current()
            .sessman_without_key()
            .map(SessmanCaller)
            .ok_or_else(|| {
                Problem::unauthorized("send an API key as `Authorization: Bearer <key>`", false)
            })
    }
}

// ---------------------------------------------------------------- input

/// The `data` of a sessman body, read as JSON whatever the content type.
/// `None` for an empty body, `null`, a body without `data`, or
/// `"data": null`.
#[derive(Debug)]
pub struct SessmanData(pub Option<Map<String, Value>>);

/// The body of a sessman request (other members are ignored).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = SessmanBody)]
pub(crate) struct Envelope {
    /// The session's data; null or left out: empty (new) or unchanged
    /// (update).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    data: Option<Map<String, Value>>,
}

impl FromRequest<Arc<App>> for SessmanData {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &Arc<App>) -> Result<Self, Problem> {
        let limit = state.server.max_body_bytes;
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                Problem::payload_too_large(limit)
            } else {
                Problem::bad_request("unreadable-body", format!("cannot read the body: {e}"))
            }
        })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(SessmanData(None));
        }
        // A struct would also read from an array: check the shape first.
        let value: Value = parse_json(&bytes)?;
        if value.is_null() {
            return Ok(SessmanData(None));
        }
        if !value.is_object() {
            return Err(Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-body",
                "Invalid request body",
                "the body must be a JSON object such as {\"data\": {...}}",
            ));
        }
        let envelope: Envelope = parse_json(&bytes)?;
        Ok(SessmanData(envelope.data))
    }
}

/// `/sessman/new`'s query.
#[derive(Debug, Deserialize)]
pub(crate) struct NewQuery {
    user: Option<String>,
    userid: Option<String>,
}

/// `/sessman/update`'s query.
#[derive(Debug, Deserialize)]
pub(crate) struct UpdateQuery {
    session_id: Option<String>,
    sessionid: Option<String>,
}

/// `/sessman/get`'s query.
#[derive(Debug, Deserialize)]
pub(crate) struct GetQuery {
    sessionid: Option<String>,
    session_id: Option<String>,
    userid: Option<String>,
    user: Option<String>,
}

/// The value of a query parameter that has two accepted names.
fn either(
    name: &str,
    value: Option<String>,
    alias: &str,
    other: Option<String>,
) -> ApiResult<String> {
    match (value, other) {
        (Some(a), Some(b)) if a != b => Err(Problem::bad_request(
            "bad-query",
            format!("the query gives both {name} and {alias}, with different values"),
        )),
        (Some(a), _) | (None, Some(a)) => Ok(a),
        (None, None) => Err(Problem::bad_request(
            "bad-query",
            format!("the query needs {name}=... (or {alias}=...)"),
        )),
    }
}

// ---------------------------------------------------------------- output

/// What every sessman success answers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = SessmanReply)]
pub(crate) struct Reply {
    /// The session id (the secret token).
    session_id: String,
    user: Option<String>,
    #[schema(value_type = Object)]
    data: Map<String, Value>,
    expires_at: String,
    expires_at_ms: Millis,
}

impl Reply {
    fn of(record: &SessionRecord, token: &str) -> Reply {
        Reply {
            session_id: token.to_string(),
            user: record.user.clone(),
            data: record.data.clone(),
            expires_at: rfc3339(record.expires_at()),
            expires_at_ms: record.expires_at(),
        }
    }
}

fn ok(reply: &Reply) -> Response {
    (StatusCode::OK, axum::Json(reply)).into_response()
}

// ---------------------------------------------------------------- handlers

/// `POST /sessman/new?user=U`: `POST /v1/sessions` with `{"user": U, "data"}`.
#[utoipa::path(post, path = "/sessman/new", tag = "sessman",
    description = "Creates a session for the user with the data, like POST /v1/sessions.",
    params(("user" = Name, Query, description = "The user (also accepted as userid)")),
    request_body(content = Option<Envelope>, description = "Optional: a JSON object {\"data\": {...}}, read as JSON whatever the content type (the sessman class sends text/javascript)"),
    responses(
        (status = 200, description = "The session", body = Reply),
        (status = 401, description = "No key, and no tenant accepts keyless sessman calls", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "A plugin denied", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The user is at the session limit", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn new_session(
    State(app): State<Arc<App>>,
    SessmanCaller(tenant): SessmanCaller,
    Client(client): Client,
    ApiQuery(query): ApiQuery<NewQuery>,
    SessmanData(data): SessmanData,
) -> ApiResult<Response> {
    let user = either("user", query.user, "userid", query.userid)?;
    let new = NewSession {
        user: Some(user),
        data: data.unwrap_or_default(),
        client,
        ..NewSession::default()
    };
    let issued = service::sessions::create(&app, &tenant, new, None).await?;
    Ok(ok(&Reply::of(&issued.record, &issued.token)))
}

/// `POST /sessman/update?session_id=T`: replaces the data (see the module
/// docs) and slides the idle deadline.
#[utoipa::path(post, path = "/sessman/update", tag = "sessman",
    description = "Replaces the session data and resets the expiry.",
    params(("session_id" = SessionId, Query, description = "The session id (also accepted as sessionid)")),
    request_body(content = Option<Envelope>, description = "Optional: a JSON object {\"data\": {...}}, read as JSON whatever the content type (the sessman class sends text/javascript)"),
    responses(
        (status = 200, description = "The session", body = Reply),
        (status = 401, description = "No key, and no tenant accepts keyless sessman calls", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "A plugin rejected the change", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such live session (of that user)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Concurrent writes won every attempt", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn update_session(
    State(app): State<Arc<App>>,
    SessmanCaller(tenant): SessmanCaller,
    ApiQuery(query): ApiQuery<UpdateQuery>,
    SessmanData(data): SessmanData,
) -> ApiResult<Response> {
    let token = either("session_id", query.session_id, "sessionid", query.sessionid)?;
    let key = session_key(&token)?;
    let record = service::sessions::update(
        &app,
        &tenant,
        &key,
        &Precondition::Any,
        DataChange::Replace(data),
    )
    .await?;
    Ok(ok(&Reply::of(&record, &token)))
}

/// `GET|POST /sessman/get?sessionid=T&userid=U`: the session, if it is live
/// and `U`'s.
#[utoipa::path(method(get, post), path = "/sessman/get", tag = "sessman",
    description = "The session, if it is live and belongs to userid. A body is ignored.",
    params(("sessionid" = SessionId, Query, description = "The session id (also accepted as session_id)"),
        ("userid" = String, Query, description = "The session's user (also accepted as user)")),
    responses(
        (status = 200, description = "The session", body = Reply),
        (status = 401, description = "No key, and no tenant accepts keyless sessman calls", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such live session (of that user)", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn get_session(
    State(app): State<Arc<App>>,
    SessmanCaller(tenant): SessmanCaller,
    ApiQuery(query): ApiQuery<GetQuery>,
) -> ApiResult<Response> {
    let token = either("sessionid", query.sessionid, "session_id", query.session_id)?;
    let user = either("userid", query.userid, "user", query.user)?;
    let key = session_key(&token)?;
    let record = service::sessions::get(&app, &tenant, &key).await?;
    if record.user.as_deref() != Some(user.as_str()) {
        return Err(service::Error::NotFound.into());
    }
    Ok(ok(&Reply::of(&record, &token)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases() {
        let s = |v: &str| Some(v.to_string());
        assert_eq!(either("user", s("a"), "userid", None).unwrap(), "a");
        assert_eq!(either("user", None, "userid", s("b")).unwrap(), "b");
        assert_eq!(either("user", s("a"), "userid", s("a")).unwrap(), "a");
        assert_eq!(
            either("user", s("a"), "userid", s("b")).unwrap_err().slug(),
            "bad-query"
        );
        assert_eq!(
            either("user", None, "userid", None).unwrap_err().slug(),
            "bad-query"
        );
    }
}
