//! `GET /metrics` (the Prometheus text format) and the middleware that
//! counts and times every request by route template.
//!
//! The endpoint answers only what `[metrics]` allows: a client address in
//! `metrics.allow` (403 otherwise) and, when `metrics.bearer_token_sha256`
//! is set, the bearer token it hashes (401 otherwise). Tenants' API keys
//! play no part: metrics cover every tenant.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::task::JoinSet;

use super::client::client_addr;
use super::error::Problem;
use crate::app::App;
use crate::metrics::{CONTENT_TYPE as METRICS_CONTENT_TYPE, Metrics, Scrape};
use crate::service;
use crate::session::now_ms;

/// The route label of a request no route matched.
pub const UNMATCHED: &str = "(unmatched)";

/// Counts and times a request by route template, method and status.
pub async fn record_request(
    State(metrics): State<Arc<Metrics>>,
    req: Request,
    next: Next,
) -> Response {
    let method = method_label(req.method());
    let route = req.extensions().get::<MatchedPath>().cloned();
    let started = Instant::now();
    let response = next.run(req).await;
    let route = route.as_ref().map_or(UNMATCHED, |p| p.as_str());
    metrics
        .http
        .request(route, method, response.status().as_u16(), started.elapsed());
    response
}

/// The method as a label: one of the standard methods, or `other` (a
/// client may send any token as a method).
fn method_label(method: &Method) -> &'static str {
    const STANDARD: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT",
    ];
    STANDARD
        .into_iter()
        .find(|m| *m == method.as_str())
        .unwrap_or("other")
}

/// `GET /metrics`: every metric of this host, and each tenant's end queue
/// as the store has it now.
pub async fn metrics(State(app): State<Arc<App>>, request: Request) -> Result<Response, Problem> {
    let headers = request.headers();
    let peer = request.extensions().get::<ConnectInfo<SocketAddr>>();
    let access = &app.metrics_access;
    if !access.enabled {
        return Err(Problem::plain(StatusCode::NOT_FOUND, "no such route"));
    }
    let client = peer.map(|p| client_addr(p.0.ip(), headers, &app.server.trusted_proxies));
    if !client.is_some_and(|c| access.allow.iter().any(|n| n.0.contains(&c))) {
        return Err(Problem::forbidden(
            "this client's address may not read the metrics (see metrics.allow)",
        ));
    }
    if let Some(expected) = access.token_hash() {
        check_token(headers, &expected)?;
    }
    let scrape = scrape(&app).await;
    let mut response = app.metrics.encode(&scrape).into_response();
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(METRICS_CONTENT_TYPE));
    Ok(response)
}

/// Checks the bearer token against the SHA-256 of `metrics.bearer_token_sha256`,
/// in constant time.
fn check_token(headers: &HeaderMap, expected: &[u8; 32]) -> Result<(), Problem> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(Problem::unauthorized(
            "send the metrics token as `Authorization: Bearer <token>`",
            false,
        ));
    };
    if values.next().is_some() {
        return Err(Problem::ambiguous_credentials());
    }
    let token = value
        .to_str()
        .ok()
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        })
        .unwrap_or("");
    let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    if bool::from(presented.ct_eq(expected)) && !token.is_empty() {
        Ok(())
    } else {
        Err(Problem::unauthorized(
            "the metrics token is not valid",
            true,
        ))
    }
}

/// Reads every tenant's end queue (depth and oldest job), dead-letter
/// count, stored sessions and webhook outbox (at once, so that
/// a slow store costs one timeout, not one per tenant) and this host's
/// end-worker counters. A tenant whose store read fails is left out of this
/// scrape (the failure shows in `sessiond_store_errors_total`).
async fn scrape(app: &Arc<App>) -> Scrape {
    let scrape = Scrape::new();
    let mut reads = JoinSet::new();
    for tenant in app.tenants.current().iter() {
        let (app, tenant) = (app.clone(), tenant.clone());
        reads.spawn(async move {
            let report = service::tenant::end_queue(&app, &tenant, 0).await;
            let outbox = if tenant.config.webhooks.is_empty() {
                None
            } else {
                Some(
                    app.webhooks
                        .outbox
                        .outbox_stats(&tenant.name, now_ms())
                        .await,
                )
            };
            let sessions = app.sessions.stored_sessions(&tenant.name).await;
            let oldest = app.end_queue.oldest_end_at(&tenant.name).await;
            (tenant.name.clone(), report, outbox, sessions, oldest)
        });
    }
    while let Some(read) = reads.join_next().await {
        match read {
            Ok((tenant, report, outbox, sessions, oldest)) => {
                match sessions {
                    Ok(n) => scrape.sessions(&tenant, n),
                    Err(e) => tracing::warn!(tenant, "metrics: cannot count the sessions: {e}"),
                }
                match oldest {
                    Ok(at) => {
                        let age = at.map_or(0, |at| now_ms().saturating_sub(at));
                        scrape.oldest_end(&tenant, Duration::from_millis(age));
                    }
                    Err(e) => {
                        tracing::warn!(tenant, "metrics: cannot read the oldest end job: {e}")
                    }
                }
                match report {
                    Ok(report) => {
                        scrape.end_queue(&tenant, report.queue.waiting, report.queue.claimed);
                        scrape.dead_letters(&tenant, report.dead.count);
                    }
                    Err(e) => tracing::warn!(tenant, "metrics: cannot read the end queue: {e}"),
                }
                match outbox {
                    Some(Ok(stats)) => scrape.outbox(&tenant, stats.held, stats.due),
                    Some(Err(e)) => {
                        tracing::warn!(tenant, "metrics: cannot read the webhook outbox: {e}");
                    }
                    None => {}
                }
            }
            Err(e) => tracing::warn!("metrics: an end-queue read failed: {e}"),
        }
    }
    for tenant in app.tenants.current().iter() {
        if let Some(gate) = app.admission.gate(&tenant.name) {
            scrape.tenant_load(&tenant.name, "requests_in_flight", gate.in_flight() as u64);
            scrape.tenant_load(&tenant.name, "requests_queued", gate.queued() as u64);
        }
    }
    for (tenant, share) in app.runtime.shares() {
        scrape.tenant_load(&tenant, "plugin_calls", share.calls_running() as u64);
        scrape.tenant_load(&tenant, "plugin_memory_bytes", share.memory_used());
    }
    let worker = app.ends.stats();
    scrape.end_worker(
        worker.ran,
        worker.reclaimed,
        worker.superseded,
        worker.dead_lettered,
    );
    scrape
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_are_a_fixed_set() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::PATCH), "PATCH");
        let odd = Method::from_bytes(b"BREW").unwrap();
        assert_eq!(method_label(&odd), "other");
    }
}
