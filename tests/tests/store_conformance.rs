//! One conformance suite for every store backend: the in-process
//! `MemoryStore`, the SQLite `EmbeddedStore` in a temporary directory,
//! `RedisStore` on a single throwaway redis-server, and `RedisStore` on a
//! throwaway three-master Redis Cluster.
//!
//! Each test is an async function of a [`Backend`], run once per backend by
//! `every_backend!`; it opens its [`Stores`] on that backend. The Redis tests
//! of this binary share one server (and one cluster) and stay independent
//! by using a tenant of their own.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::json;
use sessiond::json::{Limit, MAX_SESSION_BYTES, MAX_STORED_DEPTH, merge_patch};
use sessiond::session::{EndReason, Millis, SessionRecord, now_ms};
use sessiond::store::embedded::{EmbeddedConfig, EmbeddedStore};
use sessiond::store::memory::MemoryStore;
use sessiond::store::redis::{RedisConfig, RedisStore};
use sessiond::store::{
    AuditStore, CreateLimit, CreateOutcome, Delivery, EndJob, EndQueue, EndQueueStats, KvQuota,
    KvStore, LimitPolicy, MergeOutcome, Once, OnceKey, OutboxStats, Poison, SessionStore,
    StoreBackend, StoreError, UserLimit, WriteOutcome,
};
use sessiond::trace::{self, TraceParent};
use sessiond_tests::redis_server::{RedisCluster, RedisServer};
use sessiond_tests::{Backend, every_backend, fixtures};

const SEC: Millis = 1000;
const MIN: Millis = 60 * SEC;
const HOUR: Millis = 60 * MIN;

/// Several handles on one store, as several hosts would hold, and the tenant
/// this test owns.
struct Stores {
    stores: Vec<Arc<dyn StoreBackend>>,
    tenant: String,
    /// The data directory of a store that keeps one, removed with the test.
    _dir: Option<tempfile::TempDir>,
}

impl Stores {
    /// Four handles on `backend`, with a tenant no other test of this binary
    /// uses; the embedded store gets a directory of its own.
    async fn open(backend: Backend) -> Stores {
        static TENANTS: AtomicU64 = AtomicU64::new(1);
        let tenant = format!("tenant-{}", TENANTS.fetch_add(1, Ordering::Relaxed));
        // One `Arc` of an in-process store, as a single process holds it.
        let shared = |store: Arc<dyn StoreBackend>| vec![store; 4];
        let (stores, dir) = match backend {
            Backend::Memory => (shared(Arc::new(MemoryStore::new())), None),
            Backend::Embedded => {
                let dir = tempfile::tempdir().expect("a temporary directory");
                let store = EmbeddedStore::open(EmbeddedConfig::new(dir.path()))
                    .expect("opening the store");
                (shared(Arc::new(store)), Some(dir))
            }
            Backend::Redis => {
                let url = tokio::task::spawn_blocking(|| RedisServer::shared().url())
                    .await
                    .unwrap();
                (redis_handles(vec![url], false).await, None)
            }
            Backend::Cluster => {
                let urls = tokio::task::spawn_blocking(|| RedisCluster::shared().urls())
                    .await
                    .unwrap();
                (redis_handles(urls, true).await, None)
            }
        };
        Stores {
            stores,
            tenant,
            _dir: dir,
        }
    }

    fn store(&self) -> &dyn StoreBackend {
        self.stores[0].as_ref()
    }

    /// The handle for the `i`th concurrent caller.
    fn handle(&self, i: usize) -> Arc<dyn StoreBackend> {
        self.stores[i % self.stores.len()].clone()
    }

    /// Another tenant name, unique to this test.
    fn other_tenant(&self) -> String {
        format!("{}-other", self.tenant)
    }
}

/// Four connections to the Redis at `urls`, as four hosts would hold.
async fn redis_handles(urls: Vec<String>, cluster: bool) -> Vec<Arc<dyn StoreBackend>> {
    let mut stores: Vec<Arc<dyn StoreBackend>> = Vec::new();
    for _ in 0..4 {
        let mut config = RedisConfig::new(urls.clone());
        config.cluster = cluster;
        let store = RedisStore::connect_with(config)
            .await
            .expect("connecting to the test Redis");
        stores.push(Arc::new(store));
    }
    stores
}

every_backend!(
    stores:
    ping,
    create_and_get,
    create_existing_token_hash_fails,
    absolute_expiry_hides_session,
    idle_expiry_hides_session,
    update_compare_and_set,
    update_rotates_token,
    update_changes_user,
    touch_slides_idle_deadline,
    merge_applies_a_merge_patch,
    merge_keeps_every_value_exact,
    merge_refuses_over_the_bounds,
    merge_concurrent_loses_nothing,
    remove_exactly_once,
    remove_of_expired_leaves_it_to_sweeper,
    limit_deny_exact_under_concurrency,
    tenant_quota_exact_under_concurrency,
    limit_counts_only_live_sessions,
    limit_evict_lru,
    limit_evict_lru_under_concurrency,
    limit_zero,
    list_user_oldest_first,
    remove_user_exactly_once,
    take_expired_reasons_order_and_max,
    take_expired_concurrent_never_duplicates,
    kv_get_set_delete,
    kv_ttl,
    kv_isolation,
    kv_quota_bounds_keys_and_bytes,
    kv_quota_holds_under_concurrency,
    audit_append_and_page,
    tenants_are_isolated,
    odd_tenant_names,
    ends_queued_by_every_ending,
    ends_carry_the_trace_they_were_queued_in,
    ends_each_claimed_once_under_concurrency,
    ends_abandoned_are_reclaimed,
    audit_append_once,
    deep_records_read_back,
    ends_count_deliveries,
    ends_ack_says_what_it_took,
    ends_dead_letters,
    once_create_is_recorded_with_the_session,
    once_create_at_the_limit_records_nothing,
    once_create_evicts_once,
    once_create_concurrent_stores_one,
    once_remove_is_recorded_with_the_end,
    once_keys_lapse_and_stay_in_their_tenant,
    outbox_push_is_idempotent_and_leases_in_due_order,
    outbox_lease_hides_until_it_lapses,
    outbox_retry_and_remove,
    outbox_leases_each_delivery_once_under_concurrency,
    counts_stored_sessions_and_the_oldest_end,
);

// ---------------------------------------------------------------- helpers

/// A fresh session of `tenant` created at `t0`: 8 h lifetime, 30 min idle.
fn session(tenant: &str, user: Option<&str>, t0: Millis) -> SessionRecord {
    let builder = fixtures::session(tenant);
    let n = builder.serial();
    builder
        .user(user)
        .at(t0)
        .lifetime(8 * HOUR)
        .idle_timeout(30 * MIN)
        .remote_addr("203.0.113.7")
        .user_agent("test/1.0 \"quoted\" ünïcödé")
        .data(json!({
            "cart": [1, {}, []],
            "empty": {},
            "price": 12.5,
            "big": 12345678901234567u64,
            "text": "a\nb\u{0}c"
        }))
        .plugin_state("audit-log", json!({"seen": [], "n": n}))
        .build()
}

async fn create(b: &Stores, record: &SessionRecord, t0: Millis) {
    match b
        .store()
        .create(record, CreateLimit::NONE, true, t0)
        .await
        .unwrap()
    {
        CreateOutcome::Created { evicted } => assert!(evicted.is_empty()),
        other => panic!("create without a limit answered {other:?}"),
    }
}

fn limit(max: u32, policy: LimitPolicy) -> CreateLimit {
    CreateLimit {
        user: Some(UserLimit { max, policy }),
        tenant_max: None,
    }
}

/// The next version of `record` with `data.step = step`.
fn changed(record: &SessionRecord, step: u64) -> SessionRecord {
    let mut next = record.clone();
    next.version += 1;
    next.data.insert("step".into(), json!(step));
    next
}

fn hashes(records: &[SessionRecord]) -> Vec<String> {
    records.iter().map(|r| r.token_hash.clone()).collect()
}

/// `(ms, seq)` of a stream-style audit id, for ordering.
fn id_key(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').expect("id is <ms>-<seq>");
    (ms.parse().unwrap(), seq.parse().unwrap())
}

// ---------------------------------------------------------------- sessions

async fn ping(backend: Backend) {
    let b = Stores::open(backend).await;
    b.store().ping().await.unwrap();
}

async fn create_and_get(backend: Backend) {
    let b = Stores::open(backend).await;
    let t0 = now_ms();
    let anon = session(&b.tenant, None, t0);
    let user = session(&b.tenant, Some("alice"), t0);
    create(&b, &anon, t0).await;
    create(&b, &user, t0).await;

    let got = b
        .store()
        .get(&b.tenant, &anon.token_hash, t0)
        .await
        .unwrap();
    assert_eq!(got.as_ref(), Some(&anon), "the record round-trips exactly");
    assert_eq!(got.unwrap().version, 1);
    assert_eq!(
        b.store()
            .get(&b.tenant, &user.token_hash, t0 + MIN)
            .await
            .unwrap(),
        Some(user.clone())
    );
    // Another handle (another host) sees it too.
    assert_eq!(
        b.handle(1)
            .get(&b.tenant, &user.token_hash, t0)
            .await
            .unwrap(),
        Some(user.clone())
    );
    assert_eq!(b.store().get(&b.tenant, "ffff", t0).await.unwrap(), None);
    assert_eq!(
        b.store()
            .get(&b.other_tenant(), &anon.token_hash, t0)
            .await
            .unwrap(),
        None
    );
}

async fn create_existing_token_hash_fails(backend: Backend) {
    let b = Stores::open(backend).await;
    let t0 = now_ms();
    let first = session(&b.tenant, Some("alice"), t0);
    create(&b, &first, t0).await;
    let mut second = session(&b.tenant, Some("bob"), t0);
    second.token_hash = first.token_hash.clone();
    let err = b
        .store()
        .create(&second, CreateLimit::NONE, true, t0)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Backend(_)), "{err:?}");
    assert_eq!(
        b.store()
            .get(&b.tenant, &first.token_hash, t0)
            .await
            .unwrap(),
        Some(first),
        "the existing session is untouched"
    );
    assert!(
        b.store()
            .list_user(&b.tenant, "bob", t0)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn absolute_expiry_hides_session(backend: Backend) {
    let b = Stores::open(backend).await;
    let t0 = now_ms();
    let mut s = session(&b.tenant, Some("alice"), t0);
    s.absolute_expires_at = t0 + MIN;
    s.idle_timeout_ms = HOUR;
    create(&b, &s, t0).await;
    let get = |now| b.store().get(&b.tenant, &s.token_hash, now);
    assert!(get(t0 + MIN - 1).await.unwrap().is_some());
    assert_eq!(
        get(t0 + MIN).await.unwrap(),
        None,
        "the deadline is exclusive"
    );
    assert_eq!(get(t0 + 2 * MIN).await.unwrap(), None);
    assert!(
        b.store()
            .list_user(&b.tenant, "alice", t0 + MIN)
            .await
            .unwrap()
            .is_empty()
    );
    // Not removed by the reads: the sweeper still gets it, once.
    let taken = b
        .store()
        .take_expired(&b.tenant, t0 + 2 * MIN, 10, true)
        .await
        .unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].record, s);
    assert_eq!(taken[0].reason, EndReason::Expired);
    assert!(
        b.store()
            .take_expired(&b.tenant, t0 + 2 * MIN, 10, true)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn idle_expiry_hides_session(backend: Backend) {
    let b = Stores::open(backend).await;
    let t0 = now_ms();
    let s = session(&b.tenant, None, t0); // idle 30 min, lifetime 8 h
    create(&b, &s, t0).await;
    let get = |now| b.store().get(&b.tenant, &s.token_hash, now);
    assert!(get(t0 + 30 * MIN - 1).await.unwrap().is_some());
    assert_eq!(get(t0 + 30 * MIN).await.unwrap(), None);
    assert_eq!(
        b.store()
            .touch(&b.tenant, &s.token_hash, t0 + 31 * MIN)
            .await
            .unwrap(),
        None,
        "an idle-expired session cannot be revived"
    );
    let taken = b
        .store()
        .take_expired(&b.tenant, t0 + 31 * MIN, 10, true)
        .await
        .unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].reason, EndReason::IdleTimeout);
    assert_eq!(taken[0].record, s);
}

async fn update_compare_and_set(backend: Backend) {
    let b = Stores::open(backend).await;
    let t0 = now_ms();
    let s = session(&b.tenant, Some("alice"), t0);
    create(&b, &s, t0).await;

    let v2 = changed(&s, 2);
    assert_eq!(
        b.store().update(&s.token_hash, &v2, 1, t0).await.unwrap(),
        WriteOutcome::Written(v2.clone())
    );
    assert_eq!(
        b.store().get(&b.tenant, &s.token_hash, t0).await.unwrap(),
        Some(v2.clone())
    );

    // A writer that read version 1 loses and learns the current record.
    let stale = changed(&s, 99);
    assert_eq!(
        b.store()
            .update(&s.token_hash, &stale, 1, t0)
            .await
            .unwrap(),
        WriteOutcome::VersionMismatch(v2.clone())
    );
    assert_eq!(
        b.store().get(&b.tenant, &s.token_hash, t0).await.unwrap(),
        Some(v2.clone())
    );

    // The version must grow by exactly one.
    let mut skip = changed(&v2, 3);
    skip.version = 7;
    assert!(b.store().update(&s.token_hash, &skip, 2, t0).await.is_err());

    // Unknown and expired sessions are not found.
    let mut ghost = session(&b.tenant, None, t0);
    ghost.version = 2;
    assert_eq!(
        b.store()
            .update(&ghost.token_hash, &ghost, 1, t0)
            .await
            .unwrap(),
        WriteOutcome::NotFound
    );
    assert_eq!(
        b.store()
            .update(&s.token_hash, &changed(&v2, 3), 2, t0 + 9 * HOUR)
            .await
            .unwrap(),
        WriteOutcome::NotFound
    );

    // Racing writers on several hosts: exactly one wins each version.
    let mut tasks = Vec::new();
    for i in 0..16 {
        let store = b.handle(i);
        let next = changed(&v2, 100 + i as u64);
        tasks.push(tokio::spawn(async move {
            store.update(&next.token_hash, &next, 2, t0).await.unwrap()
        }));
    }
    let mut written = 0;
    for t in tasks {
        match t.await.unwrap() {
            WriteOutcome::Written(_) => written += 1,
            WriteOutcome::VersionMismatch(current) => assert_eq!(current.version, 3),
            WriteOutcome::NotFound => panic!("the session exists"),
        }
    }
    assert_eq!(written, 1);
}

