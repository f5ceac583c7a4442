//! The end worker: runs `on-session-end` hooks from the store's durable end
//! queue.
//!
//! Whatever ends a session (logout, revocation, eviction, the sweeper) takes
//! it out of the store and queues its end job in one atomic step
//! ([`crate::store::EndJob`]; see [`crate::service::end`]). Every host runs this worker, under its own
//! consumer name. The worker claims jobs in batches, runs each job's end
//! chain on a task of its own, and acknowledges the batch once every hook in
//! it has returned. A job claimed by a host that then dies stays claimed
//! until `ends.reclaim_after_ms` has passed, when the next host to claim
//! takes it over and runs it again with the same end id.
//!
//! The worker wakes when this host queues a job ([`EndWorker::wake`]) and
//! otherwise polls every `ends.poll_interval_ms`, which is how jobs queued
//! by other hosts' sweepers or abandoned by dead hosts are picked up. On
//! shutdown it stops claiming after `ends.shutdown_drain_ms`; every job it
//! claimed is finished and acknowledged before it returns.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::EndsConfig;
use crate::session::now_ms;
use crate::store::{EndJob, EndQueue};
use crate::tenant::{Tenant, TenantRegistry};

/// The per-host state of the end worker.
#[derive(Debug)]
pub struct EndWorker {
    config: EndsConfig,
    consumer: String,
    wake: Notify,
    ran: AtomicU64,
    reclaimed: AtomicU64,
    /// Jobs whose hooks ran but whose acknowledgement failed, by tenant;
    /// acknowledged again on the next drain.
    unacked: Mutex<HashMap<String, Vec<String>>>,
}

/// Counters of one host's end worker since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct EndWorkerStats {
    /// End jobs whose hooks this host ran and acknowledged.
    pub ran: u64,
    /// Of those, jobs taken over from a host that did not finish them.
    pub reclaimed: u64,
}

impl EndWorker {
    pub fn new(config: EndsConfig) -> Self {
        let consumer = config.consumer.clone().unwrap_or_else(default_consumer);
        EndWorker {
            config,
            consumer,
            wake: Notify::new(),
            ran: AtomicU64::new(0),
            reclaimed: AtomicU64::new(0),
            unacked: Mutex::new(HashMap::new()),
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

    pub fn stats(&self) -> EndWorkerStats {
        EndWorkerStats {
            ran: self.ran.load(Ordering::Relaxed),
            reclaimed: self.reclaimed.load(Ordering::Relaxed),
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
}

/// Works the end queue until `stop` is cancelled, then drains it for at most
/// `ends.shutdown_drain_ms` and returns with nothing claimed and unfinished.
pub async fn run(state: EndWork, stop: CancellationToken) {
    let worker = state.worker.clone();
    let period = Duration::from_millis(worker.config.poll_interval_ms.max(1));
    let mut pruned_at = Instant::now();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = worker.wake.notified() => {}
            _ = tokio::time::sleep(period) => {}
        }
        drain(&state, None).await;
        if pruned_at.elapsed() >= PRUNE_EVERY {
            pruned_at = Instant::now();
            prune_consumers(&state).await;
        }
    }
    let until = Instant::now() + Duration::from_millis(worker.config.shutdown_drain_ms);
    let ran = drain(&state, Some(until)).await;
    tracing::info!(ran, "end worker stopped");
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

/// Claims and runs end jobs of every tenant with end hooks until the queue
/// has none left for this host or `until` has passed (checked before each
/// claim: a claimed batch is always finished). Returns how many jobs ran.
pub async fn drain(state: &EndWork, until: Option<Instant>) -> usize {
    let worker = &state.worker;
    let batch = worker.config.batch.max(1);
    let mut ran = 0;
    let tenants = state.tenants.current();
    for tenant in tenants.iter().filter(|t| t.queues_ends()) {
        let unacked = worker.take_unacked(&tenant.name);
        if !unacked.is_empty() && !ack(state, tenant, unacked).await {
            continue;
        }
        loop {
            if until.is_some_and(|u| Instant::now() >= u) {
                return ran;
            }
            let jobs = match state
                .queue
                .claim_ends(
                    &tenant.name,
                    &worker.consumer,
                    batch,
                    worker.config.reclaim_after_ms,
                    now_ms(),
                )
                .await
            {
                Ok(jobs) => jobs,
                Err(e) => {
                    tracing::warn!(tenant = %tenant.name, "claiming end jobs failed: {e}");
                    break;
                }
            };
            if jobs.is_empty() {
                break;
            }
            let full = jobs.len() >= batch;
            ran += run_jobs(state, tenant, jobs).await;
            if !full {
                break;
            }
        }
    }
    ran
}

/// Runs the end chain of each job, then acknowledges the finished ones.
/// A job whose hooks could not reach the store is left claimed: after the
/// reclaim time a host (maybe this one) runs it again with the same end id,
/// so the audit records it could not write are written then, once.
async fn run_jobs(state: &EndWork, tenant: &Arc<Tenant>, jobs: Vec<EndJob>) -> usize {
    let mut tasks = Vec::with_capacity(jobs.len());
    for job in jobs {
        if job.reclaimed {
            tracing::warn!(tenant = %tenant.name, session = %job.record.public_id,
                end_id = %job.end_id, "taking over an end job another host did not finish");
        }
        let (id, reclaimed) = (job.id.clone(), job.reclaimed);
        let tenant = tenant.clone();
        let task = tokio::spawn(async move {
            tracing::info!(tenant = %tenant.name, session = %job.record.public_id,
                reason = job.reason.as_str(), end_id = %job.end_id, "running end hooks");
            tenant
                .chain
                .session_end(&job.record, job.reason, &job.end_id, job.ended_at)
                .await
        });
        tasks.push((id, reclaimed, task));
    }
    let (mut done, mut reclaimed, mut retry) = (Vec::new(), 0, 0);
    for (id, was_reclaimed, task) in tasks {
        match task.await {
            Ok(outcome) if outcome.store_unavailable => {
                retry += 1;
                continue;
            }
            Ok(_) => {}
            Err(e) => tracing::error!("an on-session-end task failed: {e}"),
        }
        reclaimed += u64::from(was_reclaimed);
        done.push(id);
    }
    if retry > 0 {
        tracing::warn!(tenant = %tenant.name, jobs = retry,
            "end hooks could not reach the store; running them again after the reclaim time");
    }
    let n = done.len();
    let worker = &state.worker;
    worker.ran.fetch_add(n as u64, Ordering::Relaxed);
    worker.reclaimed.fetch_add(reclaimed, Ordering::Relaxed);
    ack(state, tenant, done).await;
    n
}

/// Acknowledges finished jobs; when the store cannot be reached, keeps them
/// for the next drain and returns false. (Should this host stop before
/// then, another host runs them again after the reclaim time.)
async fn ack(state: &EndWork, tenant: &Tenant, ids: Vec<String>) -> bool {
    match state.queue.ack_ends(&tenant.name, &ids).await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(tenant = %tenant.name, jobs = ids.len(),
                "acknowledging end jobs failed; retrying on the next round: {e}");
            state
                .worker
                .unacked
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(tenant.name.clone())
                .or_default()
                .extend(ids);
            false
        }
    }
}

impl EndWorker {
    fn take_unacked(&self, tenant: &str) -> Vec<String> {
        self.unacked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(tenant)
            .unwrap_or_default()
    }
}
