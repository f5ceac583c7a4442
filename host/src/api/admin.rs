//! The tenant's audit stream and plugins, and the health endpoints.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Map, Value};
use utoipa::IntoParams;

use super::auth::Caller;
use super::error::{ApiResult, Problem};
use super::extract::ApiQuery;
use super::model::{
    AuditPageView, AuditView, CircuitView, DeadLetterView, DescribeView, EndQueueView, Health,
    PluginList, PluginView, WebhookView, WebhooksView, rfc3339,
};
use crate::app::App;
use crate::runtime::OnError;
use crate::service;
use crate::session::now_ms;

/// Records per audit page unless `limit` says otherwise.
pub const DEFAULT_AUDIT_LIMIT: usize = 100;
/// The most records per audit page.
pub const MAX_AUDIT_LIMIT: usize = 1000;
/// How many of the newest dead letters `GET /v1/ends` shows.
pub const DEAD_LETTERS_SHOWN: usize = 10;

/// The query of `GET /v1/audit`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Start after this record id (the `next` of the previous page); empty
    /// means from the start. Each of its two numbers fits in 64 bits.
    #[param(pattern = "^(0*[0-9]{1,19}-0*[0-9]{1,19})?$")]
    pub after: Option<String>,
    /// Records per page, 1 to 1000 ([`MAX_AUDIT_LIMIT`]; default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

/// Whether `text` is a stream id such as `1700000000000-0`: two numbers
/// that each fit in 64 bits, as the stores keep them.
fn is_stream_id(text: &str) -> bool {
    let number =
        |part: &str| part.bytes().all(|b| b.is_ascii_digit()) && part.parse::<u64>().is_ok();
    text.split_once('-')
        .is_some_and(|(ms, seq)| number(ms) && number(seq))
}

/// Read the tenant's audit stream.
///
/// Oldest first; pass a page's `next` as `after` to read on.
#[utoipa::path(get, path = "/v1/audit", tag = "admin", params(AuditQuery),
    responses(
        (status = 200, description = "A page of audit records", body = AuditPageView),
        (status = 400, description = "Bad `after` or `limit`", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn audit(
    State(app): State<Arc<App>>,
    Caller(tenant): Caller,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> ApiResult<Json<AuditPageView>> {
    let limit = query.limit.unwrap_or(DEFAULT_AUDIT_LIMIT);
    if !(1..=MAX_AUDIT_LIMIT).contains(&limit) {
        return Err(Problem::bad_request(
            "bad-query",
            format!("limit must be between 1 and {MAX_AUDIT_LIMIT}"),
        )
        .with("field", "limit"));
    }
    let after = query.after.filter(|a| !a.is_empty());
    if let Some(after) = &after
        && !is_stream_id(after)
    {
        return Err(Problem::bad_request(
            "bad-query",
            "after must be a record id such as 1700000000000-0",
        )
        .with("field", "after"));
    }
    let page = service::tenant::audit(&app, &tenant, after.as_deref(), limit).await?;
    Ok(Json(AuditPageView {
        records: page.records.into_iter().map(AuditView::from).collect(),
        next: page.next,
    }))
}

/// List the tenant's plugins.
///
/// In chain order, with what each component says about itself, the
/// capabilities it imports and its call and failure counts since start.
#[utoipa::path(get, path = "/v1/plugins", tag = "admin",
    responses((status = 200, description = "The tenant's plugins", body = PluginList)),
    security(("api_key" = [])))]
pub async fn plugins(Caller(tenant): Caller) -> Json<PluginList> {
    Json(PluginList {
        plugins: plugin_views(&tenant),
    })
}

/// The tenant's plugins as `GET /v1/plugins` shows them, in chain order.
pub(super) fn plugin_views(tenant: &crate::tenant::Tenant) -> Vec<PluginView> {
    tenant
        .chain
        .plugins()
        .iter()
        .map(|p| {
            let (calls, failures) = p.stats.snapshot();
            let (log_lines_dropped, failure_lines_dropped) = p.dropped_lines();
            let circuit = p.circuit();
            PluginView {
                name: p.name.clone(),
                describe: DescribeView {
                    name: p.description.name.clone(),
                    version: p.description.version.clone(),
                },
                hooks: sorted(p.description.hooks.iter().map(|h| h.to_string())),
                capabilities: sorted(p.imports.iter().map(|c| c.as_str().to_string())),
                on_error: match p.on_error {
                    OnError::Deny => "deny".into(),
                    OnError::Allow => "allow".into(),
                },
                calls,
                failures: failures
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), Value::from(v)))
                    .collect::<Map<_, _>>(),
                log_lines_dropped,
                failure_lines_dropped,
                circuit: CircuitView {
                    state: circuit.state.into(),
                    opened: circuit.opened,
                    retry_in_ms: circuit.retry_in_ms,
                },
                recent: p.stats.recent().into(),
            }
        })
        .collect()
}

