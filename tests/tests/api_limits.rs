//! Per-user session limits (deny and evict-lru, on create and on
//! authenticate), the single-session plugin's veto and the user endpoints,
//! on every backend of a test server.

use serde_json::json;
use sessiond_tests::fixtures::{Plugin, Tenant};
use sessiond_tests::server::TestServer;
use sessiond_tests::{Backend, every_backend};

const KEY: &str = "test-key-limits";

every_backend!(
    servers:
    single_session_plugin_denies_a_second_session,
    limit_deny,
    limit_evict_lru_ends_the_least_recently_used,
    authenticate_into_a_full_user_deny,
    authenticate_into_a_full_user_evicts,
    list_and_revoke_a_users_sessions,
);

/// The tenant `acme`, with the key [`KEY`].
fn acme() -> Tenant {
    Tenant::new("acme").key(KEY)
}

/// The TOML of `tenant`, with the audit-log plugin last in its chain.
fn config(tenant: Tenant) -> String {
    tenant.plugin(Plugin::audit_log()).toml()
}

fn id(session: &serde_json::Value) -> String {
    session["id"].as_str().expect("an id").to_string()
}

fn public_id(session: &serde_json::Value) -> String {
    session["public_id"]
        .as_str()
        .expect("a public id")
        .to_string()
}

async fn single_session_plugin_denies_a_second_session(backend: Backend) {
    let server = TestServer::start(backend, &config(acme().plugin(Plugin::single_session())));
    let api = server.api(KEY);
    let first = api.create(&json!({"user": "alice"})).await;
    let p = api
        .post("/v1/sessions", &json!({"user": "alice"}))
        .await
        .problem(403, "plugin-denied");
    assert_eq!(p["plugin"], "single-session");
    assert_eq!(p["detail"], "Please, end active session first!");
    // The veto came before audit-log ran: one start record only.
    let starts: Vec<_> = api
        .audit_all()
        .await
        .into_iter()
        .filter(|r| r["record"]["type"] == "session_started")
        .collect();
    assert_eq!(starts.len(), 1);
    // Others and anonymous sessions are fine.
    api.create(&json!({"user": "bob"})).await;
    api.create(&json!({})).await;
    api.create(&json!({})).await;
    // After logout, alice may start again.
    api.delete(&format!("/v1/sessions/{}", id(&first)))
        .await
        .expect(204);
    api.create(&json!({"user": "alice"})).await;
}

async fn limit_deny(backend: Backend) {
    let server = TestServer::start(
        backend,
        &config(acme().max_sessions(2).limit_policy("deny")),
    );
    let api = server.api(KEY);
    let a = api.create(&json!({"user": "alice"})).await;
    let b = api.create(&json!({"user": "alice"})).await;
    let p = api
        .post("/v1/sessions", &json!({"user": "alice"}))
        .await
        .problem(409, "session-limit");
    assert_eq!(p["user"], "alice");
    assert_eq!(p["active"], 2);
    assert_eq!(p["max"], 2);
    // Both earlier sessions live on; nothing ended.
    for s in [&a, &b] {
        api.get(&format!("/v1/sessions/{}", id(s)))
            .await
            .expect(200);
        api.assert_not_ended(&public_id(s)).await;
    }
    api.create(&json!({"user": "bob"})).await;
    api.create(&json!({})).await;
    api.create(&json!({})).await;
    api.create(&json!({})).await;
    // Room again after one ends.
    api.delete(&format!("/v1/sessions/{}", id(&a)))
        .await
        .expect(204);
    api.create(&json!({"user": "alice"})).await;
}

async fn limit_evict_lru_ends_the_least_recently_used(backend: Backend) {
    let server = TestServer::start(
        backend,
        &config(acme().max_sessions(2).limit_policy("evict-lru")),
    );
    let api = server.api(KEY);
    let s1 = api.create(&json!({"user": "alice"})).await;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let s2 = api.create(&json!({"user": "alice"})).await;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    // s1 is used again, so s2 is the least recently used.
    api.post_empty(&format!("/v1/sessions/{}/touch", id(&s1)))
        .await
        .expect(200);
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let s3 = api.create(&json!({"user": "alice"})).await;

    api.get(&format!("/v1/sessions/{}", id(&s2)))
        .await
        .problem(404, "session-not-found");
    api.get(&format!("/v1/sessions/{}", id(&s1)))
        .await
        .expect(200);
    api.get(&format!("/v1/sessions/{}", id(&s3)))
        .await
        .expect(200);
    assert_eq!(api.end_reasons(&public_id(&s2)).await, ["evicted"]);
    api.assert_not_ended(&public_id(&s1)).await;
    let list = api.get("/v1/users/alice/sessions").await.expect(200);
    assert_eq!(list.body["sessions"].as_array().unwrap().len(), 2);
}

