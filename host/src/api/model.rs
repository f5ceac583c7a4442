//! What the API answers with: sessions, summaries, audit records. Times are
//! RFC 3339 UTC strings with a `*_ms` twin (milliseconds since the epoch).
//! A session's private parts (`token_hash`, plugin state) never appear.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::session::{AuditRecord, Millis, SessionRecord, SessionSummary};
use crate::store::DeadLetter;

pub use crate::session::rfc3339;

/// A session as the API shows it (as in Zato's `Session.get`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SessionView {
    /// The session token: its id in this API and its secret. Only in the
    /// answers of create and authenticate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The public id, as plugins, logs and audit records show it. It stays
    /// the same when the token rotates.
    pub public_id: String,
    pub user: Option<String>,
    pub roles: Vec<String>,
    /// The data shared with the plugins (a JSON object).
    #[schema(value_type = Object)]
    pub data: Map<String, Value>,
    pub created_at: String,
    pub created_at_ms: Millis,
    pub last_seen_at: String,
    pub last_seen_at_ms: Millis,
    /// When the session ends at the latest: the earlier of both deadlines.
    pub expires_at: String,
    pub expires_at_ms: Millis,
    /// The end of the absolute lifetime.
    pub absolute_expires_at: String,
    pub absolute_expires_at_ms: Millis,
    /// When the idle timeout ends it, if nothing touches it.
    pub idle_expires_at: String,
    pub idle_expires_at_ms: Millis,
    pub idle_timeout_seconds: u64,
    /// Where the session was created from.
    pub remote_addr: Option<String>,
    pub user_agent: Option<String>,
    pub device: Option<String>,
    /// Grows by one with every change; the ETag is `"<version>"`.
    pub version: u64,
}

impl SessionView {
    pub fn of(record: &SessionRecord, token: Option<&str>) -> SessionView {
        SessionView {
            id: token.map(String::from),
            public_id: record.public_id.clone(),
            user: record.user.clone(),
            roles: record.roles.clone(),
            data: record.data.clone(),
            created_at: rfc3339(record.created_at),
            created_at_ms: record.created_at,
            last_seen_at: rfc3339(record.last_seen_at),
            last_seen_at_ms: record.last_seen_at,
            expires_at: rfc3339(record.expires_at()),
            expires_at_ms: record.expires_at(),
            absolute_expires_at: rfc3339(record.absolute_expires_at),
            absolute_expires_at_ms: record.absolute_expires_at,
            idle_expires_at: rfc3339(record.idle_expires_at()),
            idle_expires_at_ms: record.idle_expires_at(),
            idle_timeout_seconds: record.idle_timeout_ms / 1000,
            remote_addr: record.client.remote_addr.clone(),
            user_agent: record.client.user_agent.clone(),
            device: record.client.device.clone(),
            version: record.version,
        }
    }
}

/// The ETag of a session version.
pub fn etag(version: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).unwrap_or(HeaderValue::from_static("\"0\""))
}

/// A JSON response with an ETag for the session at `version`.
pub fn with_etag(status: StatusCode, version: u64, body: &impl Serialize) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    response.headers_mut().insert(header::ETAG, etag(version));
    response
}

/// A session response: JSON body plus ETag.
pub fn session_response(
    status: StatusCode,
    record: &SessionRecord,
    token: Option<&str>,
) -> Response {
    with_etag(status, record.version, &SessionView::of(record, token))
}

/// One of a user's active sessions, as the `on-list-active` chain left it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SummaryView {
    pub public_id: String,
    pub roles: Vec<String>,
    pub created_at: String,
    pub created_at_ms: Millis,
    pub last_seen_at: String,
    pub last_seen_at_ms: Millis,
    pub expires_at: String,
    pub expires_at_ms: Millis,
    pub remote_addr: Option<String>,
    pub user_agent: Option<String>,
    pub device: Option<String>,
    /// What plugins added to the listing.
    #[schema(value_type = Object)]
    pub annotations: Map<String, Value>,
}

impl From<SessionSummary> for SummaryView {
    fn from(s: SessionSummary) -> SummaryView {
        SummaryView {
            public_id: s.id,
            roles: s.roles,
            created_at: rfc3339(s.created_at),
            created_at_ms: s.created_at,
            last_seen_at: rfc3339(s.last_seen_at),
            last_seen_at_ms: s.last_seen_at,
            expires_at: rfc3339(s.expires_at),
            expires_at_ms: s.expires_at,
            remote_addr: s.client.remote_addr,
            user_agent: s.client.user_agent,
            device: s.client.device,
            annotations: s.annotations,
        }
    }
}

/// A user's active sessions.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionList {
    pub sessions: Vec<SummaryView>,
}

/// How many sessions a revocation ended.
#[derive(Debug, Serialize, ToSchema)]
pub struct Ended {
    pub ended: usize,
}