async fn update_rotates_token(backend: Backend) {
    let b = Stores::open(backend).await;
    let t0 = now_ms();
    let s = session(&b.tenant, Some("alice"), t0);
    let other = session(&b.tenant, Some("alice"), t0);
    create(&b, &s, t0).await;
    create(&b, &other, t0).await;

    let mut rotated = changed(&s, 2);
    rotated.token_hash = format!("{}r", s.token_hash);
    rotated.last_seen_at = t0 + MIN;
    assert_eq!(
        b.store()
            .update(&s.token_hash, &rotated, 1, t0 + MIN)
            .await
            .unwrap(),
        WriteOutcome::Written(rotated.clone())
    );
    let store = b.store();
    assert_eq!(
        store.get(&b.tenant, &s.token_hash, t0 + MIN).await.unwrap(),
        None
    );
    assert_eq!(
        store
            .get(&b.tenant, &rotated.token_hash, t0 + MIN)
            .await
            .unwrap(),
        Some(rotated.clone())
    );
    assert_eq!(rotated.public_id, s.public_id);
    let mut listed = hashes(&store.list_user(&b.tenant, "alice", t0 + MIN).await.unwrap());
    listed.sort();
    let mut expected = vec![rotated.token_hash.clone(), other.token_hash.clone()];
    expected.sort();
    assert_eq!(listed, expected, "the user index follows the rotation");
    assert_eq!(
        store
            .remove(&b.tenant, &s.token_hash, EndReason::Logout, true, t0 + MIN)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .touch(&b.tenant, &s.token_hash, t0 + MIN)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .update(&s.token_hash, &changed(&rotated, 3), 2, t0 + MIN)
            .await
            .unwrap(),
        WriteOutcome::NotFound
    );

    // Rotating onto an existing token hash is refused and changes nothing.
    let mut clash = changed(&rotated, 3);
    clash.token_hash = other.token_hash.clone();
    assert!(
        store
            .update(&rotated.token_hash, &clash, 2, t0 + MIN)
            .await
            .is_err()
    );
    assert_eq!(
        store
            .get(&b.tenant, &rotated.token_hash, t0 + MIN)
            .await
            .unwrap(),
        Some(rotated.clone())
    );

    // The deadline index follows too: the sweeper returns the new key only.
    let taken = store
        .take_expired(&b.tenant, t0 + 9 * HOUR, 10, true)
        .await
        .unwrap();
    let mut taken: Vec<String> = taken.into_iter().map(|e| e.record.token_hash).collect();
    taken.sort();
    assert_eq!(taken, expected);
}

async fn update_changes_user(backend: Backend) {
    let b = Stores::open(backend).await;
    let t0 = now_ms();
    let anon = session(&b.tenant, None, t0);
    create(&b, &anon, t0).await;
    let store = b.store();

    // Authentication moves the anonymous session into alice's index.
    let mut authed = changed(&anon, 2);
    authed.user = Some("alice".into());
    authed.roles = vec!["member".into()];
    assert_eq!(
        store
            .update(&anon.token_hash, &authed, 1, t0)
            .await
            .unwrap(),
        WriteOutcome::Written(authed.clone())
    );
    assert_eq!(
        store.list_user(&b.tenant, "alice", t0).await.unwrap(),
        vec![authed.clone()]
    );
    // It counts against alice's limit now.
    let next = session(&b.tenant, Some("alice"), t0);
    assert_eq!(
        store
            .create(&next, limit(1, LimitPolicy::Deny), true, t0)
            .await
            .unwrap(),
        CreateOutcome::LimitReached { active: 1 }
    );

    // Moving it to bob takes it out of alice's index.
    let mut bob = changed(&authed, 3);
    bob.user = Some("bob".into());
    assert!(matches!(
        store.update(&anon.token_hash, &bob, 2, t0).await.unwrap(),
        WriteOutcome::Written(_)
    ));
    assert!(
        store
            .list_user(&b.tenant, "alice", t0)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.list_user(&b.tenant, "bob", t0).await.unwrap(),
        vec![bob.clone()]
    );

    // And back to anonymous.
    let mut gone = changed(&bob, 4);
    gone.user = None;
    assert!(matches!(
        store.update(&anon.token_hash, &gone, 3, t0).await.unwrap(),
        WriteOutcome::Written(_)
    ));
    assert!(
        store
            .list_user(&b.tenant, "bob", t0)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .remove_user(&b.tenant, "bob", EndReason::Revoked, true, t0)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.get(&b.tenant, &anon.token_hash, t0).await.unwrap(),
        Some(gone)
    );
}

async fn touch_slides_idle_deadline(backend: Backend) {
    let b = Stores::open(backend).await;
    let t0 = now_ms();
    let mut s = session(&b.tenant, Some("alice"), t0);
    s.idle_timeout_ms = 10 * MIN;
    create(&b, &s, t0).await;
    let store = b.store();

    let touched = store
        .touch(&b.tenant, &s.token_hash, t0 + 9 * MIN)
        .await
        .unwrap()
        .expect("live");
    assert_eq!(touched.last_seen_at, t0 + 9 * MIN);
    assert_eq!(touched.version, 2);
    assert_eq!(touched.expires_at(), t0 + 19 * MIN);
    let mut expected = s.clone();
    expected.last_seen_at = t0 + 9 * MIN;
    expected.version = 2;
    assert_eq!(touched, expected, "nothing else changes");
    assert_eq!(
        store
            .get(&b.tenant, &s.token_hash, t0 + 15 * MIN)
            .await
            .unwrap(),
        Some(expected.clone()),
        "alive past the original idle deadline"
    );
    assert!(
        store
            .take_expired(&b.tenant, t0 + 15 * MIN, 10, true)
            .await
            .unwrap()
            .is_empty(),
        "the sweeper sees the new deadline"
    );
    // A CAS write must now expect version 2.
    assert!(matches!(
        store
            .update(&s.token_hash, &changed(&s, 2), 1, t0 + 15 * MIN)
            .await
            .unwrap(),
        WriteOutcome::VersionMismatch(_)
    ));
    assert_eq!(
        store
            .get(&b.tenant, &s.token_hash, t0 + 19 * MIN)
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.touch(&b.tenant, "nope", t0).await.unwrap(), None);

    // The absolute deadline caps the sliding one.
    let mut capped = session(&b.tenant, None, t0);
    capped.absolute_expires_at = t0 + 12 * MIN;
    capped.idle_timeout_ms = 10 * MIN;
    create(&b, &capped, t0).await;
    let c = store
        .touch(&b.tenant, &capped.token_hash, t0 + 8 * MIN)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.expires_at(), t0 + 12 * MIN);
    assert_eq!(
        store
            .get(&b.tenant, &capped.token_hash, t0 + 12 * MIN)
            .await
            .unwrap(),
        None
    );

    let taken = store
        .take_expired(&b.tenant, t0 + 20 * MIN, 10, true)
        .await
        .unwrap();
    let reasons: HashSet<(String, EndReason)> = taken
        .into_iter()
        .map(|e| (e.record.token_hash, e.reason))
        .collect();
    assert_eq!(
        reasons,
        HashSet::from([
            (s.token_hash.clone(), EndReason::IdleTimeout),
            (capped.token_hash.clone(), EndReason::Expired),
        ])
    );
}

