//! CORS for browser clients, with the allowed origins set per tenant
//! (`tenants.<name>.cors_origins`).
//!
//! A request without an `Origin` header passes untouched. A preflight
//! (`OPTIONS` with `Access-Control-Request-Method`) carries no API key, so
//! it cannot name its tenant: it is answered 204 when some tenant allows
//! the origin, and 403 problem+json otherwise, before routing. The request
//! that follows does carry its key, and only its own tenant's list decides
//! whether the answer gets `Access-Control-Allow-Origin`: an origin that
//! tenant A allows cannot read tenant B's answers. A request whose key is
//! missing or wrong is judged by every tenant's list, so that a page of an
//! allowed origin can read its 401. Keys travel in `Authorization`, never
//! in cookies, so credentials mode is not offered.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN,
    VARY,
};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::admit::request_tenant;
use super::error::Problem;
use crate::app::App;
use crate::tenant::{Tenant, Tenants};

/// The methods the API answers.
const METHODS: &str = "GET, POST, PATCH, DELETE";
/// The request headers a page may send: the key, the body's type and the
/// API's own request headers.
const REQUEST_HEADERS: &str = "authorization, content-type, if-match, idempotency-key";
/// The response headers a page may read beyond the CORS-safelisted ones.
const EXPOSED_HEADERS: &str = "etag, location, retry-after, idempotent-replayed, www-authenticate";
/// How long a browser may cache a preflight's answer, in seconds.
const MAX_AGE: &str = "600";

/// Whether `tenant` lets pages of `origin` read its answers.
fn allows(tenant: &Tenant, origin: &str) -> bool {
    tenant
        .config
        .cors_origins
        .iter()
        .any(|o| o == "*" || o.eq_ignore_ascii_case(origin))
}

fn any_allows(tenants: &Tenants, origin: &str) -> bool {
    tenants.iter().any(|t| allows(t, origin))
}

/// Answers preflights and marks the answers of allowed origins.
pub async fn cors(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let Some(origin) = req.headers().get(ORIGIN).cloned() else {
        return next.run(req).await;
    };
    let Ok(name) = origin.to_str().map(str::to_owned) else {
        return next.run(req).await;
    };
    let tenants = app.tenants.current();
    if req.method() == Method::OPTIONS && req.headers().contains_key(ACCESS_CONTROL_REQUEST_METHOD)
    {
        return preflight(any_allows(&tenants, &name), origin);
    }
    let allowed = match request_tenant(req.headers(), req.uri().path(), &app) {
        Some(tenant) => allows(&tenant, &name),
        None => any_allows(&tenants, &name),
    };
    let mut response = next.run(req).await;
    let headers = response.headers_mut();
    headers.append(VARY, HeaderValue::from_static("origin"));
    if allowed {
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(
            ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSED_HEADERS),
        );
    }
    response
}

fn preflight(allowed: bool, origin: HeaderValue) -> Response {
    if !allowed {
        let mut response = Problem::cors_origin_not_allowed().into_response();
        response
            .headers_mut()
            .append(VARY, HeaderValue::from_static("origin"));
        return response;
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(
        ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(METHODS),
    );
    headers.insert(
        ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(REQUEST_HEADERS),
    );
    headers.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static(MAX_AGE));
    headers.append(VARY, HeaderValue::from_static("origin"));
    response
}