/// A plugin's answer to a message.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageReply {
    /// What the plugin answered (any JSON value).
    pub reply: Value,
    /// The plugin that answered.
    pub plugin: String,
    /// The session's version after the message.
    pub version: u64,
}

/// One record of the tenant's audit stream.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditView {
    /// The record's position in the stream; pass it as `after` to read on.
    pub id: String,
    pub at: String,
    pub at_ms: Millis,
    pub plugin: String,
    /// The public id of the session the record is about, if any.
    pub session: Option<String>,
    /// What the plugin wrote (a JSON object).
    #[schema(value_type = Object)]
    pub record: Value,
}

impl From<AuditRecord> for AuditView {
    fn from(r: AuditRecord) -> AuditView {
        AuditView {
            id: r.id,
            at: rfc3339(r.at),
            at_ms: r.at,
            plugin: r.plugin,
            session: r.session,
            record: r.record,
        }
    }
}

/// A page of the audit stream.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPageView {
    pub records: Vec<AuditView>,
    /// Pass as `after` for the next page; null on the last page.
    pub next: Option<String>,
}

/// One plugin of the tenant's chain.
#[derive(Debug, Serialize, ToSchema)]
pub struct PluginView {
    /// The plugin's name in the chain.
    pub name: String,
    /// What the component's `describe` says.
    pub describe: DescribeView,
    pub hooks: Vec<String>,
    /// The capabilities the component imports.
    pub capabilities: Vec<String>,
    /// `deny` (fail closed) or `allow` (fail open).
    pub on_error: String,
    /// Calls made since the server started.
    pub calls: u64,
    /// Failures by kind (`trap`, `fuel-exhausted`, `invalid-output`,
    /// `circuit-open`, ...).
    #[schema(value_type = Object)]
    pub failures: Map<String, Value>,
    /// The plugin's `log.log` lines dropped over its log rate
    /// (`limits.log_lines_per_second`) on this host.
    pub log_lines_dropped: u64,
    /// The host's lines about the plugin's failed calls dropped over their
    /// rate (one a second, 20 at once) on this host.
    pub failure_lines_dropped: u64,
    /// The plugin's circuit breaker on this host.
    pub circuit: CircuitView,
    /// The wall time and fuel of its latest calls on this host.
    pub recent: RecentCostView,
}

/// The cost of a plugin's latest calls that ran on this host (at most
/// 1,024; calls skipped before they ran are not among them).
#[derive(Debug, Serialize, ToSchema)]
pub struct RecentCostView {
    /// How many calls the percentiles are over.
    pub calls: u64,
    /// Wall time per call, in microseconds (the time on the store included).
    pub wall_us: PercentilesView,
    /// Fuel (wasm instructions, roughly) per call.
    pub fuel: PercentilesView,
}

/// Nearest-rank percentiles; all 0 when there were no calls.
#[derive(Debug, Serialize, ToSchema)]
pub struct PercentilesView {
    pub p50: u64,
    pub p99: u64,
    pub max: u64,
}

impl From<crate::runtime::Percentiles> for PercentilesView {
    fn from(p: crate::runtime::Percentiles) -> Self {
        PercentilesView {
            p50: p.p50,
            p99: p.p99,
            max: p.max,
        }
    }
}

impl From<crate::runtime::RecentCost> for RecentCostView {
    fn from(r: crate::runtime::RecentCost) -> Self {
        RecentCostView {
            calls: r.calls,
            wall_us: r.wall_us.into(),
            fuel: r.fuel.into(),
        }
    }
}

/// A plugin's circuit breaker: open after most of its recent calls failed,
/// when its calls are skipped (they fail `circuit-open`).
#[derive(Debug, Serialize, ToSchema)]
pub struct CircuitView {
    /// `closed`, `open` or `probing` (one call let through to try it).
    pub state: String,
    /// Times it opened since the server started.
    pub opened: u64,
    /// While open: milliseconds until the next probe call.
    pub retry_in_ms: Option<u64>,
}

/// A component's own name and version.
#[derive(Debug, Serialize, ToSchema)]
pub struct DescribeView {
    pub name: String,
    pub version: String,
}

/// The tenant's plugins, in chain order.
#[derive(Debug, Serialize, ToSchema)]
pub struct PluginList {
    pub plugins: Vec<PluginView>,
}

