//! The end worker: runs `on-session-end` hooks from the store's durable end
//! queue.
//!
//! Whatever ends a session (logout, revocation, eviction, the sweeper) takes
//! it out of the store and queues its end job in one atomic step
//! ([`crate::store::EndJob`]; see [`crate::service::end`]). Every host runs this worker, under its own
//! consumer name. Each tenant's queue is its own: the worker claims each
//! tenant's jobs in turn, at most `ends.max_concurrent_per_tenant` of one
//! tenant's jobs running at once, runs each job's end chain on a task of its
//! own, and acknowledges jobs as they finish ([`scheduler`]). A tenant whose
//! hooks are slow, fail or are flooded fills only its own slots: another
//! tenant's jobs are claimed as soon as its own slots free up, so they wait
//! for no other tenant's jobs, at most for their share of the machine.
//!
//! A job claimed by a host that then dies stays claimed until
//! `ends.reclaim_after_ms` has passed, when the next host to claim takes it
//! over and runs it again with the same end id.
//!
//! A job handed out more than `ends.max_deliveries` times (its hosts kept
//! dying or stalling in it), or whose hooks could not reach the store on
//! its last allowed delivery, goes to the tenant's dead-letter list instead
//! of running again, so it never holds up the queue; so does an entry the
//! store cannot read (the store moves that one itself). A job whose hooks
//! could not reach the store on an earlier delivery, or one of whose hooks
//! was skipped by its plugin's open circuit breaker, is left claimed and
//! runs again after the reclaim time. The acknowledgement says which jobs were
//! still this host's to finish: one that another host finished meanwhile
//! (this host stalled past the reclaim time) is not counted as run here
//! (`superseded`). An acknowledgement that fails is retried on the next
//! round, before that tenant's next claim ([`settle`]).
//!
//! The worker wakes when this host queues a job ([`EndWorker::wake`]) and
//! otherwise polls every `ends.poll_interval_ms`, which is how jobs queued
//! by other hosts' sweepers or abandoned by dead hosts are picked up.
//!
//! On shutdown it keeps claiming and running jobs for at most
//! `ends.shutdown_drain_ms`, and stops then for real: hooks still running at
//! that deadline are abandoned, unacknowledged. Nothing is lost: their jobs
//! stay claimed in the durable queue, and another host (or this one, after a
//! restart) takes them over after `ends.reclaim_after_ms` and runs them with
//! the same end id, so the audit records they wrote are not written twice.
//! (With the memory store the queue dies with the process.)

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::config::EndsConfig;
use crate::store::EndQueue;
use crate::tenant::TenantRegistry;
use crate::webhooks::Webhooks;

mod scheduler;
mod settle;
#[cfg(test)]
mod tests;

use scheduler::Scheduler;

/// The per-host state of the end worker.
#[derive(Debug)]
pub struct EndWorker {
    config: EndsConfig,
    consumer: String,
    wake: Notify,
    ran: AtomicU64,
    reclaimed: AtomicU64,
    superseded: AtomicU64,
    dead_lettered: AtomicU64,
}

/// Counters of one host's end worker since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct EndWorkerStats {
    /// End jobs whose hooks this host ran and acknowledged.
    pub ran: u64,
    /// Of those, jobs taken over from a host that did not finish them.
    pub reclaimed: u64,
    /// Jobs whose hooks this host ran to the end after another host had
    /// finished them (this host stalled past the reclaim time); not in
    /// `ran`.
    pub superseded: u64,
    /// Jobs this host moved to the dead-letter list.
    pub dead_lettered: u64,
}

impl EndWorker {
    /// A worker with `config`, under the configured consumer name or a new
    /// unique one.
    pub fn new(config: EndsConfig) -> Self {
        let consumer = config.consumer.clone().unwrap_or_else(default_consumer);
        EndWorker {
            config,
            consumer,
            wake: Notify::new(),
            ran: AtomicU64::new(0),
            reclaimed: AtomicU64::new(0),
            superseded: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
        }
    }

