//! The session endpoints over real HTTP, with the real runtime and plugins,
//! on every backend of a test server.

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::json;
use sessiond_tests::fixtures::{Plugin, Tenant};
use sessiond_tests::server::TestServer;
use sessiond_tests::{Backend, every_backend};

const KEY: &str = "test-key-sessions";

every_backend!(
    servers:
    lifecycle,
    if_match_guards_every_write,
    concurrent_patches_lose_nothing,
    authenticate_rotates_the_token,
    bad_input_is_a_problem_and_writes_nothing,
    tenants_are_isolated,
    lifetime_is_capped,
    unchanged_events_write_nothing_when_not_activity,
);

/// One tenant with the audit-log plugin, after `[server]` lines `extra`.
fn config(extra: &str) -> String {
    let tenant = Tenant::new("acme")
        .key(KEY)
        .ttl(600)
        .max_ttl(3600)
        .idle(300)
        .plugin(Plugin::audit_log());
    format!(
        "[server]\nmax_body_bytes = 2048\n{extra}\n{}",
        tenant.toml()
    )
}

fn start(backend: Backend) -> TestServer {
    TestServer::start(backend, &config(""))
}

fn etag_version(reply: &sessiond_tests::server::Reply) -> u64 {
    let etag = reply.header("etag");
    etag.trim_matches('"')
        .parse()
        .unwrap_or_else(|_| panic!("bad ETag {etag:?}"))
}

async fn lifecycle(backend: Backend) {
    let server = start(backend);
    let api = server.api(KEY);

    // Create.
    let created = api
        .send(
            api.request(Method::POST, "/v1/sessions")
                .header("user-agent", "Firefox 139.0")
                .json(&json!({
                    "user": "alice", "roles": ["Operator"], "device": "mobile",
                    "data": {"theme": "dark", "cart": {"items": 2}}
                })),
        )
        .await
        .expect(201);
    let s = &created.body;
    let id = s["id"].as_str().expect("id").to_string();
    assert_eq!(id.len(), 43, "{s}");
    assert!(
        id.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    );
    assert_eq!(created.header("location"), format!("/v1/sessions/{id}"));
    assert_eq!(etag_version(&created), 1);
    assert_eq!(s["version"], 1);
    assert_eq!(s["user"], "alice");
    assert_eq!(s["roles"], json!(["Operator"]));
    assert_eq!(s["data"], json!({"theme": "dark", "cart": {"items": 2}}));
    assert_eq!(s["remote_addr"], "127.0.0.1");
    assert_eq!(s["user_agent"], "Firefox 139.0");
    assert_eq!(s["device"], "mobile");
    assert_eq!(s["idle_timeout_seconds"], 300);
    let public_id = s["public_id"].as_str().unwrap().to_string();
    assert_ne!(public_id, id);
    let created_ms = s["created_at_ms"].as_u64().unwrap();
    assert_eq!(s["expires_at_ms"].as_u64().unwrap(), created_ms + 300_000);
    assert_eq!(
        s["absolute_expires_at_ms"].as_u64().unwrap(),
        created_ms + 600_000
    );
    assert!(s["created_at"].as_str().unwrap().ends_with('Z'), "{s}");
    assert!(s.get("token_hash").is_none() && s.get("plugin_state").is_none());

    // Read.
    let got = api.get(&format!("/v1/sessions/{id}")).await.expect(200);
    assert_eq!(etag_version(&got), 1);
    assert!(got.body.get("id").is_none(), "the token is not repeated");
    assert_eq!(got.body["public_id"], public_id.as_str());
    assert_eq!(got.body["user_agent"], "Firefox 139.0");
    assert_eq!(got.body["data"], s["data"]);
    assert!(got.body.get("plugin_state").is_none());

    // Patch: a merge patch of data (null removes a key).
    let patched = api
        .patch(
            &format!("/v1/sessions/{id}"),
            &json!({"theme": null, "cart": {"items": 3}, "lang": "fi"}),
        )
        .await
        .expect(200);
    assert_eq!(etag_version(&patched), 2);
    assert_eq!(
        patched.body["data"],
        json!({"cart": {"items": 3}, "lang": "fi"})
    );
    // application/json is accepted too.
    let patched = api
        .send(
            api.request(Method::PATCH, &format!("/v1/sessions/{id}"))
                .json(&json!({"n": 1})),
        )
        .await
        .expect(200);
    assert_eq!(patched.body["version"], 3);
    assert_eq!(patched.body["data"]["n"], 1);

    // Touch slides the idle deadline.
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let touched = api
        .post_empty(&format!("/v1/sessions/{id}/touch"))
        .await
        .expect(200);
    assert_eq!(touched.body["version"], 4);
    let seen = touched.body["last_seen_at_ms"].as_u64().unwrap();
    assert!(seen > created_ms, "{}", touched.body);
    assert_eq!(
        touched.body["idle_expires_at_ms"].as_u64().unwrap(),
        seen + 300_000
    );

    // An event goes through the audit-log plugin.
    let evented = api
        .post(
            &format!("/v1/sessions/{id}/events"),
            &json!({"name": "page-view", "payload": {"page": "/home"}}),
        )
        .await
        .expect(200);
    assert_eq!(evented.body["version"], 5);
    let events = api.audit_of(&public_id, "session_event").await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["record"]["name"], "page-view");
    assert_eq!(events[0]["record"]["payload"], json!({"page": "/home"}));
    assert_eq!(events[0]["plugin"], "audit-log");

    // No plugin handles messages here.
    api.post(&format!("/v1/sessions/{id}/messages/refresh"), &json!({}))
        .await
        .problem(404, "no-message-handler");

    // Logout: the end hook runs exactly once.
    api.delete(&format!("/v1/sessions/{id}")).await.expect(204);
    api.get(&format!("/v1/sessions/{id}"))
        .await
        .problem(404, "session-not-found");
    api.delete(&format!("/v1/sessions/{id}"))
        .await
        .problem(404, "session-not-found");
    api.post_empty(&format!("/v1/sessions/{id}/touch"))
        .await
        .problem(404, "session-not-found");
    let ended = api.end_records(&public_id).await;
    assert_eq!(ended.len(), 1, "{ended:?}");
    assert_eq!(ended[0]["record"]["reason"], "logout");
    assert_eq!(ended[0]["record"]["user"], "alice");
    assert_eq!(api.audit_of(&public_id, "session_started").await.len(), 1);

    // Concurrent logouts of one session: one 204, the end hook once.
    let id = api.create(&json!({})).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let public_id = api.get(&format!("/v1/sessions/{id}")).await.body["public_id"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/v1/sessions/{id}");
    let deletes: Vec<_> = (0..8)
        .map(|_| {
            let (api, path) = (api.clone(), path.clone());
            tokio::spawn(async move { api.delete(&path).await.status })
        })
        .collect();
    let mut statuses = Vec::new();
    for d in deletes {
        statuses.push(d.await.unwrap());
    }
    statuses.sort();
    assert_eq!(statuses, [204, 404, 404, 404, 404, 404, 404, 404]);
    assert_eq!(api.end_records(&public_id).await.len(), 1);
    server.stop().expect("graceful shutdown");
}