/// The tenant's end queue, and this host's end worker.
#[derive(Debug, Serialize, ToSchema)]
pub struct EndQueueView {
    /// Ended sessions whose end hooks no host has started yet.
    pub waiting: u64,
    /// Jobs a host has claimed and not yet finished (a host that died holds
    /// its jobs until `ends.reclaim_after_ms` has passed).
    pub claimed: u64,
    /// This host's consumer name in the queue.
    pub consumer: String,
    /// End jobs this host ran since it started (every tenant).
    pub ran: u64,
    /// Of those, jobs taken over from a host that did not finish them.
    pub reclaimed: u64,
    /// End jobs this host ran to the end after another host had finished
    /// them (this host stalled past the reclaim time); not in `ran`.
    pub superseded: u64,
    /// End jobs this host moved to the dead-letter list (every tenant).
    pub dead_lettered: u64,
    /// End jobs in the tenant's dead-letter list: their hooks will not run
    /// again (they could not be read, or were handed out more than
    /// `ends.max_deliveries` times).
    pub dead: u64,
    /// The newest of them, newest first (at most 10).
    pub dead_letters: Vec<DeadLetterView>,
}

/// An end job in the tenant's dead-letter list.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterView {
    /// The job's id in the end queue it left.
    pub id: String,
    /// The end id its hooks were given (`<public id>.<id>`); null when its
    /// record could not be read.
    pub end_id: Option<String>,
    /// Why the session ended (`logout`, `expired`...); null when unknown.
    pub reason: Option<String>,
    /// Why the job was moved to the dead-letter list.
    pub why: String,
    /// When it was moved there.
    pub at: String,
    pub at_ms: Millis,
    /// How many times it had been handed out.
    pub deliveries: u64,
}

impl From<DeadLetter> for DeadLetterView {
    fn from(d: DeadLetter) -> DeadLetterView {
        DeadLetterView {
            id: d.id,
            end_id: d.end_id,
            reason: d.reason.map(|r| r.as_str().to_string()),
            why: d.why,
            at: rfc3339(d.at),
            at_ms: d.at,
            deliveries: d.deliveries,
        }
    }
}

/// A health answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    pub status: String,
    /// Tenants whose plugins did not load (they answer 503; every other
    /// tenant serves), with the plugin and the error. Left out when none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub degraded: Vec<DegradedTenant>,
}

/// A tenant that cannot serve, in [`Health`].
#[derive(Debug, Serialize, ToSchema)]
pub struct DegradedTenant {
    pub tenant: String,
    pub plugin: String,
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_521_044_875_123), "2018-03-14T16:27:55.123Z");
        assert_eq!(rfc3339(u64::MAX), "9999-12-31T23:59:59.999Z");
    }
}

/// The tenant's webhook endpoints and outbox.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhooksView {
    /// The endpoints, as configured (never their secrets).
    pub endpoints: Vec<WebhookView>,
    /// Deliveries waiting in the outbox (shared by every host): due,
    /// leased by a host, or waiting for a retry.
    pub held: u64,
    /// Of those, due to be sent now.
    pub due: u64,
    /// When the oldest waiting delivery was queued; none when none waits.
    pub oldest_queued_at: Option<String>,
    pub oldest_queued_at_ms: Option<Millis>,
}

/// One webhook endpoint.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookView {
    pub url: String,
    /// The events sent there (`session.created`, `session.ended`,
    /// `session.idle-warning`).
    pub events: Vec<String>,
    /// What this host's attempts at it came to since it started (each host
    /// sends its own share of the deliveries).
    pub this_host: EndpointStateView,
}

/// What one host's attempts at a webhook endpoint came to.
#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointStateView {
    /// Deliveries the endpoint took (a 2xx answer).
    pub sent: u64,
    /// Attempts that failed; each is retried, or given up on.
    pub failed: u64,
    /// Deliveries given up on after `webhooks.max_attempts`.
    pub gave_up: u64,
    /// Failed attempts since the last delivery it took.
    pub failing_in_a_row: u64,
    /// When it last took a delivery (RFC 3339).
    pub last_sent_at: Option<String>,
    /// The latest failed attempt, with its error.
    pub last_failure: Option<LastFailureView>,
}

/// A failed attempt at a webhook delivery.
#[derive(Debug, Serialize, ToSchema)]
pub struct LastFailureView {
    /// When (RFC 3339).
    pub at: String,
    /// The delivery's `webhook-id`.
    pub message_id: String,
    /// Its attempts so far, this one included.
    pub attempt: u32,
    /// Why it failed, such as `the endpoint answered 503 Service Unavailable`.
    pub error: String,
}

impl From<crate::webhooks::EndpointState> for EndpointStateView {
    fn from(s: crate::webhooks::EndpointState) -> Self {
        EndpointStateView {
            sent: s.sent,
            failed: s.failed,
            gave_up: s.gave_up,
            failing_in_a_row: s.failing_in_a_row,
            last_sent_at: s.last_sent_at.map(crate::session::rfc3339),
            last_failure: s.last_failure.map(|f| LastFailureView {
                at: crate::session::rfc3339(f.at),
                message_id: f.message_id,
                attempt: f.attempt,
                error: f.error,
            }),
        }
    }
}
