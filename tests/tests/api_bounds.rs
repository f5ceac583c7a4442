//! The bounds on JSON over HTTP, on every backend: values nested deeper
//! than `max_json_depth` (32) and sessions larger than `max_session_bytes`
//! (1 MiB) are refused with a 422 `over-limit` problem that names the field
//! and the limit, and a session stays usable after such a refusal. On
//! Redis, an end job that cannot be read goes to the dead-letter list and
//! the jobs queued with it still run, and a host that stalls in an end
//! hook which another host then finishes does not count that job as its
//! own.

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use sessiond_tests::fixtures::{Plugin, Tenant};
use sessiond_tests::hosts::Host;
use sessiond_tests::redis_server::RedisServer;
use sessiond_tests::server::{Api, TestServer, eventually};
use sessiond_tests::{Backend, cache_dir, every_backend};

const KEY: &str = "key-acme";

every_backend!(
    servers:
    a_deep_patch_is_refused_and_the_session_stays_usable,
    every_input_is_bounded_in_depth,
    sessions_are_bounded_in_bytes,
    the_end_queue_shows_its_dead_letters,
);

/// A tenant with a per-user limit (policy deny), the sessman API and an
/// end hook that writes one audit record per ended session.
fn config() -> String {
    Tenant::new("acme")
        .key(KEY)
        .max_sessions(3)
        .limit_policy("deny")
        .sessman()
        .plugin(Plugin::new("ender", "ender").grants(&["audit"]))
        .toml()
}

/// `levels` nested objects: `{"a": {"a": ... {}}}`.
fn nested(levels: usize) -> Value {
    let mut value = json!({});
    for _ in 1..levels {
        value = json!({ "a": value });
    }
    value
}

/// Asserts a 422 over the depth limit for `field`; returns the problem.
#[track_caller]
fn too_deep(reply: sessiond_tests::server::Reply, field: &str) -> Value {
    let p = reply.problem(422, "over-limit");
    assert_eq!(p["field"], field, "{p}");
    assert_eq!(p["limit"], "max_json_depth", "{p}");
    assert_eq!(p["max"], 32, "{p}");
    p
}

async fn create(api: &Api, user: &str) -> (String, String) {
    let s = api.create(&json!({ "user": user })).await;
    (
        s["id"].as_str().unwrap().to_string(),
        s["public_id"].as_str().unwrap().to_string(),
    )
}

/// The defect this guards against: a patch of 127 nested objects was
/// accepted, after which the stored record (one level deeper) could not be
/// read back on Redis: reads, listing, touch and creates of the user
/// failed, and its end job jammed the queue.
async fn a_deep_patch_is_refused_and_the_session_stays_usable(backend: Backend) {
    let server = TestServer::start(backend, &config());
    let api = server.api(KEY);
    let (id, public_id) = create(&api, "ann").await;
    let path = format!("/v1/sessions/{id}");

    let p = too_deep(api.patch(&path, &nested(127)).await, "data");
    assert!(p["detail"].as_str().unwrap().contains("127"), "{p}");
    too_deep(api.patch(&path, &json!({ "a": nested(32) })).await, "data");
    // Deeper than the parser goes: the body as a whole is over the limit.
    too_deep(api.patch(&path, &nested(300)).await, "");
    let ok = api
        .patch(&path, &json!({ "a": nested(31) }))
        .await
        .expect(200);
    assert_eq!(ok.body["data"]["a"], nested(31));

    assert_eq!(api.get(&path).await.expect(200).body["version"], 2);
    let listed = api.get("/v1/users/ann/sessions").await.expect(200).body;
    assert_eq!(listed["sessions"].as_array().unwrap().len(), 1);
    api.post_empty(&format!("{path}/touch")).await.expect(200);
    let (second, _) = create(&api, "ann").await;
    api.delete(&path).await.expect(204);
    assert_eq!(api.end_reasons(&public_id).await, ["logout"]);
    api.delete(&format!("/v1/sessions/{second}"))
        .await
        .expect(204);
    // GET /v1/ends reads the queue and this host's counters one after the
    // other, so one answer can show a job both claimed and ran: wait for
    // both to settle.
    let ends = eventually(Duration::from_secs(10), || async {
        let q = api.get("/v1/ends").await.expect(200).body;
        (q["ran"] == 2 && q["waiting"] == 0 && q["claimed"] == 0).then_some(q)
    })
    .await
    .expect("both end jobs ran and left the queue");
    assert_eq!(ends["dead"], 0);
}

