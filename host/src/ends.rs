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
//! A job handed out more than `ends.max_deliveries` times (its hosts kept
//! dying or stalling in it), or whose hooks could not reach the store on
//! its last allowed delivery, goes to the tenant's dead-letter list instead
//! of running again, so it never holds up the queue; so does an entry the
//! store cannot read (the store moves that one itself). The acknowledgement
//! says which jobs were still this host's to finish: one that another host
//! finished meanwhile (this host stalled past the reclaim time) is not
//! counted as run here.
//!
//! The worker wakes when this host queues a job ([`EndWorker::wake`]) and
//! otherwise polls every `ends.poll_interval_ms`, which is how jobs queued
//! by other hosts' sweepers or abandoned by dead hosts are picked up. On
//! shutdown it stops claiming after `ends.shutdown_drain_ms`; every job it
//! claimed is finished and acknowledged before it returns.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::EndsConfig;
use crate::runtime::{EndOutcome, FailureKind};
use crate::session::now_ms;
use crate::store::{EndJob, EndQueue, Poison};
use crate::tenant::{Tenant, TenantRegistry};

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
    /// Jobs whose hooks ran but whose acknowledgement failed, by tenant;
    /// acknowledged again on the next drain.
    unacked: Mutex<HashMap<String, Vec<Finished>>>,
}

