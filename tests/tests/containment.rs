//! A plugin that cannot load is contained to its tenant: the host starts,
//! the tenant with a fail-closed broken plugin answers 503 naming it (and
//! `/readyz` lists it), a tenant whose broken plugin is fail-open serves
//! without it, and every other tenant serves normally.

use serde_json::json;
use sessiond_tests::Backend;
use sessiond_tests::fixtures::{Plugin, Tenant};
use sessiond_tests::server::TestServer;

#[tokio::test]
async fn a_plugin_that_cannot_load_degrades_only_its_tenant() {
    let broken = || Plugin::new("broken", "hostile").config("mode", "init-error");
    let toml = Tenant::new("healthy")
        .key("key-healthy")
        .plugin(Plugin::new("fine", "hostile").config("mode", "ok"))
        .toml()
        + &Tenant::new("closed")
            .key("key-closed")
            .plugin(broken())
            .toml()
        + &Tenant::new("open")
            .key("key-open")
            .plugin(broken().on_error("allow"))
            .toml();
    let server = TestServer::start(Backend::Memory, &toml);

    let created = server
        .api("key-healthy")
        .post("/v1/sessions", &json!({"user": "alice"}))
        .await
        .expect(201);
    assert_eq!(created.body["data"]["hostile"], "ok", "{}", created.text);

    let p = server
        .api("key-closed")
        .post("/v1/sessions", &json!({"user": "bob"}))
        .await
        .problem(503, "tenant-degraded");
    assert_eq!(p["plugin"], "broken", "{p}");
    assert!(p["detail"].as_str().unwrap().contains("init"), "{p}");
    // Every request of the tenant, not only the ones that run plugins.
    server
        .api("key-closed")
        .get("/v1/plugins")
        .await
        .problem(503, "tenant-degraded");

    // Fail-open: the tenant runs without the plugin.
    server
        .api("key-open")
        .post("/v1/sessions", &json!({"user": "carol"}))
        .await
        .expect(201);

    let ready = server.anonymous().get("/readyz").await.expect(200);
    let degraded = ready.body["degraded"].as_array().expect("a degraded list");
    assert_eq!(degraded.len(), 1, "{}", ready.text);
    assert_eq!(degraded[0]["tenant"], "closed");
    assert_eq!(degraded[0]["plugin"], "broken");
}
