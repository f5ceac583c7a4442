//! The `/sessman/*` compatibility API over real HTTP, on every backend of a
//! test server: the published sessman JavaScript
//! `Session` class itself (tests/sessman/session.js, run by node through
//! tests/sessman/driver.js), then plain HTTP for auth, content types, the
//! query aliases and the errors.

use std::path::PathBuf;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use sessiond_tests::fixtures::{Plugin, Tenant};
use sessiond_tests::server::{Api, Reply, TestServer};
use sessiond_tests::{Backend, every_backend};

/// The key of `acme`: sessman enabled, and requests without a key are its.
const ACME: &str = "test-key-sessman-acme";
/// The key of `keyed`: sessman enabled for its key only; single-session.
const KEYED: &str = "test-key-sessman-keyed";
/// The key of `plain`: no sessman.
const PLAIN: &str = "test-key-sessman-plain";

every_backend!(
    servers:
    the_unmodified_class_round_trips,
    the_class_cannot_send_its_key,
    bearer_keys_content_types_and_aliases,
    update_replaces_the_data_and_slides_the_deadline,
    get_answers_only_the_sessions_user,
    errors_are_problems,
    without_allow_unauthenticated_a_key_is_needed,
);

/// Three tenants (see the keys); `acme` and `keyed` run audit-log. Requests
/// without a key are `acme`'s only when `allow_unauthenticated`.
fn config(allow_unauthenticated: bool) -> String {
    let acme = Tenant::new("acme")
        .key(ACME)
        .ttl(600)
        .max_ttl(3600)
        .idle(300)
        .sessman()
        .plugin(Plugin::audit_log());
    let acme = if allow_unauthenticated {
        acme.allow_unauthenticated()
    } else {
        acme
    };
    let keyed = Tenant::new("keyed")
        .key(KEYED)
        .idle(120)
        .sessman()
        .plugin(Plugin::single_session())
        .plugin(Plugin::audit_log());
    let plain = Tenant::new("plain").key(PLAIN);
    format!(
        "[server]\nmax_body_bytes = 2048\n{}{}{}",
        acme.toml(),
        keyed.toml(),
        plain.toml()
    )
}

fn start(backend: Backend) -> TestServer {
    TestServer::start(backend, &config(true))
}

fn sessman_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sessman")
}

/// Whether a node with a global `fetch` (18 or later) is on the PATH.
async fn node_available() -> bool {
    let Ok(out) = tokio::process::Command::new("node")
        .arg("--version")
        .output()
        .await
    else {
        return false;
    };
    let version = String::from_utf8_lossy(&out.stdout);
    let major: u32 = version
        .trim()
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    out.status.success() && major >= 18
}

/// Runs `node driver.js ARGS` and returns its `RESULT` line as JSON.
async fn driver(args: &[&str]) -> Value {
    let run = tokio::process::Command::new("node")
        .arg(sessman_dir().join("driver.js"))
        .args(args)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the node driver did not finish within 60 s")
        .expect("running node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the driver failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("no RESULT line:\n{stdout}\n{stderr}"));
    serde_json::from_str(line).expect("the RESULT line is JSON")
}

/// A sessman request with a raw body and content type (none when `None`).
async fn call(api: &Api, path: &str, content_type: Option<&str>, body: &str) -> Reply {
    let mut request = api.request(Method::POST, path).body(body.to_string());
    if let Some(ct) = content_type {
        request = request.header("content-type", ct);
    }
    api.send(request).await
}

/// The body the class sends: `{"data": ...}` as text/javascript.
async fn class_call(api: &Api, path: &str, data: &Value) -> Reply {
    call(
        api,
        path,
        Some("text/javascript"),
        &json!({ "data": data }).to_string(),
    )
    .await
}

fn token(reply: &Reply) -> String {
    reply.body["session_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no session_id: {}", reply.text))
        .to_string()
}

