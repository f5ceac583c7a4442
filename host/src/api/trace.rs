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

use crate::ids::random_bytes;

/// A trace id (32 hex digits) and, when the caller sent one, its span id
/// (16 hex digits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parent {
    pub trace_id: String,
    pub span_id: String,
}

/// The trace and parent span of a `traceparent` header, if it is one
/// (version `00`; an all-zero trace or span id is invalid, as the
/// specification says). Unknown versions are read as `00` where they can
/// be: the first three fields.
pub fn parse_traceparent(header: &str) -> Option<Parent> {
    let mut parts = header.trim().split('-');
    let (version, trace_id, span_id, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| {
        s.len() == n && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    let valid = hex(version, 2)
        && version != "ff"
        && (version != "00" || parts.next().is_none())
        && hex(trace_id, 32)
        && hex(span_id, 16)
        && hex(flags, 2)
        && trace_id.bytes().any(|b| b != b'0')
        && span_id.bytes().any(|b| b != b'0');
    valid.then(|| Parent {
        trace_id: trace_id.to_string(),
        span_id: span_id.to_string(),
    })
}

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
        .and_then(parse_traceparent);
    let trace_id = parent
        .as_ref()
        .map_or_else(|| hex::encode(random_bytes::<16>()), |p| p.trace_id.clone());
    let span_id = hex::encode(random_bytes::<8>());
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "(unmatched)".into());
    let span = tracing::info_span!("request", %trace_id, %span_id,
        parent_id = parent.as_ref().map(|p| p.span_id.as_str()),
        %method, route, status = tracing::field::Empty);
    let started = std::time::Instant::now();
    let mut response = next.run(req).instrument(span.clone()).await;
    let status = response.status().as_u16();
    span.record("status", status);
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    span.in_scope(|| {
        if status >= 500 && status != 503 {
            tracing::warn!(%method, route, status, ms, "request");
        } else {
            tracing::debug!(%method, route, status, ms, "request");
        }
    });
    if let Ok(value) = HeaderValue::from_str(&format!("00-{trace_id}-{span_id}-01")) {
        response.headers_mut().insert("traceresponse", value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_valid_traceparents_only() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            parse_traceparent(good),
            Some(Parent {
                trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
                span_id: "00f067aa0ba902b7".into(),
            })
        );
        // A later version may add fields; 00 may not.
        assert!(parse_traceparent(&format!("01{}-extra", &good[2..])).is_some());
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            &format!("{good}-extra"),
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad:?}");
        }
    }
}
