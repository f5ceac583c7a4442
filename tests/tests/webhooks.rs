//! Webhooks as a consumer sees them: a receiver started by the test on
//! loopback verifies every delivery's Standard Webhooks signature with the
//! endpoint's secret, as a consumer would, and records what arrived.
//!
//! - every event arrives, signed, with its data, on each endpoint that
//!   asked for it, and the metrics count the deliveries;
//! - a failing endpoint is retried with the same `webhook-id`, and one that
//!   never answers 2xx is given up on after `webhooks.max_attempts`;
//! - two host processes share a throwaway Redis; 1,000 sessions end by
//!   logout, expiry, revocation and eviction while one host is killed with
//!   SIGKILL (a third takes its place): every `session.ended` arrives,
//!   signed, and every duplicate carries the same `webhook-id`. The test
//!   prints the delivery latency (run with `--nocapture`).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::{Value, json};
use sessiond::session::{Millis, now_ms};
use sessiond_tests::fixtures::{Plugin, Tenant};
use sessiond_tests::hosts::Host;
use sessiond_tests::redis_server::RedisServer;
use sessiond_tests::server::{Api, Reply, TestServer, eventually, scrape};
use sessiond_tests::{Backend, cache_dir, every_backend};

const BIN: &str = env!("CARGO_BIN_EXE_sessiond-host");
const KEY: &str = "webhooks-test-key";
const TENANT: &str = "acme";
/// The secret of every endpoint but `other` (24 bytes of base64).
const SECRET: &str = "whsec_c2Vzc2lvbmQtd2ViaG9vay10ZXN0LXNlY3JldA==";
/// The secret of the endpoint `other`.
const OTHER_SECRET: &str = "whsec_YW5vdGhlci1lbmRwb2ludC1zZWNyZXQtMDEyMzQ1";

/// One delivery as the receiver got it.
#[derive(Debug, Clone)]
struct Received {
    /// The endpoint's last path segment.
    endpoint: String,
    /// `webhook-id`.
    id: String,
    body: Value,
    /// When it arrived (ms since the epoch).
    at: Millis,
}

#[derive(Default)]
struct Inbox {
    /// Verified deliveries that were answered 2xx.
    accepted: Mutex<Vec<Received>>,
    /// Every verified attempt, answered 2xx or not.
    attempts: Mutex<Vec<Received>>,
    /// Attempts whose signature did not verify.
    forged: AtomicUsize,
    /// Answer 503 to the first this many attempts of each message at the
    /// endpoint `flaky`.
    flaky_failures: usize,
    /// Wait this long before answering.
    delay: Duration,
}

/// A webhook receiver on a free port of 127.0.0.1: `POST /<endpoint>`.
/// The endpoint `never` always answers 500.
struct Receiver {
    port: u16,
    inbox: Arc<Inbox>,
}

