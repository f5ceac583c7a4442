//! Many hosts, one truth: whole `sessiond serve` processes sharing one
//! throwaway redis-server.
//!
//! - any host serves any session;
//! - crash: 3 hosts, thousands of short-lived sessions, one host killed with
//!   SIGKILL in the middle: exactly one end record per session, none missing;
//! - race: logout, expiry and update on the same sessions at their deadline:
//!   exactly one end each, with the reason of whichever won;
//! - Redis killed and restarted (append-only file, fsync always) under load:
//!   no acknowledged session lost, 503s while it is down, end hooks of
//!   sessions that ran out meanwhile run after it is back;
//! - graceful shutdown leaves no claimed end job behind.
//!
//! The hosts run the `ender` fixture as their end hook: it sleeps, writes one
//! `session_ended` audit record, and sleeps again, so that a host killed
//! mid-hook is caught before or after the record. The tests print their
//! measurements (run with `--nocapture` to see them).
//!
//! The tests of this file run one at a time: each starts several processes.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use sessiond::session::now_ms;
use sessiond::store::redis::RedisStore;
use sessiond::store::{EndQueue, EndQueueStats};
use sessiond_tests::cache_dir;
use sessiond_tests::fixtures::{Plugin, Tenant};
use sessiond_tests::hosts::{Host, probe};
use sessiond_tests::redis_server::RedisServer;
use sessiond_tests::server::{Api, Reply, eventually};

const BIN: &str = env!("CARGO_BIN_EXE_sessiond-host");
const KEY: &str = "multi-host-test-key";
const TENANT: &str = "acme";

/// One test at a time: each runs several host processes.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The config every host of a test shares (`{listen}` is per host).
fn host_toml(redis_url: &str, delay_ms: u64, reclaim_after_ms: u64) -> String {
    // Room for the hook's sleeps; the reclaim time must be more than twice
    // the deadline (checked at startup).
    host_toml_with_deadline(
        redis_url,
        delay_ms,
        reclaim_after_ms,
        (2 * delay_ms).max(250),
    )
}

/// [`host_toml`] with the end hook's deadline given.
fn host_toml_with_deadline(
    redis_url: &str,
    delay_ms: u64,
    reclaim_after_ms: u64,
    deadline_ms: u64,
) -> String {
    format!(
        r#"
[server]
listen = "{{listen}}"

[store]
backend = "redis"
urls = ["{redis_url}"]
operation_timeout_ms = 1000
response_timeout_ms = 500
connection_timeout_ms = 300

[runtime]
cache_dir = "{cache}"
max_instances = 200

[sweeper]
interval_ms = 50
batch = 200

[ends]
poll_interval_ms = 50
batch = 64
reclaim_after_ms = {reclaim_after_ms}
shutdown_drain_ms = 10000

{tenant}"#,
        cache = cache_dir().display(),
        tenant = Tenant::new(TENANT)
            .key(KEY)
            .ttl(600)
            .idle(600)
            .plugin(
                Plugin::new("ender", "ender")
                    .grants(&["audit"])
                    .config("delay_ms", &delay_ms.to_string())
                    .limit("deadline_ms", deadline_ms),
            )
            .toml(),
    )
}

/// Starts `n` hosts, one after the other (the first compiles the plugin
/// into the shared cache).
fn start_hosts(dir: &std::path::Path, toml: &str, n: usize) -> Vec<Host> {
    (0..n)
        .map(|i| {
            Host::start(
                BIN,
                dir,
                &format!("host{i}"),
                toml,
                Duration::from_secs(300),
            )
        })
        .collect()
}

fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("sessiond-multi-host-")
        .tempdir()
        .expect("temp dir")
}

/// Sends a request; none when the host cannot be reached or the connection
/// breaks (a killed host).
async fn try_send(api: &Api, method: Method, path: &str, body: Option<&Value>) -> Option<Reply> {
    let mut builder = api.request(method, path).timeout(Duration::from_secs(10));
    if let Some(body) = body {
        builder = builder.json(body);
    }
    match builder.send().await {
        Ok(response) => Some(Reply::read(response).await),
        Err(_) => None,
    }
}