async fn the_unmodified_class_round_trips(backend: Backend) {
    if !node_available().await {
        eprintln!("SKIPPED: node 18+ (with fetch) is not on the PATH");
        return;
    }
    let server = start(backend);
    let base_url = server.url("/sessman");
    let out = driver(&["roundtrip", &base_url, "alice@example.com"]).await;

    let id = out["session_id"]
        .as_str()
        .expect("the class kept a session_id");
    assert_eq!(out["created"]["session_id"], id, "{out}");
    assert_eq!(
        out["created"]["data"],
        json!({"theme": "dark", "cart": {"items": 1, "sku": ["a-1"]}})
    );
    let expected = json!({"cart": {"items": 3, "sku": ["a-1", "b-2"]}, "lang": "fi"});
    assert_eq!(out["data"], expected, "{out}");

    // The REST API sees the same session, in the tenant that allows
    // requests without a key, with the updated data.
    let api = server.api(ACME);
    let got = api.get(&format!("/v1/sessions/{id}")).await.expect(200);
    assert_eq!(got.body["user"], "alice@example.com");
    assert_eq!(got.body["data"], expected);
    assert_eq!(got.body["version"], 2, "one create, one update");
    assert_eq!(got.body["user_agent"], "node");
    // Created through the plugin chain: audit-log saw the start.
    let public_id = got.body["public_id"].as_str().unwrap();
    assert_eq!(api.audit_of(public_id, "session_started").await.len(), 1);
    // And sessman's own get finds it.
    api.get(&format!(
        "/sessman/get?sessionid={id}&userid=alice@example.com"
    ))
    .await
    .expect(200);
}

/// The published class reads `self.options.auth`: with `options.auth` set
/// it throws before sending anything, so it can never send its key.
async fn the_class_cannot_send_its_key(backend: Backend) {
    if !node_available().await {
        eprintln!("SKIPPED: node 18+ (with fetch) is not on the PATH");
        return;
    }
    let server = start(backend);
    let out = driver(&["auth", &server.url("/sessman"), "bob", KEYED]).await;
    assert_eq!(out["ok"], false, "{out}");
    assert_eq!(out["error"], "ReferenceError", "{out}");
    // Nothing was created in either tenant.
    for key in [ACME, KEYED] {
        let list = server
            .api(key)
            .get("/v1/users/bob/sessions")
            .await
            .expect(200);
        assert_eq!(list.body["sessions"], json!([]), "{key}");
    }
}

async fn bearer_keys_content_types_and_aliases(backend: Backend) {
    let server = start(backend);
    let keyed = server.api(KEYED);

    // The class's content type, with `userid` (the documented name).
    let created = class_call(&keyed, "/sessman/new?userid=carol", &json!({"n": 1}))
        .await
        .expect(200);
    assert_eq!(created.content_type(), "application/json");
    let id = token(&created);
    assert_eq!(id.len(), 43);
    assert_eq!(created.body["data"], json!({"n": 1}));
    assert_eq!(created.body["user"], "carol");
    assert!(created.body["expires_at"].is_string(), "{}", created.text);
    // The key chose the tenant: the session is keyed's, not acme's.
    let got = keyed.get(&format!("/v1/sessions/{id}")).await.expect(200);
    assert_eq!(got.body["user"], "carol");
    assert_eq!(got.body["idle_timeout_seconds"], 120);
    server
        .api(ACME)
        .get(&format!("/v1/sessions/{id}"))
        .await
        .problem(404, "session-not-found");
    // Created through the chain: single-session denies carol a second one.
    let p = class_call(&keyed, "/sessman/new?user=carol", &json!({}))
        .await
        .problem(403, "plugin-denied");
    assert_eq!(p["plugin"], "single-session");

    // Every content type reads as JSON, and none at all.
    for (i, ct) in [
        Some("application/json"),
        Some("text/plain;charset=UTF-8"),
        Some("application/x-www-form-urlencoded"),
        Some("text/javascript"),
        None,
    ]
    .into_iter()
    .enumerate()
    {
        let user = format!("user-{i}");
        let body = json!({"data": {"i": i}}).to_string();
        let r = call(&keyed, &format!("/sessman/new?user={user}"), ct, &body)
            .await
            .expect(200);
        assert_eq!(r.body["data"], json!({"i": i}), "{ct:?}");
        let id = token(&r);
        let r = call(
            &keyed,
            &format!("/sessman/update?sessionid={id}"),
            ct,
            &body,
        )
        .await
        .expect(200);
        assert_eq!(r.body["session_id"], id.as_str());
        let r = call(
            &keyed,
            &format!("/sessman/get?sessionid={id}&userid={user}"),
            ct,
            "",
        )
        .await
        .expect(200);
        assert_eq!(r.body["data"], json!({"i": i}), "{ct:?}");
    }

    // An empty body creates a session without data; both names may be given
    // when they agree.
    let r = call(&keyed, "/sessman/new?user=dave&userid=dave", None, "")
        .await
        .expect(200);
    assert_eq!(r.body["data"], json!({}));
    call(&keyed, "/sessman/new?user=erin&userid=frank", None, "")
        .await
        .problem(400, "bad-query");
    call(&keyed, "/sessman/new", None, "")
        .await
        .problem(400, "bad-query");
}