impl Receiver {
    async fn start(flaky_failures: usize, delay: Duration) -> Receiver {
        let inbox = Arc::new(Inbox {
            flaky_failures,
            delay,
            ..Inbox::default()
        });
        let app = Router::new()
            .route("/{endpoint}", post(receive))
            .with_state(inbox.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { port, inbox }
    }

    fn url(&self, endpoint: &str) -> String {
        format!("http://127.0.0.1:{}/{endpoint}", self.port)
    }

    fn accepted(&self) -> Vec<Received> {
        self.inbox.accepted.lock().unwrap().clone()
    }

    fn attempts(&self) -> Vec<Received> {
        self.inbox.attempts.lock().unwrap().clone()
    }

    fn forged(&self) -> usize {
        self.inbox.forged.load(Ordering::Relaxed)
    }
}

async fn receive(
    State(inbox): State<Arc<Inbox>>,
    Path(endpoint): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let secret = if endpoint == "other" {
        OTHER_SECRET
    } else {
        SECRET
    };
    let verifier = standardwebhooks::Webhook::new(secret).expect("a valid secret");
    if verifier.verify(&body, &headers).is_err() {
        inbox.forged.fetch_add(1, Ordering::Relaxed);
        return StatusCode::UNAUTHORIZED;
    }
    let received = Received {
        endpoint: endpoint.clone(),
        id: headers["webhook-id"].to_str().unwrap().to_string(),
        body: serde_json::from_slice(&body).expect("a JSON body"),
        at: now_ms(),
    };
    tokio::time::sleep(inbox.delay).await;
    let earlier = {
        let mut attempts = inbox.attempts.lock().unwrap();
        let earlier = attempts
            .iter()
            .filter(|r| r.endpoint == endpoint && r.id == received.id)
            .count();
        attempts.push(received.clone());
        earlier
    };
    let status = match endpoint.as_str() {
        "never" => StatusCode::INTERNAL_SERVER_ERROR,
        "flaky" if earlier < inbox.flaky_failures => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::NO_CONTENT,
    };
    if status.is_success() {
        inbox.accepted.lock().unwrap().push(received);
    }
    status
}

/// `[[tenants.acme.webhooks]]` for `url`, with `events` and `secret`.
fn webhook(url: &str, events: &[&str], secret: &str) -> String {
    let events: Vec<String> = events.iter().map(|e| format!("{e:?}")).collect();
    format!(
        "\n[[tenants.{TENANT}.webhooks]]\nurl = {url:?}\nevents = [{}]\nsecret = {secret:?}\n",
        events.join(", ")
    )
}

/// `[webhooks]` with quick polls and retries.
fn sender(max_attempts: u32, timeout_ms: u64) -> String {
    format!(
        "[webhooks]\npoll_interval_ms = 50\nretry_base_ms = 100\nretry_max_ms = 400\n\
         max_attempts = {max_attempts}\ntimeout_ms = {timeout_ms}\n"
    )
}

/// The receiver's accepted deliveries, once there are at least `n`.
async fn wait_for(receiver: &Receiver, n: usize, timeout: Duration) -> Vec<Received> {
    eventually(timeout, || async {
        let got = receiver.accepted();
        (got.len() >= n).then_some(got)
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "expected {n} deliveries, got {:?} (forged: {})",
            receiver.accepted(),
            receiver.forged()
        )
    })
}

/// The value of the metric line that starts with `series`, or 0.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn every_event_arrives_signed(backend: Backend) {
    let receiver = Receiver::start(0, Duration::ZERO).await;
    let toml = format!(
        "{}{}{}{}",
        sender(5, 2000),
        Tenant::new(TENANT).key(KEY).toml(),
        webhook(
            &receiver.url("all"),
            &["session.created", "session.ended"],
            SECRET
        ),
        webhook(&receiver.url("other"), &["session.ended"], OTHER_SECRET),
    );
    let server = TestServer::start(backend, &toml);
    let api = server.api(KEY);
    let created = api.create(&json!({"user": "alice"})).await;
    let (token, public_id) = (
        created["id"].as_str().unwrap(),
        created["public_id"].as_str().unwrap(),
    );
    let got = wait_for(&receiver, 1, Duration::from_secs(10)).await;
    assert_eq!(got[0].endpoint, "all");
    assert_eq!(got[0].body["type"], "session.created");
    let data = &got[0].body["data"];
    assert_eq!(data["session"], public_id);
    assert_eq!(data["user"], "alice");
    assert_eq!(data["tenant"], TENANT);
    assert_eq!(data["created_at_ms"], created["created_at_ms"]);
    assert!(
        !got[0].body.to_string().contains(token),
        "a delivery must never carry the session's token: {}",
        got[0].body
    );

    api.delete(&format!("/v1/sessions/{token}"))
        .await
        .expect(204);
    let got = wait_for(&receiver, 3, Duration::from_secs(10)).await;
    let ended: Vec<&Received> = got
        .iter()
        .filter(|r| r.body["type"] == "session.ended")
        .collect();
    assert_eq!(ended.len(), 2, "{got:?}");
    let endpoints: HashSet<&str> = ended.iter().map(|r| r.endpoint.as_str()).collect();
    assert_eq!(endpoints, HashSet::from(["all", "other"]));
    for r in &ended {
        assert_eq!(r.body["data"]["session"], public_id);
        assert_eq!(r.body["data"]["reason"], "logout");
        assert!(r.body["data"]["end_id"].is_string(), "{}", r.body);
    }
    // One event, one id, whichever endpoint it goes to; another event,
    // another id.
    assert_eq!(ended[0].id, ended[1].id);
    assert_ne!(ended[0].id, got[0].id);
    assert_eq!(receiver.forged(), 0);

    let text = scrape(&server.base_url()).await;
    let sent = format!("sessiond_webhook_attempts_total{{tenant=\"{TENANT}\",outcome=\"sent\"}}");
    assert_eq!(metric(&text, &sent), 3.0, "{text}");
    let held = format!("sessiond_webhook_outbox{{tenant=\"{TENANT}\",state=\"held\"}}");
    assert_eq!(metric(&text, &held), 0.0, "{text}");
    server.stop().unwrap();
}