/// A JSON object's members.
fn members(value: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    match value {
        serde_json::Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

/// What [`SessionStore::merge`] must make of `record` at `now`.
fn merged(record: &SessionRecord, patch: &serde_json::Value, now: Millis) -> SessionRecord {
    let mut next = record.clone();
    merge_patch(&mut next.data, &members(patch.clone()));
    next.version += 1;
    next.last_seen_at = next.last_seen_at.max(now);
    next
}

/// Merges `patch` into the session, expecting it to be stored.
async fn merge_ok(
    store: &dyn StoreBackend,
    record: &SessionRecord,
    patch: &serde_json::Value,
    now: Millis,
) -> SessionRecord {
    match store
        .merge(
            &record.tenant,
            &record.token_hash,
            &members(patch.clone()),
            now,
        )
        .await
        .unwrap()
    {
        MergeOutcome::Merged(stored) => *stored,
        other => panic!("merge of {patch} answered {other:?}"),
    }
}

async fn merge_applies_a_merge_patch(backend: Backend) {
    let b = Stores::open(backend).await;
    let t0 = now_ms();
    let mut s = session(&b.tenant, Some("alice"), t0);
    s.idle_timeout_ms = 10 * MIN;
    s.data = members(json!({
        "keep": {"x": 1, "list": [], "obj": {}},
        "gone": "soon",
        "nested": {"a": {"b": 1, "c": 2}, "d": [1, 2]},
        "scalar": 5,
        "object": {"p": 1},
    }));
    create(&b, &s, t0).await;
    let store = b.store();

    let patch = json!({
        "gone": null,
        "absent": null,
        "nested": {"a": {"b": null, "e": {"f": []}}, "d": {"now": "object"}},
        "scalar": {"was": "scalar", "drop": null},
        "object": [1, {}],
        "added": {"x": null, "y": {}},
        "list": [],
        "empty": {},
    });
    let at = t0 + 9 * MIN;
    let stored = merge_ok(store, &s, &patch, at).await;
    let expected = merged(&s, &patch, at);
    assert_eq!(
        serde_json::Value::Object(expected.data.clone()),
        json!({
            "keep": {"x": 1, "list": [], "obj": {}},
            "nested": {"a": {"c": 2, "e": {"f": []}}, "d": {"now": "object"}},
            "scalar": {"was": "scalar"},
            "object": [1, {}],
            "added": {"y": {}},
            "list": [],
            "empty": {},
        })
    );
    assert_eq!(
        stored, expected,
        "version, last_seen_at and data change, nothing else"
    );
    assert_eq!(stored.version, 2);
    assert_eq!(
        stored.expires_at(),
        t0 + 19 * MIN,
        "the idle deadline slides"
    );
    assert_eq!(
        store
            .get(&b.tenant, &s.token_hash, t0 + 15 * MIN)
            .await
            .unwrap(),
        Some(expected.clone()),
        "alive past the original idle deadline"
    );
    assert_eq!(
        b.handle(1).list_user(&b.tenant, "alice", at).await.unwrap(),
        vec![expected.clone()]
    );
    assert!(
        store
            .take_expired(&b.tenant, t0 + 15 * MIN, 10, false)
            .await
            .unwrap()
            .is_empty(),
        "the sweeper sees the new deadline"
    );

    // An earlier clock does not move last_seen_at back; an empty patch
    // only bumps the version.
    let again = merge_ok(b.handle(2).as_ref(), &s, &json!({}), t0).await;
    assert_eq!(again, merged(&expected, &json!({}), t0));
    // A compare-and-set write sees the merges.
    assert!(matches!(
        store
            .update(&s.token_hash, &changed(&again, 1), 3, at)
            .await
            .unwrap(),
        WriteOutcome::Written(_)
    ));
    let after_cas = merge_ok(store, &s, &json!({"step": null}), at + 1).await;
    assert_eq!(after_cas.version, 5);
    assert_eq!(after_cas.data, expected.data);

    // Nothing to merge into: another tenant's, an unknown or an expired session.
    let patch = members(json!({"x": 1}));
    for (tenant, hash, now) in [
        (b.other_tenant(), s.token_hash.clone(), at),
        (b.tenant.clone(), "no-such-hash".to_string(), at),
        (b.tenant.clone(), s.token_hash.clone(), t0 + 8 * HOUR),
    ] {
        assert_eq!(
            store.merge(&tenant, &hash, &patch, now).await.unwrap(),
            MergeOutcome::NotFound
        );
    }
}

async fn merge_keeps_every_value_exact(backend: Backend) {
    let b = Stores::open(backend).await;
    let t0 = now_ms();
    // `session` starts with arrays, empty objects, a float, a big integer
    // and control characters in its data.
    let s = session(&b.tenant, None, t0);
    create(&b, &s, t0).await;
    let store = b.store();
    let patch = json!({
        "u64": u64::MAX,
        "i64": i64::MIN,
        "above 2^53": 9007199254740993u64,
        "floats": [0.1, 0.30000000000000004, 1e-7, 1.7976931348623157e308, -0.0, 5e-324],
        "ints": [0, -1, 2.0, 1e21],
        "unicode ключ \u{1F600}": "ü \u{1F600} \u{7f} \u{1} \"q\" \\ /",
        "escapes": {"\n\t": "\u{0}", "}{][\",:": "]}{[,:"},
        "arrays": [[], {}, [[]], [{}], null, true, false],
        "empty": {"inner": {}},
    });
    let mut expected = merged(&s, &patch, t0 + 1);
    let stored = merge_ok(store, &s, &patch, t0 + 1).await;
    assert_eq!(stored, expected);
    assert_eq!(
        stored.data["cart"],
        json!([1, {}, []]),
        "untouched members stay"
    );
    assert_eq!(stored.data["big"], json!(12345678901234567u64));
    assert_eq!(stored.data["u64"], json!(u64::MAX));
    assert_eq!(stored.data["floats"][0].as_f64(), Some(0.1));
    let got = store.get(&b.tenant, &s.token_hash, t0 + 2).await.unwrap();
    assert_eq!(got, Some(expected.clone()), "and read back exactly");

    // Merging into what a merge stored, members deep inside included.
    let patch = json!({
        "escapes": {"\n\t": null, "new\u{2028}": 1.5},
        "empty": {"inner": {"deeper": [{}]}},
        "floats": null,
    });
    expected = merged(&expected, &patch, t0 + 3);
    assert_eq!(merge_ok(store, &s, &patch, t0 + 3).await, expected);
    assert_eq!(
        b.handle(3)
            .get(&b.tenant, &s.token_hash, t0 + 4)
            .await
            .unwrap(),
        Some(expected.clone())
    );
    // A compare-and-set write and the end queue read it as any record.
    let next = changed(&expected, 9);
    assert!(matches!(
        store
            .update(&s.token_hash, &next, expected.version, t0 + 5)
            .await
            .unwrap(),
        WriteOutcome::Written(_)
    ));
    let removed = store
        .remove(&b.tenant, &s.token_hash, EndReason::Logout, false, t0 + 6)
        .await
        .unwrap();
    assert_eq!(removed, Some(next));
}

async fn merge_refuses_over_the_bounds(backend: Backend) {
    let b = Stores::open(backend).await;
    let t0 = now_ms();
    let store = b.store();

    // The session as a whole: the size of the merged record is the bound.
    let mut big = session(&b.tenant, Some("bob"), t0);
    big.data
        .insert("big".into(), json!("x".repeat(MAX_SESSION_BYTES - 4096)));
    create(&b, &big, t0).await;
    let patch = json!({"more": "y".repeat(8192)});
    let bytes = serde_json::to_vec(&merged(&big, &patch, t0 + 1))
        .unwrap()
        .len();
    match store
        .merge(&b.tenant, &big.token_hash, &members(patch), t0 + 1)
        .await
        .unwrap()
    {
        MergeOutcome::OverLimit(over) => {
            assert_eq!((over.field.as_str(), over.limit), ("", Limit::SessionBytes));
            assert_eq!(over.found, bytes, "the bytes of the record it would be");
        }
        other => panic!("an oversize merge answered {other:?}"),
    }
    assert_eq!(
        store.get(&b.tenant, &big.token_hash, t0 + 2).await.unwrap(),
        Some(big.clone()),
        "nothing was written"
    );
    // Up to the bound exactly, and back down with a null.
    let room = MAX_SESSION_BYTES
        - serde_json::to_vec(&merged(&big, &json!({"m": ""}), t0 + 3))
            .unwrap()
            .len();
    let patch = json!({"m": "z".repeat(room)});
    let full = merge_ok(store, &big, &patch, t0 + 3).await;
    assert_eq!(serde_json::to_vec(&full).unwrap().len(), MAX_SESSION_BYTES);
    let patch = json!({"big": null, "m": null});
    let small = merge_ok(store, &big, &patch, t0 + 4).await;
    assert_eq!(small, merged(&full, &patch, t0 + 4));

    // Data nested deeper than the edge allows (stored before the bound):
    // a merge leaves it as it is.
    let mut deep = session(&b.tenant, None, t0);
    deep.data.insert("deep".into(), nested(40));
    create(&b, &deep, t0).await;
    match store
        .merge(
            &b.tenant,
            &deep.token_hash,
            &members(json!({"x": 1})),
            t0 + 1,
        )
        .await
        .unwrap()
    {
        MergeOutcome::OverLimit(over) => {
            assert_eq!((over.field.as_str(), over.limit), ("data", Limit::Depth));
            assert_eq!(over.found, 41);
        }
        other => panic!("a merge into deep data answered {other:?}"),
    }
    // Removing the deep member brings it back under the bound.
    let patch = json!({"deep": null, "x": nested(31)});
    let fixed = merge_ok(store, &deep, &patch, t0 + 2).await;
    assert_eq!(fixed, merged(&deep, &patch, t0 + 2));
}

async fn merge_concurrent_loses_nothing(backend: Backend) {
    let b = Stores::open(backend).await;
    let t0 = now_ms();
    let s = session(&b.tenant, Some("carol"), t0);
    create(&b, &s, t0).await;
    const WRITERS: usize = 20;
    const EACH: usize = 25;
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (store, s) = (b.handle(w), s.clone());
            tokio::spawn(async move {
                for i in 0..EACH {
                    let patch = members(json!({ format!("w{w}"): i, "last": w }));
                    match store
                        .merge(&s.tenant, &s.token_hash, &patch, now_ms())
                        .await
                    {
                        Ok(MergeOutcome::Merged(_)) => {}
                        other => panic!("merge answered {other:?}"),
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let got = b
        .store()
        .get(&b.tenant, &s.token_hash, now_ms())
        .await
        .unwrap()
        .expect("live");
    assert_eq!(got.version, 1 + (WRITERS * EACH) as u64);
    for w in 0..WRITERS {
        assert_eq!(got.data[&format!("w{w}")], json!(EACH - 1));
    }
    assert_eq!(got.data["cart"], json!([1, {}, []]));
}

async fn remove_exactly_once(backend: Backend) {
    let b = Stores::open(backend).await;
    let t0 = now_ms();
    let s = session(&b.tenant, Some("alice"), t0);
    create(&b, &s, t0).await;
    let mut tasks = Vec::new();
    for i in 0..16 {
        let store = b.handle(i);
        let (tenant, hash) = (b.tenant.clone(), s.token_hash.clone());
        tasks.push(tokio::spawn(async move {
            store
                .remove(&tenant, &hash, EndReason::Logout, true, t0)
                .await
                .unwrap()
        }));
    }
    let mut got = Vec::new();
    for t in tasks {
        got.extend(t.await.unwrap());
    }
    assert_eq!(got, vec![s.clone()], "exactly one remover gets the record");
    let store = b.store();
    assert_eq!(store.get(&b.tenant, &s.token_hash, t0).await.unwrap(), None);
    assert_eq!(
        store
            .remove(&b.tenant, &s.token_hash, EndReason::Logout, true, t0)
            .await
            .unwrap(),
        None
    );
    assert!(
        store
            .list_user(&b.tenant, "alice", t0)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .take_expired(&b.tenant, t0 + 9 * HOUR, 10, true)
            .await
            .unwrap()
            .is_empty()
    );
    // Its token hash is free again.
    create(&b, &s, t0).await;
}

async fn remove_of_expired_leaves_it_to_sweeper(backend: Backend) {
    let b = Stores::open(backend).await;
    let t0 = now_ms();
    let s = session(&b.tenant, Some("alice"), t0);
    create(&b, &s, t0).await;
    let late = t0 + 9 * HOUR;
    assert_eq!(
        b.store()
            .remove(&b.tenant, &s.token_hash, EndReason::Logout, true, late)
            .await
            .unwrap(),
        None
    );
    assert!(
        b.store()
            .remove_user(&b.tenant, "alice", EndReason::Revoked, true, late)
            .await
            .unwrap()
            .is_empty()
    );
    let taken = b
        .store()
        .take_expired(&b.tenant, late, 10, true)
        .await
        .unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].record, s);
}

// ---------------------------------------------------------------- limits

/// The tenant's quota of stored sessions holds exactly when creates race,
/// anonymous ones and users' alike, and ending one makes room for one.
async fn tenant_quota_exact_under_concurrency(backend: Backend) {
    let b = Stores::open(backend).await;
    let t0 = now_ms();
    let quota = CreateLimit {
        user: Some(UserLimit {
            max: 3,
            policy: LimitPolicy::Deny,
        }),
        tenant_max: Some(10),
    };
    let mut tasks = Vec::new();
    for i in 0..60 {
        let store = b.handle(i);
        let user = format!("u{}", i % 20);
        let s = session(&b.tenant, (i % 3 != 0).then_some(user.as_str()), t0);
        tasks.push(tokio::spawn(async move {
            let outcome = store.create(&s, quota, true, t0).await.unwrap();
            (s, outcome)
        }));
    }
    let mut created = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            (s, CreateOutcome::Created { .. }) => created.push(s.token_hash),
            (_, CreateOutcome::QuotaReached { stored }) => assert_eq!(stored, 10),
            (_, other) => panic!("{other:?}"),
        }
    }
    assert_eq!(created.len(), 10);
    assert_eq!(b.store().stored_sessions(&b.tenant).await.unwrap(), 10);
    let extra = session(&b.tenant, None, t0);
    assert_eq!(
        b.store().create(&extra, quota, true, t0).await.unwrap(),
        CreateOutcome::QuotaReached { stored: 10 }
    );
    b.store()
        .remove(&b.tenant, &created[0], EndReason::Logout, true, t0)
        .await
        .unwrap()
        .expect("a stored session");
    assert!(matches!(
        b.store().create(&extra, quota, true, t0).await.unwrap(),
        CreateOutcome::Created { .. }
    ));
    // Another tenant's sessions do not count.
    let other = session(&format!("{}-other", b.tenant), None, t0);
    assert!(matches!(
        b.store().create(&other, quota, true, t0).await.unwrap(),
        CreateOutcome::Created { .. }
    ));
}

async fn limit_deny_exact_under_concurrency(backend: Backend) {
    let b = Stores::open(backend).await;
    let t0 = now_ms();
    let mut tasks = Vec::new();
    for i in 0..50 {
        let store = b.handle(i);
        let s = session(&b.tenant, Some("alice"), t0);
        tasks.push(tokio::spawn(async move {
            let outcome = store
                .create(&s, limit(5, LimitPolicy::Deny), true, t0)
                .await
                .unwrap();
            (s, outcome)
        }));
    }
    let (mut created, mut refused) = (Vec::new(), 0);
    for t in tasks {
        match t.await.unwrap() {
            (s, CreateOutcome::Created { evicted }) => {
                assert!(evicted.is_empty());
                created.push(s.token_hash);
            }
            (_, CreateOutcome::LimitReached { active }) => {
                assert_eq!(active, 5);
                refused += 1;
            }
            (_, other) => panic!("{other:?}"),
        }
    }
    assert_eq!(created.len(), 5);
    assert_eq!(refused, 45);
    let mut listed = hashes(&b.store().list_user(&b.tenant, "alice", t0).await.unwrap());
    listed.sort();
    created.sort();
    assert_eq!(listed, created, "exactly the winners are stored");
    // Refused sessions were not written at all.
    assert_eq!(
        b.store()
            .take_expired(&b.tenant, t0 + 9 * HOUR, 100, true)
            .await
            .unwrap()
            .len(),
        5
    );
    // Anonymous sessions and other users are not limited by alice's count.
    let anon = session(&b.tenant, None, t0);
    assert!(matches!(
        b.store()
            .create(&anon, limit(5, LimitPolicy::Deny), true, t0)
            .await
            .unwrap(),
        CreateOutcome::Created { .. }
    ));
}

async fn limit_counts_only_live_sessions(backend: Backend) {
    let b = Stores::open(backend).await;
    let t0 = now_ms();
    let store = b.store();
    let mut old = session(&b.tenant, Some("alice"), t0);
    old.absolute_expires_at = t0 + MIN;
    let live = session(&b.tenant, Some("alice"), t0);
    let deny = limit(2, LimitPolicy::Deny);
    assert!(matches!(
        store.create(&old, deny, true, t0).await.unwrap(),
        CreateOutcome::Created { .. }
    ));
    assert!(matches!(
        store.create(&live, deny, true, t0).await.unwrap(),
        CreateOutcome::Created { .. }
    ));
    let third = session(&b.tenant, Some("alice"), t0);
    assert_eq!(
        store
            .create(&third, deny, true, t0 + 30 * SEC)
            .await
            .unwrap(),
        CreateOutcome::LimitReached { active: 2 }
    );
    // Once `old` is past its deadline it no longer counts, swept or not.
    assert!(matches!(
        store
            .create(&third, deny, true, t0 + 2 * MIN)
            .await
            .unwrap(),
        CreateOutcome::Created { .. }
    ));
    // Removed sessions do not count either.
    store
        .remove(
            &b.tenant,
            &live.token_hash,
            EndReason::Logout,
            true,
            t0 + 2 * MIN,
        )
        .await
        .unwrap()
        .unwrap();
    let fourth = session(&b.tenant, Some("alice"), t0);
    assert!(matches!(
        store
            .create(&fourth, deny, true, t0 + 2 * MIN)
            .await
            .unwrap(),
        CreateOutcome::Created { .. }
    ));
    let taken = store
        .take_expired(&b.tenant, t0 + 2 * MIN, 10, true)
        .await
        .unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].record, old);
}

async fn limit_evict_lru(backend: Backend) {
    let b = Stores::open(backend).await;
    let t0 = now_ms();
    let store = b.store();
    let evict = limit(3, LimitPolicy::EvictLru);
    let mut made = Vec::new();
    for i in 0..3 {
        let mut s = session(&b.tenant, Some("alice"), t0 + i);
        s.created_at = t0 + i;
        s.last_seen_at = t0 + i;
        assert_eq!(
            store.create(&s, evict, true, t0 + i).await.unwrap(),
            CreateOutcome::Created { evicted: vec![] }
        );
        made.push(s);
    }
    // Using the oldest makes the second one the least recently used.
    let first = store
        .touch(&b.tenant, &made[0].token_hash, t0 + 10)
        .await
        .unwrap()
        .unwrap();
    let mut fourth = session(&b.tenant, Some("alice"), t0 + 20);
    fourth.last_seen_at = t0 + 20;
    assert_eq!(
        store.create(&fourth, evict, true, t0 + 20).await.unwrap(),
        CreateOutcome::Created {
            evicted: vec![made[1].clone()]
        }
    );
    assert_eq!(
        store
            .get(&b.tenant, &made[1].token_hash, t0 + 20)
            .await
            .unwrap(),
        None
    );
    let listed = store.list_user(&b.tenant, "alice", t0 + 20).await.unwrap();
    assert_eq!(listed, vec![first, made[2].clone(), fourth.clone()]);
    // The evicted session is gone for the sweeper as well.
    let taken = store
        .take_expired(&b.tenant, t0 + 9 * HOUR, 10, true)
        .await
        .unwrap();
    assert_eq!(taken.len(), 3);
    assert!(
        taken
            .iter()
            .all(|e| e.record.token_hash != made[1].token_hash)
    );

    // Lowering the limit evicts as many as needed to fit the new session.
    let mut again = Vec::new();
    for i in 0..3 {
        let s = session(&b.tenant, Some("bob"), t0 + i);
        store
            .create(&s, limit(3, LimitPolicy::EvictLru), true, t0)
            .await
            .unwrap();
        again.push(s);
    }
    let newest = session(&b.tenant, Some("bob"), t0 + 5);
    assert_eq!(
        store
            .create(&newest, limit(1, LimitPolicy::EvictLru), true, t0)
            .await
            .unwrap(),
        CreateOutcome::Created { evicted: again }
    );
    assert_eq!(
        store.list_user(&b.tenant, "bob", t0).await.unwrap(),
        vec![newest]
    );
}