async fn every_input_is_bounded_in_depth(backend: Backend) {
    let server = TestServer::start(backend, &config());
    let api = server.api(KEY);
    too_deep(
        api.post("/v1/sessions", &json!({ "data": { "a": nested(32) } }))
            .await,
        "data",
    );
    let s = api
        .create(&json!({ "user": "bob", "data": { "a": nested(31) } }))
        .await;
    let id = s["id"].as_str().unwrap();
    too_deep(
        api.post(
            &format!("/v1/sessions/{id}/events"),
            &json!({ "name": "page-view", "payload": nested(33) }),
        )
        .await,
        "payload",
    );
    api.post(
        &format!("/v1/sessions/{id}/events"),
        &json!({ "name": "page-view", "payload": nested(32) }),
    )
    .await
    .expect(200);
    too_deep(
        api.post(&format!("/v1/sessions/{id}/messages/echo"), &nested(33))
            .await,
        "payload",
    );
    // Within the bound the message goes on to the chain, which has no
    // handler.
    api.post(&format!("/v1/sessions/{id}/messages/echo"), &nested(32))
        .await
        .problem(404, "no-message-handler");
    too_deep(
        api.post(
            "/sessman/new?user=bob",
            &json!({ "data": { "a": nested(32) } }),
        )
        .await,
        "data",
    );
    too_deep(
        api.post(
            &format!("/sessman/update?session_id={id}"),
            &json!({ "data": { "a": nested(32) } }),
        )
        .await,
        "data",
    );
    let after = api.get(&format!("/v1/sessions/{id}")).await.expect(200);
    assert_eq!(after.body["data"]["a"], nested(31), "nothing was written");
}

/// Each request is under the body limit (64 KiB); together they would make
/// a session over 1 MiB.
async fn sessions_are_bounded_in_bytes(backend: Backend) {
    let server = TestServer::start(backend, &config());
    let api = server.api(KEY);
    let (id, _) = create(&api, "cid").await;
    let path = format!("/v1/sessions/{id}");
    let chunk = "x".repeat(60_000);
    let mut refused = None;
    for i in 0..20 {
        let reply = api.patch(&path, &json!({ format!("k{i}"): chunk })).await;
        if reply.status != 200 {
            refused = Some((i, reply));
            break;
        }
    }
    let (i, reply) = refused.expect("the session stops growing");
    assert_eq!(i, 17, "17 chunks of 60 kB fit in 1 MiB, 18 do not");
    let p = reply.problem(422, "over-limit");
    assert_eq!(p["limit"], "max_session_bytes", "{p}");
    assert_eq!(p["max"], 1 << 20, "{p}");
    assert_eq!(p["field"], "", "{p}");
    let stored = api.get(&path).await.expect(200).body;
    assert_eq!(stored["data"].as_object().unwrap().len(), 17);
    assert_eq!(stored["version"], 18);
    // Shrinking it again is allowed.
    api.patch(&path, &json!({ "k0": null, "k16": null }))
        .await
        .expect(200);
}

async fn the_end_queue_shows_its_dead_letters(backend: Backend) {
    let mut server = TestServer::start(backend, &config());
    let api = server.api(KEY);
    let q = api.get("/v1/ends").await.expect(200).body;
    assert_eq!(q["dead"], 0);
    assert_eq!(q["dead_letters"], json!([]));
    assert_eq!(
        (q["superseded"].as_u64(), q["dead_lettered"].as_u64()),
        (Some(0), Some(0))
    );
    let doc = server
        .anonymous()
        .get("/openapi.json")
        .await
        .expect(200)
        .body;
    let schemas = &doc["components"]["schemas"];
    assert!(schemas["DeadLetterView"].is_object(), "{schemas}");
    for member in ["dead", "dead_letters", "superseded", "dead_lettered"] {
        assert!(
            schemas["EndQueueView"]["properties"][member].is_object(),
            "{member}"
        );
    }
    // Only a Redis of the server's own can be tampered with from here.
    let Some(redis) = server.redis() else {
        return;
    };
    let mut ended = Vec::new();
    for _ in 0..3 {
        let (id, public_id) = create(&api, &format!("u{}", ended.len())).await;
        api.delete(&format!("/v1/sessions/{id}")).await.expect(204);
        ended.push(public_id);
    }
    // An entry no host can read, queued among the others.
    redis
        .command(&[
            "XADD",
            "sessiond:{acme}:ends",
            "*",
            "r",
            "{not json",
            "why",
            "logout",
        ])
        .unwrap();
    for _ in 0..3 {
        let (id, public_id) = create(&api, &format!("u{}", ended.len())).await;
        api.delete(&format!("/v1/sessions/{id}")).await.expect(204);
        ended.push(public_id);
    }
    for public_id in &ended {
        assert_eq!(api.end_reasons(public_id).await, ["logout"], "{public_id}");
    }
    let q = eventually(Duration::from_secs(10), || async {
        let q = api.get("/v1/ends").await.expect(200).body;
        (q["dead"] == 1 && q["claimed"] == 0).then_some(q)
    })
    .await
    .expect("the unreadable job is in the dead-letter list");
    assert_eq!(q["waiting"], 0);
    let dead = &q["dead_letters"][0];
    assert!(
        dead["why"].as_str().unwrap().contains("cannot be read"),
        "{dead}"
    );
    assert_eq!(dead["end_id"], Value::Null);
    assert_eq!(dead["reason"], "logout");
    assert!(dead["at"].is_string() && dead["at_ms"].is_u64(), "{dead}");
    assert!(!q.to_string().contains("token"), "no token: {q}");
}

