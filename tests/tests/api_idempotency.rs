//! `Idempotency-Key` on create and logout, and the two kinds of 503: on
//! every backend of a test server, then on a Redis of the test's own that
//! is frozen (SIGSTOP) or killed.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use sessiond_tests::fixtures::{Plugin, Tenant};
use sessiond_tests::server::{Api, Reply, TestServer};
use sessiond_tests::{Backend, every_backend};

const KEY: &str = "test-key-idempotency";

every_backend!(
    servers:
    create_retry_answers_the_first_create,
    logout_retry_answers_204_and_ends_once,
    a_key_reused_for_another_request_is_422,
    a_malformed_key_is_400,
    a_key_lapses_after_its_ttl,
);

/// The tenant `acme` with the audit-log plugin (which records starts and
/// ends), keys kept `ttl` seconds.
fn config(ttl: u64) -> String {
    format!(
        "[server]\nidempotency_ttl_seconds = {ttl}\n{}",
        Tenant::new("acme")
            .key(KEY)
            .plugin(Plugin::audit_log())
            .toml()
    )
}

async fn create_with(api: &Api, key: &str, body: &Value) -> Reply {
    api.send(
        api.request(Method::POST, "/v1/sessions")
            .header("idempotency-key", key)
            .json(body),
    )
    .await
}

async fn delete_with(api: &Api, key: &str, token: &str) -> Reply {
    api.send(
        api.request(Method::DELETE, &format!("/v1/sessions/{token}"))
            .header("idempotency-key", key),
    )
    .await
}

fn text(v: &Value) -> String {
    v.as_str().expect("a string").to_string()
}

/// How many live sessions `user` has.
async fn sessions_of(api: &Api, user: &str) -> Vec<Value> {
    let list = api
        .get(&format!("/v1/users/{user}/sessions"))
        .await
        .expect(200)
        .body;
    list["sessions"].as_array().cloned().unwrap_or_default()
}

async fn create_retry_answers_the_first_create(backend: Backend) {
    let server = TestServer::start(backend, &config(3600));
    let api = server.api(KEY);
    let body = json!({"user": "alice", "roles": ["a"], "data": {"cart": [1, 2]}});
    let first = create_with(&api, "order-1", &body).await.expect(201);
    assert_eq!(first.header("idempotent-replayed"), "");
    let again = create_with(&api, "order-1", &body).await.expect(201);
    assert_eq!(again.header("idempotent-replayed"), "true");
    assert_eq!(again.body, first.body, "the same session, token and fields");
    assert_eq!(again.header("location"), first.header("location"));
    assert_eq!(again.header("etag"), first.header("etag"));
    // The token works, and the user has one session.
    let token = text(&first.body["id"]);
    api.get(&format!("/v1/sessions/{token}")).await.expect(200);
    assert_eq!(sessions_of(&api, "alice").await.len(), 1);
    // The chain ran once: one start record.
    let starts = api
        .audit_of(&text(&first.body["public_id"]), "session_started")
        .await;
    assert_eq!(starts.len(), 1, "{starts:?}");
    // The answer stays the first one after the session changed.
    api.patch(&format!("/v1/sessions/{token}"), &json!({"more": true}))
        .await
        .expect(200);
    let later = create_with(&api, "order-1", &body).await.expect(201);
    assert_eq!(later.body, first.body);
}

async fn logout_retry_answers_204_and_ends_once(backend: Backend) {
    let server = TestServer::start(backend, &config(3600));
    let api = server.api(KEY);
    let session = api.create(&json!({"user": "bob"})).await;
    let (token, public_id) = (text(&session["id"]), text(&session["public_id"]));
    let first = delete_with(&api, "logout-1", &token).await.expect(204);
    assert_eq!(first.header("idempotent-replayed"), "");
    let again = delete_with(&api, "logout-1", &token).await.expect(204);
    assert_eq!(again.header("idempotent-replayed"), "true");
    // Without the key, the session is gone.
    api.delete(&format!("/v1/sessions/{token}"))
        .await
        .problem(404, "session-not-found");
    assert_eq!(api.end_reasons(&public_id).await, ["logout"]);
}

async fn a_key_reused_for_another_request_is_422(backend: Backend) {
    let server = TestServer::start(backend, &config(3600));
    let api = server.api(KEY);
    let first = create_with(&api, "k-1", &json!({"user": "carol"}))
        .await
        .expect(201);
    let p = create_with(&api, "k-1", &json!({"user": "carol", "data": {"x": 1}}))
        .await
        .problem(422, "idempotency-key-reused");
    assert_eq!(p["header"], "Idempotency-Key");
    // The same key for a logout is another request too; nothing ends.
    let token = text(&first.body["id"]);
    delete_with(&api, "k-1", &token)
        .await
        .problem(422, "idempotency-key-reused");
    api.get(&format!("/v1/sessions/{token}")).await.expect(200);
    // A logout key reused for another session.
    let other = api.create(&json!({"user": "carol"})).await;
    delete_with(&api, "k-2", &token).await.expect(204);
    delete_with(&api, "k-2", &text(&other["id"]))
        .await
        .problem(422, "idempotency-key-reused");
    api.get(&format!("/v1/sessions/{}", text(&other["id"])))
        .await
        .expect(200);
    assert_eq!(sessions_of(&api, "carol").await.len(), 1);
    // Keys are the tenant's: the same body with the first key still replays.
    create_with(&api, "k-1", &json!({"user": "carol"}))
        .await
        .expect(201);
}