    /// This host's consumer name in the end queue.
    pub fn consumer(&self) -> &str {
        &self.consumer
    }

    /// Asks the worker to look at the queue now (this host just queued jobs).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// The worker's counters so far.
    pub fn stats(&self) -> EndWorkerStats {
        EndWorkerStats {
            ran: self.ran.load(Ordering::Relaxed),
            reclaimed: self.reclaimed.load(Ordering::Relaxed),
            superseded: self.superseded.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
        }
    }
}

/// `<hostname>-<pid>-<8 random hex digits>`: unique per process, and still
/// readable in `XINFO CONSUMERS`.
fn default_consumer() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into());
    format!(
        "{host}-{}-{}",
        std::process::id(),
        crate::ids::short_nonce()
    )
}

/// What the end worker works on: the tenants (whose chains run the hooks)
/// and the queue.
#[derive(Clone)]
pub struct EndWork {
    pub worker: Arc<EndWorker>,
    pub tenants: Arc<TenantRegistry>,
    pub queue: Arc<dyn EndQueue>,
    /// Where each job queues its `session.ended` webhook deliveries, before
    /// its hooks run; none: no webhooks.
    pub webhooks: Option<Arc<Webhooks>>,
}

/// Works the end queue until `stop` is cancelled, then drains it for at most
/// `ends.shutdown_drain_ms`; hooks still running then are abandoned (their
/// jobs stay claimed, to be taken over after the reclaim time).
pub async fn run(state: EndWork, stop: CancellationToken) {
    let worker = state.worker.clone();
    let mut poll =
        tokio::time::interval(Duration::from_millis(worker.config.poll_interval_ms.max(1)));
    // A poll that came due while the worker was busy is one poll, not many.
    poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut scheduler = Scheduler::new(state.clone());
    let mut pruned_at = Instant::now();
    let mut fresh = true;
    loop {
        scheduler.round(fresh).await;
        fresh = false;
        if pruned_at.elapsed() >= PRUNE_EVERY {
            pruned_at = Instant::now();
            prune_consumers(&state).await;
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = worker.wake.notified() => fresh = true,
            _ = poll.tick() => fresh = true,
            Some(done) = scheduler.next_done() => scheduler.reap(done),
        }
    }
    let until = Instant::now() + Duration::from_millis(worker.config.shutdown_drain_ms);
    if tokio::time::timeout_at(until.into(), scheduler.drain())
        .await
        .is_err()
    {
        let abandoned = scheduler.abandon();
        if abandoned > 0 {
            tracing::warn!(
                jobs = abandoned,
                reclaim_after_ms = worker.config.reclaim_after_ms,
                "end hooks still running at ends.shutdown_drain_ms are abandoned; \
                 their jobs stay claimed and run again, with the same end ids, \
                 once reclaim_after_ms has passed"
            );
        }
    }
    tracing::info!(ran = scheduler.ran(), "end worker stopped");
}

/// How often a host forgets the end-queue consumers of hosts that are gone.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// How long a consumer must have been silent (and hold nothing) to be
/// forgotten: live hosts claim every `poll_interval_ms`.
const PRUNE_IDLE_MS: u64 = 3_600_000;

/// Forgets, for every tenant with end hooks, the consumers of hosts that
/// stopped or died (each host gets a new consumer name when it starts).
async fn prune_consumers(state: &EndWork) {
    let tenants = state.tenants.current();
    for tenant in tenants.iter().filter(|t| t.queues_ends()) {
        match state
            .queue
            .prune_end_consumers(&tenant.name, &state.worker.consumer, PRUNE_IDLE_MS)
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(tenant = %tenant.name, consumers = n,
                "forgot the end-queue consumers of hosts that are gone"),
            Err(e) => tracing::warn!(tenant = %tenant.name, "pruning end consumers failed: {e}"),
        }
    }
}