async fn if_match_guards_every_write(backend: Backend) {
    let server = start(backend);
    let api = server.api(KEY);
    let id = api.create(&json!({"data": {"a": 1}})).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/v1/sessions/{id}");

    let stale = "\"7\"";
    let p = api
        .send(
            api.request(Method::PATCH, &path)
                .header("if-match", stale)
                .json(&json!({"a": 2})),
        )
        .await
        .problem(412, "precondition-failed");
    assert_eq!(p["current_version"], 1);
    api.send(
        api.request(Method::POST, &format!("{path}/touch"))
            .header("if-match", stale),
    )
    .await
    .problem(412, "precondition-failed");
    api.send(
        api.request(Method::POST, &format!("{path}/events"))
            .header("if-match", stale)
            .json(&json!({"name": "x"})),
    )
    .await
    .problem(412, "precondition-failed");
    api.send(
        api.request(Method::POST, &format!("{path}/authenticate"))
            .header("if-match", stale)
            .json(&json!({"user": "bob"})),
    )
    .await
    .problem(412, "precondition-failed");
    api.send(api.request(Method::DELETE, &path).header("if-match", stale))
        .await
        .problem(412, "precondition-failed");
    // A weak tag never matches an If-Match.
    api.send(
        api.request(Method::PATCH, &path)
            .header("if-match", "W/\"1\"")
            .json(&json!({"a": 2})),
    )
    .await
    .problem(412, "precondition-failed");
    // A malformed one is a bad request.
    api.send(
        api.request(Method::PATCH, &path)
            .header("if-match", "1")
            .json(&json!({"a": 2})),
    )
    .await
    .problem(400, "bad-if-match");

    // Nothing changed.
    let got = api.get(&path).await.expect(200);
    assert_eq!(got.body["version"], 1);
    assert_eq!(got.body["data"], json!({"a": 1}));
    assert!(got.body["user"].is_null());

    // The current ETag matches.
    let etag = got.header("etag").to_string();
    let patched = api
        .send(
            api.request(Method::PATCH, &path)
                .header("if-match", &etag)
                .json(&json!({"a": 2})),
        )
        .await
        .expect(200);
    assert_eq!(patched.header("etag"), "\"2\"");
    let touched = api
        .send(
            api.request(Method::POST, &format!("{path}/touch"))
                .header("if-match", "\"2\""),
        )
        .await
        .expect(200);
    assert_eq!(touched.body["version"], 3);
    // `*` matches any existing session.
    api.send(api.request(Method::DELETE, &path).header("if-match", "*"))
        .await
        .expect(204);
    api.send(
        api.request(Method::DELETE, &path)
            .header("if-match", "\"3\""),
    )
    .await
    .problem(404, "session-not-found");
}