async fn a_malformed_key_is_400(backend: Backend) {
    let server = TestServer::start(backend, &config(3600));
    let api = server.api(KEY);
    let session = api.create(&json!({})).await;
    let path = format!("/v1/sessions/{}", text(&session["id"]));
    let long = "k".repeat(256);
    let bad: [&[u8]; 4] = [b"", long.as_bytes(), b"two words", "caf\u{e9}".as_bytes()];
    for value in bad {
        for method in [Method::POST, Method::DELETE] {
            let target = if method == Method::POST {
                "/v1/sessions"
            } else {
                path.as_str()
            };
            let reply = api
                .send(
                    api.request(method.clone(), target)
                        .header("idempotency-key", value),
                )
                .await;
            let p = reply.problem(400, "bad-idempotency-key");
            assert_eq!(p["header"], "Idempotency-Key", "{p}");
        }
    }
    let twice = api
        .send(
            api.request(Method::POST, "/v1/sessions")
                .header("idempotency-key", "a")
                .header("idempotency-key", "b"),
        )
        .await;
    twice.problem(400, "bad-idempotency-key");
    // The longest key is fine; nothing above created or ended anything.
    create_with(&api, &"k".repeat(255), &json!({}))
        .await
        .expect(201);
    api.get(&path).await.expect(200);
}

async fn a_key_lapses_after_its_ttl(backend: Backend) {
    let server = TestServer::start(backend, &config(1));
    let api = server.api(KEY);
    let body = json!({"user": "dave"});
    let first = create_with(&api, "short", &body).await.expect(201);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let second = create_with(&api, "short", &body).await.expect(201);
    assert_eq!(second.header("idempotent-replayed"), "");
    assert_ne!(second.body["id"], first.body["id"]);
    assert_eq!(sessions_of(&api, "dave").await.len(), 2);
}

// ------------------------------------------------ a Redis that stops or dies

/// A tenant whose users hold one session each (evict-lru), whose one
/// plugin sleeps through its 1.5 s deadline on start and is then skipped
/// (`on_error = "allow"`): a create spends that long between its first
/// store read and its store write, time for the test to freeze Redis.
fn slow_start_config() -> String {
    format!(
        "[server]\nidempotency_ttl_seconds = 3600\n{}",
        Tenant::new("acme")
            .key(KEY)
            .max_sessions(1)
            .limit_policy("evict-lru")
            .plugin(
                Plugin::new("hostile", "hostile")
                    .config("mode", "sleep")
                    .on_error("allow")
                    .limit("deadline_ms", 1500),
            )
            .toml()
    )
}

/// Redis stops while a create is on its way to it: the host answers 503
/// `outcome-unknown`, Redis runs the create when it resumes, and the retry
/// with the same key answers with that session (whose token works), once:
/// the user's earlier session was evicted by the first attempt only, and
/// the session the first attempt made is not evicted by the retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_redis_create_is_found_by_its_retry() {
    let mut server = TestServer::start(Backend::Redis, &slow_start_config());
    let api = server.api(KEY);
    let live = api.create(&json!({"user": "erin"})).await;
    let body = json!({"user": "erin", "data": {"n": 1}});
    let attempt = {
        let api = api.clone();
        let body = body.clone();
        tokio::spawn(async move { create_with(&api, "frozen-1", &body).await })
    };
    // The plugin is sleeping: the store read is done, the write is not.
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.redis().expect("a Redis of its own").freeze();
    let first = attempt.await.unwrap();
    server.redis().expect("a Redis of its own").thaw();
    let p = first.problem(503, "outcome-unknown");
    assert!(
        p["detail"].as_str().unwrap().contains("Idempotency-Key"),
        "{p}"
    );

    let retry = create_with(&api, "frozen-1", &body).await.expect(201);
    assert_eq!(retry.header("idempotent-replayed"), "true");
    let token = text(&retry.body["id"]);
    let current = api
        .get(&format!("/v1/sessions/{token}"))
        .await
        .expect(200)
        .body;
    assert_eq!(current["data"], json!({"n": 1}));
    let listed = sessions_of(&api, "erin").await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["public_id"], retry.body["public_id"]);
    api.get(&format!("/v1/sessions/{}", text(&live["id"])))
        .await
        .problem(404, "session-not-found");
    // A second retry still finds the same session alive.
    let again = create_with(&api, "frozen-1", &body).await.expect(201);
    assert_eq!(again.body, retry.body);
    api.get(&format!("/v1/sessions/{token}")).await.expect(200);
    // What Redis holds names the key's record but not the token.
    let dump = server
        .redis()
        .expect("a Redis of its own")
        .command(&["EVAL", DUMP_STRINGS, "0"])
        .unwrap();
    assert!(dump.contains(":idem:"), "{dump}");
    assert!(!dump.contains(&token), "the token is stored in plain text");
    assert!(!dump.contains("frozen-1"), "the idempotency key is stored");
}