/// Sends to host `first`, failing over to the next ones, as a load balancer
/// would, while a host is unreachable.
async fn balanced(
    apis: &[Api],
    first: usize,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> Reply {
    for attempt in 0..apis.len() * 3 {
        let api = &apis[(first + attempt) % apis.len()];
        if let Some(reply) = try_send(api, method.clone(), path, body).await {
            return reply;
        }
    }
    panic!("no host answered {method} {path}");
}

/// Every `session_ended` record of the tenant, by session public id.
async fn end_records(api: &Api) -> HashMap<String, Vec<Value>> {
    try_end_records(api)
        .await
        .expect("GET /v1/audit answered 200")
}

/// [`end_records`], or `None` while the audit stream cannot be read.
async fn try_end_records(api: &Api) -> Option<HashMap<String, Vec<Value>>> {
    let mut by_session: HashMap<String, Vec<Value>> = HashMap::new();
    for r in api.try_audit_all().await? {
        if r["record"]["type"] == "session_ended" {
            let session = r["session"].as_str().unwrap_or_default().to_string();
            by_session.entry(session).or_default().push(r);
        }
    }
    Some(by_session)
}

/// Waits until every session of `expected` has an end record (or `timeout`
/// passes), then a further second so that late duplicates could show.
/// Returns the records and when the last missing one appeared.
async fn wait_for_ends(
    api: &Api,
    expected: &HashSet<String>,
    timeout: Duration,
) -> (HashMap<String, Vec<Value>>, Instant) {
    let done = eventually(timeout, || async {
        let records = try_end_records(api).await?;
        expected
            .iter()
            .all(|s| records.contains_key(s))
            .then_some(Instant::now())
    })
    .await
    .unwrap_or_else(Instant::now);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let records = eventually(Duration::from_secs(10), || try_end_records(api))
        .await
        .expect("the audit stream can be read");
    (records, done)
}

/// Sessions with more than one end record, and expected ones with none.
fn duplicates_and_misses(
    records: &HashMap<String, Vec<Value>>,
    expected: &HashSet<String>,
) -> (Vec<String>, Vec<String>) {
    let mut duplicates: Vec<String> = records
        .iter()
        .filter(|(_, r)| r.len() > 1)
        .map(|(s, _)| s.clone())
        .collect();
    duplicates.sort();
    let mut misses: Vec<String> = expected
        .iter()
        .filter(|s| !records.contains_key(*s))
        .cloned()
        .collect();
    misses.sort();
    (duplicates, misses)
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

async fn queue_stats(redis: &RedisServer) -> EndQueueStats {
    let store = RedisStore::connect(&[redis.url()]).await.expect("connect");
    store.end_queue(TENANT).await.expect("end queue stats")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

#[test]
fn any_host_serves_any_session() {
    let _serial = serial();
    let redis = RedisServer::start();
    let dir = temp_dir();
    let hosts = start_hosts(dir.path(), &host_toml(&redis.url(), 0, 5_000), 3);
    let (a, b, c) = (hosts[0].api(KEY), hosts[1].api(KEY), hosts[2].api(KEY));
    runtime().block_on(async {
        let s = a.create(&json!({"user": "ann", "data": {"step": 1}})).await;
        let path = format!("/v1/sessions/{}", s["id"].as_str().unwrap());
        let public_id = s["public_id"].as_str().unwrap().to_string();
        let updated = b.patch(&path, &json!({"step": 2})).await.expect(200);
        let seen = c.get(&path).await.expect(200);
        assert_eq!(seen.body["data"]["step"], 2);
        assert_eq!(seen.header("etag"), updated.header("etag"));
        // A write with the version read before B's update is refused on A.
        let stale = a
            .send(
                a.request(Method::PATCH, &path)
                    .header("content-type", "application/merge-patch+json")
                    .header("if-match", "\"1\"")
                    .body(json!({"step": 3}).to_string()),
            )
            .await;
        stale.problem(412, "precondition-failed");
        // Authentication through B rotates the id for every host.
        let authed = b
            .post(&format!("{path}/authenticate"), &json!({"user": "ann"}))
            .await
            .expect(200);
        c.get(&path).await.problem(404, "session-not-found");
        let new_path = format!("/v1/sessions/{}", authed.body["id"].as_str().unwrap());
        a.get(&new_path).await.expect(200);
        c.delete(&new_path).await.expect(204);
        a.get(&new_path).await.problem(404, "session-not-found");
        assert_eq!(b.end_reasons(&public_id).await, ["logout"]);
    });
}

/// A session of the crash test: its deadline, and the DELETE's status when
/// it was logged out.
type Created = (u64, Option<u16>);

#[test]
fn crash_mid_hook_every_session_ends_exactly_once() {
    let _serial = serial();
    const SESSIONS: usize = 3000;
    const WORKERS: usize = 48;
    const RECLAIM_MS: u64 = 2_000;
    let redis = RedisServer::start();
    let dir = temp_dir();
    let mut hosts = start_hosts(dir.path(), &host_toml(&redis.url(), 100, RECLAIM_MS), 3);
    let apis: Vec<Api> = hosts.iter().map(|h| h.api(KEY)).collect();
    let rt = runtime();
    rt.block_on(async {
        let started = Instant::now();
        let created = Arc::new(AtomicUsize::new(0));
        let next = Arc::new(AtomicUsize::new(0));
        let known: Arc<Mutex<HashMap<String, Created>>> = Arc::default();
        let mut workers = Vec::new();
        for w in 0..WORKERS {
            let (apis, created, next, known) =
                (apis.clone(), created.clone(), next.clone(), known.clone());
            workers.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= SESSIONS {
                        return;
                    }
                    // Lifetimes of 1 and 2 s; every third session logs out.
                    let body = json!({"ttl_seconds": 1 + (i % 2)});
                    let reply = balanced(&apis, w, Method::POST, "/v1/sessions", Some(&body)).await;
                    assert_eq!(reply.status, 201, "{}", reply.text);
                    let public_id = reply.body["public_id"].as_str().unwrap().to_string();
                    let deadline = reply.body["expires_at_ms"].as_u64().unwrap();
                    let mut logout = None;
                    if i % 3 == 0 {
                        let path = format!("/v1/sessions/{}", reply.body["id"].as_str().unwrap());
                        let r = balanced(&apis, w + 1, Method::DELETE, &path, None).await;
                        // 404: a host died after ending it but before
                        // answering, or the 1 s lifetime ran out first.
                        assert!(r.status == 204 || r.status == 404, "{}", r.text);
                        logout = Some(r.status);
                    }
                    known.lock().unwrap().insert(public_id, (deadline, logout));
                    created.fetch_add(1, Ordering::Relaxed);
                    // About 1,000 sessions a second in all, so that creates,
                    // logouts and expiries overlap for a few seconds.
                    tokio::time::sleep(Duration::from_millis(WORKERS as u64)).await;
                }
            }));
        }
        // Kill host 1 half way, while it runs end hooks of logouts and
        // expiries.
        while created.load(Ordering::Relaxed) < SESSIONS / 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let killed_at = Instant::now();
        hosts[1].kill();
        for w in workers {
            w.await.unwrap();
        }
        let load_secs = started.elapsed().as_secs_f64();
        let known = known.lock().unwrap().clone();
        let expected: HashSet<String> = known.keys().cloned().collect();
        let survivor = &apis[0];
        let (records, all_ended) =
            wait_for_ends(survivor, &expected, Duration::from_secs(60)).await;
        let (duplicates, misses) = duplicates_and_misses(&records, &expected);

        let mut reclaimed = 0;
        for api in [&apis[0], &apis[2]] {
            reclaimed += api.get("/v1/ends").await.expect(200).body["reclaimed"]
                .as_u64()
                .unwrap();
        }
        let queue = queue_stats(&redis).await;
        // End-hook latency after the deadline, for the sessions that ran out.
        let mut latency: Vec<u64> = known
            .iter()
            .filter(|(_, (_, logout))| logout.is_none())
            .filter_map(|(id, (deadline, _))| {
                let at = records.get(id)?.first()?["at_ms"].as_u64()?;
                Some(at.saturating_sub(*deadline))
            })
            .collect();
        latency.sort_unstable();
        println!(
            "crash test: {} sessions on 3 hosts in {load_secs:.1} s, host1 killed at {:.1} s; \
             duplicates {}, misses {}, end records {}, jobs reclaimed {reclaimed}, \
             all ended {:.1} s after the kill; end-hook latency after deadline (ms) \
             p50 {} p99 {} max {} (n {})",
            expected.len(),
            (killed_at - started).as_secs_f64(),
            duplicates.len(),
            misses.len(),
            records.values().map(Vec::len).sum::<usize>(),
            (all_ended - killed_at).as_secs_f64(),
            percentile(&latency, 0.5),
            percentile(&latency, 0.99),
            latency.last().copied().unwrap_or(0),
            latency.len(),
        );
        assert_eq!(expected.len(), SESSIONS);
        assert!(
            duplicates.is_empty(),
            "sessions ended twice: {duplicates:?}"
        );
        assert!(
            misses.is_empty(),
            "sessions never ended: {} of them",
            misses.len()
        );
        assert!(
            reclaimed >= 1,
            "the killed host held no end job, so the test proved nothing"
        );
        assert_eq!(queue, EndQueueStats::default(), "the end queue is empty");
        for (id, (_, logout)) in &known {
            let reason = records[id][0]["record"]["reason"]
                .as_str()
                .unwrap_or_default();
            match logout {
                Some(204) => assert_eq!(reason, "logout", "{id}"),
                Some(_) => assert!(["logout", "expired"].contains(&reason), "{id}: {reason}"),
                None => assert_eq!(reason, "expired", "{id}"),
            }
        }
    });
}