every_backend!(servers: every_event_arrives_signed, idle_warnings_once_per_idle_period);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_endpoints_are_retried_then_given_up_on() {
    let receiver = Receiver::start(2, Duration::ZERO).await;
    let toml = format!(
        "{}{}{}{}",
        sender(3, 2000),
        Tenant::new(TENANT).key(KEY).toml(),
        webhook(&receiver.url("flaky"), &["session.ended"], SECRET),
        webhook(&receiver.url("never"), &["session.ended"], SECRET),
    );
    let server = TestServer::start(Backend::Memory, &toml);
    let api = server.api(KEY);
    let created = api.create(&json!({"user": "bob"})).await;
    let token = created["id"].as_str().unwrap();
    api.delete(&format!("/v1/sessions/{token}"))
        .await
        .expect(204);

    let got = wait_for(&receiver, 1, Duration::from_secs(10)).await;
    assert_eq!(got[0].endpoint, "flaky");
    // Both endpoints get their three attempts: flaky succeeds on its third,
    // never is given up on after its third (max_attempts = 3).
    let attempts = eventually(Duration::from_secs(10), || async {
        let attempts = receiver.attempts();
        (attempts.len() >= 6).then_some(attempts)
    })
    .await
    .unwrap_or_else(|| panic!("attempts: {:?}", receiver.attempts()));
    let ids: HashSet<&str> = attempts.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        ids.len(),
        1,
        "every attempt carries the same id: {attempts:?}"
    );
    for endpoint in ["flaky", "never"] {
        let times: Vec<Millis> = attempts
            .iter()
            .filter(|r| r.endpoint == endpoint)
            .map(|r| r.at)
            .collect();
        assert_eq!(times.len(), 3, "{endpoint}: {attempts:?}");
        // The waits back off: 100 ms, then 200 ms (each plus up to a fifth).
        assert!(times[1] - times[0] >= 100, "{endpoint}: {times:?}");
        assert!(times[2] - times[1] >= 200, "{endpoint}: {times:?}");
    }
    let text = eventually(Duration::from_secs(5), || async {
        let text = scrape(&server.base_url()).await;
        let gave_up =
            format!("sessiond_webhook_attempts_total{{tenant=\"{TENANT}\",outcome=\"gave-up\"}}");
        (metric(&text, &gave_up) == 1.0).then_some(text)
    })
    .await
    .expect("the never-answering endpoint is given up on");
    let series = |outcome: &str| {
        format!("sessiond_webhook_attempts_total{{tenant=\"{TENANT}\",outcome=\"{outcome}\"}}")
    };
    assert_eq!(metric(&text, &series("sent")), 1.0, "{text}");
    assert_eq!(metric(&text, &series("failed")), 4.0, "{text}");
    let held = format!("sessiond_webhook_outbox{{tenant=\"{TENANT}\",state=\"held\"}}");
    assert_eq!(metric(&text, &held), 0.0, "{text}");
    // No fourth attempt after giving up.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(receiver.attempts().len(), 6);
    server.stop().unwrap();
}

/// How each test session is to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Logout,
    Expire,
    Revoke,
    Evict,
}

impl Fate {
    fn reason(self) -> &'static str {
        match self {
            Fate::Logout => "logout",
            Fate::Expire => "expired",
            Fate::Revoke => "revoked",
            Fate::Evict => "evicted",
        }
    }
}