/// A Lua script that returns every key of a Redis with the fields and
/// values of its hashes and the values of its strings, one per line.
const DUMP_STRINGS: &str = "local out = {}
for _, k in ipairs(redis.call('KEYS', '*')) do
  out[#out + 1] = k
  local t = redis.call('TYPE', k)['ok']
  if t == 'hash' then
    for _, v in ipairs(redis.call('HGETALL', k)) do out[#out + 1] = v end
  elseif t == 'string' then
    out[#out + 1] = redis.call('GET', k)
  end
end
return table.concat(out, '\\n')";

/// A logout sent to a Redis that stops is 503 `outcome-unknown`: Redis ends
/// the session when it resumes. With a key, the key's lookup (a read)
/// comes first and is 503 `store-unavailable` (nothing was changed); the
/// retry then ends the session, and a second retry answers 204 again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_redis_logout() {
    let config = format!(
        "[server]\nidempotency_ttl_seconds = 3600\n{}",
        Tenant::new("acme").key(KEY).toml()
    );
    let mut server = TestServer::start(Backend::Redis, &config);
    let api = server.api(KEY);
    let plain = text(&api.create(&json!({"user": "fay"})).await["id"]);
    let keyed = text(&api.create(&json!({"user": "fay"})).await["id"]);
    // Redis holds the remove script once it ran: a first EVALSHA that Redis
    // runs only after resuming would find no script, and so end nothing.
    let warm = text(&api.create(&json!({})).await["id"]);
    api.delete(&format!("/v1/sessions/{warm}"))
        .await
        .expect(204);

    server.redis().expect("a Redis of its own").freeze();
    let unknown = api.delete(&format!("/v1/sessions/{plain}")).await;
    let refused = delete_with(&api, "bye-1", &keyed).await;
    server.redis().expect("a Redis of its own").thaw();
    unknown.problem(503, "outcome-unknown");
    refused.problem(503, "store-unavailable");

    // Redis ran the first logout when it resumed; the keyed one never ran.
    let gone = sessiond_tests::server::eventually(Duration::from_secs(5), || async {
        let reply = api.get(&format!("/v1/sessions/{plain}")).await;
        (reply.status == 404).then_some(())
    })
    .await;
    assert!(
        gone.is_some(),
        "the logout answered 503 did not end the session"
    );
    api.get(&format!("/v1/sessions/{keyed}")).await.expect(200);
    delete_with(&api, "bye-1", &keyed).await.expect(204);
    let again = delete_with(&api, "bye-1", &keyed).await.expect(204);
    assert_eq!(again.header("idempotent-replayed"), "true");
    assert!(sessions_of(&api, "fay").await.is_empty());
}

/// A killed Redis refuses connections: a create is 503 `store-unavailable`
/// (nothing was changed), with or without a key, and the same key works
/// once Redis is back. The first write after the kill may still go to the
/// old connection and fail writing to it, which cannot tell whether the
/// server read it first: that one may be `outcome-unknown`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_redis_is_store_unavailable() {
    let config = format!(
        "[server]\nidempotency_ttl_seconds = 3600\n{}",
        Tenant::new("acme").key(KEY).toml()
    );
    let mut server = TestServer::start(Backend::Redis, &config);
    let api = server.api(KEY);
    api.create(&json!({})).await;
    server.redis().expect("a Redis of its own").kill();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let p = sessiond_tests::server::eventually(Duration::from_secs(5), || async {
        let reply = api.post("/v1/sessions", &json!({"user": "gus"})).await;
        let p = reply.problem(503, "");
        let kind = p["type"].as_str().unwrap_or_default();
        assert!(
            kind.ends_with("store-unavailable") || kind.ends_with("outcome-unknown"),
            "{p}"
        );
        kind.ends_with("store-unavailable").then_some(p)
    })
    .await
    .expect("a create to a killed Redis is store-unavailable");
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("nothing was changed"),
        "{p}"
    );
    create_with(&api, "dead-1", &json!({"user": "gus"}))
        .await
        .problem(503, "store-unavailable");
    server.redis().expect("a Redis of its own").restart();
    let created = sessiond_tests::server::eventually(Duration::from_secs(10), || async {
        let reply = create_with(&api, "dead-1", &json!({"user": "gus"})).await;
        (reply.status == 201).then_some(reply)
    })
    .await
    .expect("Redis came back");
    assert_eq!(created.header("idempotent-replayed"), "");
    assert_eq!(sessions_of(&api, "gus").await.len(), 1);
}
