//! Every error of the API as an RFC 9457 problem (`application/problem+json`).
//!
//! The catalogue below is the one place where the API chooses a status, and
//! [`From<service::Error>`](Problem#impl-From<Error>-for-Problem) maps every
//! failure of the service layer onto it.

use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::runtime::{FailureKind, PluginFailure};
use crate::service;

/// The media type of problem responses.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// The start of every problem `type` of this API; the rest is a short slug
/// such as `session-limit`.
pub const PROBLEM_TYPE_BASE: &str = "urn:sessiond:problem:";

/// An RFC 9457 problem, with the extra members of this API (`plugin`,
/// `field`, `kind`, ...). Boxed, so that `Result<_, Problem>` stays small;
/// its fields are readable through `Deref`.
#[derive(Debug, Clone)]
pub struct Problem(Box<ProblemBody>);

/// The members of a [`Problem`].
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Problem)]
pub struct ProblemBody {
    /// `urn:sessiond:problem:<slug>`, or `about:blank` for plain HTTP errors.
    #[serde(rename = "type")]
    pub type_uri: String,
    pub title: String,
    #[schema(value_type = u16)]
    #[serde(serialize_with = "status_code")]
    pub status: StatusCode,
    pub detail: String,
    /// Extra members, such as `plugin`, `field`, `kind`, `current_version`.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub extra: Map<String, Value>,
    #[serde(skip)]
    headers: Vec<(HeaderName, HeaderValue)>,
}

fn status_code<S: serde::Serializer>(status: &StatusCode, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u16(status.as_u16())
}

pub type ApiResult<T> = Result<T, Problem>;

impl std::ops::Deref for Problem {
    type Target = ProblemBody;

    fn deref(&self) -> &ProblemBody {
        &self.0
    }
}

impl utoipa::PartialSchema for Problem {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        <ProblemBody as utoipa::PartialSchema>::schema()
    }
}

impl ToSchema for Problem {
    fn name() -> std::borrow::Cow<'static, str> {
        "Problem".into()
    }
}

impl Problem {
    /// A problem of type `urn:sessiond:problem:<slug>`.
    pub fn new(
        status: StatusCode,
        slug: &str,
        title: impl Into<String>,
        detail: impl Into<String>,
    ) -> Problem {
        Problem(Box::new(ProblemBody {
            type_uri: format!("{PROBLEM_TYPE_BASE}{slug}"),
            title: title.into(),
            status,
            detail: detail.into(),
            extra: Map::new(),
            headers: Vec::new(),
        }))
    }

    /// A plain HTTP error: type `about:blank`, the status phrase as title.
    pub fn plain(status: StatusCode, detail: impl Into<String>) -> Problem {
        Problem(Box::new(ProblemBody {
            type_uri: "about:blank".into(),
            title: status.canonical_reason().unwrap_or("Error").into(),
            status,
            detail: detail.into(),
            extra: Map::new(),
            headers: Vec::new(),
        }))
    }

