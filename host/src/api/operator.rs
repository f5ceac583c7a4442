//! The operator API under `/admin/v1/`: what the hosting operator reads
//! about every tenant. It takes only operator keys (`[operator]`,
//! `SESSIOND_OPERATOR_KEY`): a request without one gets 401, and one with
//! a tenant's key 403, since a tenant may not see the others.

use std::sync::Arc;

use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use serde::Serialize;
use tokio::task::JoinSet;
use utoipa::ToSchema;

use super::admin::plugin_views;
use super::auth::bearer;
use super::error::Problem;
use super::model::PluginView;
use crate::app::App;
use crate::service;

/// A request made with one of the operator's keys.
#[derive(Debug, Clone, Copy)]
pub struct Operator;

impl FromRequestParts<Arc<App>> for Operator {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, Problem> {
        let key = bearer(&parts.headers)?;
        if app.is_operator_key(key) {
            Ok(Operator)
        } else if app.tenants.current().by_key(key).is_some() {
            Err(Problem::forbidden(
                "a tenant's API key cannot use the operator API; send an operator key",
            ))
        } else {
            Err(Problem::unauthorized("the operator key is not valid", true))
        }
    }
}

/// Every tenant this host serves.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantsView {
    /// By name.
    pub tenants: Vec<TenantSummaryView>,
}

/// One tenant as the operator sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantSummaryView {
    pub name: String,
    /// Where the tenant is defined: `config` (`sessiond.toml`) or `api`
    /// (the operator API).
    pub source: String,
    /// Disabled by the operator (its requests get 403).
    pub disabled: bool,
    /// Why the tenant answers 503: the plugin that did not load, and its
    /// error; none when it serves.
    pub degraded: Option<String>,
    /// Sessions stored: the live ones and those past their deadline that
    /// no sweeper has taken yet. None when the store did not answer.
    pub sessions: Option<u64>,
    /// End jobs waiting for their hooks, claimed by a host, and dead-lettered.
    pub ends_waiting: Option<u64>,
    pub ends_claimed: Option<u64>,
    pub dead_letters: Option<u64>,
    /// Webhook deliveries held in the outbox (none without webhooks).
    pub webhooks_held: Option<u64>,
    /// Why the store reads failed, when they did.
    pub store_error: Option<String>,
    /// Its plugins on this host, as `GET /v1/plugins` shows them.
    pub plugins: Vec<PluginView>,
}

/// List every tenant.
///
/// With its stored sessions, end queue and webhook outbox (read from the
/// store for each tenant at once) and its plugins on this host: calls,
/// failures by kind, p99 wall time and fuel. Operator keys only.
#[utoipa::path(get, path = "/admin/v1/tenants", tag = "operator",
    responses(
        (status = 200, description = "Every tenant", body = TenantsView),
        (status = 403, description = "A tenant's key", body = Problem, content_type = "application/problem+json"),
    ),
    security(("operator_key" = [])))]
pub async fn tenants(State(app): State<Arc<App>>, _: Operator) -> Json<TenantsView> {
    let mut reads = JoinSet::new();
    for tenant in app.tenants.current().iter() {
        let (app, tenant) = (app.clone(), tenant.clone());
        reads.spawn(async move {
            let stored = service::tenant::stored_state(&app, &tenant).await;
            (tenant, stored)
        });
    }
    let mut tenants = Vec::new();
    while let Some(read) = reads.join_next().await {
        let Ok((tenant, stored)) = read else {
            continue;
        };
        let (stored, store_error) = match stored {
            Ok(s) => (Some(s), None),
            Err(e) => (None, Some(e.to_string())),
        };
        tenants.push(TenantSummaryView {
            name: tenant.name.clone(),
            source: if tenant.revision.is_some() {
                "api".into()
            } else {
                "config".into()
            },
            disabled: tenant.disabled,
            degraded: tenant
                .degraded
                .as_ref()
                .map(|d| format!("plugin {:?} did not load: {}", d.plugin, d.error)),
            sessions: stored.map(|s| s.sessions),
            ends_waiting: stored.map(|s| s.ends.waiting),
            ends_claimed: stored.map(|s| s.ends.claimed),
            dead_letters: stored.map(|s| s.dead_letters),
            webhooks_held: stored.and_then(|s| s.outbox).map(|o| o.held),
            store_error,
            plugins: plugin_views(&tenant),
        });
    }
    tenants.sort_by(|a, b| a.name.cmp(&b.name));
    Json(TenantsView { tenants })
}
