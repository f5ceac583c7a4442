//! What happens to an end job once its hooks have returned: acknowledged
//! and counted ([`ack`], [`settle`]), or moved to the dead-letter list
//! ([`bury`]).

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use super::{EndWork, EndWorker};
use crate::runtime::{EndOutcome, FailureKind};
use crate::session::now_ms;
use crate::store::Poison;
use crate::tenant::Tenant;

/// A job whose hooks ran, to acknowledge.
#[derive(Debug, Clone)]
pub(super) struct Finished {
    pub id: String,
    pub reclaimed: bool,
    /// The hooks' failures in this run, by plugin, if any. They count in
    /// the plugins' stats only if this run turns out to be the one that
    /// finished the job.
    pub failed: Vec<(String, FailureKind)>,
}

/// Which plugin failed with which kind, in an end run.
pub(super) fn failures_of(outcome: &EndOutcome) -> Vec<(String, FailureKind)> {
    outcome
        .failures
        .iter()
        .map(|f| (f.plugin.clone(), f.kind))
        .collect()
}

/// Moves jobs to the tenant's dead-letter list. When the store cannot be
/// reached they stay claimed, and the next host to take them over moves
/// them (their delivery count is past the maximum by then).
pub(super) async fn bury(state: &EndWork, tenant: &Tenant, poison: Vec<Poison>) {
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

/// Acknowledges finished jobs and counts them ([`settle`]); returns how
/// many ran here. When the store cannot be reached, gives the jobs back to
/// be acknowledged on the next round. (Should this host stop before then,
/// another host runs them again after the reclaim time.)
pub(super) async fn ack(
    state: &EndWork,
    tenant: &Tenant,
    finished: Vec<Finished>,
) -> Result<usize, Vec<Finished>> {
    if finished.is_empty() {
        return Ok(0);
    }
    let ids: Vec<String> = finished.iter().map(|f| f.id.clone()).collect();
    match state.queue.ack_ends(&tenant.name, &ids).await {
        Ok(taken) => Ok(settle(&state.worker, tenant, &finished, &taken)),
        Err(e) => {
            tracing::warn!(tenant = %tenant.name, jobs = ids.len(),
                "acknowledging end jobs failed; retrying on the next round: {e}");
            Err(finished)
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
