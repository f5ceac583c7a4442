//! The REST API (axum). [`router`] merges one sub-router per area, including
//! the `/sessman` compatibility router ([`sessman`]).
//!
//! Every error is an RFC 9457 problem, including unknown routes (404), wrong
//! methods (405), bodies that are too large (413) and bodies that do not
//! arrive within `server.body_read_timeout_ms` (408). Request logs show the
//! route template, never the path: paths carry session tokens. (Malformed
//! request heads never reach the router: see [`crate::http`].)

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use http_body::{Frame, SizeHint};
use tokio::time::Sleep;

use crate::app::App;

pub mod admin;
pub mod admit;
pub mod auth;
pub mod client;
pub mod console;
pub mod control;
pub mod cors;
pub mod error;
pub mod extract;
pub mod metrics;
pub mod model;
pub mod openapi;
pub mod operator;
pub mod schema;
pub mod sessions;
pub mod sessman;
pub mod trace;
pub mod users;

pub use error::Problem;

/// `/v1/sessions/...`.
pub fn sessions_router() -> Router<Arc<App>> {
    Router::new()
        .route("/v1/sessions", post(sessions::create_session))
        .route(
            "/v1/sessions/{id}",
            get(sessions::get_session)
                .patch(sessions::patch_session)
                .delete(sessions::delete_session),
        )
        .route("/v1/sessions/{id}/touch", post(sessions::touch_session))
        .route(
            "/v1/sessions/{id}/authenticate",
            post(sessions::authenticate_session),
        )
        .route("/v1/sessions/{id}/events", post(sessions::post_event))
        .route(
            "/v1/sessions/{id}/messages/{handler}",
            post(sessions::post_message),
        )
}

/// `/v1/users/...`.
pub fn users_router() -> Router<Arc<App>> {
    Router::new()
        .route(
            "/v1/users/{user}/sessions",
            get(users::list_user_sessions).delete(users::revoke_user_sessions),
        )
        .route(
            "/v1/users/{user}/sessions/{public_id}",
            delete(users::revoke_user_session),
        )
}

/// `/v1/audit`, `/v1/plugins`, `/v1/ends`, health and the OpenAPI document.
pub fn admin_router() -> Router<Arc<App>> {
    Router::new()
        .route("/v1/audit", get(admin::audit))
        .route("/v1/plugins", get(admin::plugins))
        .route("/v1/ends", get(admin::ends))
        .route("/v1/webhooks", get(admin::webhooks))
        .route("/healthz", get(admin::healthz))
        .route("/readyz", get(admin::readyz))
        .route("/openapi.json", get(openapi::openapi_json))
}

/// `/admin/v1/...`: the operator API. Uploads take up to
/// `max_component_bytes`.
pub fn operator_router(max_component_bytes: usize) -> Router<Arc<App>> {
    Router::new()
        .route(
            "/admin/v1/tenants",
            get(operator::tenants).post(control::create_tenant),
        )
        .route(
            "/admin/v1/tenants/{tenant}",
            get(control::get_tenant)
                .patch(control::patch_tenant)
                .delete(control::delete_tenant),
        )
        .route(
            "/admin/v1/tenants/{tenant}/keys",
            get(control::list_keys).post(control::create_key),
        )
        .route(
            "/admin/v1/tenants/{tenant}/keys/{id}",
            delete(control::revoke_key),
        )
        .route(
            "/admin/v1/tenants/{tenant}/components",
            get(control::list_components)
                .post(control::upload_component)
                .layer(DefaultBodyLimit::max(max_component_bytes)),
        )
        .route(
            "/admin/v1/tenants/{tenant}/components/{sha256}",
            delete(control::delete_component),
        )
        .route(
            "/admin/v1/tenants/{tenant}/chain",
            get(control::get_chain).put(control::put_chain),
        )
        .route(
            "/admin/v1/tenants/{tenant}/chain/revisions",
            get(control::chain_revisions),
        )
        .route(
            "/admin/v1/tenants/{tenant}/chain/rollback",
            post(control::rollback_chain),
        )
}

