//! Tenants of the operator API on many hosts: three `sessiond serve`
//! processes sharing one throwaway redis-server, with no tenant in their
//! config.
//!
//! - propagation: a tenant and its key created through host 0 serve
//!   sessions through hosts 1 and 2 within 2 s;
//! - swap under load: a chain switched 20 times (to a second component and
//!   back by rollback) through host 0 while every host takes creates: each
//!   host runs the new chain within 2 s, as `GET /v1/plugins` shows, and no
//!   request fails.
//!
//! The tests print their measurements (`--nocapture`).

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;
use sessiond_tests::hosts::Host;
use sessiond_tests::redis_server::RedisServer;
use sessiond_tests::server::{Api, Reply, key_hash};
use sessiond_tests::{cache_dir, plugin};

const BIN: &str = env!("CARGO_BIN_EXE_sessiond-host");
const OPERATOR_KEY: &str = "control-hosts-operator-key";

/// The tests of this file run one at a time: each starts three processes.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The bound the operator API promises between a change and its effect on
/// every host.
const BOUND: Duration = Duration::from_secs(2);

fn toml(redis_url: &str) -> String {
    format!(
        r#"
[server]
listen = "{{listen}}"

[store]
backend = "redis"
urls = ["{redis_url}"]

[runtime]
cache_dir = "{cache}"

[operator]
api_keys = ["{operator}"]
"#,
        cache = cache_dir().display(),
        operator = key_hash(OPERATOR_KEY),
    )
}

fn start(dir: &std::path::Path, redis: &RedisServer) -> Vec<Host> {
    (0..3)
        .map(|i| {
            Host::start(
                BIN,
                dir,
                &format!("host{i}"),
                &toml(&redis.url()),
                Duration::from_secs(300),
            )
        })
        .collect()
}

fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("sessiond-control-")
        .tempdir()
        .expect("temp dir")
}

/// Creates tenant `name` through `op` and returns a new key of it.
async fn new_tenant(op: &Api, name: &str) -> String {
    op.post("/admin/v1/tenants", &json!({"name": name}))
        .await
        .expect(201);
    let key = op
        .post_empty(&format!("/admin/v1/tenants/{name}/keys"))
        .await
        .expect(201);
    key.body["key"].as_str().unwrap().to_string()
}

/// Sets tenant `name`'s chain to the one plugin `p`: component `sha` with
/// `grant`.
async fn one_plugin_chain(op: &Api, name: &str, sha: &str, grant: &str) {
    op.send(
        op.request(Method::PUT, &format!("/admin/v1/tenants/{name}/chain"))
            .json(&json!({"plugins": [{"name": "p", "sha256": sha, "grants": [grant]}]})),
    )
    .await
    .expect(200);
}

async fn upload(op: &Api, tenant: &str, name: &str) -> String {
    let bytes = std::fs::read(plugin(name)).expect("a built component");
    let reply = op
        .send(
            op.request(
                Method::POST,
                &format!("/admin/v1/tenants/{tenant}/components"),
            )
            .header("content-type", "application/wasm")
            .body(bytes),
        )
        .await
        .expect(201);
    reply.body["sha256"].as_str().unwrap().to_string()
}