async fn limit_evict_lru_under_concurrency(backend: Backend) {
    let b = Stores::open(backend).await;
    let t0 = now_ms();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let store = b.handle(i);
        let s = session(&b.tenant, Some("alice"), t0);
        tasks.push(tokio::spawn(async move {
            store
                .create(&s, limit(3, LimitPolicy::EvictLru), true, t0)
                .await
                .unwrap()
        }));
    }
    let mut evicted = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            CreateOutcome::Created { evicted: e } => evicted.extend(hashes(&e)),
            other => panic!("EvictLru never refuses: {other:?}"),
        }
    }
    assert_eq!(evicted.len(), 17);
    assert_eq!(
        evicted.iter().collect::<HashSet<_>>().len(),
        17,
        "each session is evicted once"
    );
    let listed = b.store().list_user(&b.tenant, "alice", t0).await.unwrap();
    assert_eq!(listed.len(), 3);
    assert!(listed.iter().all(|s| !evicted.contains(&s.token_hash)));
}

async fn limit_zero(backend: Backend) {
    let b = Stores::open(backend).await;
    let t0 = now_ms();
    for policy in [LimitPolicy::Deny, LimitPolicy::EvictLru] {
        let s = session(&b.tenant, Some("alice"), t0);
        assert_eq!(
            b.store()
                .create(&s, limit(0, policy), true, t0)
                .await
                .unwrap(),
            CreateOutcome::LimitReached { active: 0 }
        );
        assert_eq!(
            b.store().get(&b.tenant, &s.token_hash, t0).await.unwrap(),
            None
        );
    }
}

// ---------------------------------------------------------------- per user

async fn list_user_oldest_first(backend: Backend) {
    let b = Stores::open(backend).await;
    let t0 = now_ms();
    let store = b.store();
    let mut made = Vec::new();
    for offset in [3, 1, 2] {
        let mut s = session(&b.tenant, Some("alice"), t0);
        s.created_at = t0 + offset;
        // Recency differs from age: the newest is the least recently used.
        s.last_seen_at = t0 + 10 - offset;
        create(&b, &s, t0).await;
        made.push(s);
    }
    let mut expired = session(&b.tenant, Some("alice"), t0);
    expired.absolute_expires_at = t0 + MIN;
    create(&b, &expired, t0).await;
    create(&b, &session(&b.tenant, Some("bob"), t0), t0).await;
    create(&b, &session(&b.other_tenant(), Some("alice"), t0), t0).await;

    let listed = store
        .list_user(&b.tenant, "alice", t0 + 2 * MIN)
        .await
        .unwrap();
    assert_eq!(
        listed,
        vec![made[1].clone(), made[2].clone(), made[0].clone()]
    );
    assert!(
        store
            .list_user(&b.tenant, "carol", t0)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.list_user(&b.tenant, "alice", t0).await.unwrap().len(),
        4
    );
    assert_eq!(
        store
            .list_user(&b.other_tenant(), "alice", t0)
            .await
            .unwrap()
            .len(),
        1
    );
}

async fn remove_user_exactly_once(backend: Backend) {
    let b = Stores::open(backend).await;
    let t0 = now_ms();
    let mut alice = Vec::new();
    for _ in 0..3 {
        let s = session(&b.tenant, Some("alice"), t0);
        create(&b, &s, t0).await;
        alice.push(s.token_hash);
    }
    let mut expired = session(&b.tenant, Some("alice"), t0);
    expired.absolute_expires_at = t0 + MIN;
    create(&b, &expired, t0).await;
    let bob = session(&b.tenant, Some("bob"), t0);
    create(&b, &bob, t0).await;
    let anon = session(&b.tenant, None, t0);
    create(&b, &anon, t0).await;

    let now = t0 + 2 * MIN;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = b.handle(i);
        let tenant = b.tenant.clone();
        tasks.push(tokio::spawn(async move {
            store
                .remove_user(&tenant, "alice", EndReason::Revoked, true, now)
                .await
                .unwrap()
        }));
    }
    let mut removed = Vec::new();
    for t in tasks {
        removed.extend(hashes(&t.await.unwrap()));
    }
    removed.sort();
    alice.sort();
    assert_eq!(
        removed, alice,
        "each live session once, the expired one not"
    );
    let store = b.store();
    assert!(
        store
            .list_user(&b.tenant, "alice", now)
            .await
            .unwrap()
            .is_empty()
    );
    for h in &alice {
        assert_eq!(store.get(&b.tenant, h, now).await.unwrap(), None);
    }
    assert_eq!(
        store.list_user(&b.tenant, "bob", now).await.unwrap(),
        vec![bob]
    );
    assert!(
        store
            .get(&b.tenant, &anon.token_hash, now)
            .await
            .unwrap()
            .is_some()
    );
    let taken = store.take_expired(&b.tenant, now, 10, true).await.unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].record, expired);
}

// ---------------------------------------------------------------- sweeping

async fn take_expired_reasons_order_and_max(backend: Backend) {
    let b = Stores::open(backend).await;
    let t0 = now_ms();
    let store = b.store();
    // Deadlines at +1..+5 min, alternating absolute and idle.
    let mut made = Vec::new();
    for i in 1..=5u64 {
        let mut s = session(&b.tenant, Some("alice"), t0);
        if i % 2 == 1 {
            s.absolute_expires_at = t0 + i * MIN;
            s.idle_timeout_ms = HOUR;
        } else {
            s.absolute_expires_at = t0 + HOUR;
            s.idle_timeout_ms = i * MIN;
        }
        made.push(s);
    }
    for s in made.iter().rev() {
        create(&b, s, t0).await;
    }
    let live = session(&b.tenant, Some("alice"), t0);
    create(&b, &live, t0).await;

    assert!(
        store
            .take_expired(&b.tenant, t0 + MIN - 1, 10, true)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .take_expired(&b.tenant, t0 + 10 * MIN, 0, true)
            .await
            .unwrap()
            .is_empty()
    );
    let now = t0 + 10 * MIN;
    let first = store.take_expired(&b.tenant, now, 2, true).await.unwrap();
    let second = store.take_expired(&b.tenant, now, 2, true).await.unwrap();
    let third = store.take_expired(&b.tenant, now, 2, true).await.unwrap();
    assert_eq!((first.len(), second.len(), third.len()), (2, 2, 1));
    assert!(
        store
            .take_expired(&b.tenant, now, 2, true)
            .await
            .unwrap()
            .is_empty()
    );
    let all: Vec<_> = first.into_iter().chain(second).chain(third).collect();
    for (e, s) in all.iter().zip(&made) {
        assert_eq!(&e.record, s, "earliest deadline first");
    }
    let reasons: Vec<EndReason> = all.iter().map(|e| e.reason).collect();
    use EndReason::{Expired, IdleTimeout};
    assert_eq!(
        reasons,
        vec![Expired, IdleTimeout, Expired, IdleTimeout, Expired]
    );
    // Taken sessions left the user index; the live one stays.
    assert_eq!(
        store.list_user(&b.tenant, "alice", t0).await.unwrap(),
        vec![live.clone()]
    );
    assert!(matches!(
        store
            .create(
                &session(&b.tenant, Some("alice"), t0),
                limit(2, LimitPolicy::Deny),
                true,
                t0
            )
            .await
            .unwrap(),
        CreateOutcome::Created { .. }
    ));
    assert!(
        store
            .take_expired(&b.other_tenant(), t0 + 9 * HOUR, 10, true)
            .await
            .unwrap()
            .is_empty(),
        "sweeping is per tenant"
    );
}

async fn take_expired_concurrent_never_duplicates(backend: Backend) {
    let b = Stores::open(backend).await;
    let t0 = now_ms();
    let mut made = HashSet::new();
    for i in 0..40u64 {
        let mut s = session(&b.tenant, i.is_multiple_of(2).then_some("alice"), t0);
        s.absolute_expires_at = t0 + MIN + i;
        create(&b, &s, t0).await;
        made.insert(s.token_hash);
    }
    let now = t0 + 2 * MIN;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = b.handle(i);
        let tenant = b.tenant.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let batch = store.take_expired(&tenant, now, 3, true).await.unwrap();
                if batch.is_empty() {
                    return got;
                }
                got.extend(batch.into_iter().map(|e| e.record.token_hash));
            }
        }));
    }
    // Removers race the sweepers; neither may see a session the other took,
    // and expired sessions are not removable.
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    assert_eq!(all.len(), 40, "no duplicates");
    assert_eq!(all.into_iter().collect::<HashSet<_>>(), made);
}

// ---------------------------------------------------------------- kv

async fn kv_get_set_delete(backend: Backend) {
    let b = Stores::open(backend).await;
    let (s, t) = (b.store(), b.tenant.as_str());
    assert_eq!(s.kv_get(t, "p", "k").await.unwrap(), None);
    s.kv_set(t, "p", "k", "v1", None).await.unwrap();
    assert_eq!(s.kv_get(t, "p", "k").await.unwrap().as_deref(), Some("v1"));
    s.kv_set(t, "p", "k", "v2 ünï \n {json}", None)
        .await
        .unwrap();
    assert_eq!(
        b.handle(1).kv_get(t, "p", "k").await.unwrap().as_deref(),
        Some("v2 ünï \n {json}")
    );
    s.kv_set(t, "p", "empty", "", None).await.unwrap();
    assert_eq!(
        s.kv_get(t, "p", "empty").await.unwrap().as_deref(),
        Some("")
    );
    assert!(s.kv_delete(t, "p", "k").await.unwrap());
    assert!(!s.kv_delete(t, "p", "k").await.unwrap());
    assert_eq!(s.kv_get(t, "p", "k").await.unwrap(), None);
    // A TTL of zero expires at once.
    s.kv_set(t, "p", "zero", "x", Some(0)).await.unwrap();
    assert_eq!(s.kv_get(t, "p", "zero").await.unwrap(), None);
}

async fn kv_ttl(backend: Backend) {
    let b = Stores::open(backend).await;
    let (s, t) = (b.store(), b.tenant.as_str());
    s.kv_set(t, "p", "short", "1", Some(1)).await.unwrap();
    s.kv_set(t, "p", "gone", "1", Some(1)).await.unwrap();
    s.kv_set(t, "p", "long", "1", Some(3600)).await.unwrap();
    s.kv_set(t, "p", "forever", "1", None).await.unwrap();
    // Rewriting without a TTL makes the entry permanent again.
    s.kv_set(t, "p", "kept", "1", Some(1)).await.unwrap();
    s.kv_set(t, "p", "kept", "2", None).await.unwrap();
    assert_eq!(
        s.kv_get(t, "p", "short").await.unwrap().as_deref(),
        Some("1")
    );
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(s.kv_get(t, "p", "short").await.unwrap(), None);
    assert!(
        !s.kv_delete(t, "p", "gone").await.unwrap(),
        "expired is absent"
    );
    assert_eq!(
        s.kv_get(t, "p", "long").await.unwrap().as_deref(),
        Some("1")
    );
    assert_eq!(
        s.kv_get(t, "p", "forever").await.unwrap().as_deref(),
        Some("1")
    );
    assert_eq!(
        s.kv_get(t, "p", "kept").await.unwrap().as_deref(),
        Some("2")
    );
    // An expired key can be written again.
    s.kv_set(t, "p", "short", "again", None).await.unwrap();
    assert_eq!(
        s.kv_get(t, "p", "short").await.unwrap().as_deref(),
        Some("again")
    );
}

async fn kv_quota_bounds_keys_and_bytes(backend: Backend) {
    let b = Stores::open(backend).await;
    let (s, t) = (b.store(), b.tenant.as_str());
    let quota = KvQuota {
        max_bytes: 40,
        max_keys: 3,
    };
    for k in ["k1", "k2", "k3"] {
        s.kv_set_within(t, "p", k, "12345678", None, quota)
            .await
            .unwrap();
    }
    // A fourth key is refused, and nothing of it is written.
    let err = s
        .kv_set_within(t, "p", "k4", "x", None, quota)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::QuotaExceeded(_)), "{err:?}");
    assert!(err.to_string().starts_with("quota exceeded: "), "{err}");
    assert_eq!(s.kv_get(t, "p", "k4").await.unwrap(), None);
    // Replacing a key counts it once: 3 keys, 2 + 20 + 2 * 10 = 42 bytes
    // would be over; 2 + 18 + 20 = 40 is not.
    let err = s
        .kv_set_within(t, "p", "k1", &"x".repeat(20), None, quota)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::QuotaExceeded(_)), "{err:?}");
    assert_eq!(
        s.kv_get(t, "p", "k1").await.unwrap().as_deref(),
        Some("12345678")
    );
    s.kv_set_within(t, "p", "k1", &"x".repeat(18), None, quota)
        .await
        .unwrap();
    // Another plugin, and another tenant, have quotas of their own.
    s.kv_set_within(t, "q", "k4", "x", None, quota)
        .await
        .unwrap();
    s.kv_set_within(&b.other_tenant(), "p", "k4", "x", None, quota)
        .await
        .unwrap();
    // A delete, and a TTL of 0, make room.
    assert!(s.kv_delete(t, "p", "k2").await.unwrap());
    s.kv_set_within(t, "p", "k4", "1", None, quota)
        .await
        .unwrap();
    s.kv_set_within(t, "p", "k4", "1", Some(0), quota)
        .await
        .unwrap();
    // So does an entry's lapsing.
    s.kv_set_within(t, "p", "brief", "1", Some(1), quota)
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match s.kv_set_within(t, "p", "later", "1", None, quota).await {
            Ok(()) => break,
            Err(StoreError::QuotaExceeded(_)) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("the lapsed entry still counts: {e}"),
        }
    }
    assert_eq!(s.kv_get(t, "p", "brief").await.unwrap(), None);
    // The plain write has no quota.
    s.kv_set(t, "p", "k5", "x", None).await.unwrap();
}