async fn update_replaces_the_data_and_slides_the_deadline(backend: Backend) {
    let server = start(backend);
    let api = server.api(ACME);
    let created = class_call(
        &api,
        "/sessman/new?user=gina",
        &json!({"theme": "dark", "cart": {"items": 1, "coupon": "X"}, "list": [1, 2]}),
    )
    .await
    .expect(200);
    let id = token(&created);
    let first_expiry = created.body["expires_at_ms"].as_u64().unwrap();

    tokio::time::sleep(Duration::from_millis(30)).await;
    let new_data = json!({"cart": {"items": 2}, "list": [3], "lang": "fi"});
    let updated = class_call(&api, &format!("/sessman/update?session_id={id}"), &new_data)
        .await
        .expect(200);
    assert_eq!(updated.body["data"], new_data, "replaced, not merged");
    assert_eq!(updated.body["session_id"], id.as_str());
    let second_expiry = updated.body["expires_at_ms"].as_u64().unwrap();
    assert!(second_expiry > first_expiry, "the idle deadline slid");

    let got = api.get(&format!("/v1/sessions/{id}")).await.expect(200);
    assert_eq!(got.body["data"], new_data);
    assert_eq!(got.body["version"], 2);
    assert_eq!(got.body["idle_expires_at_ms"].as_u64(), Some(second_expiry));

    // Without data (empty body, no member, null): the data stay, the
    // deadline slides all the same.
    for body in ["", "{}", "{\"data\": null}"] {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let r = call(
            &api,
            &format!("/sessman/update?session_id={id}"),
            Some("text/javascript"),
            body,
        )
        .await
        .expect(200);
        assert_eq!(r.body["data"], new_data, "{body:?}");
    }
    let got = api.get(&format!("/v1/sessions/{id}")).await.expect(200);
    assert_eq!(got.body["version"], 5);

    // `{}` empties the data.
    let r = class_call(
        &api,
        &format!("/sessman/update?session_id={id}"),
        &json!({}),
    )
    .await
    .expect(200);
    assert_eq!(r.body["data"], json!({}));

    // Concurrent replacements: every one succeeds (compare-and-set
    // retries) and the last write is whole, never a mix.
    let writers: Vec<_> = (0..10)
        .map(|i| {
            let (api, id) = (api.clone(), id.clone());
            tokio::spawn(async move {
                class_call(
                    &api,
                    &format!("/sessman/update?session_id={id}"),
                    &json!({ format!("k{i}"): i, "all": i }),
                )
                .await
                .status
            })
        })
        .collect();
    for w in writers {
        assert_eq!(w.await.unwrap(), 200);
    }
    let got = api.get(&format!("/v1/sessions/{id}")).await.expect(200);
    let data = got.body["data"].as_object().unwrap();
    assert_eq!(data.len(), 2, "{data:?}");
    let i = data["all"].as_u64().unwrap();
    assert_eq!(data[&format!("k{i}")], i);
    assert_eq!(got.body["version"], 16);
}

async fn get_answers_only_the_sessions_user(backend: Backend) {
    let server = start(backend);
    let api = server.api(ACME);
    let id = token(
        &class_call(&api, "/sessman/new?user=hugo", &json!({"a": 1}))
            .await
            .expect(200),
    );
    for method in [Method::GET, Method::POST] {
        let r = api
            .send(api.request(
                method.clone(),
                &format!("/sessman/get?sessionid={id}&userid=hugo"),
            ))
            .await
            .expect(200);
        assert_eq!(r.body["data"], json!({"a": 1}));
        assert_eq!(r.body["user"], "hugo");
        assert_eq!(r.body["session_id"], id.as_str());
    }
    // The aliases work here too.
    api.get(&format!("/sessman/get?session_id={id}&user=hugo"))
        .await
        .expect(200);
    // Reading does not count as use.
    let got = api.get(&format!("/v1/sessions/{id}")).await.expect(200);
    assert_eq!(got.body["version"], 1);

    // Another user, no user, an unknown id: the same 404.
    api.get(&format!("/sessman/get?sessionid={id}&userid=ines"))
        .await
        .problem(404, "session-not-found");
    let anonymous = api.create(&json!({})).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    api.get(&format!("/sessman/get?sessionid={anonymous}&userid=hugo"))
        .await
        .problem(404, "session-not-found");
    let unknown = "A".repeat(43);
    api.get(&format!("/sessman/get?sessionid={unknown}&userid=hugo"))
        .await
        .problem(404, "session-not-found");
    api.get(&format!("/sessman/get?sessionid={id}"))
        .await
        .problem(400, "bad-query");
    // Ended sessions are gone.
    api.delete(&format!("/v1/sessions/{id}")).await.expect(204);
    api.get(&format!("/sessman/get?sessionid={id}&userid=hugo"))
        .await
        .problem(404, "session-not-found");
}

