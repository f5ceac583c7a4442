//! Fair claiming: one lane per tenant with end hooks (or `session.ended`
//! webhooks, which each job queues before its hooks run), each holding at most
//! `ends.max_concurrent_per_tenant` running jobs. A round visits every lane
//! in turn: it acknowledges the lane's finished jobs, dead-letters its
//! poison, and claims new jobs into its free slots. Jobs run on tasks of
//! their own; the worker reaps each as it finishes, so a lane whose hooks
//! run to their deadlines keeps only its own slots busy.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tokio::task::{Id, JoinError, JoinSet};

use super::EndWork;
use super::settle::{Finished, ack, bury, failures_of};
use crate::config::WebhookEvent;
use crate::runtime::EndOutcome;
use crate::session::now_ms;
use crate::store::{EndJob, Poison};
use crate::tenant::Tenant;

/// One tenant's share of the worker.
struct Lane {
    /// The tenant as last seen in the registry (its chain counts failures).
    tenant: Arc<Tenant>,
    /// Jobs of the lane running now.
    running: usize,
    /// The last claim found fewer jobs than it asked for: nothing to claim
    /// until the next poll or wake.
    drained: bool,
    /// Jobs whose hooks ran, to acknowledge (including those whose
    /// acknowledgement failed: the lane claims nothing until they are).
    done: Vec<Finished>,
    /// Jobs to move to the dead-letter list.
    poison: Vec<Poison>,
    /// Jobs left claimed since their hooks could not reach the store.
    retry: usize,
}

impl Lane {
    fn new(tenant: Arc<Tenant>) -> Lane {
        Lane {
            tenant,
            running: 0,
            drained: false,
            done: Vec::new(),
            poison: Vec::new(),
            retry: 0,
        }
    }
}

/// A job whose hooks run on a task of the scheduler's.
struct Running {
    tenant: String,
    id: String,
    reclaimed: bool,
    deliveries: u64,
}

/// A finished task, for [`Scheduler::reap`].
pub(super) type Done = Result<(Id, EndOutcome), JoinError>;

/// The lanes, and the tasks running their jobs.
pub(super) struct Scheduler {
    work: EndWork,
    /// By tenant name, so rounds visit tenants in a fixed order.
    lanes: BTreeMap<String, Lane>,
    tasks: JoinSet<EndOutcome>,
    running: HashMap<Id, Running>,
    ran: usize,
}

impl Scheduler {
    pub fn new(work: EndWork) -> Scheduler {
        Scheduler {
            work,
            lanes: BTreeMap::new(),
            tasks: JoinSet::new(),
            running: HashMap::new(),
            ran: 0,
        }
    }

    /// How many jobs ran and were acknowledged as this host's.
    pub fn ran(&self) -> usize {
        self.ran
    }

    /// One round over every lane: settles what finished, then claims into
    /// free slots until each lane is full or its queue has nothing more
    /// for this host. `fresh` (a poll or a wake): look again at lanes whose
    /// last claim found their queue empty.
    pub async fn round(&mut self, fresh: bool) {
        let tenants = self.work.tenants.current();
        for tenant in tenants.iter().filter(|t| t.queues_ends()) {
            self.lanes
                .entry(tenant.name.clone())
                .and_modify(|lane| lane.tenant = tenant.clone())
                .or_insert_with(|| Lane::new(tenant.clone()));
        }
        let names: Vec<String> = self.lanes.keys().cloned().collect();
        for name in names {
            self.settle(&name).await;
            let current = tenants.get(&name).is_some_and(|t| t.queues_ends());
            let Some(lane) = self.lanes.get_mut(&name) else {
                continue;
            };
            if !current {
                // Gone from the config: finish what runs, claim nothing.
                if lane.running == 0 && lane.done.is_empty() {
                    self.lanes.remove(&name);
                }
                continue;
            }
            if fresh {
                lane.drained = false;
            }
            self.claim(&name).await;
        }
    }

    /// Acknowledges, dead-letters and reports what finished in a lane.
    pub async fn settle(&mut self, name: &str) {
        let Some(lane) = self.lanes.get_mut(name) else {
            return;
        };
        let tenant = lane.tenant.clone();
        let done = std::mem::take(&mut lane.done);
        let poison = std::mem::take(&mut lane.poison);
        let retry = std::mem::take(&mut lane.retry);
        if retry > 0 {
            tracing::warn!(tenant = %name, jobs = retry,
                "end hooks could not reach the store or a plugin's circuit breaker was open; \
                 running them again after the reclaim time");
        }
        bury(&self.work, &tenant, poison).await;
        match ack(&self.work, &tenant, done).await {
            Ok(ran) => self.ran += ran,
            Err(unacked) => {
                if let Some(lane) = self.lanes.get_mut(name) {
                    lane.done = unacked;
                }
            }
        }
    }

    /// Claims a lane's jobs into its free slots and starts them.
    async fn claim(&mut self, name: &str) {
        let config = &self.work.worker.config;
        let (batch, slots) = (config.batch.max(1), config.max_concurrent_per_tenant.max(1));
        loop {
            let Some(lane) = self.lanes.get_mut(name) else {
                return;
            };
            if lane.drained || !lane.done.is_empty() || lane.running >= slots {
                return;
            }
            let asked = batch.min(slots - lane.running);
            let claimed = self
                .work
                .queue
                .claim_ends(
                    name,
                    &self.work.worker.consumer,
                    asked,
                    self.work.worker.config.reclaim_after_ms,
                    now_ms(),
                )
                .await;
            let jobs = match claimed {
                Ok(jobs) => jobs,
                Err(e) => {
                    tracing::warn!(tenant = %name, "claiming end jobs failed: {e}");
                    lane.drained = true;
                    return;
                }
            };
            lane.drained = jobs.len() < asked;
            let tenant = lane.tenant.clone();
            let poison = self.start(&tenant, jobs);
            if !poison.is_empty() {
                bury(&self.work, &tenant, poison).await;
            }
        }
    }