/// Many writers of new keys at once, through two handles (two hosts):
/// exactly as many as the quota allows succeed.
async fn kv_quota_holds_under_concurrency(backend: Backend) {
    let b = Stores::open(backend).await;
    let t = b.tenant.clone();
    let quota = KvQuota {
        max_bytes: 1 << 20,
        max_keys: 10,
    };
    let mut tasks = Vec::new();
    for i in 0..40 {
        let s = b.handle(i % 2);
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            s.kv_set_within(&t, "p", &format!("k{i}"), "v", None, quota)
                .await
        }));
    }
    let mut written = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(()) => written += 1,
            Err(StoreError::QuotaExceeded(_)) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(written, 10);
}

async fn kv_isolation(backend: Backend) {
    let b = Stores::open(backend).await;
    let s = b.store();
    let (t1, t2) = (b.tenant.clone(), b.other_tenant());
    s.kv_set(&t1, "p1", "k", "t1p1", None).await.unwrap();
    s.kv_set(&t1, "p2", "k", "t1p2", None).await.unwrap();
    s.kv_set(&t2, "p1", "k", "t2p1", None).await.unwrap();
    // Separators inside names do not make keys collide.
    s.kv_set(&t1, "a:b", "c", "plugin a:b", None).await.unwrap();
    s.kv_set(&t1, "a", "b:c", "plugin a", None).await.unwrap();
    assert_eq!(
        s.kv_get(&t1, "p1", "k").await.unwrap().as_deref(),
        Some("t1p1")
    );
    assert_eq!(
        s.kv_get(&t1, "p2", "k").await.unwrap().as_deref(),
        Some("t1p2")
    );
    assert_eq!(
        s.kv_get(&t2, "p1", "k").await.unwrap().as_deref(),
        Some("t2p1")
    );
    assert_eq!(s.kv_get(&t2, "p2", "k").await.unwrap(), None);
    assert_eq!(
        s.kv_get(&t1, "a:b", "c").await.unwrap().as_deref(),
        Some("plugin a:b")
    );
    assert_eq!(
        s.kv_get(&t1, "a", "b:c").await.unwrap().as_deref(),
        Some("plugin a")
    );
    assert!(s.kv_delete(&t1, "p1", "k").await.unwrap());
    assert_eq!(
        s.kv_get(&t2, "p1", "k").await.unwrap().as_deref(),
        Some("t2p1")
    );
    assert_eq!(
        s.kv_get(&t1, "p2", "k").await.unwrap().as_deref(),
        Some("t1p2")
    );
}

// ---------------------------------------------------------------- audit

async fn audit_append_and_page(backend: Backend) {
    let b = Stores::open(backend).await;
    let t0 = now_ms();
    let s = b.store();
    let page = s.audit_page(&b.tenant, None, 10).await.unwrap();
    assert!(page.records.is_empty());
    assert_eq!(page.next, None);

    let mut ids = Vec::new();
    for i in 0..25u64 {
        let session = i.is_multiple_of(3).then(|| format!("pub-{i}"));
        let id = b
            .handle(i as usize)
            .audit_append(
                &b.tenant,
                if i.is_multiple_of(2) {
                    "audit-log"
                } else {
                    "geo"
                },
                session.as_deref(),
                &json!({"i": i, "what": "login", "nested": {"list": []}}),
                None,
                t0 + i / 4,
            )
            .await
            .unwrap();
        ids.push(id);
    }
    for w in ids.windows(2) {
        assert!(id_key(&w[0]) < id_key(&w[1]), "ids increase: {w:?}");
    }

    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = s.audit_page(&b.tenant, after.as_deref(), 10).await.unwrap();
        pages += 1;
        seen.extend(page.records);
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), 25);
    for (i, r) in seen.iter().enumerate() {
        let i = i as u64;
        assert_eq!(r.id, ids[i as usize]);
        assert_eq!(r.tenant, b.tenant);
        assert_eq!(r.at, t0 + i / 4);
        assert_eq!(
            r.plugin,
            if i.is_multiple_of(2) {
                "audit-log"
            } else {
                "geo"
            }
        );
        assert_eq!(r.session, i.is_multiple_of(3).then(|| format!("pub-{i}")));
        assert_eq!(
            r.record,
            json!({"i": i, "what": "login", "nested": {"list": []}})
        );
    }

    // A page that ends exactly at the end says it is the last.
    let page = s.audit_page(&b.tenant, Some(&ids[14]), 10).await.unwrap();
    assert_eq!(page.records.len(), 10);
    assert_eq!(page.next, None);
    let page = s.audit_page(&b.tenant, Some(&ids[24]), 10).await.unwrap();
    assert!(page.records.is_empty());
    assert_eq!(page.next, None);
    let page = s.audit_page(&b.tenant, Some(&ids[3]), 1).await.unwrap();
    assert_eq!(page.records[0].id, ids[4]);
    assert_eq!(page.next.as_deref(), Some(ids[4].as_str()));

    // Tenants have separate streams.
    assert!(
        s.audit_page(&b.other_tenant(), None, 10)
            .await
            .unwrap()
            .records
            .is_empty()
    );
    s.audit_append(&b.other_tenant(), "p", None, &json!({}), None, t0)
        .await
        .unwrap();
    assert_eq!(
        s.audit_page(&b.other_tenant(), None, 10)
            .await
            .unwrap()
            .records
            .len(),
        1
    );
    assert_eq!(
        s.audit_page(&b.tenant, None, 100)
            .await
            .unwrap()
            .records
            .len(),
        25
    );
}

// ---------------------------------------------------------------- tenants

async fn tenants_are_isolated(backend: Backend) {
    let b = Stores::open(backend).await;
    let t0 = now_ms();
    let store = b.store();
    let a = session(&b.tenant, Some("alice"), t0);
    let mut other = a.clone();
    other.tenant = b.other_tenant();
    other.public_id = "other".into();
    create(&b, &a, t0).await;
    create(&b, &other, t0).await; // same token hash, other tenant
    assert_eq!(
        store.get(&b.tenant, &a.token_hash, t0).await.unwrap(),
        Some(a.clone())
    );
    assert_eq!(
        store.get(&other.tenant, &a.token_hash, t0).await.unwrap(),
        Some(other.clone())
    );
    assert_eq!(
        store
            .remove(&b.tenant, &a.token_hash, EndReason::Logout, true, t0)
            .await
            .unwrap(),
        Some(a)
    );
    assert_eq!(
        store.list_user(&other.tenant, "alice", t0).await.unwrap(),
        vec![other.clone()]
    );
    let taken = store
        .take_expired(&other.tenant, t0 + 9 * HOUR, 10, true)
        .await
        .unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].record, other);
}

async fn odd_tenant_names(backend: Backend) {
    let b = Stores::open(backend).await;
    let t0 = now_ms();
    let store = b.store();
    let names = [
        format!("{}{{x}}", b.tenant),
        format!("}}{}:%", b.tenant),
        format!("{}%7D", b.tenant),
        String::new(),
    ];
    for name in &names {
        let s = session(name, Some("a:b{c}"), t0);
        create(&b, &s, t0).await;
        assert_eq!(
            store.get(name, &s.token_hash, t0).await.unwrap(),
            Some(s.clone())
        );
        assert_eq!(
            store.list_user(name, "a:b{c}", t0).await.unwrap(),
            vec![s.clone()]
        );
        let touched = store
            .touch(name, &s.token_hash, t0 + 1)
            .await
            .unwrap()
            .unwrap();
        let mut rotated = changed(&touched, 1);
        rotated.token_hash = format!("{}r", s.token_hash);
        assert!(matches!(
            store
                .update(&s.token_hash, &rotated, 2, t0 + 1)
                .await
                .unwrap(),
            WriteOutcome::Written(_)
        ));
        store.kv_set(name, "p", "k", name, None).await.unwrap();
        store
            .audit_append(name, "p", None, &json!({"t": name}), None, t0)
            .await
            .unwrap();
    }
    for name in &names {
        assert_eq!(
            store.kv_get(name, "p", "k").await.unwrap().as_deref(),
            Some(name.as_str())
        );
        let page = store.audit_page(name, None, 10).await.unwrap();
        assert_eq!(page.records.len(), 1);
        assert_eq!(page.records[0].record, json!({"t": name}));
        assert_eq!(
            store
                .remove_user(name, "a:b{c}", EndReason::Revoked, true, t0 + 2)
                .await
                .unwrap()
                .len(),
            1
        );
    }
}

// ---------------------------------------------------------------- end queue

/// Claims every job there is for `consumer` (batches of 5).
async fn claim_all(store: &dyn StoreBackend, tenant: &str, consumer: &str) -> Vec<EndJob> {
    let mut jobs = Vec::new();
    loop {
        let batch = store
            .claim_ends(tenant, consumer, 5, HOUR, now_ms())
            .await
            .unwrap();
        if batch.is_empty() {
            return jobs;
        }
        jobs.extend(batch);
    }
}

async fn ends_queued_by_every_ending(backend: Backend) {
    let b = Stores::open(backend).await;
    let t0 = now_ms();
    let s = b.store();
    let logout = session(&b.tenant, Some("ann"), t0);
    create(&b, &logout, t0).await;
    let revoked: Vec<_> = (0..2)
        .map(|_| session(&b.tenant, Some("ben"), t0))
        .collect();
    for r in &revoked {
        create(&b, r, t0).await;
    }
    let mut expired = session(&b.tenant, None, t0);
    expired.absolute_expires_at = t0 + SEC;
    create(&b, &expired, t0).await;
    let mut idle = session(&b.tenant, None, t0);
    idle.idle_timeout_ms = SEC;
    create(&b, &idle, t0).await;
    let evicted = session(&b.tenant, Some("cid"), t0);
    create(&b, &evicted, t0).await;
    // Ended without asking for a job: none is queued.
    let quiet = session(&b.tenant, None, t0);
    create(&b, &quiet, t0).await;
    assert_eq!(
        s.end_queue(&b.tenant).await.unwrap(),
        EndQueueStats::default()
    );

    s.remove(&b.tenant, &logout.token_hash, EndReason::Logout, true, t0)
        .await
        .unwrap()
        .expect("live");
    s.remove(&b.tenant, &quiet.token_hash, EndReason::Logout, false, t0)
        .await
        .unwrap()
        .expect("live");
    assert_eq!(
        s.remove_user(&b.tenant, "ben", EndReason::Revoked, true, t0)
            .await
            .unwrap()
            .len(),
        2
    );
    let newer = session(&b.tenant, Some("cid"), t0 + 1);
    match s
        .create(&newer, limit(1, LimitPolicy::EvictLru), true, t0 + 1)
        .await
        .unwrap()
    {
        CreateOutcome::Created { evicted: e } => {
            assert_eq!(e.len(), 1);
            assert_eq!(e[0], evicted);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        s.take_expired(&b.tenant, t0 + 2 * SEC, 10, true)
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        s.end_queue(&b.tenant).await.unwrap(),
        EndQueueStats {
            waiting: 6,
            claimed: 0
        }
    );

    let jobs = claim_all(s, &b.tenant, "host-a").await;
    assert_eq!(
        s.end_queue(&b.tenant).await.unwrap(),
        EndQueueStats {
            waiting: 0,
            claimed: 6
        }
    );
    let mut got: Vec<(String, EndReason)> = jobs
        .iter()
        .map(|j| (j.record.public_id.clone(), j.reason))
        .collect();
    got.sort();
    let mut want = vec![
        (logout.public_id.clone(), EndReason::Logout),
        (revoked[0].public_id.clone(), EndReason::Revoked),
        (revoked[1].public_id.clone(), EndReason::Revoked),
        (evicted.public_id.clone(), EndReason::Evicted),
        (expired.public_id.clone(), EndReason::Expired),
        (idle.public_id.clone(), EndReason::IdleTimeout),
    ];
    want.sort();
    assert_eq!(got, want);
    let logout_job = jobs.iter().find(|j| j.reason == EndReason::Logout).unwrap();
    assert_eq!(
        logout_job.record, logout,
        "the job carries the session as it ended"
    );
    assert_eq!(logout_job.ended_at, t0);
    let end_ids: HashSet<&str> = jobs.iter().map(|j| j.end_id.as_str()).collect();
    assert_eq!(end_ids.len(), 6, "end ids are distinct");
    assert!(jobs.iter().all(|j| !j.reclaimed));
    assert!(
        jobs.iter()
            .all(|j| j.end_id.starts_with(&j.record.public_id))
    );

    let ids: Vec<String> = jobs.iter().map(|j| j.id.clone()).collect();
    s.ack_ends(&b.tenant, &ids).await.unwrap();
    assert_eq!(
        s.end_queue(&b.tenant).await.unwrap(),
        EndQueueStats::default()
    );
    assert!(claim_all(s, &b.tenant, "host-b").await.is_empty());
    // Acknowledging again (or unknown ids) is harmless.
    s.ack_ends(&b.tenant, &ids).await.unwrap();
    assert!(
        claim_all(s, &b.other_tenant(), "host-a").await.is_empty(),
        "queues are per tenant"
    );
}

/// A job queued while a request is served carries that request's trace
/// (what the end worker's `end_job` span continues); one the sweeper queued
/// carries none.
async fn ends_carry_the_trace_they_were_queued_in(backend: Backend) {
    let b = Stores::open(backend).await;
    let t0 = now_ms();
    let s = b.store();
    let trace = |n: u8| {
        TraceParent::parse(&format!(
            "00-{:032x}-{:016x}-01",
            u128::from(n) << 64 | 7,
            u64::from(n) + 1
        ))
        .unwrap()
    };
    let logout = session(&b.tenant, Some("ann"), t0);
    create(&b, &logout, t0).await;
    let revoked = session(&b.tenant, Some("ben"), t0);
    create(&b, &revoked, t0).await;
    let evicted = session(&b.tenant, Some("cid"), t0);
    create(&b, &evicted, t0).await;
    let mut expired = session(&b.tenant, None, t0);
    expired.absolute_expires_at = t0 + SEC;
    create(&b, &expired, t0).await;

    trace::scope(trace(1), async {
        s.remove(&b.tenant, &logout.token_hash, EndReason::Logout, true, t0)
            .await
            .unwrap()
            .expect("live");
    })
    .await;
    trace::scope(trace(2), async {
        s.remove_user(&b.tenant, "ben", EndReason::Revoked, true, t0)
            .await
            .unwrap();
    })
    .await;
    trace::scope(trace(3), async {
        let newer = session(&b.tenant, Some("cid"), t0 + 1);
        s.create(&newer, limit(1, LimitPolicy::EvictLru), true, t0 + 1)
            .await
            .unwrap();
    })
    .await;
    s.take_expired(&b.tenant, t0 + 2 * SEC, 10, true)
        .await
        .unwrap();

    let jobs = claim_all(s, &b.tenant, "host-a").await;
    let of = |reason: EndReason| {
        jobs.iter()
            .find(|j| j.reason == reason)
            .unwrap_or_else(|| panic!("no {reason:?} job in {jobs:?}"))
            .trace
            .clone()
    };
    assert_eq!(of(EndReason::Logout), Some(trace(1)));
    assert_eq!(of(EndReason::Revoked), Some(trace(2)));
    assert_eq!(of(EndReason::Evicted), Some(trace(3)));
    assert_eq!(
        of(EndReason::Expired),
        None,
        "the sweeper serves no request"
    );
}

async fn ends_each_claimed_once_under_concurrency(backend: Backend) {
    let b = Stores::open(backend).await;
    let t0 = now_ms();
    let mut public = Vec::new();
    for _ in 0..60 {
        let r = session(&b.tenant, None, t0);
        create(&b, &r, t0).await;
        b.store()
            .remove(&b.tenant, &r.token_hash, EndReason::Logout, true, t0)
            .await
            .unwrap();
        public.push(r.public_id);
    }
    let mut tasks = Vec::new();
    for i in 0..6 {
        let store = b.handle(i);
        let tenant = b.tenant.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let jobs = store
                    .claim_ends(&tenant, &format!("host-{i}"), 3, HOUR, now_ms())
                    .await
                    .unwrap();
                if jobs.is_empty() {
                    return mine;
                }
                mine.extend(jobs.into_iter().map(|j| j.record.public_id));
            }
        }));
    }
    let mut claimed = Vec::new();
    for t in tasks {
        claimed.extend(t.await.unwrap());
    }
    claimed.sort();
    public.sort();
    assert_eq!(claimed, public, "every job claimed by exactly one consumer");
}

