//! Bearer API keys. The config holds SHA-256 hashes of the keys; the
//! tenant registry finds the tenant of a presented key in constant time
//! ([`crate::tenant::Tenants::by_key`]).

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use super::error::Problem;
use crate::app::App;
use crate::tenant::Tenant;

/// The tenant whose API key the request carries. The request keeps this
/// version of the tenant (settings and chain) until it ends.
#[derive(Debug, Clone)]
pub struct Caller(pub Arc<Tenant>);

impl FromRequestParts<Arc<App>> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, Problem> {
        // Admission control identified the caller already.
        if let Some(caller) = parts.extensions.get::<Caller>() {
            return Ok(caller.clone());
        }
        caller(&parts.headers, app)
    }
}

/// The tenant of the API key in `headers`, or the problem to answer.
pub fn caller(headers: &HeaderMap, app: &App) -> Result<Caller, Problem> {
    let key = bearer(headers)?;
    match app.tenants.current().by_key(key) {
        Some(tenant) if tenant.disabled => Err(Problem::tenant_disabled(&tenant.name)),
        Some(tenant) => Ok(Caller(tenant)),
        None => Err(Problem::unauthorized("the API key is not valid", true)),
    }
}

/// The key of the request's one `Authorization: Bearer <key>` header, or
/// the problem to answer.
pub(super) fn bearer(headers: &HeaderMap) -> Result<&str, Problem> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(Problem::unauthorized(
            "send an API key as `Authorization: Bearer <key>`",
            false,
        ));
    };
    // Which of two credentials would win is the server's guess: refuse.
    if values.next().is_some() {
        return Err(Problem::ambiguous_credentials());
    }
    value
        .to_str()
        .ok()
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        })
        .filter(|k| !k.is_empty())
        .ok_or_else(|| {
            Problem::unauthorized("the Authorization header must be `Bearer <key>`", true)
        })
}
