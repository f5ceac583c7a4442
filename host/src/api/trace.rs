//! W3C Trace Context for every request: the `request` span that everything
//! a request does (the chain, each plugin hook, each store call) runs in,
//! and its ids.
//!
//! A request that carries a valid `traceparent` joins that trace: its span
//! gets the caller's `trace_id`, a new `span_id` and the caller's span as
//! `parent_id`. Any other request starts a trace of its own. Every answer
//! says which with `traceresponse: 00-<trace_id>-<span_id>-01`, so a client
//! can find the request's log lines (with `[log] format = "json"`, every
//! line logged inside the request carries its span's fields).

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument as _;

use crate::trace::TraceParent;

/// Runs the request inside its `request` span, logs it, and answers with
/// its `traceresponse`. The log line (method, route template, status, time)
/// is at DEBUG (`RUST_LOG=sessiond::api=debug` turns it on), so that the
/// default `info` level writes nothing per request; a 5xx other than 503 is
/// at WARN. (A 503 is a store outage or a degraded tenant, each logged
/// where it starts, and could come once per request.)
pub async fn trace_request(req: Request, next: Next) -> Response {
    let parent = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(TraceParent::parse);
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "(unmatched)".into());
    let span = tracing::info_span!("request",
        trace_id = tracing::field::Empty, span_id = tracing::field::Empty,
        parent_id = tracing::field::Empty,
        %method, route, status = tracing::field::Empty);
    let ids = crate::trace::begin(&span, parent.as_ref());
    let started = std::time::Instant::now();
    let mut response =
        crate::trace::scope(ids.clone(), next.run(req).instrument(span.clone())).await;
    let status = response.status().as_u16();
    span.record("status", i64::from(status));
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    span.in_scope(|| {
        if status >= 500 && status != 503 {
            tracing::warn!(%method, route, status, ms, "request");
        } else {
            tracing::debug!(%method, route, status, ms, "request");
        }
    });
    if let Ok(value) = HeaderValue::from_str(&ids.header()) {
        response.headers_mut().insert("traceresponse", value);
    }
    response
}
