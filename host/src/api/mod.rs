//! The REST API (axum). [`router`] merges one sub-router per area, including
//! the `/sessman` compatibility router ([`sessman`]).
//!
//! Every error is an RFC 9457 problem, including unknown routes (404), wrong
//! methods (405) and bodies that are too large (413). Request logs show the
//! route template, never the path: paths carry session tokens.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::app::App;

pub mod admin;
pub mod auth;
pub mod client;
pub mod error;
pub mod extract;
pub mod model;
pub mod openapi;
pub mod sessions;
pub mod sessman;
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
    Router::new().route(
        "/v1/users/{user}/sessions",
        get(users::list_user_sessions).delete(users::revoke_user_sessions),
    )
}

/// `/v1/audit`, `/v1/plugins`, `/v1/ends`, health and the OpenAPI document.
pub fn admin_router() -> Router<Arc<App>> {
    Router::new()
        .route("/v1/audit", get(admin::audit))
        .route("/v1/plugins", get(admin::plugins))
        .route("/v1/ends", get(admin::ends))
        .route("/healthz", get(admin::healthz))
        .route("/readyz", get(admin::readyz))
        .route("/openapi.json", get(openapi::openapi_json))
}

/// The whole API.
pub fn router(app: Arc<App>) -> Router {
    let max_body = app.server.max_body_bytes;
    Router::new()
        .merge(sessions_router())
        .merge(users_router())
        .merge(admin_router())
        .merge(sessman::router())
        .fallback(not_found)
        .layer(middleware::from_fn(problem_for_bare_errors))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn(log_request))
        .with_state(app)
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

/// Logs method, route template, status and time of each request.
async fn log_request(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "(unmatched)".into());
    let started = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16();
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    if status >= 500 {
        tracing::warn!(%method, route, status, ms, "request");
    } else {
        tracing::info!(%method, route, status, ms, "request");
    }
    response
}
