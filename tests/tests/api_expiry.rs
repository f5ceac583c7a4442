//! Absolute and idle timeouts: expired sessions are never returned, and the
//! sweeper ends each exactly once with the right reason, on every backend of
//! a test server.

use std::time::Duration;

use serde_json::json;
use sessiond_tests::fixtures::{Plugin, Tenant};
use sessiond_tests::server::{TestServer, eventually};
use sessiond_tests::{Backend, every_backend};

const KEY: &str = "test-key-expiry";

every_backend!(
    servers:
    lifetime_ends_with_reason_expired,
    idleness_ends_with_reason_idle_timeout,
);

fn config(ttl: u64, idle: u64) -> String {
    let tenant = Tenant::new("acme")
        .key(KEY)
        .ttl(ttl)
        .idle(idle)
        .plugin(Plugin::audit_log());
    format!("[sweeper]\ninterval_ms = 50\n{}", tenant.toml())
}

async fn lifetime_ends_with_reason_expired(backend: Backend) {
    let server = TestServer::start(backend, &config(1, 60));
    let api = server.api(KEY);
    let s = api.create(&json!({"user": "frank"})).await;
    let id = s["id"].as_str().unwrap().to_string();
    let public_id = s["public_id"].as_str().unwrap().to_string();
    let created = s["created_at_ms"].as_u64().unwrap();
    assert_eq!(s["expires_at_ms"].as_u64().unwrap(), created + 1000);
    api.get(&format!("/v1/sessions/{id}")).await.expect(200);

    // Use does not extend the absolute lifetime.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if api
            .post_empty(&format!("/v1/sessions/{id}/touch"))
            .await
            .status
            != 200
        {
            break;
        }
    }
    let gone = eventually(Duration::from_secs(5), || async {
        (api.get(&format!("/v1/sessions/{id}")).await.status == 404).then_some(())
    })
    .await;
    assert!(gone.is_some(), "the session outlived its lifetime");
    assert!(crate_now() >= created + 1000);
    // Expired sessions are not listed or writable either.
    assert_eq!(
        api.get("/v1/users/frank/sessions").await.body["sessions"],
        json!([])
    );
    api.patch(&format!("/v1/sessions/{id}"), &json!({"x": 1}))
        .await
        .problem(404, "session-not-found");
    api.delete(&format!("/v1/sessions/{id}"))
        .await
        .problem(404, "session-not-found");

    assert_eq!(api.end_reasons(&public_id).await, ["expired"]);
}

async fn idleness_ends_with_reason_idle_timeout(backend: Backend) {
    let server = TestServer::start(backend, &config(60, 1));
    let api = server.api(KEY);
    let s = api.create(&json!({})).await;
    let id = s["id"].as_str().unwrap().to_string();
    let public_id = s["public_id"].as_str().unwrap().to_string();
    let created = s["created_at_ms"].as_u64().unwrap();

    // Touching slides the idle deadline: alive well past one second.
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        api.post_empty(&format!("/v1/sessions/{id}/touch"))
            .await
            .expect(200);
    }
    assert!(crate_now() >= created + 2000);
    // So do writes.
    api.patch(&format!("/v1/sessions/{id}"), &json!({"a": 1}))
        .await
        .expect(200);
    tokio::time::sleep(Duration::from_millis(400)).await;
    api.post(
        &format!("/v1/sessions/{id}/events"),
        &json!({"name": "ping"}),
    )
    .await
    .expect(200);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let alive = api.get(&format!("/v1/sessions/{id}")).await.expect(200);
    assert_eq!(alive.body["data"], json!({"a": 1}));

    // Left alone, it ends.
    let gone = eventually(Duration::from_secs(5), || async {
        (api.get(&format!("/v1/sessions/{id}")).await.status == 404).then_some(())
    })
    .await;
    assert!(gone.is_some(), "the idle session was not ended");
    assert_eq!(api.end_reasons(&public_id).await, ["idle-timeout"]);
}

fn crate_now() -> u64 {
    sessiond::session::now_ms()
}