/// A job whose hooks ran, to acknowledge.
#[derive(Debug, Clone)]
struct Finished {
    id: String,
    reclaimed: bool,
    /// The hooks' failures in this run, by plugin, if any. They count in
    /// the plugins' stats only if this run turns out to be the one that
    /// finished the job.
    failed: Vec<(String, FailureKind)>,
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
/// claim: a claimed batch is always finished). Returns how many jobs ran
/// (and were still this host's to acknowledge).
pub async fn drain(state: &EndWork, until: Option<Instant>) -> usize {
    let worker = &state.worker;
    let batch = worker.config.batch.max(1);
    let mut ran = 0;
    let tenants = state.tenants.current();
    for tenant in tenants.iter().filter(|t| t.queues_ends()) {
        let unacked = worker.take_unacked(&tenant.name);
        if !unacked.is_empty() {
            ran += ack(state, tenant, unacked).await;
            if worker.has_unacked(&tenant.name) {
                continue;
            }
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

/// Runs the end chain of each job, then acknowledges the finished ones;
/// returns how many of those were still this host's (see [`settle`]).
/// A job whose hooks could not reach the store is left claimed: after the
/// reclaim time a host (maybe this one) runs it again with the same end id,
/// so the audit records it could not write are written then, once. A job
/// past `ends.max_deliveries` goes to the dead-letter list instead.
async fn run_jobs(state: &EndWork, tenant: &Arc<Tenant>, jobs: Vec<EndJob>) -> usize {
    let max_deliveries = state.worker.config.max_deliveries.max(1);
    let mut poison = Vec::new();
    let mut tasks = Vec::with_capacity(jobs.len());
    for job in jobs {
        if job.deliveries > max_deliveries {
            poison.push(Poison {
                id: job.id,
                why: format!(
                    "handed out {} times without its hooks finishing",
                    job.deliveries - 1
                ),
            });
            continue;
        }
        if job.reclaimed {
            tracing::warn!(tenant = %tenant.name, session = %job.record.public_id,
                end_id = %job.end_id, "taking over an end job another host did not finish");
        }
        let (id, reclaimed, deliveries) = (job.id.clone(), job.reclaimed, job.deliveries);
        let tenant = tenant.clone();
        let task = tokio::spawn(async move {
            tracing::info!(tenant = %tenant.name, session = %job.record.public_id,
                reason = job.reason.as_str(), end_id = %job.end_id, "running end hooks");
            tenant
                .chain
                .session_end(&job.record, job.reason, &job.end_id, job.ended_at)
                .await
        });
        let finished = Finished {
            id,
            reclaimed,
            failed: Vec::new(),
        };
        tasks.push((finished, deliveries, task));
    }
    let (mut done, mut retry) = (Vec::new(), 0);
    for (mut finished, deliveries, task) in tasks {
        match task.await {
            Ok(outcome) if outcome.store_unavailable => {
                if deliveries >= max_deliveries {
                    // The last run this job gets: what it failed with counts.
                    tenant.chain.count_end_failures(&failures_of(&outcome));
                    poison.push(Poison {
                        id: finished.id,
                        why: format!(
                            "its hooks could not reach the store on each of {deliveries} \
                             deliveries"
                        ),
                    });
                } else {
                    retry += 1;
                }
                continue;
            }
            Ok(outcome) => {
                finished.failed = failures_of(&outcome);
            }
            Err(e) => tracing::error!("an on-session-end task failed: {e}"),
        }
        done.push(finished);
    }
    if retry > 0 {
        tracing::warn!(tenant = %tenant.name, jobs = retry,
            "end hooks could not reach the store; running them again after the reclaim time");
    }
    bury(state, tenant, poison).await;
    ack(state, tenant, done).await
}

/// Which plugin failed with which kind, in an end run.
fn failures_of(outcome: &EndOutcome) -> Vec<(String, FailureKind)> {
    outcome
        .failures
        .iter()
        .map(|f| (f.plugin.clone(), f.kind))
        .collect()
}

/// Moves jobs to the tenant's dead-letter list. When the store cannot be
/// reached they stay claimed, and the next host to take them over moves
/// them (their delivery count is past the maximum by then).
async fn bury(state: &EndWork, tenant: &Tenant, poison: Vec<Poison>) {
    if poison.is_empty() {
        return;
    }
    for p in &poison {
        tracing::warn!(tenant = %tenant.name, job = %p.id, why = %p.why,
            "moving an end job to the dead-letter list; its hooks will not run again");
    }
    match state
        .queue
        .dead_letter(&tenant.name, &poison, now_ms())
        .await
    {
        Ok(moved) => {
            state
                .worker
                .dead_lettered
                .fetch_add(moved, Ordering::Relaxed);
        }
        Err(e) => tracing::warn!(tenant = %tenant.name, jobs = poison.len(),
            "moving end jobs to the dead-letter list failed; retrying when they are taken over: {e}"),
    }
}

/// Acknowledges finished jobs and counts them ([`settle`]); when the store
/// cannot be reached, keeps them for the next drain and returns 0. (Should
/// this host stop before then, another host runs them again after the
/// reclaim time.)
async fn ack(state: &EndWork, tenant: &Tenant, finished: Vec<Finished>) -> usize {
    if finished.is_empty() {
        return 0;
    }
    let ids: Vec<String> = finished.iter().map(|f| f.id.clone()).collect();
    match state.queue.ack_ends(&tenant.name, &ids).await {
        Ok(taken) => settle(&state.worker, tenant, &finished, &taken),
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
                .extend(finished);
            0
        }
    }
}

/// Counts acknowledged jobs: those the acknowledgement took out of the
/// queue (`taken`) ran here; the others had been finished by another host
/// that took them over while this one stalled, and count as superseded.
/// Returns how many ran.
fn settle(worker: &EndWorker, tenant: &Tenant, finished: &[Finished], taken: &[String]) -> usize {
    let taken: HashSet<&str> = taken.iter().map(String::as_str).collect();
    let (mut ran, mut reclaimed, mut superseded) = (0, 0, 0);
    for f in finished {
        if taken.contains(f.id.as_str()) {
            tenant.chain.count_end_failures(&f.failed);
            ran += 1;
            reclaimed += u64::from(f.reclaimed);
        } else {
            superseded += 1;
            // What this late run failed with (a deadline passed while the
            // host stood still, say) is no failure of the job.
            tracing::info!(tenant = %tenant.name, job = %f.id, failed = ?f.failed,
                "another host finished this end job while this one ran it; not counted here");
        }
    }
    worker.ran.fetch_add(ran as u64, Ordering::Relaxed);
    worker.reclaimed.fetch_add(reclaimed, Ordering::Relaxed);
    worker.superseded.fetch_add(superseded, Ordering::Relaxed);
    ran
}

impl EndWorker {
    fn take_unacked(&self, tenant: &str) -> Vec<Finished> {
        self.unacked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(tenant)
            .unwrap_or_default()
    }

    fn has_unacked(&self, tenant: &str) -> bool {
        self.unacked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(tenant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TenantConfig;
    use crate::runtime::Chain;
    use crate::session::{EndReason, SessionRecord};
    use crate::store::SessionStore;
    use crate::store::memory::MemoryStore;
    use crate::tenant::Tenants;

    /// A worker on a memory store, and a tenant without plugins (its end
    /// chain runs nothing), with `n` ended sessions queued.
    async fn setup(n: usize, max_deliveries: u64) -> (EndWork, Arc<Tenant>, Arc<MemoryStore>) {
        let store = Arc::new(MemoryStore::new());
        let tenant = Arc::new(Tenant {
            name: "t".into(),
            config: TenantConfig::default(),
            chain: Chain::default(),
            degraded: None,
        });
        let now = now_ms();
        for i in 0..n {
            let record: SessionRecord = serde_json::from_value(serde_json::json!({
                "token_hash": format!("hash-{i}"), "public_id": format!("pub-{i}"),
                "tenant": "t", "created_at": now, "last_seen_at": now,
                "absolute_expires_at": now + 60_000, "idle_timeout_ms": 60_000, "version": 1
            }))
            .unwrap();
            store.create(&record, None, true, now).await.unwrap();
            store
                .remove("t", &record.token_hash, EndReason::Logout, true, now)
                .await
                .unwrap();
        }
        let config = EndsConfig {
            max_deliveries,
            consumer: Some("here".into()),
            ..EndsConfig::default()
        };
        let work = EndWork {
            worker: Arc::new(EndWorker::new(config)),
            tenants: Arc::new(TenantRegistry::new(Tenants::new([]).unwrap())),
            queue: store.clone(),
        };
        (work, tenant, store)
    }

    #[tokio::test]
    async fn jobs_another_host_finished_meanwhile_are_not_counted() {
        let (work, tenant, store) = setup(3, 5).await;
        let mine = store
            .claim_ends("t", "here", 10, 60_000, now_ms())
            .await
            .unwrap();
        assert_eq!(mine.len(), 3);
        // This host stalls; another takes two jobs over and finishes them.
        let later = now_ms() + 60_000;
        let theirs = store
            .claim_ends("t", "there", 2, 60_000, later)
            .await
            .unwrap();
        let ids: Vec<String> = theirs.iter().map(|j| j.id.clone()).collect();
        assert_eq!(store.ack_ends("t", &ids).await.unwrap(), ids);
        assert_eq!(run_jobs(&work, &tenant, mine).await, 1);
        let stats = work.worker.stats();
        assert_eq!((stats.ran, stats.superseded), (1, 2));
    }

    #[tokio::test]
    async fn a_job_handed_out_too_often_goes_to_the_dead_letters() {
        let (work, tenant, store) = setup(1, 2).await;
        let t0 = now_ms();
        for (i, n) in [1, 2, 3].into_iter().enumerate() {
            let jobs = store
                .claim_ends("t", "here", 10, 1, t0 + i as u64 * 10)
                .await
                .unwrap();
            assert_eq!(jobs[0].deliveries, n);
            if n == 3 {
                assert_eq!(run_jobs(&work, &tenant, jobs).await, 0);
            }
        }
        let dead = store.dead_letters("t", 10).await.unwrap();
        assert_eq!(dead.count, 1);
        assert_eq!(dead.newest[0].deliveries, 3);
        assert_eq!(dead.newest[0].reason, Some(EndReason::Logout));
        assert!(
            dead.newest[0].why.contains("2 times"),
            "{}",
            dead.newest[0].why
        );
        assert_eq!(work.worker.stats().dead_lettered, 1);
        assert!(
            store
                .claim_ends("t", "here", 10, 1, t0 + 100)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(store.end_queue("t").await.unwrap(), Default::default());
    }
}