/// The tenant's webhooks.
///
/// Its endpoints (never their secrets) and what its outbox holds.
#[utoipa::path(get, path = "/v1/webhooks", tag = "admin",
    responses((status = 200, description = "The tenant's webhook endpoints and outbox", body = WebhooksView)),
    security(("api_key" = [])))]
pub async fn webhooks(
    State(app): State<Arc<App>>,
    Caller(tenant): Caller,
) -> ApiResult<Json<WebhooksView>> {
    let stats = app
        .webhooks
        .outbox
        .outbox_stats(&tenant.name, now_ms())
        .await
        .map_err(service::Error::from)?;
    Ok(Json(WebhooksView {
        endpoints: tenant
            .config
            .webhooks
            .iter()
            .map(|w| WebhookView {
                url: w.url.clone(),
                events: w.events.iter().map(|e| e.as_str().to_string()).collect(),
                this_host: app.webhooks.endpoint_state(&tenant.name, &w.url).into(),
            })
            .collect(),
        held: stats.held,
        due: stats.due,
        oldest_queued_at: stats.oldest_created_at.map(rfc3339),
        oldest_queued_at_ms: stats.oldest_created_at,
    }))
}

/// The tenant's end queue.
///
/// How many ended sessions wait for their `on-session-end` hooks and how
/// many are being run, the dead-letter list (jobs whose hooks will not run
/// again) with its newest entries, plus this host's end-worker counters.
#[utoipa::path(get, path = "/v1/ends", tag = "admin",
    responses(
        (status = 200, description = "The end queue", body = EndQueueView),
        (status = 503, description = "The store does not answer", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = [])))]
pub async fn ends(
    State(app): State<Arc<App>>,
    Caller(tenant): Caller,
) -> ApiResult<Json<EndQueueView>> {
    let service::tenant::EndQueueReport {
        queue,
        dead,
        worker,
    } = service::tenant::end_queue(&app, &tenant, DEAD_LETTERS_SHOWN).await?;
    Ok(Json(EndQueueView {
        waiting: queue.waiting,
        claimed: queue.claimed,
        consumer: app.ends.consumer().to_string(),
        ran: worker.ran,
        reclaimed: worker.reclaimed,
        superseded: worker.superseded,
        dead_lettered: worker.dead_lettered,
        dead: dead.count,
        dead_letters: dead.newest.into_iter().map(DeadLetterView::from).collect(),
    }))
}

fn sorted(items: impl Iterator<Item = String>) -> Vec<String> {
    let mut v: Vec<String> = items.collect();
    v.sort();
    v
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "Alive", body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        degraded: Vec::new(),
    })
}

/// Readiness: the session store answers. The host is ready while some
/// tenants are degraded (the others serve); they are listed.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "Ready", body = Health),
        (status = 503, description = "The store does not answer", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn readyz(State(app): State<Arc<App>>) -> ApiResult<(StatusCode, Json<Health>)> {
    service::tenant::ready(&app).await?;
    Ok((
        StatusCode::OK,
        Json(Health {
            status: "ready".into(),
            degraded: app
                .tenants
                .current()
                .iter()
                .filter_map(|t| {
                    let d = t.degraded.as_ref()?;
                    Some(super::model::DegradedTenant {
                        tenant: t.name.clone(),
                        plugin: d.plugin.clone(),
                        error: d.error.clone(),
                    })
                })
                .collect(),
        }),
    ))
}