async fn authenticate_into_a_full_user_deny(backend: Backend) {
    let server = TestServer::start(backend, &config(acme().max_sessions(1)));
    let api = server.api(KEY);
    api.create(&json!({"user": "alice"})).await;
    let anon = api.create(&json!({"roles": ["guest"]})).await;
    let p = api
        .post(
            &format!("/v1/sessions/{}/authenticate", id(&anon)),
            &json!({"user": "alice", "roles": ["admin"]}),
        )
        .await
        .problem(409, "session-limit");
    assert_eq!(p["max"], 1);
    // Nothing changed: same token, still anonymous, no event sent.
    let got = api
        .get(&format!("/v1/sessions/{}", id(&anon)))
        .await
        .expect(200);
    assert!(got.body["user"].is_null());
    assert_eq!(got.body["roles"], json!(["guest"]));
    assert_eq!(got.body["version"], 1);
    assert!(
        api.audit_of(&public_id(&anon), "session_event")
            .await
            .is_empty()
    );
    // Another user is fine.
    api.post(
        &format!("/v1/sessions/{}/authenticate", id(&anon)),
        &json!({"user": "bob"}),
    )
    .await
    .expect(200);
}

async fn authenticate_into_a_full_user_evicts(backend: Backend) {
    let server = TestServer::start(
        backend,
        &config(acme().max_sessions(1).limit_policy("evict-lru")),
    );
    let api = server.api(KEY);
    let old = api.create(&json!({"user": "alice"})).await;
    let anon = api.create(&json!({})).await;
    let authed = api
        .post(
            &format!("/v1/sessions/{}/authenticate", id(&anon)),
            &json!({"user": "alice"}),
        )
        .await
        .expect(200);
    api.get(&format!("/v1/sessions/{}", id(&old)))
        .await
        .problem(404, "session-not-found");
    assert_eq!(api.end_reasons(&public_id(&old)).await, ["evicted"]);
    let list = api.get("/v1/users/alice/sessions").await.expect(200);
    let sessions = list.body["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0]["public_id"], authed.body["public_id"]);
}

async fn list_and_revoke_a_users_sessions(backend: Backend) {
    let server = TestServer::start(backend, &config(acme()));
    let api = server.api(KEY);
    let a = api
        .create(&json!({"user": "dave", "roles": ["Operator"], "device": "kiosk"}))
        .await;
    let b = api.create(&json!({"user": "dave"})).await;
    let other = api.create(&json!({"user": "erin"})).await;

    let list = api.get("/v1/users/dave/sessions").await.expect(200);
    let sessions = list.body["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2);
    // Both may share a creation millisecond, so find `a` by its id rather than its place.
    let listed_a = sessions
        .iter()
        .find(|s| s["public_id"] == a["public_id"])
        .expect("a is listed");
    assert!(sessions.iter().any(|s| s["public_id"] == b["public_id"]));
    assert_eq!(listed_a["roles"], json!(["Operator"]));
    assert_eq!(listed_a["device"], "kiosk");
    assert_eq!(listed_a["remote_addr"], "127.0.0.1");
    assert!(listed_a["expires_at"].as_str().unwrap().ends_with('Z'));
    assert!(
        !list.text.contains(&id(&a)),
        "tokens never appear in listings"
    );
    assert_eq!(
        api.get("/v1/users/nobody/sessions").await.expect(200).body["sessions"],
        json!([])
    );

    let revoked = api.delete("/v1/users/dave/sessions").await.expect(200);
    assert_eq!(revoked.body, json!({"ended": 2}));
    for s in [&a, &b] {
        api.get(&format!("/v1/sessions/{}", id(s)))
            .await
            .problem(404, "session-not-found");
        assert_eq!(api.end_reasons(&public_id(s)).await, ["revoked"]);
    }
    api.get(&format!("/v1/sessions/{}", id(&other)))
        .await
        .expect(200);
    assert_eq!(
        api.delete("/v1/users/dave/sessions").await.expect(200).body,
        json!({"ended": 0})
    );
    assert_eq!(
        api.get("/v1/users/dave/sessions").await.body["sessions"],
        json!([])
    );
}