#[test]
fn logout_expiry_and_update_race_to_one_end() {
    let _serial = serial();
    const SESSIONS: usize = 300;
    let redis = RedisServer::start();
    let dir = temp_dir();
    let hosts = start_hosts(dir.path(), &host_toml(&redis.url(), 0, 5_000), 2);
    let (a, b) = (hosts[0].api(KEY), hosts[1].api(KEY));
    runtime().block_on(async {
        let mut sessions = Vec::new();
        for i in 0..SESSIONS {
            let api = if i % 2 == 0 { &a } else { &b };
            let s = api.create(&json!({"ttl_seconds": 1})).await;
            sessions.push((
                s["id"].as_str().unwrap().to_string(),
                s["public_id"].as_str().unwrap().to_string(),
                s["expires_at_ms"].as_u64().unwrap(),
            ));
        }
        let mut tasks = Vec::new();
        for (i, (id, public_id, deadline)) in sessions.iter().cloned().enumerate() {
            let (a, b) = (a.clone(), b.clone());
            tasks.push(tokio::spawn(async move {
                // Aim both calls within ±30 ms of the deadline, where the
                // sweepers of both hosts are taking the session too.
                let aim = (deadline + (i as u64 * 7) % 61).saturating_sub(30);
                let wait = aim.saturating_sub(now_ms());
                tokio::time::sleep(Duration::from_millis(wait)).await;
                let path = format!("/v1/sessions/{id}");
                let patch = json!({"raced": i});
                let (deleted, patched) = tokio::join!(a.delete(&path), b.patch(&path, &patch));
                (public_id, deleted.status, patched.status)
            }));
        }
        let mut outcomes = Vec::new();
        for t in tasks {
            outcomes.push(t.await.unwrap());
        }
        let expected: HashSet<String> = outcomes.iter().map(|o| o.0.clone()).collect();
        let (records, _) = wait_for_ends(&a, &expected, Duration::from_secs(30)).await;
        let (duplicates, misses) = duplicates_and_misses(&records, &expected);
        let logouts = outcomes.iter().filter(|o| o.1 == 204).count();
        let patched = outcomes.iter().filter(|o| o.2 == 200).count();
        println!(
            "race test: {SESSIONS} sessions on 2 hosts; logout won {logouts}, expiry won {}, \
             updates that landed before the end {patched}; duplicates {}, misses {}",
            SESSIONS - logouts,
            duplicates.len(),
            misses.len()
        );
        assert!(duplicates.is_empty(), "ended twice: {duplicates:?}");
        assert!(misses.is_empty(), "never ended: {misses:?}");
        for (public_id, deleted, patched) in &outcomes {
            assert!([204, 404].contains(deleted), "DELETE answered {deleted}");
            assert!([200, 404].contains(patched), "PATCH answered {patched}");
            let reason = records[public_id][0]["record"]["reason"].as_str().unwrap();
            // The logout won exactly when the DELETE answered 204.
            let want = if *deleted == 204 { "logout" } else { "expired" };
            assert_eq!(
                reason, want,
                "{public_id}: DELETE {deleted}, PATCH {patched}"
            );
        }
        assert!(
            logouts > 0 && logouts < SESSIONS,
            "both sides won some races"
        );
    });
}