/// The whole API.
pub fn router(app: Arc<App>) -> Router {
    let max_body = app.server.max_body_bytes;
    let body_timeout = BodyTimeout(app.server.body_read_timeout_ms);
    let router = Router::new()
        .merge(sessions_router())
        .merge(users_router())
        .merge(admin_router())
        .merge(sessman::router())
        .merge(operator_router(app.control.settings.max_component_bytes))
        .route("/metrics", get(metrics::metrics))
        .route("/console", get(console::page))
        .route("/console/app.js", get(console::script))
        .route("/console/app.css", get(console::style))
        .route("/console/icon.svg", get(console::icon))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(app.clone(), admit::admit))
        .layer(middleware::from_fn(problem_for_bare_errors))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn_with_state(body_timeout, body_deadline))
        .layer(middleware::from_fn_with_state(app.clone(), cors::cors))
        .layer(middleware::from_fn(trace::trace_request));
    // `[metrics] enabled = false`: requests are not counted either.
    let router = if app.metrics_access.enabled {
        router.layer(middleware::from_fn_with_state(
            app.metrics.clone(),
            metrics::record_request,
        ))
    } else {
        router
    };
    router.with_state(app)
}

/// `server.body_read_timeout_ms`.
#[derive(Debug, Clone, Copy)]
struct BodyTimeout(u64);

/// Gives the request body `server.body_read_timeout_ms` to arrive, counted
/// from the first read, and answers 408 when it does not (whatever the
/// handler made of the failed read). A deadline of our own: tower-http's
/// body timeout restarts with every chunk, so a client trickling one byte
/// at a time would never meet it.
async fn body_deadline(State(timeout): State<BodyTimeout>, req: Request, next: Next) -> Response {
    let expired = Arc::new(AtomicBool::new(false));
    let limit = Duration::from_millis(timeout.0);
    let req = req.map(|body| {
        Body::new(DeadlineBody {
            body,
            limit,
            deadline: None,
            expired: expired.clone(),
        })
    });
    let response = next.run(req).await;
    if expired.load(Ordering::Relaxed) {
        return Problem::body_timeout(timeout.0).into_response();
    }
    response
}

/// A request body that fails once its deadline has passed, and says so in
/// `expired`.
struct DeadlineBody {
    body: Body,
    limit: Duration,
    /// Set on the first read.
    deadline: Option<Pin<Box<Sleep>>>,
    expired: Arc<AtomicBool>,
}

/// The error a [`DeadlineBody`] ends with.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
struct BodyTimedOut;

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        // Nothing to wait for: no timer.
        if this.deadline.is_none() && this.body.is_end_stream() {
            return Pin::new(&mut this.body).poll_frame(cx);
        }
        let limit = this.limit;
        let deadline = this
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if let Poll::Ready(frame) = Pin::new(&mut this.body).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        ready!(deadline.as_mut().poll(cx));
        this.expired.store(true, Ordering::Relaxed);
        Poll::Ready(Some(Err(axum::Error::new(BodyTimedOut))))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

async fn not_found() -> Problem {
    Problem::plain(StatusCode::NOT_FOUND, "no such route")
}

/// Turns the bodyless errors axum answers by itself (405 with its `Allow`
/// header, mostly) into problems.
async fn problem_for_bare_errors(req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error())
        || response.headers().contains_key(header::CONTENT_TYPE)
    {
        return response;
    }
    let detail = match status {
        // axum adds the `Allow` header outside this layer.
        StatusCode::METHOD_NOT_ALLOWED => {
            "this route does not accept this method; the Allow header lists those it does"
                .to_string()
        }
        _ => status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_string(),
    };
    let (mut parts, _) = response.into_parts();
    let problem = Problem::plain(status, detail).into_response();
    let (problem_parts, body) = problem.into_parts();
    parts.headers.extend(problem_parts.headers);
    Response::from_parts(parts, body)
}