/// Sends a request; none when the host cannot be reached or the connection
/// breaks (a killed host).
async fn try_send(
    api: &Api,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Option<Reply> {
    let mut builder = api.request(method, path).timeout(Duration::from_secs(5));
    if let Some(body) = body {
        builder = builder.json(&body);
    }
    Some(Reply::read(builder.send().await.ok()?).await)
}

/// Runs one session's life through `api`; returns the public id of the
/// session that is to end, or none when a request failed (its host was
/// killed): what that request did is not known.
async fn live(api: &Api, i: usize, fate: Fate) -> Option<String> {
    let user = format!("user-{i}");
    let create = |body: Value| async move {
        let reply = try_send(api, reqwest::Method::POST, "/v1/sessions", Some(body)).await?;
        (reply.status == 201).then_some(reply.body)
    };
    let public_id = |s: &Value| s["public_id"].as_str().map(String::from);
    match fate {
        Fate::Logout => {
            let s = create(json!({"user": user})).await?;
            let path = format!("/v1/sessions/{}", s["id"].as_str()?);
            let reply = try_send(api, reqwest::Method::DELETE, &path, None).await?;
            (reply.status == 204).then(|| public_id(&s))?
        }
        Fate::Expire => public_id(&create(json!({"user": user, "ttl_seconds": 1})).await?),
        Fate::Revoke => {
            let s = create(json!({"user": user})).await?;
            let path = format!("/v1/users/{user}/sessions");
            let reply = try_send(api, reqwest::Method::DELETE, &path, None).await?;
            (reply.status / 100 == 2).then(|| public_id(&s))?
        }
        Fate::Evict => {
            // The tenant allows one session per user and evicts the least
            // recently used: the second create ends the first.
            let first = create(json!({"user": user})).await?;
            create(json!({"user": user})).await?;
            public_id(&first)
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_ended_event_is_lost_when_a_host_dies() {
    const SESSIONS: usize = 1000;
    let redis = tokio::task::spawn_blocking(RedisServer::start)
        .await
        .unwrap();
    // Slow answers, so that deliveries are in flight when the host dies.
    let receiver = Receiver::start(0, Duration::from_millis(5)).await;
    let toml = format!(
        r#"
[server]
listen = "{{listen}}"

[store]
backend = "redis"
urls = ["{url}"]
operation_timeout_ms = 1000
response_timeout_ms = 500
connection_timeout_ms = 300

[runtime]
cache_dir = "{cache}"

[sweeper]
interval_ms = 50
batch = 200

[ends]
poll_interval_ms = 50
reclaim_after_ms = 2000

{sender}
{tenant}
max_sessions_per_user = 1
limit_policy = "evict-lru"
{hook}"#,
        url = redis.url(),
        cache = cache_dir().display(),
        sender = sender(50, 1000),
        tenant = Tenant::new(TENANT).key(KEY).ttl(600).idle(600).toml(),
        hook = webhook(&receiver.url("ends"), &["session.ended"], SECRET),
    );
    let dir = tempfile::tempdir().unwrap();
    let start = |name: &str| {
        let (dir, toml, name) = (dir.path().to_path_buf(), toml.clone(), name.to_string());
        tokio::task::spawn_blocking(move || {
            Host::start(BIN, &dir, &name, &toml, Duration::from_secs(60))
        })
    };
    let mut hosts = vec![start("host0").await.unwrap(), start("host1").await.unwrap()];
    let apis: Vec<Api> = hosts.iter().map(|h| h.api(KEY)).collect();

    let fates = [Fate::Logout, Fate::Expire, Fate::Revoke, Fate::Evict];
    let expected: Arc<Mutex<HashMap<String, Fate>>> = Arc::default();
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..8 {
        let (apis, next, expected) = (apis.clone(), next.clone(), expected.clone());
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= SESSIONS {
                    return;
                }
                let fate = fates[i % fates.len()];
                // Half the workers use host0 until it dies; then host1.
                let mut id = live(&apis[w % 2], i, fate).await;
                if id.is_none() {
                    id = live(&apis[1], i + SESSIONS, fate).await;
                }
                let id = id.unwrap_or_else(|| panic!("session {i} failed on both hosts"));
                expected.lock().unwrap().insert(id, fate);
            }
        });
    }
    // Kill host0 mid-run, with ends and deliveries in flight.
    eventually(Duration::from_secs(60), || async {
        (next.load(Ordering::Relaxed) >= SESSIONS / 2).then_some(())
    })
    .await
    .expect("half the sessions were run");
    hosts[0].kill();
    let killed_at = started.elapsed();
    let killed_ms = now_ms();
    while let Some(done) = workers.join_next().await {
        done.unwrap();
    }
    // A host takes the dead one's place, as a supervisor would restart it.
    hosts.push(start("host2").await.unwrap());
    let expected = expected.lock().unwrap().clone();
    assert_eq!(expected.len(), SESSIONS);

    let arrived = eventually(Duration::from_secs(90), || async {
        let ended: HashSet<String> = receiver
            .accepted()
            .iter()
            .filter_map(|r| r.body["data"]["session"].as_str().map(String::from))
            .collect();
        expected
            .keys()
            .all(|id| ended.contains(id))
            .then_some(receiver.accepted())
    })
    .await;
    let Some(arrived) = arrived else {
        let got: HashSet<String> = receiver
            .accepted()
            .iter()
            .filter_map(|r| r.body["data"]["session"].as_str().map(String::from))
            .collect();
        let missing: Vec<&String> = expected.keys().filter(|id| !got.contains(*id)).collect();
        panic!(
            "{} of {SESSIONS} session.ended deliveries missing, e.g. {:?}\nhost1 log:\n{}",
            missing.len(),
            &missing[..missing.len().min(5)],
            hosts[1].log()
        );
    };
    assert_eq!(receiver.forged(), 0, "every delivery's signature verifies");
    // Each session's deliveries: one event, one id, the session's reason.
    let mut ids_of: HashMap<&str, HashSet<&str>> = HashMap::new();
    let mut latencies = Vec::new();
    // Ends of sessions whose request was cut off by the kill (its outcome
    // unknown to the test, so the session is not among those expected).
    let mut strays = 0;
    for r in &arrived {
        assert_eq!(r.body["type"], "session.ended", "{}", r.body);
        let session = r.body["data"]["session"].as_str().unwrap();
        let Some(fate) = expected.get(session) else {
            strays += 1;
            continue;
        };
        assert_eq!(r.body["data"]["reason"], fate.reason(), "{}", r.body);
        ids_of.entry(session).or_default().insert(&r.id);
        if let Some(ended_at) = r.body["data"]["ended_at_ms"].as_u64() {
            latencies.push(r.at.saturating_sub(ended_at));
        }
    }
    for (session, ids) in &ids_of {
        assert_eq!(
            ids.len(),
            1,
            "session {session} was delivered under several ids"
        );
    }
    let all_ids: HashSet<&str> = ids_of.values().flatten().copied().collect();
    assert_eq!(all_ids.len(), SESSIONS, "one id per ended session");
    // Before the kill: two hosts, nothing reclaimed yet.
    let mut steady: Vec<Millis> = arrived
        .iter()
        .filter(|r| r.at < killed_ms)
        .filter_map(|r| Some(r.at.saturating_sub(r.body["data"]["ended_at_ms"].as_u64()?)))
        .collect();
    steady.sort_unstable();
    if !steady.is_empty() {
        let pct = |p: usize| steady[(steady.len() - 1) * p / 100];
        println!(
            "webhooks: before the kill, {} deliveries: latency from end to receipt p50 {} ms, \
             p99 {} ms",
            steady.len(),
            pct(50),
            pct(99)
        );
    }
    latencies.sort_unstable();
    let pct = |p: usize| latencies[(latencies.len() - 1) * p / 100];
    println!(
        "webhooks: {SESSIONS} sessions ended, host0 killed at {killed_at:?}; {} deliveries \
         ({} duplicates, {strays} of sessions cut off by the kill); latency from end to \
         receipt p50 {} ms, p99 {} ms, max {} ms",
        arrived.len(),
        arrived.len() - SESSIONS - strays,
        pct(50),
        pct(99),
        pct(100)
    );
    drop(hosts);
    drop(redis);
}

// ------------------------------------------------------------ idle warnings

/// The `session.idle-warning` deliveries the receiver accepted for
/// `public_id`.
fn warnings_of(receiver: &Receiver, public_id: &str) -> Vec<Received> {
    receiver
        .accepted()
        .into_iter()
        .filter(|r| {
            r.body["type"] == "session.idle-warning" && r.body["data"]["session"] == public_id
        })
        .collect()
}

/// The events named `name` that the audit-log plugin recorded for
/// `public_id`.
async fn plugin_events(api: &Api, public_id: &str, name: &str) -> usize {
    api.audit_of(public_id, "session_event")
        .await
        .iter()
        .filter(|r| r["record"]["name"] == name)
        .count()
}

/// A tenant whose sessions idle out after 6 s, warned 4 s before (2 s after
/// their last use), with the audit-log plugin recording every event.
fn idle_toml(receiver: &Receiver) -> String {
    format!(
        "[sweeper]\ninterval_ms = 50\n\n{}{}{}",
        sender(5, 2000),
        Tenant::new(TENANT)
            .key(KEY)
            .idle(6)
            .setting("idle_warning_seconds", "4")
            .plugin(Plugin::audit_log())
            .toml(),
        webhook(&receiver.url("idle"), &["session.idle-warning"], SECRET),
    )
}

async fn idle_warnings_once_per_idle_period(backend: Backend) {
    let receiver = Receiver::start(0, Duration::ZERO).await;
    let server = TestServer::start(backend, &idle_toml(&receiver));
    let api = server.api(KEY);
    let kept = api.create(&json!({"user": "kept"})).await;
    let left = api.create(&json!({"user": "left"})).await;
    let (kept_id, left_id) = (
        kept["public_id"].as_str().unwrap().to_string(),
        left["public_id"].as_str().unwrap().to_string(),
    );
    // `kept` is used every 500 ms for 3.5 s: it is never 2 s idle.
    let toucher = {
        let (api, token) = (api.clone(), kept["id"].as_str().unwrap().to_string());
        tokio::spawn(async move {
            for _ in 0..7 {
                tokio::time::sleep(Duration::from_millis(500)).await;
                api.post_empty(&format!("/v1/sessions/{token}/touch"))
                    .await
                    .expect(200);
            }
        })
    };
    let first = eventually(Duration::from_secs(5), || async {
        warnings_of(&receiver, &left_id).first().cloned()
    })
    .await
    .expect("the idle session is warned before its idle timeout");
    let data = &first.body["data"];
    assert_eq!(
        data["idle_expires_at_ms"], left["idle_expires_at_ms"],
        "{}",
        first.body
    );
    assert!(
        first.at < left["idle_expires_at_ms"].as_u64().unwrap(),
        "the warning comes before the deadline"
    );
    assert!(
        warnings_of(&receiver, &kept_id).is_empty(),
        "a session in use is not warned"
    );
    assert_eq!(plugin_events(&api, &left_id, "idle-warning").await, 1);

    // Used again: idle-reset through the chain, and a new idle period.
    let touched = api
        .post_empty(&format!(
            "/v1/sessions/{}/touch",
            left["id"].as_str().unwrap()
        ))
        .await
        .expect(200);
    assert_eq!(plugin_events(&api, &left_id, "idle-reset").await, 1);
    let second = eventually(Duration::from_secs(5), || async {
        let got = warnings_of(&receiver, &left_id);
        (got.len() >= 2).then(|| got[1].clone())
    })
    .await
    .expect("the new idle period is warned too");
    assert_ne!(first.id, second.id, "each idle period is its own message");
    assert_eq!(
        second.body["data"]["idle_expires_at_ms"],
        touched.body["idle_expires_at_ms"]
    );

    // `kept` stops being used at 3.5 s: warned once, 2 s later.
    toucher.await.unwrap();
    eventually(Duration::from_secs(5), || async {
        (!warnings_of(&receiver, &kept_id).is_empty()).then_some(())
    })
    .await
    .expect("the session is warned once it is left idle");
    // No second warning in the same period, from the webhooks or the chain.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(warnings_of(&receiver, &kept_id).len(), 1);
    assert_eq!(warnings_of(&receiver, &left_id).len(), 2);
    assert_eq!(plugin_events(&api, &kept_id, "idle-warning").await, 1);
    assert_eq!(plugin_events(&api, &kept_id, "idle-reset").await, 0);
    assert_eq!(plugin_events(&api, &left_id, "idle-warning").await, 2);
    assert_eq!(receiver.forged(), 0);
    server.stop().unwrap();
}
