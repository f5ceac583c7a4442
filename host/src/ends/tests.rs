use std::sync::Arc;

use super::scheduler::Scheduler;
use super::settle::bury;
use super::{EndWork, EndWorker};
use crate::config::{EndsConfig, TenantConfig};
use crate::runtime::Chain;
use crate::session::{EndReason, SessionRecord, now_ms};
use crate::store::memory::MemoryStore;
use crate::store::{CreateLimit, EndJob, EndQueue, SessionStore};
use crate::tenant::{Tenant, TenantRegistry, Tenants};

/// A worker on a memory store, and a tenant without plugins (its end
/// chain runs nothing), with `n` ended sessions queued.
async fn setup(n: usize, max_deliveries: u64) -> (EndWork, Arc<Tenant>, Arc<MemoryStore>) {
    let store = Arc::new(MemoryStore::new());
    let tenant = Arc::new(Tenant {
        name: "t".into(),
        config: TenantConfig::default(),
        chain: Chain::default(),
        degraded: None,
        revision: None,
        disabled: false,
    });
    let now = now_ms();
    for i in 0..n {
        let record: SessionRecord = serde_json::from_value(serde_json::json!({
            "token_hash": format!("hash-{i}"), "public_id": format!("pub-{i}"),
            "tenant": "t", "created_at": now, "last_seen_at": now,
            "absolute_expires_at": now + 60_000, "idle_timeout_ms": 60_000, "version": 1
        }))
        .unwrap();
        store
            .create(&record, CreateLimit::NONE, true, now)
            .await
            .unwrap();
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
        webhooks: None,
    };
    (work, tenant, store)
}

/// Runs claimed jobs of `tenant` to the end and settles them; returns how
/// many ran as this host's.
async fn run_jobs(work: &EndWork, tenant: &Arc<Tenant>, jobs: Vec<EndJob>) -> usize {
    let mut scheduler = Scheduler::new(work.clone());
    let poison = scheduler.start(tenant, jobs);
    bury(work, tenant, poison).await;
    while let Some(done) = scheduler.next_done().await {
        scheduler.reap(done);
    }
    scheduler.settle(&tenant.name).await;
    scheduler.ran()
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