async fn errors_are_problems(backend: Backend) {
    let server = start(backend);
    let api = server.api(ACME);
    let id = token(
        &class_call(&api, "/sessman/new?user=jack", &json!({"a": 1}))
            .await
            .expect(200),
    );
    let update = format!("/sessman/update?session_id={id}");

    // Unknown and malformed session ids.
    let unknown = format!("/sessman/update?session_id={}", "B".repeat(43));
    class_call(&api, &unknown, &json!({}))
        .await
        .problem(404, "session-not-found");
    class_call(&api, "/sessman/update?session_id=undefined", &json!({}))
        .await
        .problem(400, "bad-session-id");
    class_call(&api, "/sessman/update", &json!({}))
        .await
        .problem(400, "bad-query");

    // Bodies that are not `{"data": {...}}`.
    for path in ["/sessman/new?user=kim", update.as_str()] {
        call(&api, path, Some("text/javascript"), "{\"data\": ")
            .await
            .problem(400, "malformed-json");
        call(&api, path, Some("text/javascript"), "data=1")
            .await
            .problem(400, "malformed-json");
        let p = call(&api, path, None, "{\"data\": [1, 2]}")
            .await
            .problem(422, "invalid-body");
        assert_eq!(p["field"], "data");
        call(&api, path, None, "[]")
            .await
            .problem(422, "invalid-body");
        let big = json!({"data": {"x": "y".repeat(4096)}}).to_string();
        call(&api, path, Some("text/javascript"), &big)
            .await
            .problem(413, "body-too-large");
    }
    // Nothing of that was written.
    let got = api.get(&format!("/v1/sessions/{id}")).await.expect(200);
    assert_eq!(got.body["data"], json!({"a": 1}));
    assert_eq!(got.body["version"], 1);
    let kim = api.get("/v1/users/kim/sessions").await.expect(200);
    assert_eq!(kim.body["sessions"], json!([]));
    // An invalid user name is the create endpoint's 422.
    let p = class_call(&api, "/sessman/new?user=%01", &json!({}))
        .await
        .problem(422, "invalid-body");
    assert_eq!(p["field"], "user");

    // Keys: a wrong key is 401 (never the unauthenticated tenant), a tenant
    // without sessman is 403.
    class_call(
        &server.api("no-such-key"),
        "/sessman/new?user=lea",
        &json!({}),
    )
    .await
    .problem(401, "unauthorized");
    let p = class_call(&server.api(PLAIN), "/sessman/new?user=lea", &json!({}))
        .await
        .problem(403, "sessman-disabled");
    assert!(p["detail"].as_str().unwrap().contains("enabled"));
    // Another tenant's key does not reach acme's session.
    class_call(&server.api(KEYED), &update, &json!({}))
        .await
        .problem(404, "session-not-found");

    // Wrong methods are problems too.
    api.get("/sessman/new?user=x").await.problem(405, "");
}

async fn without_allow_unauthenticated_a_key_is_needed(backend: Backend) {
    let server = TestServer::start(backend, &config(false));
    let anonymous = server.anonymous();
    let p = class_call(&anonymous, "/sessman/new?user=mia", &json!({"a": 1}))
        .await
        .problem(401, "unauthorized");
    assert!(p["detail"].as_str().unwrap().contains("Bearer"));
    class_call(
        &anonymous,
        &format!("/sessman/update?session_id={}", "C".repeat(43)),
        &json!({}),
    )
    .await
    .problem(401, "unauthorized");
    anonymous
        .get(&format!(
            "/sessman/get?sessionid={}&userid=mia",
            "C".repeat(43)
        ))
        .await
        .problem(401, "unauthorized");
    // With its key, acme is served as before.
    class_call(&server.api(ACME), "/sessman/new?user=mia", &json!({"a": 1}))
        .await
        .expect(200);
}
