//! Over HTTP, what contract 0.2 lets a plugin do: end the session with its
//! own reason, and keep a state change while refusing a request.

use serde_json::json;
use sessiond_tests::server::{StoreKind, TestServer, eventually, key_hash};
use std::time::Duration;

fn perspective() -> String {
    format!(
        r#"
[tenants.plant]
api_keys = ["{hash}"]

[[tenants.plant.plugins]]
name = "perspective"
path = "{{plugins}}/perspective.wasm"
grants = ["kv", "audit"]
limits = {{ deadline_ms = 2000 }}
"#,
        hash = key_hash("key-plant")
    )
}

#[tokio::test]
async fn a_refused_view_is_counted_and_a_logout_event_ends_the_session() {
    let server = TestServer::start(StoreKind::Memory, &perspective());
    let api = server.api("key-plant");
    let s = api
        .create(&json!({"user": "op", "roles": ["Operator"]}))
        .await;
    let id = s["id"].as_str().unwrap().to_string();
    let public = s["public_id"].as_str().unwrap().to_string();

    // Refused (403), yet the plugin's state change is stored: one write.
    let p = api
        .post(
            &format!("/v1/sessions/{id}/events"),
            &json!({"name": "page-view", "payload": {"page": "/admin/users"}}),
        )
        .await
        .problem(403, "plugin-denied");
    assert_eq!(p["detail"], "unauthorized");
    let got = api.get(&format!("/v1/sessions/{id}")).await.expect(200);
    assert_eq!(got.body["version"], 2, "{}", got.body);
    assert_eq!(
        got.body["data"]["pageViews"], 0,
        "the shared data is untouched"
    );

    // The logout event ends the session with reason logout.
    api.post(
        &format!("/v1/sessions/{id}/events"),
        &json!({"name": "logout"}),
    )
    .await
    .expect(200);
    api.get(&format!("/v1/sessions/{id}")).await.expect(404);
    let metrics = eventually(Duration::from_secs(10), || async {
        api.audit_all()
            .await
            .into_iter()
            .find(|r| r["record"]["metric"] == "session")
    })
    .await
    .expect("the end hook wrote its metrics");
    assert_eq!(metrics["record"]["reason"], "logout", "{metrics}");
    assert_eq!(
        metrics["record"]["page_views"], 1,
        "the refused view counts"
    );
    assert_eq!(metrics["session"], public);
}