    /// Adds an extra member.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Problem {
        self.0.extra.insert(key.to_string(), value.into());
        self
    }

    /// Adds a response header.
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Problem {
        self.0.headers.push((name, value));
        self
    }

    /// The member `type` without the base, for tests and logs.
    pub fn slug(&self) -> &str {
        self.type_uri
            .strip_prefix(PROBLEM_TYPE_BASE)
            .unwrap_or(&self.type_uri)
    }

    // ------------------------------------------------------------ catalogue

    pub fn bad_request(slug: &str, detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, slug, "Bad request", detail)
    }

    pub fn invalid_field(field: &str, detail: impl Into<String>) -> Problem {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-body",
            "Invalid request body",
            detail,
        )
        .with("field", field)
    }

    /// A JSON value over one of the bounds of [`crate::json`]: names the
    /// value (`field`, empty for the body or the session as a whole) and the
    /// bound (`limit`, `max`).
    pub fn over_limit(e: &crate::json::OverLimit) -> Problem {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "over-limit",
            "Value over a limit",
            e.to_string(),
        )
        .with("field", e.field.clone())
        .with("limit", e.limit.name())
        .with("max", e.limit.max())
    }

    pub fn bad_session_id() -> Problem {
        Problem::bad_request(
            "bad-session-id",
            "session id must be 43 base64url characters",
        )
    }

    pub fn session_not_found() -> Problem {
        Problem::new(
            StatusCode::NOT_FOUND,
            "session-not-found",
            "Session not found",
            "no live session has this id: it never existed, ended or expired",
        )
    }

    pub fn unauthorized(detail: &str, invalid_token: bool) -> Problem {
        let challenge = if invalid_token {
            "Bearer realm=\"sessiond\", error=\"invalid_token\""
        } else {
            "Bearer realm=\"sessiond\""
        };
        Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Unauthorized",
            detail,
        )
        .header(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        )
    }

    /// 403: the client may not use this endpoint at all (whatever it
    /// sends).
    pub fn forbidden(detail: &str) -> Problem {
        Problem::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden", detail)
    }

    /// 403 to a CORS preflight from an origin no tenant lists.
    pub fn cors_origin_not_allowed() -> Problem {
        Problem::new(
            StatusCode::FORBIDDEN,
            "cors-origin-not-allowed",
            "Origin not allowed",
            "no tenant lists this origin in its cors_origins",
        )
    }

    pub fn ambiguous_credentials() -> Problem {
        Problem::bad_request(
            "ambiguous-credentials",
            "the request carries more than one Authorization header; send exactly one",
        )
    }

    pub fn precondition_failed(current_version: u64) -> Problem {
        Problem::new(
            StatusCode::PRECONDITION_FAILED,
            "precondition-failed",
            "Precondition failed",
            format!(
                "If-Match does not match the session's current version (ETag \"{current_version}\")"
            ),
        )
        .with("current_version", current_version)
    }

    pub fn write_conflict(attempts: usize) -> Problem {
        Problem::new(
            StatusCode::CONFLICT,
            "write-conflict",
            "Too many concurrent writes",
            format!("the session changed under each of {attempts} attempts; retry later"),
        )
    }

    pub fn session_limit(user: &str, active: u32, max: u32) -> Problem {
        Problem::new(
            StatusCode::CONFLICT,
            "session-limit",
            "Session limit reached",
            format!("user {user:?} already has {active} active session(s); at most {max} allowed"),
        )
        .with("user", user)
        .with("active", active)
        .with("max", max)
    }

    /// A plugin vetoed the request (or failed under `on_error = "deny"`:
    /// then `kind` is the failure's).
    pub fn plugin_denied(plugin: &str, message: &str, kind: Option<FailureKind>) -> Problem {
        let mut p = Problem::new(
            StatusCode::FORBIDDEN,
            "plugin-denied",
            "Denied by a plugin",
            message,
        )
        .with("plugin", plugin);
        if let Some(kind) = kind {
            p = p.with("kind", kind.as_str());
        }
        p
    }

    pub fn no_message_handler() -> Problem {
        Problem::new(
            StatusCode::NOT_FOUND,
            "no-message-handler",
            "No message handler",
            "no plugin of this tenant handles messages",
        )
    }

    /// A plugin failed where no verdict was asked: 422 for the plugin's own
    /// error, 502 for a trap or a limit.
    pub fn plugin_failed(failure: &PluginFailure) -> Problem {
        let (status, title) = if failure.kind.is_trap_or_limit() {
            (StatusCode::BAD_GATEWAY, "Plugin trapped or hit a limit")
        } else {
            (StatusCode::UNPROCESSABLE_ENTITY, "Plugin error")
        };
        Problem::new(status, "plugin-failed", title, failure.message.clone())
            .with("plugin", failure.plugin.clone())
            .with("kind", failure.kind.as_str())
    }

    pub fn payload_too_large(limit: usize) -> Problem {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body-too-large",
            "Request body too large",
            format!("the request body exceeds the limit of {limit} bytes"),
        )
        .with("limit", limit)
    }

    /// The body did not arrive within `server.body_read_timeout_ms`. The
    /// connection closes: the rest of the body may still be on its way.
    pub fn body_timeout(limit_ms: u64) -> Problem {
        Problem::new(
            StatusCode::REQUEST_TIMEOUT,
            "body-timeout",
            "Request body too slow",
            format!("the request body did not arrive within {limit_ms} ms"),
        )
        .with("limit_ms", limit_ms)
        .header(header::CONNECTION, HeaderValue::from_static("close"))
    }

    /// The tenant's chain could not load at start: it serves nothing until
    /// it is fixed (its sessions are kept).
    pub fn tenant_degraded(degraded: &crate::tenant::Degraded) -> Problem {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "tenant-degraded",
            "Tenant degraded",
            format!(
                "plugin {:?} of this tenant did not load, so the tenant cannot serve: {}",
                degraded.plugin, degraded.error
            ),
        )
        .with("plugin", degraded.plugin.clone())
    }

    /// The tenant has its quota of stored sessions: 429 naming the quota.
    /// Room comes as sessions end, so a retry after a second may pass.
    pub fn session_quota(stored: u64, max: u64) -> Problem {
        Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "quota-exceeded",
            "Quota exceeded",
            format!(
                "the tenant has {stored} sessions stored and its quota.max_sessions is {max}; \
                 end sessions or raise the quota"
            ),
        )
        .with("quota", "max_sessions")
        .with("limit", max)
        .header(header::RETRY_AFTER, HeaderValue::from_static("1"))
    }

    /// The operator disabled the tenant: it serves nothing until enabled
    /// again (its sessions are kept).
    pub fn tenant_disabled(tenant: &str) -> Problem {
        Problem::new(
            StatusCode::FORBIDDEN,
            "tenant-disabled",
            "Tenant disabled",
            format!("tenant {tenant:?} is disabled by the operator"),
        )
    }

    /// The request never reached the store (or the store refused it
    /// without running it): nothing was changed.
    pub fn store_unavailable() -> Problem {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store-unavailable",
            "Session store unavailable",
            "the session store cannot be reached; nothing was changed, and the request may be \
             retried as it is",
        )
        .header(header::RETRY_AFTER, HeaderValue::from_static("1"))
    }

    /// The write was sent to the store and no answer came: it may or may
    /// not have happened.
    pub fn outcome_unknown() -> Problem {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "outcome-unknown",
            "Outcome unknown",
            "the session store did not answer in time: the write may or may not have happened \
             (and may still happen); retry with the same Idempotency-Key, or read before retrying",
        )
        .header(header::RETRY_AFTER, HeaderValue::from_static("1"))
    }

    pub fn idempotency_key_reused() -> Problem {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency-key-reused",
            "Idempotency key reused",
            "this Idempotency-Key was used for another request (another body, session or \
             operation); use a new key for a new request",
        )
        .with("header", "Idempotency-Key")
    }

    pub fn idempotency_key_in_use() -> Problem {
        Problem::new(
            StatusCode::CONFLICT,
            "idempotency-key-in-use",
            "Idempotency key in use",
            "a request with this Idempotency-Key is still running; retry once it has answered",
        )
        .with("header", "Idempotency-Key")
        .header(header::RETRY_AFTER, HeaderValue::from_static("1"))
    }

    /// A server-side failure: the details go to the log, not to the client.
    pub fn internal(what: impl std::fmt::Display) -> Problem {
        tracing::error!("internal error: {what}");
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal server error",
            "the server failed to handle the request; the details are in its log",
        )
    }
}

