//! What a tenant reads about itself: its audit stream and end queue; what
//! the operator reads about every tenant; and whether this host is ready
//! to serve.

use std::time::Duration;

use super::{Error, Result};
use crate::app::App;
use crate::ends::EndWorkerStats;
use crate::session::now_ms;
use crate::store::{AuditPage, DeadLetters, EndQueueStats, OutboxStats};
use crate::tenant::Tenant;

/// How long readiness waits for the store to answer.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// A page of the tenant's audit stream, oldest first: at most `limit`
/// records after the record id `after` (from the start when none).
pub async fn audit(
    app: &App,
    tenant: &Tenant,
    after: Option<&str>,
    limit: usize,
) -> Result<AuditPage> {
    Ok(app.audit.audit_page(&tenant.name, after, limit).await?)
}

/// What `GET /v1/ends` shows: the tenant's end queue, its dead letters
/// (the newest `dead_shown`) and this host's end-worker counters.
#[derive(Debug, Clone)]
pub struct EndQueueReport {
    pub queue: EndQueueStats,
    pub dead: DeadLetters,
    pub worker: EndWorkerStats,
}

/// The tenant's end queue, its newest `dead_shown` dead letters, and this
/// host's end-worker counters.
pub async fn end_queue(app: &App, tenant: &Tenant, dead_shown: usize) -> Result<EndQueueReport> {
    let queue = app.end_queue.end_queue(&tenant.name).await?;
    let dead = app.end_queue.dead_letters(&tenant.name, dead_shown).await?;
    Ok(EndQueueReport {
        queue,
        dead,
        worker: app.ends.stats(),
    })
}

/// What the operator's overview shows of one tenant's stored state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredState {
    /// Sessions stored (see [`crate::store::SessionStore::stored_sessions`]).
    pub sessions: u64,
    pub ends: EndQueueStats,
    /// Dead-lettered end jobs.
    pub dead_letters: u64,
    /// The webhook outbox; none when the tenant has no webhooks.
    pub outbox: Option<OutboxStats>,
}

/// The tenant's stored sessions, end queue and webhook outbox: four cheap
/// reads, made at once.
pub async fn stored_state(app: &App, tenant: &Tenant) -> Result<StoredState> {
    let outbox = async {
        if tenant.config.webhooks.is_empty() {
            Ok(None)
        } else {
            app.webhooks
                .outbox
                .outbox_stats(&tenant.name, now_ms())
                .await
                .map(Some)
        }
    };
    let (sessions, ends, dead, outbox) = tokio::join!(
        app.sessions.stored_sessions(&tenant.name),
        app.end_queue.end_queue(&tenant.name),
        app.end_queue.dead_letters(&tenant.name, 0),
        outbox,
    );
    Ok(StoredState {
        sessions: sessions?,
        ends: ends?,
        dead_letters: dead?.count,
        outbox: outbox?,
    })
}

/// Readiness: the session store answers a ping within two seconds. Any
/// failure of the ping means not ready.
pub async fn ready(app: &App) -> Result<()> {
    match tokio::time::timeout(READY_TIMEOUT, app.sessions.ping()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Error::StoreUnavailable(e.to_string())),
        Err(_) => Err(Error::StoreUnavailable(
            "the store did not answer within 2 s".into(),
        )),
    }
}