/// Polls every host until `ready` holds there; returns how long each took.
async fn time_to_effect<F, Fut>(hosts: &[Api], started: Instant, ready: F) -> Vec<Duration>
where
    F: Fn(Api) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let mut took = Vec::new();
    for api in hosts {
        loop {
            if ready(api.clone()).await {
                took.push(started.elapsed());
                break;
            }
            assert!(
                started.elapsed() < BOUND * 3,
                "a host did not apply the change within {:?}",
                BOUND * 3
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    took
}

fn summary(label: &str, mut took: Vec<Duration>) -> Duration {
    took.sort();
    let p50 = took[took.len() / 2];
    let max = *took.last().unwrap();
    println!(
        "{label}: {} measurements, p50 {:.0} ms, max {:.0} ms",
        took.len(),
        p50.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3
    );
    max
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tenant_created_through_one_host_serves_on_the_others() {
    let _serial = SERIAL.lock().await;
    let redis = RedisServer::start();
    let dir = temp_dir();
    let hosts = start(dir.path(), &redis);
    let op = hosts[0].api(OPERATOR_KEY);
    let mut took = Vec::new();
    for round in 0..5 {
        let name = format!("tenant-{round}");
        let started = Instant::now();
        let key = new_tenant(&op, &name).await;
        let others: Vec<Api> = hosts[1..].iter().map(|h| h.api(&key)).collect();
        took.extend(
            time_to_effect(&others, started, |api| async move {
                api.post("/v1/sessions", &json!({"user": "u"})).await.status == 201
            })
            .await,
        );
    }
    let max = summary("tenant created on host 0 to served by hosts 1 and 2", took);
    assert!(max < BOUND, "a host took {max:?}");

    // Without the published notices (every subscriber's connection cut, as
    // a network blip would), the periodic read still brings the change.
    redis
        .command(&["CLIENT", "KILL", "TYPE", "pubsub"])
        .expect("redis-cli");
    let started = Instant::now();
    let key = new_tenant(&op, "unannounced").await;
    let others: Vec<Api> = hosts[1..].iter().map(|h| h.api(&key)).collect();
    let took = time_to_effect(&others, started, |api| async move {
        api.post("/v1/sessions", &json!({"user": "u"})).await.status == 201
    })
    .await;
    let max = summary("the same with the notices cut", took);
    assert!(max < BOUND, "a host took {max:?}");

    // A request-rate quota set through the API holds per host: three hosts
    // flooded at once admit at most three times the rate (plus each one's
    // burst), as the README says.
    op.patch(
        "/admin/v1/tenants/unannounced",
        &json!({"settings": {"quota": {"requests_per_second": 50, "burst": 10}}}),
    )
    .await
    .expect(200);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let tenant: Vec<Api> = hosts.iter().map(|h| h.api(&key)).collect();
    let window = Duration::from_secs(2);
    let started = Instant::now();
    let mut floods = Vec::new();
    for worker in 0..9 {
        let api = tenant[worker % 3].clone();
        floods.push(tokio::spawn(async move {
            let (mut admitted, mut refused) = (0u64, 0u64);
            while started.elapsed() < window {
                match api.get("/v1/plugins").await.status {
                    200 => admitted += 1,
                    429 => refused += 1,
                    other => panic!("status {other}"),
                }
            }
            (admitted, refused)
        }));
    }
    let (mut admitted, mut refused) = (0, 0);
    for flood in floods {
        let (a, r) = flood.await.unwrap();
        admitted += a;
        refused += r;
    }
    let rate = admitted as f64 / started.elapsed().as_secs_f64();
    println!(
        "rate quota 50/s (burst 10) on 3 hosts: {rate:.0} admitted/s ({:.2}x the quota), \
         {refused} refused",
        rate / 50.0
    );
    assert!(refused > 0, "the flood was never refused");
    assert!(
        admitted <= 3 * (50 * 3 + 10),
        "{admitted} admitted in {window:?}: more than 3 hosts' buckets"
    );
}

/// The describe name of the first plugin `api`'s host runs for its tenant.
async fn running(api: &Api) -> String {
    let reply = api.get("/v1/plugins").await;
    reply.body["plugins"][0]["describe"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_chain_swaps_on_every_host_under_load_without_a_failed_request() {
    let _serial = SERIAL.lock().await;
    let redis = RedisServer::start();
    let dir = temp_dir();
    let hosts = start(dir.path(), &redis);
    let op = hosts[0].api(OPERATOR_KEY);
    let key = new_tenant(&op, "acme").await;
    let v1 = upload(&op, "acme", "audit_log").await;
    let v2 = upload(&op, "acme", "single_session").await;
    one_plugin_chain(&op, "acme", &v1, "audit").await;
    let entry = |sha: &str, grant: &str| json!({"name": "p", "sha256": sha, "grants": [grant]});
    let tenant: Vec<Api> = hosts.iter().map(|h| h.api(&key)).collect();
    time_to_effect(&tenant, Instant::now(), |api| async move {
        running(&api).await == "audit-log"
    })
    .await;

    // Steady creates on every host while the chain swaps.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut load = Vec::new();
    for worker in 0..6 {
        let api = tenant[worker % tenant.len()].clone();
        let (stop, ok, failed, failures) =
            (stop.clone(), ok.clone(), failed.clone(), failures.clone());
        load.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let reply: Reply = api
                    .post("/v1/sessions", &json!({"user": format!("w{worker}-{n}")}))
                    .await;
                if reply.status == 201 {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                    failures
                        .lock()
                        .unwrap()
                        .push(format!("{} {}", reply.status, reply.text));
                }
            }
        }));
    }

    let mut took = Vec::new();
    let mut revision = 1u64;
    for swap in 0..20 {
        let (body, expect) = if swap % 2 == 0 {
            (
                op.request(Method::PUT, "/admin/v1/tenants/acme/chain")
                    .json(&json!({"plugins": [entry(&v2, "sessions")]})),
                "single-session",
            )
        } else {
            // Back to revision 1 (audit-log) by rollback.
            (
                op.request(Method::POST, "/admin/v1/tenants/acme/chain/rollback")
                    .json(&json!({"revision": 1})),
                "audit-log",
            )
        };
        let started = Instant::now();
        let reply = op
            .send(body.header("if-match", format!("\"{revision}\"")))
            .await
            .expect(200);
        revision = reply.body["revision"].as_u64().unwrap();
        took.extend(
            time_to_effect(&tenant, started, |api| async move {
                running(&api).await == expect
            })
            .await,
        );
    }
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    let max = summary("chain swap on host 0 to in effect on each of 3 hosts", took);
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!("creates during the 20 swaps: {ok} answered 201, {failed} failed");
    assert_eq!(
        failed,
        0,
        "failed requests: {:?}",
        &failures.lock().unwrap()[..]
    );
    assert!(ok > 0);
    assert!(max < BOUND, "a host took {max:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deleted_tenant_ends_its_sessions_with_their_end_hooks_and_is_gone_everywhere() {
    use sessiond::store::AuditStore;
    let _serial = SERIAL.lock().await;
    let redis = RedisServer::start();
    let dir = temp_dir();
    let hosts = start(dir.path(), &redis);
    let op = hosts[0].api(OPERATOR_KEY);
    let key = new_tenant(&op, "leaving").await;
    let sha = upload(&op, "leaving", "audit_log").await;
    one_plugin_chain(&op, "leaving", &sha, "audit").await;
    let tenant: Vec<Api> = hosts.iter().map(|h| h.api(&key)).collect();
    time_to_effect(&tenant, Instant::now(), |api| async move {
        running(&api).await == "audit-log"
    })
    .await;
    let mut ids = Vec::new();
    for i in 0..30 {
        let created = tenant[i % 3]
            .post("/v1/sessions", &json!({"user": format!("u{i}")}))
            .await
            .expect(201);
        ids.push(created.body["public_id"].as_str().unwrap().to_string());
    }

    // Through host 1: 202, then 403 at once for its keys.
    let deleting = hosts[1]
        .api(OPERATOR_KEY)
        .delete("/admin/v1/tenants/leaving")
        .await
        .expect(202);
    assert_eq!(deleting.body["deleting"], true);
    tenant[1]
        .post("/v1/sessions", &json!({"user": "late"}))
        .await
        .problem(403, "tenant-disabled");
    // Gone from every host once its sessions' end hooks have run.
    let started = Instant::now();
    for host in &hosts {
        let api = host.api(OPERATOR_KEY);
        loop {
            if api.get("/admin/v1/tenants/leaving").await.status == 404 {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "not deleted");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    println!(
        "delete of a tenant with 30 sessions: gone from 3 hosts after {:?}",
        started.elapsed()
    );
    for api in &tenant {
        api.get("/v1/plugins").await.problem(401, "");
    }
    // Each session ended once, as revoked, through its end hook.
    let store = sessiond::store::redis::RedisStore::connect(&[redis.url()])
        .await
        .unwrap();
    let page = store.audit_page("leaving", None, 10_000).await.unwrap();
    let mut ended: Vec<String> = page
        .records
        .iter()
        .filter(|r| r.record["type"] == "session_ended")
        .map(|r| {
            assert_eq!(r.record["reason"], "revoked", "{:?}", r.record);
            r.session.clone().unwrap_or_default()
        })
        .collect();
    ended.sort();
    ids.sort();
    assert_eq!(ended, ids, "every session ends once, through its end hook");
}