impl From<service::Error> for Problem {
    fn from(e: service::Error) -> Problem {
        use service::Error;
        match e {
            Error::Invalid { field, message } => Problem::invalid_field(&field, message),
            Error::OverLimit(e) => Problem::over_limit(&e),
            Error::NotFound => Problem::session_not_found(),
            Error::PreconditionFailed { current_version } => {
                Problem::precondition_failed(current_version)
            }
            Error::LimitReached { user, active, max } => Problem::session_limit(&user, active, max),
            Error::SessionQuota { stored, max } => Problem::session_quota(stored, max),
            Error::Denied {
                plugin,
                message,
                kind,
            } => Problem::plugin_denied(&plugin, &message, kind),
            Error::PluginFailed(failure) => Problem::plugin_failed(&failure),
            Error::NoMessageHandler => Problem::no_message_handler(),
            Error::WriteConflict { attempts } => Problem::write_conflict(attempts),
            Error::StoreUnavailable(reason) => {
                tracing::warn!("session store unavailable: {reason}");
                Problem::store_unavailable()
            }
            Error::OutcomeUnknown(reason) => {
                tracing::warn!("session store outcome unknown: {reason}");
                Problem::outcome_unknown()
            }
            Error::IdempotencyKeyReused => Problem::idempotency_key_reused(),
            Error::IdempotencyKeyInUse => Problem::idempotency_key_in_use(),
            other => Problem::internal(other),
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let problem = *self.0;
        let body = serde_json::to_vec(&problem).unwrap_or_else(|_| b"{}".to_vec());
        let mut response = (problem.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        for (name, value) in problem.headers {
            headers.insert(name, value);
        }
        response
    }
}