    /// Starts each job's end chain on a task of its own; returns the jobs
    /// handed out too often to run again.
    pub fn start(&mut self, tenant: &Arc<Tenant>, jobs: Vec<EndJob>) -> Vec<Poison> {
        let max_deliveries = self.work.worker.config.max_deliveries.max(1);
        let mut poison = Vec::new();
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
            let running = Running {
                tenant: tenant.name.clone(),
                id: job.id.clone(),
                reclaimed: job.reclaimed,
                deliveries: job.deliveries,
            };
            let runs = tenant.clone();
            let webhooks = self.work.webhooks.clone();
            // A child of the request that ended the session, in its trace
            // (a job the sweeper queued starts a trace of its own).
            let span = tracing::info_span!("end_job",
                trace_id = tracing::field::Empty, span_id = tracing::field::Empty,
                parent_id = tracing::field::Empty, tenant = %tenant.name,
                end_id = %job.end_id, reason = job.reason.as_str(), deliveries = job.deliveries);
            crate::trace::begin(&span, job.trace.as_ref());
            let handle = self.tasks.spawn(tracing::Instrument::instrument(
                async move {
                    if let Some(webhooks) = webhooks
                        && runs.wants_webhook(WebhookEvent::SessionEnded)
                        && let Err(e) = webhooks
                            .ended(&runs, &job.record, job.reason, &job.end_id, job.ended_at)
                            .await
                    {
                        // Run again after the reclaim time, as when a hook
                        // cannot reach the store: the job stays claimed.
                        tracing::warn!(tenant = %runs.name, end_id = %job.end_id,
                        "cannot queue the session.ended webhooks: {e}");
                        return EndOutcome {
                            store_unavailable: true,
                            ..EndOutcome::default()
                        };
                    }
                    tracing::debug!(tenant = %runs.name, session = %job.record.public_id,
                    reason = job.reason.as_str(), end_id = %job.end_id, "running end hooks");
                    runs.chain
                        .session_end(&job.record, job.reason, &job.end_id, job.ended_at)
                        .await
                },
                span,
            ));
            self.running.insert(handle.id(), running);
            if let Some(lane) = self.lanes.get_mut(&tenant.name) {
                lane.running += 1;
            } else {
                let mut lane = Lane::new(tenant.clone());
                lane.running = 1;
                self.lanes.insert(tenant.name.clone(), lane);
            }
        }
        poison
    }

    /// The next job to finish; none while nothing runs.
    pub async fn next_done(&mut self) -> Option<Done> {
        self.tasks.join_next_with_id().await
    }

    /// Files a finished job with its lane, to be settled in the next round.
    /// A job whose hooks could not reach the store is left claimed: after
    /// the reclaim time a host (maybe this one) runs it again with the same
    /// end id, so the audit records it could not write are written then,
    /// once; on its last allowed delivery it goes to the dead-letter list.
    pub fn reap(&mut self, done: Done) {
        let (id, outcome) = match done {
            Ok((id, outcome)) => (id, Some(outcome)),
            Err(e) => {
                tracing::error!("an on-session-end task failed: {e}");
                (e.id(), None)
            }
        };
        let Some(job) = self.running.remove(&id) else {
            return;
        };
        let max_deliveries = self.work.worker.config.max_deliveries.max(1);
        let Some(lane) = self.lanes.get_mut(&job.tenant) else {
            return;
        };
        lane.running -= 1;
        let mut finished = Finished {
            id: job.id,
            reclaimed: job.reclaimed,
            failed: Vec::new(),
        };
        match outcome {
            Some(outcome) if outcome.run_again() => {
                if job.deliveries >= max_deliveries {
                    // The last run this job gets: what it failed with counts.
                    lane.tenant.chain.count_end_failures(&failures_of(&outcome));
                    lane.poison.push(Poison {
                        id: finished.id,
                        why: format!(
                            "its hooks could not reach the store, or a plugin's circuit \
                             breaker stayed open, on each of {} deliveries",
                            job.deliveries
                        ),
                    });
                } else {
                    lane.retry += 1;
                }
            }
            Some(outcome) => {
                finished.failed = failures_of(&outcome);
                lane.done.push(finished);
            }
            // A task that panicked: its hooks will not do better next time.
            None => lane.done.push(finished),
        }
    }

    /// Works until no lane has anything more to run or settle (on
    /// shutdown, under the drain deadline).
    pub async fn drain(&mut self) {
        let mut fresh = true;
        loop {
            self.round(fresh).await;
            fresh = false;
            // The round just run settled everything that had finished.
            match self.next_done().await {
                Some(done) => self.reap(done),
                None => break,
            }
        }
    }

    /// Stops every job still running, unacknowledged (it stays claimed in
    /// the store); returns how many there were.
    pub fn abandon(&mut self) -> usize {
        let running = self.tasks.len();
        self.tasks.abort_all();
        self.running.clear();
        running
    }
}