/// One create under load: status, latency in ms, when it ended, and the
/// new session's id when it was acknowledged.
type Attempt = (u16, u64, Instant, Option<String>);

#[test]
fn redis_restart_under_load_loses_no_acknowledged_session() {
    let _serial = serial();
    const WORKERS: usize = 16;
    let mut redis = RedisServer::start_persistent();
    let dir = temp_dir();
    let hosts = start_hosts(dir.path(), &host_toml(&redis.url(), 0, 5_000), 2);
    let apis: Vec<Api> = hosts.iter().map(|h| h.api(KEY)).collect();
    let rt = runtime();
    rt.block_on(async {
        // Sessions that run out while Redis is down: their end hooks must
        // run once it is back.
        let mut short = HashSet::new();
        for i in 0..50 {
            let s = apis[i % 2].create(&json!({"ttl_seconds": 2})).await;
            short.insert(s["public_id"].as_str().unwrap().to_string());
        }

        let stop = Arc::new(AtomicBool::new(false));
        let log: Arc<Mutex<Vec<Attempt>>> = Arc::default();
        let mut workers = Vec::new();
        for w in 0..WORKERS {
            let (api, stop, log) = (apis[w % 2].clone(), stop.clone(), log.clone());
            workers.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let reply = try_send(&api, Method::POST, "/v1/sessions", Some(&json!({})))
                        .await
                        .expect("the host answers even while Redis is down");
                    let ms = t.elapsed().as_millis() as u64;
                    let id = (reply.status == 201)
                        .then(|| reply.body["id"].as_str().unwrap().to_string());
                    if reply.status != 201 {
                        assert_eq!(reply.status, 503, "{}", reply.text);
                        assert_eq!(reply.content_type(), "application/problem+json");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    log.lock()
                        .unwrap()
                        .push((reply.status, ms, Instant::now(), id));
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let killed_at = Instant::now();
        tokio::task::block_in_place(|| redis.kill());
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let ready_while_down = tokio::task::block_in_place(|| probe(hosts[0].port(), "/readyz"));
        let restarted_at = Instant::now();
        tokio::task::block_in_place(|| redis.restart());
        tokio::time::sleep(Duration::from_millis(2500)).await;
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            w.await.unwrap();
        }
        let log = log.lock().unwrap().clone();
        let acked: Vec<String> = log.iter().filter_map(|e| e.3.clone()).collect();
        let unavailable = log.iter().filter(|e| e.0 == 503).count();
        let slowest_503 = log
            .iter()
            .filter(|e| e.0 == 503)
            .map(|e| e.1)
            .max()
            .unwrap_or(0);
        let recovered = log
            .iter()
            .filter(|e| e.0 == 201 && e.2 > restarted_at)
            .map(|e| e.2)
            .min()
            .expect("creates succeed again after the restart");
        // Every acknowledged create is still there.
        let mut lost = 0;
        for (i, id) in acked.iter().enumerate() {
            let r = apis[i % 2].get(&format!("/v1/sessions/{id}")).await;
            if r.status != 200 {
                lost += 1;
            }
        }
        let (records, _) = wait_for_ends(&apis[0], &short, Duration::from_secs(30)).await;
        let (duplicates, misses) = duplicates_and_misses(&records, &short);
        println!(
            "redis restart test: {} creates acknowledged, {lost} lost; {unavailable} answered \
             503 while Redis was down (slowest {slowest_503} ms); readyz while down: {:?}; \
             Redis down {:.1} s; first 201 {:.0} ms after the restart; ends of the {} \
             sessions that ran out meanwhile: duplicates {}, misses {}",
            acked.len(),
            ready_while_down,
            (restarted_at - killed_at).as_secs_f64(),
            (recovered - restarted_at).as_secs_f64() * 1000.0,
            short.len(),
            duplicates.len(),
            misses.len(),
        );
        assert_eq!(lost, 0, "acknowledged sessions were lost");
        assert!(unavailable > 0, "some requests ran while Redis was down");
        assert!(
            slowest_503 < 3_000,
            "a 503 took {slowest_503} ms: the API must fail fast while Redis is down"
        );
        assert_eq!(ready_while_down, Some(503));
        assert!(duplicates.is_empty() && misses.is_empty());
    });
}

#[test]
fn graceful_shutdown_leaves_no_claimed_job() {
    let _serial = serial();
    const SESSIONS: usize = 40;
    let redis = RedisServer::start();
    let dir = temp_dir();
    let mut hosts = start_hosts(dir.path(), &host_toml(&redis.url(), 1000, 30_000), 1);
    let api = hosts[0].api(KEY);
    let rt = runtime();
    let expected: HashSet<String> = rt.block_on(async {
        let mut ids = HashSet::new();
        for _ in 0..SESSIONS {
            let s = api.create(&json!({})).await;
            api.delete(&format!("/v1/sessions/{}", s["id"].as_str().unwrap()))
                .await
                .expect(204);
            ids.insert(s["public_id"].as_str().unwrap().to_string());
        }
        ids
    });
    // Stop while end hooks (1 s each) are still running
    // or queued.
    let busy = rt.block_on(queue_stats(&redis));
    assert!(
        busy.claimed + busy.waiting > 0,
        "the end hooks were already done"
    );
    let status = hosts[0].terminate(Duration::from_secs(30));
    assert!(status.success(), "{status}:\n{}", hosts[0].log());
    rt.block_on(async {
        assert_eq!(queue_stats(&redis).await, EndQueueStats::default());
        // Read the audit stream through a new host (which has nothing to do).
        let reader = start_hosts(dir.path(), &host_toml(&redis.url(), 0, 30_000), 1);
        let records = end_records(&reader[0].api(KEY)).await;
        let (duplicates, misses) = duplicates_and_misses(&records, &expected);
        assert!(duplicates.is_empty(), "{duplicates:?}");
        assert!(misses.is_empty(), "ended by nobody: {misses:?}");
    });
}

#[test]
fn end_hooks_cut_off_by_a_redis_outage_run_again() {
    let _serial = serial();
    const SESSIONS: usize = 10;
    let mut redis = RedisServer::start_persistent();
    let dir = temp_dir();
    // The hook writes its record 300 ms in; Redis is down by then.
    let hosts = start_hosts(dir.path(), &host_toml(&redis.url(), 600, 3_000), 1);
    let api = hosts[0].api(KEY);
    let rt = runtime();
    rt.block_on(async {
        let mut expected = HashSet::new();
        for _ in 0..SESSIONS {
            // Redis fsyncs every write here: a slow disk may make a request
            // miss the response timeout (a 503) before the outage even
            // starts. That is not what this test is about, so retry those.
            let s = eventually(Duration::from_secs(10), || async {
                let r = api.post("/v1/sessions", &json!({})).await;
                (r.status == 201).then_some(r.body)
            })
            .await
            .expect("a session is created");
            // A 503 may still have ended it: then the retry finds nothing.
            let path = format!("/v1/sessions/{}", s["id"].as_str().unwrap());
            eventually(Duration::from_secs(10), || async {
                let status = api.delete(&path).await.status;
                matches!(status, 204 | 404).then_some(())
            })
            .await
            .expect("the session is ended");
            expected.insert(s["public_id"].as_str().unwrap().to_string());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        tokio::task::block_in_place(|| redis.kill());
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let restarted = Instant::now();
        tokio::task::block_in_place(|| redis.restart());
        let (records, done) = wait_for_ends(&api, &expected, Duration::from_secs(30)).await;
        let (duplicates, misses) = duplicates_and_misses(&records, &expected);
        println!(
            "outage mid-hook: {SESSIONS} end hooks cut off by Redis going down; all ended {:.1} s \
             after Redis came back (reclaim time 3 s); duplicates {}, misses {}",
            (done - restarted).as_secs_f64(),
            duplicates.len(),
            misses.len()
        );
        assert!(duplicates.is_empty(), "{duplicates:?}");
        assert!(
            misses.is_empty(),
            "end records lost to the outage: {misses:?}"
        );
        assert_eq!(queue_stats(&redis).await, EndQueueStats::default());
    });
}

/// Sends a signal to a host process (`STOP`, `CONT`).
fn signal(host: &Host, name: &str) {
    let pid = host.pid().expect("the host runs").to_string();
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &pid])
        .status()
        .expect("kill");
    assert!(status.success(), "kill -{name} {pid}");
}

