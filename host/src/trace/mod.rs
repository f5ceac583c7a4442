//! W3C Trace Context: the ids that tie together what one request caused,
//! in the logs and in an OTLP collector ([`otlp`]).
//!
//! A request's `request` span gets its ids here ([`begin`]): it joins the
//! caller's trace when the caller sent a valid `traceparent`, and starts a
//! trace of its own otherwise. The request then runs inside [`scope`], so
//! anything that outlives it can carry its ids: a store that queues an end
//! job reads [`current`] and stores it with the job, and the end worker's
//! `end_job` span continues that trace, as a child of the request that
//! ended the session, seconds or hours later and on whichever host claims
//! the job.
//!
//! With OTLP export on, the ids are the exported spans' own (the
//! OpenTelemetry layer makes them, and its sampler sets the `sampled`
//! flag); without it, they are drawn here. Either way a span's log lines
//! carry the same `trace_id` that a collector shows.

use std::future::Future;

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState,
};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::ids::random_bytes;

pub mod otlp;

/// A span's place in a trace: its trace id (32 lowercase hex digits), its
/// own span id (16) and whether the trace is sampled (exported), as a
/// `traceparent` header carries them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: String,
    pub span_id: String,
    /// The `sampled` flag: the trace is recorded and exported. With
    /// `[log.otlp] sample_ratio` below 1, a span follows its parent's flag.
    pub sampled: bool,
}

impl TraceParent {
    /// The ids of a `traceparent` header, if it is one (version `00`; an
    /// all-zero trace or span id is invalid, as the specification says).
    /// Unknown later versions are read as `00` where they can be: the
    /// first three fields.
    pub fn parse(header: &str) -> Option<TraceParent> {
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
        let flags = u8::from_str_radix(flags, 16).ok()?;
        valid.then(|| TraceParent {
            trace_id: trace_id.to_string(),
            span_id: span_id.to_string(),
            sampled: flags & 1 == 1,
        })
    }

    /// As a version-00 `traceparent` (or `traceresponse`) header value.
    pub fn header(&self) -> String {
        let flags = if self.sampled { "01" } else { "00" };
        format!("00-{}-{}-{flags}", self.trace_id, self.span_id)
    }

    /// A new trace's ids, sampled.
    fn random() -> TraceParent {
        TraceParent {
            trace_id: hex::encode(random_bytes::<16>()),
            span_id: hex::encode(random_bytes::<8>()),
            sampled: true,
        }
    }

    /// The OpenTelemetry context whose remote parent this is.
    fn otel_context(&self) -> Option<opentelemetry::Context> {
        let trace_id = TraceId::from_hex(&self.trace_id).ok()?;
        let span_id = SpanId::from_hex(&self.span_id).ok()?;
        let flags = if self.sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        let parent = SpanContext::new(trace_id, span_id, flags, true, TraceState::default());
        Some(opentelemetry::Context::new().with_remote_span_context(parent))
    }
}

/// Places `span` in a trace: as a child of `parent` when there is one
/// (the caller's `traceparent`, or the request that queued an end job), at
/// the root of a new trace otherwise. Records the span's `trace_id` and
/// `span_id` fields (declared empty by its creator) and returns them.
///
/// Call it before the span is first entered: the OpenTelemetry layer fixes
/// a span's parent then.
pub fn begin(span: &tracing::Span, parent: Option<&TraceParent>) -> TraceParent {
    if let Some(cx) = parent.and_then(TraceParent::otel_context) {
        // Without the OpenTelemetry layer (no OTLP export) there is no
        // parent to set, and nothing to do.
        let _ = span.set_parent(cx);
    }
    let exported = span.context().span().span_context().clone();
    let ids = if exported.is_valid() {
        TraceParent {
            trace_id: exported.trace_id().to_string(),
            span_id: exported.span_id().to_string(),
            sampled: exported.is_sampled(),
        }
    } else {
        let mut ids = TraceParent::random();
        if let Some(parent) = parent {
            ids.trace_id.clone_from(&parent.trace_id);
            ids.sampled = parent.sampled;
        }
        ids
    };
    span.record("trace_id", ids.trace_id.as_str());
    span.record("span_id", ids.span_id.as_str());
    if let Some(parent) = parent {
        span.record("parent_id", parent.span_id.as_str());
    }
    ids
}

tokio::task_local! {
    static CURRENT: TraceParent;
}

/// The trace of the request this task is serving, if it is serving one:
/// what an end job queued now carries to its `end_job` span.
pub fn current() -> Option<TraceParent> {
    CURRENT.try_with(TraceParent::clone).ok()
}

/// Runs `work` as part of the trace `ids` (see [`current`]).
pub async fn scope<F: Future>(ids: TraceParent, work: F) -> F::Output {
    CURRENT.scope(ids, work).await
}

/// Runs the synchronous `work` as part of the trace `ids`, if any: for a
/// store that does its writes on a thread of its own, on behalf of the
/// task that asked for them.
pub fn sync_scope<R>(ids: Option<TraceParent>, work: impl FnOnce() -> R) -> R {
    match ids {
        Some(ids) => CURRENT.sync_scope(ids, work),
        None => work(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_valid_traceparents_only() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parent = TraceParent::parse(good).unwrap();
        assert_eq!(
            parent,
            TraceParent {
                trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
                span_id: "00f067aa0ba902b7".into(),
                sampled: true,
            }
        );
        assert_eq!(parent.header(), good);
        // The sampled flag is the lowest bit; the others are kept for later.
        let unsampled = TraceParent::parse(&good.replace("-01", "-02")).unwrap();
        assert!(!unsampled.sampled);
        assert!(unsampled.header().ends_with("-00"));
        // A later version may add fields; 00 may not.
        assert!(TraceParent::parse(&format!("01{}-extra", &good[2..])).is_some());
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
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn without_export_a_span_joins_its_parents_trace_with_an_id_of_its_own() {
        let parent = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        let span = tracing::Span::none();
        let ids = begin(&span, parent.as_ref());
        assert_eq!(ids.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(ids.span_id, "00f067aa0ba902b7");
        assert!(ids.sampled);
        let unsampled = TraceParent {
            sampled: false,
            ..parent.clone().unwrap()
        };
        assert!(
            !begin(&span, Some(&unsampled)).sampled,
            "a child keeps its parent's flag"
        );
        let fresh = begin(&span, None);
        assert_eq!(fresh.trace_id.len(), 32);
        assert_ne!(fresh.trace_id, ids.trace_id);
    }

    #[tokio::test]
    async fn the_scope_is_seen_by_the_task_and_by_sync_work_on_its_behalf() {
        assert_eq!(current(), None);
        let ids = TraceParent::random();
        let seen = scope(ids.clone(), async {
            let here = current();
            let there = std::thread::spawn({
                let here = here.clone();
                move || sync_scope(here, current)
            })
            .join()
            .unwrap();
            (here, there)
        })
        .await;
        assert_eq!(seen, (Some(ids.clone()), Some(ids)));
        assert_eq!(current(), None);
    }
}