async fn ends_abandoned_are_reclaimed(backend: Backend) {
    let b = Stores::open(backend).await;
    let t0 = now_ms();
    let s = b.store();
    for _ in 0..3 {
        let r = session(&b.tenant, None, t0);
        create(&b, &r, t0).await;
        s.remove(&b.tenant, &r.token_hash, EndReason::Logout, true, t0)
            .await
            .unwrap();
    }
    let dead = s
        .claim_ends(&b.tenant, "dead-host", 10, HOUR, now_ms())
        .await
        .unwrap();
    assert_eq!(dead.len(), 3);
    // Still held by the dead host: not handed out before the reclaim time.
    assert!(
        b.handle(1)
            .claim_ends(&b.tenant, "live-host", 10, HOUR, now_ms())
            .await
            .unwrap()
            .is_empty()
    );
    tokio::time::sleep(Duration::from_millis(60)).await;
    let taken = b
        .handle(1)
        .claim_ends(&b.tenant, "live-host", 2, 50, now_ms())
        .await
        .unwrap();
    assert_eq!(taken.len(), 2, "at most max");
    let rest = b
        .handle(2)
        .claim_ends(&b.tenant, "live-host", 10, 50, now_ms())
        .await
        .unwrap();
    assert_eq!(rest.len(), 1);
    let mut again: Vec<EndJob> = taken.into_iter().chain(rest).collect();
    assert!(again.iter().all(|j| j.reclaimed));
    again.sort_by(|x, y| x.id.cmp(&y.id));
    let mut first = dead.clone();
    first.sort_by(|x, y| x.id.cmp(&y.id));
    for (a, d) in again.iter().zip(&first) {
        assert_eq!((&a.id, &a.end_id, &a.record), (&d.id, &d.end_id, &d.record));
    }
    assert_eq!(
        s.end_queue(&b.tenant).await.unwrap(),
        EndQueueStats {
            waiting: 0,
            claimed: 3
        }
    );
    let ids: Vec<String> = again.iter().map(|j| j.id.clone()).collect();
    s.ack_ends(&b.tenant, &ids).await.unwrap();
    assert_eq!(
        s.end_queue(&b.tenant).await.unwrap(),
        EndQueueStats::default()
    );
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert!(
        s.claim_ends(&b.tenant, "late", 10, 50, now_ms())
            .await
            .unwrap()
            .is_empty(),
        "acknowledged jobs never come back"
    );
}

async fn audit_append_once(backend: Backend) {
    let b = Stores::open(backend).await;
    let t0 = now_ms();
    let s = b.store();
    let record = json!({"type": "session_ended"});
    let first = s
        .audit_append(
            &b.tenant,
            "audit-log",
            Some("pub-1"),
            &record,
            Some("end-1:audit-log:1"),
            t0,
        )
        .await
        .unwrap();
    let again = b
        .handle(1)
        .audit_append(
            &b.tenant,
            "audit-log",
            Some("pub-1"),
            &record,
            Some("end-1:audit-log:1"),
            t0 + 5,
        )
        .await
        .unwrap();
    assert_eq!(first, again);
    let other = s
        .audit_append(
            &b.tenant,
            "audit-log",
            Some("pub-1"),
            &record,
            Some("end-1:audit-log:2"),
            t0,
        )
        .await
        .unwrap();
    assert_ne!(first, other);
    let page = s.audit_page(&b.tenant, None, 10).await.unwrap();
    assert_eq!(page.records.len(), 2);
    // The key is per tenant.
    s.audit_append(
        &b.other_tenant(),
        "audit-log",
        None,
        &record,
        Some("end-1:audit-log:1"),
        t0,
    )
    .await
    .unwrap();
    assert_eq!(
        s.audit_page(&b.other_tenant(), None, 10)
            .await
            .unwrap()
            .records
            .len(),
        1
    );
}

// ---------------------------------------------------------------- bounds

/// `levels` nested objects: `{"a": {"a": ... {}}}`.
fn nested(levels: usize) -> serde_json::Value {
    let mut value = json!({});
    for _ in 1..levels {
        value = json!({ "a": value });
    }
    value
}

/// A record nested deeper than serde_json's default limit of 128, written
/// through the store API (as hosts without the edge bound could), reads
/// back through every read; one deeper than the stores keep is refused.
async fn deep_records_read_back(backend: Backend) {
    let b = Stores::open(backend).await;
    let t0 = now_ms();
    let s = b.store();
    let mut deep = session(&b.tenant, Some("deep"), t0);
    deep.data.insert("deep".into(), nested(200));
    deep.plugin_state
        .insert("p".into(), json!({ "deep": nested(150) }));
    create(&b, &deep, t0).await;
    assert_eq!(
        s.get(&b.tenant, &deep.token_hash, t0).await.unwrap(),
        Some(deep.clone())
    );
    assert_eq!(
        s.list_user(&b.tenant, "deep", t0).await.unwrap(),
        vec![deep.clone()]
    );
    let touched = s
        .touch(&b.tenant, &deep.token_hash, t0 + 1)
        .await
        .unwrap()
        .expect("live");
    assert_eq!(touched.data, deep.data);
    let next = changed(&touched, 1);
    assert!(matches!(
        s.update(&deep.token_hash, &next, touched.version, t0 + 2)
            .await
            .unwrap(),
        WriteOutcome::Written(_)
    ));
    let removed = s
        .remove(&b.tenant, &deep.token_hash, EndReason::Logout, true, t0 + 3)
        .await
        .unwrap()
        .expect("live");
    assert_eq!(removed, next);
    let jobs = claim_all(s, &b.tenant, "host-a").await;
    assert_eq!(jobs.len(), 1, "the end job reads back too");
    assert_eq!(jobs[0].record, next);

    let mut too_deep = session(&b.tenant, None, t0);
    too_deep
        .data
        .insert("deep".into(), nested(MAX_STORED_DEPTH));
    let err = s
        .create(&too_deep, CreateLimit::NONE, true, t0)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Backend(_)), "{err:?}");
    assert_eq!(
        s.get(&b.tenant, &too_deep.token_hash, t0).await.unwrap(),
        None
    );
}

/// `n` sessions of the test's tenant, ended at `t0` with their end jobs
/// queued; their public ids.
async fn queue_ends(b: &Stores, n: usize, t0: Millis) -> Vec<String> {
    let mut public = Vec::new();
    for _ in 0..n {
        let r = session(&b.tenant, None, t0);
        create(b, &r, t0).await;
        b.store()
            .remove(&b.tenant, &r.token_hash, EndReason::Logout, true, t0)
            .await
            .unwrap()
            .expect("live");
        public.push(r.public_id);
    }
    public
}

async fn ends_count_deliveries(backend: Backend) {
    let b = Stores::open(backend).await;
    queue_ends(&b, 2, now_ms()).await;
    let s = b.store();
    let first = s
        .claim_ends(&b.tenant, "host-a", 1, HOUR, now_ms())
        .await
        .unwrap();
    assert_eq!(first[0].deliveries, 1);
    for n in 2..=4 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let again = b
            .handle(n)
            .claim_ends(&b.tenant, &format!("host-{n}"), 1, 10, now_ms())
            .await
            .unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(
            (&again[0].id, again[0].deliveries),
            (&first[0].id, n as u64)
        );
        assert!(again[0].reclaimed);
    }
    let other = s
        .claim_ends(&b.tenant, "host-b", 5, HOUR, now_ms())
        .await
        .unwrap();
    assert_eq!(other.len(), 1);
    assert_eq!(other[0].deliveries, 1, "each job counts its own deliveries");
}

/// A host that stalled past the reclaim time learns from its
/// acknowledgement that another host finished its jobs meanwhile.
async fn ends_ack_says_what_it_took(backend: Backend) {
    let b = Stores::open(backend).await;
    queue_ends(&b, 3, now_ms()).await;
    let s = b.store();
    let stalled = s
        .claim_ends(&b.tenant, "stalled", 10, HOUR, now_ms())
        .await
        .unwrap();
    assert_eq!(stalled.len(), 3);
    tokio::time::sleep(Duration::from_millis(60)).await;
    let taken_over = b
        .handle(1)
        .claim_ends(&b.tenant, "live", 2, 50, now_ms())
        .await
        .unwrap();
    let over: Vec<String> = taken_over.iter().map(|j| j.id.clone()).collect();
    assert_eq!(b.handle(1).ack_ends(&b.tenant, &over).await.unwrap(), over);
    let all: Vec<String> = stalled.iter().map(|j| j.id.clone()).collect();
    let mine = s.ack_ends(&b.tenant, &all).await.unwrap();
    let left: Vec<&String> = all.iter().filter(|id| !over.contains(id)).collect();
    assert_eq!(mine.iter().collect::<Vec<_>>(), left);
    assert!(s.ack_ends(&b.tenant, &all).await.unwrap().is_empty());
    assert!(
        s.ack_ends(&b.tenant, &["1-0".to_string(), "nonsense".to_string()])
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.end_queue(&b.tenant).await.unwrap(),
        EndQueueStats::default()
    );
}

async fn ends_dead_letters(backend: Backend) {
    let b = Stores::open(backend).await;
    let t0 = now_ms();
    let public = queue_ends(&b, 3, t0).await;
    let s = b.store();
    assert_eq!(s.dead_letters(&b.tenant, 10).await.unwrap().count, 0);
    let claimed = s
        .claim_ends(&b.tenant, "host-a", 2, HOUR, now_ms())
        .await
        .unwrap();
    assert_eq!(claimed.len(), 2);
    let later = queue_ends(&b, 1, t0).await;
    let stats = s.end_queue(&b.tenant).await.unwrap();
    assert_eq!((stats.waiting, stats.claimed), (2, 2));
    let moved = s
        .dead_letter(
            &b.tenant,
            &[
                Poison {
                    id: claimed[0].id.clone(),
                    why: "first".into(),
                },
                Poison {
                    id: "1-0".into(),
                    why: "unknown".into(),
                },
                Poison {
                    id: "nonsense".into(),
                    why: "malformed".into(),
                },
            ],
            t0 + 5,
        )
        .await
        .unwrap();
    assert_eq!(moved, 1);
    tokio::time::sleep(Duration::from_millis(5)).await;
    let rest = claim_all(s, &b.tenant, "host-b").await;
    assert_eq!(rest.len(), 2);
    let last = rest
        .iter()
        .find(|j| j.record.public_id == later[0])
        .expect("the job queued last");
    assert_eq!(
        s.dead_letter(
            &b.tenant,
            &[Poison {
                id: last.id.clone(),
                why: "second".into(),
            }],
            t0 + 9,
        )
        .await
        .unwrap(),
        1
    );
    let dead = s.dead_letters(&b.tenant, 10).await.unwrap();
    assert_eq!(dead.count, 2);
    let whys: Vec<&str> = dead.newest.iter().map(|d| d.why.as_str()).collect();
    assert_eq!(whys, ["second", "first"], "newest first");
    let first = &dead.newest[1];
    assert_eq!(first.id, claimed[0].id);
    assert_eq!(first.end_id.as_deref(), Some(claimed[0].end_id.as_str()));
    assert!(public.contains(&claimed[0].record.public_id));
    assert_eq!(first.reason, Some(EndReason::Logout));
    assert_eq!((first.at, first.deliveries), (t0 + 5, 1));
    assert_eq!(s.dead_letters(&b.tenant, 1).await.unwrap().newest.len(), 1);
    assert_eq!(s.dead_letters(&b.tenant, 0).await.unwrap().count, 2);

    // Gone from the queue: never handed out again, nothing to acknowledge.
    let stats = s.end_queue(&b.tenant).await.unwrap();
    assert_eq!((stats.waiting, stats.claimed), (0, 2));
    tokio::time::sleep(Duration::from_millis(60)).await;
    let again = claim_all_after(s, &b.tenant, "host-c", 50).await;
    assert_eq!(again.len(), 2);
    assert!(
        again
            .iter()
            .all(|j| j.id != claimed[0].id && j.id != last.id)
    );
    assert!(
        s.ack_ends(&b.tenant, &[claimed[0].id.clone()])
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.dead_letters(&b.other_tenant(), 10).await.unwrap().count,
        0,
        "dead letters are per tenant"
    );
}

