//! Bearer API keys. The config holds SHA-256 hashes of the keys; a presented
//! key is hashed and compared in constant time against every configured hash
//! (all of them, whatever matches), so timing tells nothing about the keys.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq};

use super::error::Problem;
use crate::server::{AppState, TenantState};

/// The tenant whose API key the request carries.
#[derive(Debug, Clone)]
pub struct Caller(pub Arc<TenantState>);

impl FromRequestParts<AppState> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        let Some(value) = parts.headers.get(AUTHORIZATION) else {
            return Err(Problem::unauthorized(
                "send an API key as `Authorization: Bearer <key>`",
                false,
            ));
        };
        let key = value
            .to_str()
            .ok()
            .and_then(|v| {
                let (scheme, rest) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            })
            .filter(|k| !k.is_empty())
            .ok_or_else(|| {
                Problem::unauthorized("the Authorization header must be `Bearer <key>`", true)
            })?;
        match find_tenant(state, key) {
            Some(tenant) => Ok(Caller(tenant)),
            None => Err(Problem::unauthorized("the API key is not valid", true)),
        }
    }
}

/// The tenant owning `key`, comparing against every hash in constant time.
fn find_tenant(state: &AppState, key: &str) -> Option<Arc<TenantState>> {
    let presented: [u8; 32] = Sha256::digest(key.as_bytes()).into();
    let mut found = u32::MAX;
    for (i, (hash, _)) in state.api_keys.iter().enumerate() {
        let index = u32::try_from(i).unwrap_or(u32::MAX);
        let hit = hash.ct_eq(&presented);
        found = u32::conditional_select(&found, &index, hit);
    }
    state
        .api_keys
        .get(usize::try_from(found).ok()?)
        .map(|(_, t)| t.clone())
}