/// Two hosts on one Redis. Host A claims a logout's end job and is stopped
/// (SIGSTOP) in the middle of its hook; host B, started then, takes the job
/// over after the reclaim time and finishes it, and A resumes. When A resumes, its hook runs
/// out of its deadline and A's acknowledgement finds the job gone: A counts
/// it as superseded, not as run, and the session ended exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_stalled_in_a_hook_does_not_count_the_job() {
    let redis = tokio::task::spawn_blocking(RedisServer::start)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        r#"
[server]
listen = "{{listen}}"

[store]
backend = "redis"
urls = ["{url}"]

[runtime]
cache_dir = "{cache}"

[ends]
poll_interval_ms = 50
reclaim_after_ms = 2000
{tenant}"#,
        url = redis.url(),
        cache = cache_dir().display(),
        tenant = Tenant::new("acme")
            .key(KEY)
            .plugin(
                Plugin::new("ender", "ender")
                    .grants(&["audit"])
                    .config("delay_ms", "600")
                    .limit("deadline_ms", 900),
            )
            .toml(),
    );
    let start = |name: &'static str| {
        let (path, toml) = (dir.path().to_path_buf(), toml.clone());
        tokio::task::spawn_blocking(move || {
            Host::start(
                env!("CARGO_BIN_EXE_sessiond-host"),
                &path,
                name,
                &toml,
                Duration::from_secs(300),
            )
        })
    };
    let a = start("a").await.unwrap();
    let api_a = a.api(KEY);
    let (id, public_id) = create(&api_a, "dee").await;
    api_a
        .delete(&format!("/v1/sessions/{id}"))
        .await
        .expect(204);
    // A (the only host yet) claims the job and is in the hook's first
    // sleep; stop it there.
    eventually(Duration::from_secs(10), || async {
        let q = api_a.get("/v1/ends").await.expect(200).body;
        (q["claimed"] == 1).then_some(())
    })
    .await
    .expect("host a claimed the end job");
    let pid = a.pid().expect("host a runs").to_string();
    let signal = |sig: &str| {
        let status = Command::new("kill").args([sig, &pid]).status().unwrap();
        assert!(status.success(), "kill {sig} {pid}");
    };
    signal("-STOP");
    // B takes the job over after the reclaim time and finishes it.
    let b = start("b").await.unwrap();
    let api_b = b.api(KEY);
    eventually(Duration::from_secs(20), || async {
        let q = api_b.get("/v1/ends").await.expect(200).body;
        (q["ran"] == 1).then_some(())
    })
    .await
    .expect("host b took the job over and finished it");
    signal("-CONT");
    assert_eq!(api_b.end_reasons(&public_id).await, ["logout"]);
    let ends_a = eventually(Duration::from_secs(10), || async {
        let q = api_a.get("/v1/ends").await.expect(200).body;
        (q["superseded"] == 1).then_some(q)
    })
    .await
    .unwrap_or_else(|| panic!("host a never settled the job:\n{}", a.log()));
    assert_eq!(ends_a["ran"], 0, "{ends_a}");
    let ends_b = api_b.get("/v1/ends").await.expect(200).body;
    assert_eq!(
        (ends_b["ran"].as_u64(), ends_b["reclaimed"].as_u64()),
        (Some(1), Some(1)),
        "{ends_b}"
    );
    assert_eq!(ends_b["superseded"], 0);
    assert_eq!(
        (ends_b["waiting"].as_u64(), ends_b["claimed"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(ends_b["dead"], 0);
    drop((a, b));
}
