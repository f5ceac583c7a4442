//! The admission layer: finds the tenant of a request before routing and
//! lets it through its tenant's gate ([`crate::admission`]), or answers
//! 429 (or 503 for a tenant whose plugins did not load). A request without a valid key passes on, for its handler to refuse.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::auth::{Caller, caller};
use super::error::Problem;
use crate::admission::Refusal;
use crate::app::App;
use crate::tenant::Tenant;

/// The tenant a request belongs to: its API key's, or for `/sessman/*`
/// without a key the tenant that serves those. None for a missing or bad
/// key, which the handler refuses.
pub(super) fn request_tenant(headers: &HeaderMap, path: &str, app: &App) -> Option<Arc<Tenant>> {
    if headers.contains_key(AUTHORIZATION) {
        caller(headers, app).ok().map(|Caller(tenant)| tenant)
    } else if path.starts_with("/sessman/") {
        app.tenants.current().sessman_without_key()
    } else {
        None
    }
}

/// Admits the request through its tenant's gate; its slot is held until
/// the response is made.
pub async fn admit(State(app): State<Arc<App>>, mut req: Request, next: Next) -> Response {
    let keyed = req.headers().contains_key(AUTHORIZATION);
    let Some(tenant) = request_tenant(req.headers(), req.uri().path(), &app) else {
        return next.run(req).await;
    };
    if let Some(degraded) = &tenant.degraded {
        app.metrics.http.refused(&tenant.name, "degraded");
        return Problem::tenant_degraded(degraded).into_response();
    }
    let Some(gate) = app.admission.gate(&tenant.name) else {
        return next.run(req).await;
    };
    let cpu = app.admission.cpu().cloned();
    if let Some(cpu) = &cpu {
        match cpu.check(&tenant.name, gate.queue_timeout()) {
            Ok(None) => {}
            // Off the CPU until the tenant's share has room again.
            Ok(Some(wait)) => tokio::time::sleep(wait).await,
            Err(over) => {
                app.metrics.http.refused(&tenant.name, "cpu");
                let refusal = Refusal::Cpu {
                    percent: over.percent,
                    retry_after: over.wait,
                };
                return refused(&refusal).into_response();
            }
        }
    }
    match gate.admit().await {
        Ok(slot) => {
            let name = tenant.name.clone();
            if keyed {
                req.extensions_mut().insert(Caller(tenant));
            }
            let response = match &cpu {
                Some(cpu) => cpu.metered(&name, next.run(req)).await,
                None => next.run(req).await,
            };
            drop(slot);
            response
        }
        Err(refusal) => {
            let reason = match refusal {
                Refusal::Rate { .. } => "rate-limited",
                Refusal::Busy { .. } => "busy",
                Refusal::Cpu { .. } => "cpu",
            };
            app.metrics.http.refused(&tenant.name, reason);
            refused(&refusal).into_response()
        }
    }
}

/// The 429 problem for a refusal.
pub fn refused(refusal: &Refusal) -> Problem {
    match refusal {
        Refusal::Rate {
            per_second,
            retry_after,
        } => {
            let seconds = retry_after.as_secs_f64().ceil().max(1.0) as u64;
            Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                "Rate limited",
                format!(
                    "this tenant may send {per_second} requests per second to this host \
                     (quota.requests_per_second); retry after {seconds} s"
                ),
            )
            .with("retry_after_ms", retry_after.as_millis() as u64)
            .header(RETRY_AFTER, HeaderValue::from(seconds))
        }
        Refusal::Busy {
            max_in_flight,
            queue_timeout_ms,
        } => Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "tenant-busy",
            "Too many requests in flight",
            format!(
                "this tenant has {max_in_flight} requests in flight on this host \
                 (quota.max_in_flight) and no slot freed within {queue_timeout_ms} ms; retry \
                 shortly"
            ),
        )
        .header(RETRY_AFTER, HeaderValue::from_static("1")),
        Refusal::Cpu {
            percent,
            retry_after,
        } => {
            let seconds = retry_after.as_secs_f64().ceil().max(1.0) as u64;
            Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "tenant-busy",
                "Over the tenant's share of the CPU",
                format!(
                    "this tenant used more than its {percent} % share of this host's CPU while \
                     other tenants were busy (server.fair_cpu); retry after {seconds} s"
                ),
            )
            .with("retry_after_ms", retry_after.as_millis() as u64)
            .header(RETRY_AFTER, HeaderValue::from(seconds))
        }
    }
}