/// An end job that cannot be read (written by another version, or
/// damaged) does not fail the claim that finds it: the jobs claimed with it
/// are handed out, and it goes to the dead-letter list. The memory store
/// holds jobs as values, so none of its jobs can be unreadable.
async fn ends_unreadable_job_is_dead_lettered(backend: Backend) {
    let b = Stores::open(backend).await;
    let t0 = now_ms();
    let good = queue_ends(&b, 1, t0).await;
    // Entries between the good ones: a record that is not JSON, and one
    // without its fields.
    match backend {
        Backend::Redis | Backend::Cluster => {
            let key = format!("sessiond:{{{}}}:ends", b.tenant);
            let xadd = |fields: &[&str]| {
                let mut args = vec!["XADD", key.as_str(), "*"];
                args.extend_from_slice(fields);
                redis_anywhere(backend, &args)
            };
            xadd(&[
                "r",
                "{not json",
                "v",
                "1",
                "l",
                "1",
                "why",
                "logout",
                "at",
                "1",
            ]);
            xadd(&["r", "{}"]);
        }
        Backend::Embedded => {
            let dir = b._dir.as_ref().expect("a data directory").path();
            let conn = rusqlite::Connection::open(dir.join("sessiond.db")).unwrap();
            conn.busy_timeout(Duration::from_secs(5)).unwrap();
            let ms = i64::try_from(t0).unwrap();
            for (seq, record, reason) in [(100, "{not json", "logout"), (101, "{}", "gone")] {
                conn.execute(
                    "INSERT INTO ends (tenant, ms, seq, record, reason, ended_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, 1)",
                    rusqlite::params![b.tenant, ms, seq, record, reason],
                )
                .unwrap();
            }
        }
        Backend::Memory => unreachable!("memory jobs are always readable"),
    }
    let later = queue_ends(&b, 1, t0 + 1).await;
    let s = b.store();
    let jobs = s
        .claim_ends(&b.tenant, "host-a", 10, HOUR, now_ms())
        .await
        .unwrap();
    let mut got: Vec<&str> = jobs.iter().map(|j| j.record.public_id.as_str()).collect();
    got.sort();
    let mut want = vec![good[0].as_str(), later[0].as_str()];
    want.sort();
    assert_eq!(got, want, "the readable jobs of the batch");
    let dead = s.dead_letters(&b.tenant, 10).await.unwrap();
    assert_eq!(dead.count, 2);
    for d in &dead.newest {
        assert!(d.why.contains("cannot be read"), "{}", d.why);
        assert_eq!(d.end_id, None);
    }
    let stats = s.end_queue(&b.tenant).await.unwrap();
    assert_eq!((stats.waiting, stats.claimed), (0, 2));
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(claim_all_after(s, &b.tenant, "host-b", 50).await.len(), 2);
}

/// Runs a command on whichever node of the test Redis (or cluster) holds
/// its key.
fn redis_anywhere(backend: Backend, args: &[&str]) -> String {
    let mut last = None;
    let nodes: Vec<&RedisServer> = match backend {
        Backend::Redis => vec![RedisServer::shared()],
        _ => RedisCluster::shared().nodes().iter().collect(),
    };
    for node in nodes {
        match node.command(args) {
            Ok(reply) => return reply,
            Err(e) => last = Some(e),
        }
    }
    panic!("no node took {args:?}: {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_unreadable_job_is_dead_lettered() {
    ends_unreadable_job_is_dead_lettered(Backend::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_unreadable_job_is_dead_lettered() {
    ends_unreadable_job_is_dead_lettered(Backend::Cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_unreadable_job_is_dead_lettered() {
    ends_unreadable_job_is_dead_lettered(Backend::Embedded).await;
}

/// Claims every job there is for `consumer`, taking over those claimed
/// `reclaim_after_ms` ago.
async fn claim_all_after(
    store: &dyn StoreBackend,
    tenant: &str,
    consumer: &str,
    reclaim_after_ms: Millis,
) -> Vec<EndJob> {
    let mut jobs = Vec::new();
    loop {
        let batch = store
            .claim_ends(tenant, consumer, 5, reclaim_after_ms, now_ms())
            .await
            .unwrap();
        if batch.is_empty() {
            return jobs;
        }
        jobs.extend(batch);
    }
}

// ---------------------------------------------------------------- Redis only

/// Keys carry server-side expiry: sessions at deadline + grace, kv at the TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_keys_expire_server_side() {
    let server = tokio::task::spawn_blocking(RedisServer::start)
        .await
        .unwrap();
    let store = RedisStore::connect(&[server.url()]).await.unwrap();
    let t0 = now_ms();
    let s = session("ttl", Some("alice"), t0);
    assert!(matches!(
        store.create(&s, CreateLimit::NONE, true, t0).await.unwrap(),
        CreateOutcome::Created { .. }
    ));
    let key = format!("sessiond:{{ttl}}:s:{}", s.token_hash);
    let pexpiretime: u64 = server
        .command(&["PEXPIRETIME", &key])
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(pexpiretime, s.expires_at() + HOUR, "deadline + 1 h grace");
    let user_key = "sessiond:{ttl}:u:alice";
    let user_expiry: u64 = server
        .command(&["PEXPIRETIME", user_key])
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(user_expiry, pexpiretime);
    store
        .touch("ttl", &s.token_hash, t0 + MIN)
        .await
        .unwrap()
        .unwrap();
    let slid: u64 = server
        .command(&["PEXPIRETIME", &key])
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(slid, t0 + MIN + 30 * MIN + HOUR);
    let slid_user: u64 = server
        .command(&["PEXPIRETIME", user_key])
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(slid_user, slid);

    store.kv_set("ttl", "p", "k", "v", Some(60)).await.unwrap();
    let pttl: i64 = server
        .command(&["PTTL", "sessiond:{ttl}:kv:p:k"])
        .unwrap()
        .parse()
        .unwrap();
    assert!((59_000..=60_000).contains(&pttl), "{pttl}");
    store
        .audit_append("ttl", "p", None, &json!({}), None, t0)
        .await
        .unwrap();
    assert_eq!(
        server.command(&["TYPE", "sessiond:{ttl}:audit"]).unwrap(),
        "stream"
    );
}

/// A Redis that goes away gives `Unavailable` quickly; the store recovers
/// when it comes back, and a persistent server keeps its sessions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_is_unavailable_and_recovers() {
    let mut server = tokio::task::spawn_blocking(RedisServer::start_persistent)
        .await
        .unwrap();
    let store = RedisStore::connect(&[server.url()]).await.unwrap();
    let t0 = now_ms();
    let s = session("down", None, t0);
    store.create(&s, CreateLimit::NONE, true, t0).await.unwrap();

    let mut server = tokio::task::spawn_blocking(move || {
        server.kill();
        server
    })
    .await
    .unwrap();
    let started = std::time::Instant::now();
    let err = store.get("down", &s.token_hash, t0).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    let err = store.ping().await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );

    let server = tokio::task::spawn_blocking(move || {
        server.restart();
        server
    })
    .await
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while store.ping().await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the store did not reconnect"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(store.get("down", &s.token_hash, t0).await.unwrap(), Some(s));
    drop(server);
}

/// Connecting to nothing fails quickly with `Unavailable`.
#[tokio::test]
async fn redis_unreachable_at_connect() {
    let port = sessiond_tests::free_port(&[]);
    let started = std::time::Instant::now();
    let err = RedisStore::connect(&[format!("redis://127.0.0.1:{port}")])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// Consumers of hosts that are gone leave the end queue's consumer group
/// once they hold nothing; a consumer still holding a job stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_prunes_consumers_of_hosts_that_are_gone() {
    let server = tokio::task::spawn_blocking(RedisServer::start)
        .await
        .unwrap();
    let store = RedisStore::connect(&[server.url()]).await.unwrap();
    let tenant = "prune";
    let t0 = now_ms();
    for _ in 0..2 {
        let s = session(tenant, None, t0);
        store.create(&s, CreateLimit::NONE, true, t0).await.unwrap();
        store
            .remove(tenant, &s.token_hash, EndReason::Logout, true, t0)
            .await
            .unwrap();
    }
    let gone = store.claim_ends(tenant, "gone", 1, HOUR, t0).await.unwrap();
    store.ack_ends(tenant, &[gone[0].id.clone()]).await.unwrap();
    assert_eq!(
        store
            .claim_ends(tenant, "holder", 1, HOUR, t0)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(
        store
            .claim_ends(tenant, "live", 1, HOUR, t0)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .prune_end_consumers(tenant, "live", HOUR)
            .await
            .unwrap(),
        0,
        "none idle yet"
    );
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(
        store.prune_end_consumers(tenant, "live", 30).await.unwrap(),
        1,
        "only `gone`: `holder` holds a job and `live` is kept"
    );
    assert_eq!(
        store.prune_end_consumers(tenant, "live", 30).await.unwrap(),
        0
    );
    assert_eq!(
        store.end_queue(tenant).await.unwrap(),
        EndQueueStats {
            waiting: 0,
            claimed: 1
        }
    );
}

// ---------------------------------------------------------------- idempotency keys

/// An idempotency key named `id` for the request `request`, kept `ttl_ms`,
/// with a sealed token for creates.
fn once_key(id: &str, request: &str, ttl_ms: Millis) -> OnceKey {
    OnceKey {
        id: id.to_string(),
        request: request.to_string(),
        ttl_ms,
        sealed: Some(format!("sealed-{id}")),
    }
}

/// A create with a key records the key with the session it stored; a
/// second create with the key writes nothing and answers what the first
/// recorded (whatever it asks for).
async fn once_create_is_recorded_with_the_session(backend: Backend) {
    let b = Stores::open(backend).await;
    let t0 = now_ms();
    let first = session(&b.tenant, Some("alice"), t0);
    let key = once_key("k1", "create-a", HOUR);
    assert_eq!(b.store().remembered(&b.tenant, "k1").await.unwrap(), None);
    let outcome = b
        .store()
        .create_once(&first, CreateLimit::NONE, true, &key, t0)
        .await
        .unwrap();
    assert_eq!(
        outcome,
        Once::Ran(CreateOutcome::Created { evicted: vec![] })
    );
    let known = b
        .store()
        .remembered(&b.tenant, "k1")
        .await
        .unwrap()
        .expect("the key is recorded");
    assert_eq!(known.request, "create-a");
    assert_eq!(
        known.created,
        Some((first.clone(), "sealed-k1".to_string()))
    );

    let second = session(&b.tenant, Some("alice"), t0);
    let again = b
        .store()
        .create_once(
            &second,
            CreateLimit::NONE,
            true,
            &once_key("k1", "create-b", HOUR),
            t0,
        )
        .await
        .unwrap();
    assert_eq!(again, Once::Known(Box::new(known)));
    assert_eq!(
        b.store()
            .get(&b.tenant, &second.token_hash, t0)
            .await
            .unwrap(),
        None
    );
    let users = b.store().list_user(&b.tenant, "alice", t0).await.unwrap();
    assert_eq!(hashes(&users), vec![first.token_hash.clone()]);
}

/// A create refused by the limit records nothing: a retry runs afresh.
async fn once_create_at_the_limit_records_nothing(backend: Backend) {
    let b = Stores::open(backend).await;
    let t0 = now_ms();
    create(&b, &session(&b.tenant, Some("bob"), t0), t0).await;
    let refused = session(&b.tenant, Some("bob"), t0);
    let key = once_key("k2", "create", HOUR);
    let outcome = b
        .store()
        .create_once(&refused, limit(1, LimitPolicy::Deny), true, &key, t0)
        .await
        .unwrap();
    assert_eq!(
        outcome,
        Once::Ran(CreateOutcome::LimitReached { active: 1 })
    );
    assert_eq!(b.store().remembered(&b.tenant, "k2").await.unwrap(), None);
}

/// With evict-lru, the create that evicts records its key in the same
/// step, so its retry evicts nobody else.
async fn once_create_evicts_once(backend: Backend) {
    let b = Stores::open(backend).await;
    let t0 = now_ms();
    let live = session(&b.tenant, Some("carol"), t0);
    create(&b, &live, t0).await;
    let evict = limit(1, LimitPolicy::EvictLru);
    let key = once_key("k3", "create", HOUR);
    let new = session(&b.tenant, Some("carol"), t0 + 1);
    match b
        .store()
        .create_once(&new, evict, true, &key, t0 + 1)
        .await
        .unwrap()
    {
        Once::Ran(CreateOutcome::Created { evicted }) => {
            assert_eq!(hashes(&evicted), vec![live.token_hash.clone()])
        }
        other => panic!("the first create answered {other:?}"),
    }
    let retry = session(&b.tenant, Some("carol"), t0 + 2);
    let again = b
        .store()
        .create_once(&retry, evict, true, &key, t0 + 2)
        .await
        .unwrap();
    assert!(matches!(again, Once::Known(_)), "{again:?}");
    let users = b
        .store()
        .list_user(&b.tenant, "carol", t0 + 2)
        .await
        .unwrap();
    assert_eq!(hashes(&users), vec![new.token_hash.clone()]);
    // One end job: the first eviction.
    let jobs = b
        .store()
        .claim_ends(&b.tenant, "host", 10, MIN, t0 + 3)
        .await
        .unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].record.token_hash, live.token_hash);
}

/// Of concurrent creates with one key on several handles, exactly one
/// stores its session; every other answers what that one recorded.
async fn once_create_concurrent_stores_one(backend: Backend) {
    let b = Stores::open(backend).await;
    let t0 = now_ms();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = b.handle(i);
        let record = session(&b.tenant, Some("dave"), t0);
        tasks.push(tokio::spawn(async move {
            let key = once_key("k4", "create", HOUR);
            let outcome = store
                .create_once(&record, CreateLimit::NONE, true, &key, t0)
                .await
                .unwrap();
            (record, outcome)
        }));
    }
    let mut ran = Vec::new();
    let mut known = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            (record, Once::Ran(CreateOutcome::Created { .. })) => ran.push(record),
            (_, Once::Known(k)) => known.push(*k),
            (_, other) => panic!("{other:?}"),
        }
    }
    assert_eq!(ran.len(), 1, "exactly one create stores its session");
    for k in &known {
        assert_eq!(k.created.as_ref().map(|(r, _)| r), Some(&ran[0]));
    }
    let users = b.store().list_user(&b.tenant, "dave", t0).await.unwrap();
    assert_eq!(hashes(&users), vec![ran[0].token_hash.clone()]);
}