async fn concurrent_patches_lose_nothing(backend: Backend) {
    let server = start(backend);
    let api = server.api(KEY);
    let id = api.create(&json!({})).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/v1/sessions/{id}");
    let writers: Vec<_> = (0..20)
        .map(|i| {
            let (api, path) = (api.clone(), path.clone());
            tokio::spawn(async move {
                api.patch(&path, &json!({ format!("k{i}"): i }))
                    .await
                    .status
            })
        })
        .collect();
    for w in writers {
        assert_eq!(w.await.unwrap(), 200);
    }
    let got = api.get(&path).await.expect(200);
    let keys: BTreeSet<String> = got.body["data"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let expected: BTreeSet<String> = (0..20).map(|i| format!("k{i}")).collect();
    assert_eq!(keys, expected);
    assert_eq!(got.body["version"], 21);
}

async fn authenticate_rotates_the_token(backend: Backend) {
    let server = start(backend);
    let api = server.api(KEY);
    let created = api
        .create(&json!({"roles": ["guest"], "data": {"cart": 1}}))
        .await;
    let old = created["id"].as_str().unwrap().to_string();
    let public_id = created["public_id"].as_str().unwrap().to_string();

    let authed = api
        .post(
            &format!("/v1/sessions/{old}/authenticate"),
            &json!({"user": "carol", "roles": ["Engineer"]}),
        )
        .await
        .expect(200);
    let new = authed.body["id"].as_str().expect("new id").to_string();
    assert_eq!(new.len(), 43);
    assert_ne!(new, old);
    assert_eq!(authed.body["user"], "carol");
    assert_eq!(authed.body["roles"], json!(["Engineer"]));
    assert_eq!(authed.body["public_id"], public_id.as_str());
    assert_eq!(authed.body["data"], json!({"cart": 1}));
    assert_eq!(authed.header("etag"), "\"2\"");

    api.get(&format!("/v1/sessions/{old}"))
        .await
        .problem(404, "session-not-found");
    api.patch(&format!("/v1/sessions/{old}"), &json!({"x": 1}))
        .await
        .problem(404, "session-not-found");
    let got = api.get(&format!("/v1/sessions/{new}")).await.expect(200);
    assert_eq!(got.body["user"], "carol");

    // The user's listing shows it (by public id, never the token).
    let list = api.get("/v1/users/carol/sessions").await.expect(200);
    let sessions = list.body["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0]["public_id"], public_id.as_str());
    assert!(!list.text.contains(&new));

    // The plugins saw the `authenticated` event before the write.
    let events = api.audit_of(&public_id, "session_event").await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["record"]["name"], "authenticated");
    assert_eq!(
        events[0]["record"]["payload"],
        json!({"user": "carol", "roles": ["Engineer"]})
    );
    assert_eq!(events[0]["record"]["user"], "carol");

    // Roles left out stay as they are.
    let again = api
        .post(
            &format!("/v1/sessions/{new}/authenticate"),
            &json!({"user": "carol"}),
        )
        .await
        .expect(200);
    assert_eq!(again.body["roles"], json!(["Engineer"]));

    // Clients cannot send `authenticated` themselves.
    let newest = again.body["id"].as_str().unwrap();
    let p = api
        .post(
            &format!("/v1/sessions/{newest}/events"),
            &json!({"name": "authenticated", "payload": {"user": "mallory"}}),
        )
        .await
        .problem(422, "invalid-body");
    assert_eq!(p["field"], "name");
}

async fn bad_input_is_a_problem_and_writes_nothing(backend: Backend) {
    let server = start(backend);
    let api = server.api(KEY);
    let raw = |method: Method, path: &str, body: &str| {
        api.request(method, path)
            .header("content-type", "application/json")
            .body(body.to_string())
    };

    let p = api
        .send(raw(Method::POST, "/v1/sessions", "{\"user\": "))
        .await
        .problem(400, "malformed-json");
    assert!(
        p["detail"].as_str().unwrap().contains("not valid JSON"),
        "{p}"
    );
    let p = api
        .send(raw(
            Method::POST,
            "/v1/sessions",
            "{\"user\": \"a\", \"colour\": 1}",
        ))
        .await
        .problem(422, "invalid-body");
    assert_eq!(p["field"], "colour");
    assert!(
        p["detail"].as_str().unwrap().contains("unknown field"),
        "{p}"
    );
    let p = api
        .send(raw(Method::POST, "/v1/sessions", "{\"roles\": \"admin\"}"))
        .await
        .problem(422, "invalid-body");
    assert_eq!(p["field"], "roles");
    let p = api
        .send(raw(Method::POST, "/v1/sessions", "{\"data\": [1, 2]}"))
        .await
        .problem(422, "invalid-body");
    assert_eq!(p["field"], "data");
    let p = api
        .send(raw(Method::POST, "/v1/sessions", "{\"ttl_seconds\": 0}"))
        .await
        .problem(422, "invalid-body");
    assert_eq!(p["field"], "ttl_seconds");
    let p = api
        .send(raw(Method::POST, "/v1/sessions", "{\"user\": \"\"}"))
        .await
        .problem(422, "invalid-body");
    assert_eq!(p["field"], "user");
    // Too large: 413, whatever the content.
    let big = json!({"data": {"blob": "x".repeat(4096)}}).to_string();
    let p = api
        .send(raw(Method::POST, "/v1/sessions", &big))
        .await
        .problem(413, "body-too-large");
    assert_eq!(p["limit"], 2048);
    api.send(
        api.request(Method::POST, "/v1/sessions")
            .header("content-type", "application/x-www-form-urlencoded")
            .body("user=alice"),
    )
    .await
    .problem(415, "unsupported-media-type");
    // None of that created a session.
    assert!(api.audit_all().await.is_empty());

    // An empty body creates an anonymous session.
    let created = api
        .send(api.request(Method::POST, "/v1/sessions"))
        .await
        .expect(201);
    let id = created.body["id"].as_str().unwrap().to_string();
    let path = format!("/v1/sessions/{id}");

    api.patch(&path, &json!([1, 2]))
        .await
        .problem(422, "invalid-body");
    api.send(raw(Method::PATCH, &path, "{"))
        .await
        .problem(400, "malformed-json");
    api.send(raw(Method::PATCH, &path, ""))
        .await
        .problem(400, "malformed-json");
    let p = api
        .post(&format!("{path}/events"), &json!({"name": 5}))
        .await
        .problem(422, "invalid-body");
    assert_eq!(p["field"], "name");
    api.post(&format!("{path}/events"), &json!({"payload": 1}))
        .await
        .problem(422, "invalid-body");
    api.post(&format!("{path}/authenticate"), &json!({"roles": []}))
        .await
        .problem(422, "invalid-body");
    api.post(
        &format!("{path}/authenticate"),
        &json!({"user": "x", "admin": true}),
    )
    .await
    .problem(422, "invalid-body");
    // Nothing was written.
    let got = api.get(&path).await.expect(200);
    assert_eq!(got.body["version"], 1);
    assert_eq!(got.body["data"], json!({}));
    assert!(got.body["user"].is_null());
}

async fn tenants_are_isolated(backend: Backend) {
    let tenant = |name: &str, key: &str| Tenant::new(name).key(key).plugin(Plugin::audit_log());
    let text = tenant("one", "key-one").toml() + &tenant("two", "key-two").toml();
    let server = TestServer::start(backend, &text);
    let (one, two) = (server.api("key-one"), server.api("key-two"));
    let created = one.create(&json!({"user": "alice"})).await;
    let id = created["id"].as_str().unwrap();
    let path = format!("/v1/sessions/{id}");

    two.get(&path).await.problem(404, "session-not-found");
    two.patch(&path, &json!({"x": 1}))
        .await
        .problem(404, "session-not-found");
    two.post_empty(&format!("{path}/touch"))
        .await
        .problem(404, "session-not-found");
    two.delete(&path).await.problem(404, "session-not-found");
    let list = two.get("/v1/users/alice/sessions").await.expect(200);
    assert_eq!(list.body["sessions"], json!([]));
    assert_eq!(
        two.delete("/v1/users/alice/sessions")
            .await
            .expect(200)
            .body["ended"],
        0
    );
    assert!(two.audit_all().await.is_empty());

    // Tenant one still has it, untouched.
    let got = one.get(&path).await.expect(200);
    assert_eq!(got.body["version"], 1);
    assert_eq!(one.audit_all().await.len(), 1);
    assert_eq!(
        one.get("/v1/users/alice/sessions").await.body["sessions"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

async fn lifetime_is_capped(backend: Backend) {
    let server = start(backend);
    let api = server.api(KEY);
    let s = api.create(&json!({"ttl_seconds": 1_000_000})).await;
    let created = s["created_at_ms"].as_u64().unwrap();
    assert_eq!(
        s["absolute_expires_at_ms"].as_u64().unwrap(),
        created + 3_600_000
    );
    let s = api.create(&json!({"ttl_seconds": 30})).await;
    let created = s["created_at_ms"].as_u64().unwrap();
    assert_eq!(
        s["absolute_expires_at_ms"].as_u64().unwrap(),
        created + 30_000
    );
    assert_eq!(s["expires_at_ms"].as_u64().unwrap(), created + 30_000);
}

#[tokio::test]
async fn forwarded_for_is_believed_only_from_trusted_proxies() {
    let trusted = TestServer::start(
        Backend::Memory,
        &config("trusted_proxies = [\"127.0.0.0/8\", \"10.0.0.0/8\"]"),
    );
    let api = trusted.api(KEY);
    let create = |xff: &'static str| {
        let api = api.clone();
        async move {
            api.send(
                api.request(Method::POST, "/v1/sessions")
                    .header("x-forwarded-for", xff)
                    .json(&json!({})),
            )
            .await
            .expect(201)
            .body["remote_addr"]
                .clone()
        }
    };
    assert_eq!(
        create("198.51.100.4, 203.0.113.7, 10.1.2.3").await,
        "203.0.113.7"
    );
    assert_eq!(create("10.9.9.9").await, "10.9.9.9");
    assert_eq!(create("garbage").await, "127.0.0.1");

    let untrusted = TestServer::start(Backend::Memory, &config(""));
    let api = untrusted.api(KEY);
    let s = api
        .send(
            api.request(Method::POST, "/v1/sessions")
                .header("x-forwarded-for", "203.0.113.7")
                .json(&json!({})),
        )
        .await
        .expect(201);
    assert_eq!(s.body["remote_addr"], "127.0.0.1");
}

/// An event that no plugin changes anything for: written (a new version, the
/// idle deadline slid) by default; with `unchanged_events_are_activity =
/// false`, not written at all.
async fn unchanged_events_write_nothing_when_not_activity(backend: Backend) {
    for (activity, bump) in [(true, 1), (false, 0)] {
        let tenant = Tenant::new("acme")
            .key(KEY)
            .idle(300)
            .setting("unchanged_events_are_activity", &activity.to_string());
        let server = TestServer::start(backend, &tenant.toml());
        let api = server.api(KEY);
        let created = api.create(&json!({"user": "u"})).await;
        let path = format!("/v1/sessions/{}", created["id"].as_str().unwrap());
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let evented = api
            .post(&format!("{path}/events"), &json!({"name": "idleStatus"}))
            .await
            .expect(200);
        let read = api.get(&path).await.expect(200);
        for reply in [&evented.body, &read.body] {
            assert_eq!(reply["version"], 1 + bump, "activity = {activity}: {reply}");
            let slid = reply["last_seen_at_ms"] != created["last_seen_at_ms"];
            assert_eq!(slid, activity, "activity = {activity}: {reply}");
        }
        server.stop().unwrap();
    }
}