/// A host that stood still while another host took its end job over and
/// finished it does not count the failure its own late run ends with
/// (here, the deadline that passed while it stood still); the host that
/// finished the job counts its own.
#[test]
fn a_stalled_host_counts_no_failure_of_a_job_another_host_finished() {
    let _serial = serial();
    let redis = RedisServer::start();
    let dir = temp_dir();
    // Every run of the hook fails: it sleeps 4 s against a 1.5 s deadline.
    let toml = host_toml_with_deadline(&redis.url(), 4000, 3200, 1500);
    let stalled = start_hosts(dir.path(), &toml, 1).remove(0);
    let rt = runtime();
    rt.block_on(async {
        let api = stalled.api(KEY);
        let s = api.create(&json!({})).await;
        api.delete(&format!("/v1/sessions/{}", s["id"].as_str().unwrap()))
            .await
            .expect(204);
        eventually(Duration::from_secs(10), || async {
            (queue_stats(&redis).await.claimed == 1).then_some(())
        })
        .await
        .expect("the first host claimed the end job");
    });
    // Stop it mid-hook, well before its deadline.
    signal(&stalled, "STOP");
    let other = Host::start(BIN, dir.path(), "other", &toml, Duration::from_secs(300));
    let other_api = other.api(KEY);
    rt.block_on(async {
        let ends = eventually(Duration::from_secs(20), || async {
            let q = other_api.get("/v1/ends").await.expect(200).body;
            (q["ran"] == 1).then_some(q)
        })
        .await
        .expect("the other host took the job over and finished it");
        assert_eq!(ends["reclaimed"], 1);
    });
    signal(&stalled, "CONT");
    let api = stalled.api(KEY);
    rt.block_on(async {
        let ends = eventually(Duration::from_secs(20), || async {
            let q = api.get("/v1/ends").await.expect(200).body;
            (q["superseded"] == 1).then_some(q)
        })
        .await
        .expect("the stalled host learnt that its job was finished elsewhere");
        assert_eq!(ends["ran"], 0);
        let failures = |list: Value| list["plugins"][0]["failures"].clone();
        assert_eq!(
            failures(other_api.get("/v1/plugins").await.expect(200).body),
            json!({"deadline-exceeded": 1})
        );
        assert_eq!(
            failures(api.get("/v1/plugins").await.expect(200).body),
            json!({}),
            "{}",
            stalled.log()
        );
    });
    // Its late run did fail: the failure is logged, not counted.
    assert!(
        stalled.log().contains("deadline-exceeded"),
        "{}",
        stalled.log()
    );
}