/// A remove with a key records it with the end; a second remove with the
/// key ends nothing, even of another session. A remove that found nothing
/// records nothing.
async fn once_remove_is_recorded_with_the_end(backend: Backend) {
    let b = Stores::open(backend).await;
    let t0 = now_ms();
    let (one, two) = (session(&b.tenant, None, t0), session(&b.tenant, None, t0));
    create(&b, &one, t0).await;
    create(&b, &two, t0).await;
    let key = OnceKey {
        sealed: None,
        ..once_key("k5", "logout-one", HOUR)
    };
    let ended = b
        .store()
        .remove_once(
            &b.tenant,
            &one.token_hash,
            EndReason::Logout,
            true,
            &key,
            t0,
        )
        .await
        .unwrap();
    assert_eq!(ended, Once::Ran(Some(one.clone())));
    let known = b
        .store()
        .remembered(&b.tenant, "k5")
        .await
        .unwrap()
        .expect("the key is recorded");
    assert_eq!(known.request, "logout-one");
    assert_eq!(known.created, None);
    let again = b
        .store()
        .remove_once(
            &b.tenant,
            &two.token_hash,
            EndReason::Logout,
            true,
            &key,
            t0,
        )
        .await
        .unwrap();
    assert_eq!(again, Once::Known(Box::new(known)));
    assert!(
        b.store()
            .get(&b.tenant, &two.token_hash, t0)
            .await
            .unwrap()
            .is_some()
    );
    let jobs = b
        .store()
        .claim_ends(&b.tenant, "host", 10, MIN, t0 + 1)
        .await
        .unwrap();
    assert_eq!(
        hashes(&jobs.iter().map(|j| j.record.clone()).collect::<Vec<_>>()),
        vec![one.token_hash.clone()]
    );

    let missing = OnceKey {
        sealed: None,
        ..once_key("k6", "logout-gone", HOUR)
    };
    let nothing = b
        .store()
        .remove_once(
            &b.tenant,
            &one.token_hash,
            EndReason::Logout,
            true,
            &missing,
            t0,
        )
        .await
        .unwrap();
    assert_eq!(nothing, Once::Ran(None));
    assert_eq!(b.store().remembered(&b.tenant, "k6").await.unwrap(), None);
}

/// A key lapses after its ttl (then a create with it runs again), and a
/// key of one tenant is unknown in another.
async fn once_keys_lapse_and_stay_in_their_tenant(backend: Backend) {
    let b = Stores::open(backend).await;
    let t0 = now_ms();
    let key = once_key("k7", "create", 300);
    let first = session(&b.tenant, None, t0);
    b.store()
        .create_once(&first, CreateLimit::NONE, true, &key, t0)
        .await
        .unwrap();
    assert!(
        b.store()
            .remembered(&b.tenant, "k7")
            .await
            .unwrap()
            .is_some()
    );
    let other = b.other_tenant();
    assert_eq!(b.store().remembered(&other, "k7").await.unwrap(), None);
    let elsewhere = session(&other, None, t0);
    let outcome = b
        .store()
        .create_once(&elsewhere, CreateLimit::NONE, true, &key, t0)
        .await
        .unwrap();
    assert!(
        matches!(outcome, Once::Ran(CreateOutcome::Created { .. })),
        "{outcome:?}"
    );

    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(b.store().remembered(&b.tenant, "k7").await.unwrap(), None);
    let later = session(&b.tenant, None, t0);
    let outcome = b
        .store()
        .create_once(&later, CreateLimit::NONE, true, &key, t0)
        .await
        .unwrap();
    assert!(
        matches!(outcome, Once::Ran(CreateOutcome::Created { .. })),
        "{outcome:?}"
    );
}

// ---------------------------------------------------------------- outbox

/// A delivery `n` of message `msg`, due at `due`.
fn delivery(msg: &str, n: usize, created_at: Millis, due: Millis) -> Delivery {
    Delivery {
        id: format!("{msg}.{n}"),
        message_id: msg.to_string(),
        url: format!("https://hooks.example/{n}"),
        body: format!(r#"{{"type":"session.ended","n":{n},"text":"caf\u00e9 \"q\""}}"#),
        created_at,
        due_at: due,
        attempts: 0,
        last_error: None,
    }
}

async fn outbox_push_is_idempotent_and_leases_in_due_order(backend: Backend) {
    let b = Stores::open(backend).await;
    let s = b.store();
    let t0 = now_ms();
    let batch = [
        delivery("msg_b", 1, t0, t0 + 2),
        delivery("msg_a", 1, t0 - 5, t0 + 1),
        delivery("msg_c", 1, t0, t0 + HOUR),
    ];
    assert_eq!(s.outbox_push(&b.tenant, &batch).await.unwrap(), 3);
    // Queued again (an end job run twice): nothing changes, not even a
    // changed body or due time.
    let mut again = batch[0].clone();
    again.due_at = t0;
    again.body = "{}".into();
    assert_eq!(s.outbox_push(&b.tenant, &[again]).await.unwrap(), 0);
    assert_eq!(
        s.outbox_stats(&b.tenant, t0 + 10).await.unwrap(),
        OutboxStats {
            held: 3,
            due: 2,
            oldest_created_at: Some(t0 - 5),
        }
    );
    let leased = b
        .handle(1)
        .outbox_lease(&b.tenant, 10, MIN, t0 + 10)
        .await
        .unwrap();
    let ids: Vec<&str> = leased.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["msg_a.1", "msg_b.1"], "due ones only, earliest first");
    let mut expected = batch[1].clone();
    expected.due_at = t0 + 10 + MIN;
    expected.attempts = 1;
    assert_eq!(leased[0], expected, "every field reads back");
    assert_eq!(leased[1].body, batch[0].body);
    // Another tenant sees none of it.
    let other = format!("{}-other", b.tenant);
    assert_eq!(
        s.outbox_stats(&other, t0).await.unwrap(),
        OutboxStats::default()
    );
    assert!(
        s.outbox_lease(&other, 10, MIN, t0 + HOUR)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn outbox_lease_hides_until_it_lapses(backend: Backend) {
    let b = Stores::open(backend).await;
    let s = b.store();
    let t0 = now_ms();
    s.outbox_push(&b.tenant, &[delivery("msg_x", 1, t0, t0)])
        .await
        .unwrap();
    let first = s.outbox_lease(&b.tenant, 5, 1000, t0).await.unwrap();
    assert_eq!(first.len(), 1);
    assert!(
        b.handle(2)
            .outbox_lease(&b.tenant, 5, 1000, t0 + 999)
            .await
            .unwrap()
            .is_empty(),
        "a leased delivery is not handed out again within its lease"
    );
    // Its sender died: after the lease, another host gets it, attempt 2.
    let second = b
        .handle(3)
        .outbox_lease(&b.tenant, 5, 1000, t0 + 1000)
        .await
        .unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!((second[0].attempts, second[0].due_at), (2, t0 + 2000));
    assert_eq!(
        s.outbox_lease(&b.tenant, 0, 1000, t0 + HOUR).await.unwrap(),
        []
    );
}

async fn outbox_retry_and_remove(backend: Backend) {
    let b = Stores::open(backend).await;
    let s = b.store();
    let t0 = now_ms();
    let batch = [delivery("msg_r", 1, t0, t0), delivery("msg_r", 2, t0, t0)];
    s.outbox_push(&b.tenant, &batch).await.unwrap();
    let leased = s.outbox_lease(&b.tenant, 5, MIN, t0).await.unwrap();
    assert_eq!(leased.len(), 2);
    assert!(
        s.outbox_retry(&b.tenant, "msg_r.1", t0 + 500, "the endpoint answered 503")
            .await
            .unwrap()
    );
    let ids = ["msg_r.2".to_string(), "msg_unknown".to_string()];
    assert_eq!(s.outbox_remove(&b.tenant, &ids).await.unwrap(), 1);
    assert_eq!(s.outbox_remove(&b.tenant, &ids).await.unwrap(), 0);
    // Retrying what another host removed puts nothing back.
    assert!(
        !s.outbox_retry(&b.tenant, "msg_r.2", t0, "late")
            .await
            .unwrap()
    );
    assert!(
        s.outbox_lease(&b.tenant, 5, MIN, t0 + 499)
            .await
            .unwrap()
            .is_empty()
    );
    let retried = s.outbox_lease(&b.tenant, 5, MIN, t0 + 500).await.unwrap();
    assert_eq!(retried.len(), 1);
    assert_eq!(retried[0].id, "msg_r.1");
    assert_eq!(retried[0].attempts, 2);
    assert_eq!(
        retried[0].last_error.as_deref(),
        Some("the endpoint answered 503")
    );
    s.outbox_remove(&b.tenant, &["msg_r.1".to_string()])
        .await
        .unwrap();
    assert_eq!(
        s.outbox_stats(&b.tenant, t0 + HOUR).await.unwrap(),
        OutboxStats::default()
    );
}

async fn outbox_leases_each_delivery_once_under_concurrency(backend: Backend) {
    let b = Stores::open(backend).await;
    let t0 = now_ms();
    let batch: Vec<Delivery> = (0..200)
        .map(|n| delivery("msg_many", n, t0, t0 + (n as u64 % 7)))
        .collect();
    b.store().outbox_push(&b.tenant, &batch).await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for h in 0..4 {
        let (store, tenant) = (b.stores[h].clone(), b.tenant.clone());
        tasks.spawn(async move {
            let mut got = Vec::new();
            loop {
                let leased = store.outbox_lease(&tenant, 7, HOUR, t0 + 10).await.unwrap();
                if leased.is_empty() {
                    return got;
                }
                got.extend(leased.into_iter().map(|d| d.id));
            }
        });
    }
    let mut all = Vec::new();
    while let Some(got) = tasks.join_next().await {
        all.extend(got.unwrap());
    }
    let distinct: HashSet<&String> = all.iter().collect();
    assert_eq!((all.len(), distinct.len()), (200, 200));
}

// ------------------------------------------------- counts for the metrics

async fn counts_stored_sessions_and_the_oldest_end(backend: Backend) {
    let b = Stores::open(backend).await;
    let s = b.store();
    let t0 = now_ms();
    assert_eq!(s.stored_sessions(&b.tenant).await.unwrap(), 0);
    assert_eq!(s.oldest_end_at(&b.tenant).await.unwrap(), None);
    let records: Vec<SessionRecord> = (0..3).map(|_| session(&b.tenant, Some("u"), t0)).collect();
    for r in &records {
        create(&b, r, t0).await;
    }
    assert_eq!(s.stored_sessions(&b.tenant).await.unwrap(), 3);
    s.remove(
        &b.tenant,
        &records[0].token_hash,
        EndReason::Logout,
        true,
        t0 + 5,
    )
    .await
    .unwrap();
    s.remove(
        &b.tenant,
        &records[1].token_hash,
        EndReason::Logout,
        true,
        t0 + 9,
    )
    .await
    .unwrap();
    assert_eq!(s.stored_sessions(&b.tenant).await.unwrap(), 1);
    // The oldest job is the first end's, whether it is claimed or not.
    let oldest = s.oldest_end_at(&b.tenant).await.unwrap();
    assert_eq!(oldest, Some(t0 + 5), "when the first of the two ended");
    let jobs = claim_all(s, &b.tenant, "host-a").await;
    assert_eq!(s.oldest_end_at(&b.tenant).await.unwrap(), oldest);
    let ids: Vec<String> = jobs.iter().map(|j| j.id.clone()).collect();
    s.ack_ends(&b.tenant, &ids).await.unwrap();
    assert_eq!(s.oldest_end_at(&b.tenant).await.unwrap(), None);
}

/// A delivery that cannot be read (edited in the store by hand) is dropped
/// by the lease that finds it; the readable ones around it are leased.
async fn outbox_unreadable_delivery_is_dropped(backend: Backend) {
    let b = Stores::open(backend).await;
    let s = b.store();
    let t0 = now_ms();
    let batch: Vec<Delivery> = (0..3)
        .map(|n| delivery("msg_bad", n, t0, t0 + n as u64))
        .collect();
    s.outbox_push(&b.tenant, &batch).await.unwrap();
    match backend {
        Backend::Redis | Backend::Cluster => {
            let key = format!("sessiond:{{{}}}:wh:msg_bad.1", b.tenant);
            redis_anywhere(backend, &["HDEL", &key, "b"]);
        }
        Backend::Embedded => {
            let dir = b._dir.as_ref().expect("a data directory").path();
            let conn = rusqlite::Connection::open(dir.join("sessiond.db")).unwrap();
            conn.busy_timeout(Duration::from_secs(5)).unwrap();
            conn.execute(
                "UPDATE outbox SET attempts = -7 WHERE tenant = ?1 AND id = 'msg_bad.1'",
                rusqlite::params![b.tenant],
            )
            .unwrap();
        }
        Backend::Memory => unreachable!("memory deliveries are always readable"),
    }
    let leased = s.outbox_lease(&b.tenant, 10, MIN, t0 + 10).await.unwrap();
    let ids: Vec<&str> = leased.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["msg_bad.0", "msg_bad.2"]);
    assert_eq!(s.outbox_stats(&b.tenant, t0).await.unwrap().held, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_unreadable_delivery_is_dropped() {
    outbox_unreadable_delivery_is_dropped(Backend::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_unreadable_delivery_is_dropped() {
    outbox_unreadable_delivery_is_dropped(Backend::Cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_unreadable_delivery_is_dropped() {
    outbox_unreadable_delivery_is_dropped(Backend::Embedded).await;
}
