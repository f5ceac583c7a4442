//! Messages to plugins and their failures, `/v1/plugins`, the audit stream,
//! readiness, startup errors and graceful shutdown.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;
use sessiond_tests::fixtures::{Plugin, Tenant};
use sessiond_tests::server::TestServer;
use sessiond_tests::{Backend, every_backend};

every_backend!(
    servers:
    messages_reach_plugins,
    audit_is_paginated,
    end_queue_is_reported,
);

/// The hostile fixture in `mode`.
fn hostile(mode: &str) -> Plugin {
    Plugin::new("hostile", "hostile").config("mode", mode)
}

/// A tenant `name` (API key `key-<name>`) whose chain is `plugin` (the
/// hostile fixture), then audit-log.
fn hostile_tenant(name: &str, plugin: Plugin) -> String {
    Tenant::new(name)
        .key(&format!("key-{name}"))
        .plugin(plugin)
        .plugin(Plugin::audit_log())
        .toml()
}

async fn messages_reach_plugins(backend: Backend) {
    let text = [
        hostile_tenant("ok", hostile("ok")),
        hostile_tenant("failing", hostile("error").on_error("allow")),
        hostile_tenant("trapping", hostile("panic").on_error("allow")),
        hostile_tenant("strict", hostile("error")),
    ]
    .concat();
    let server = TestServer::start(backend, &text);

    // A reply, with the plugin's changes stored.
    let ok = server.api("key-ok");
    let s = ok.create(&json!({})).await;
    assert_eq!(s["data"], json!({"hostile": "ok"}), "start hook's patch");
    let id = s["id"].as_str().unwrap().to_string();
    let reply = ok
        .post(
            &format!("/v1/sessions/{id}/messages/refreshData"),
            &json!({"a": 1}),
        )
        .await
        .expect(200);
    assert_eq!(reply.body["reply"], json!({"hostile": "ok"}));
    assert_eq!(reply.body["plugin"], "hostile");
    assert_eq!(reply.body["version"], 2);
    assert_eq!(reply.header("etag"), "\"2\"");
    // An empty body is a null payload.
    ok.send(ok.request(Method::POST, &format!("/v1/sessions/{id}/messages/x")))
        .await
        .expect(200);
    assert_eq!(
        ok.get(&format!("/v1/sessions/{id}")).await.body["version"],
        3
    );
    ok.send(
        ok.request(Method::POST, &format!("/v1/sessions/{id}/messages/x"))
            .header("content-type", "application/json")
            .body("{oops"),
    )
    .await
    .problem(400, "malformed-json");
    ok.send(
        ok.request(Method::POST, &format!("/v1/sessions/{id}/messages/x"))
            .header("if-match", "\"1\"")
            .json(&json!(1)),
    )
    .await
    .problem(412, "precondition-failed");

    // The plugin's own error: 422, nothing written.
    let failing = server.api("key-failing");
    let s = failing.create(&json!({})).await;
    let id = s["id"].as_str().unwrap().to_string();
    let p = failing
        .post(&format!("/v1/sessions/{id}/messages/x"), &json!(null))
        .await
        .problem(422, "plugin-failed");
    assert_eq!(p["plugin"], "hostile");
    assert_eq!(p["kind"], "plugin-error");
    assert_eq!(p["detail"], "hostile fixture error");
    assert_eq!(
        failing.get(&format!("/v1/sessions/{id}")).await.body["version"],
        1
    );

    // A trap: 502.
    let trapping = server.api("key-trapping");
    let id = trapping.create(&json!({})).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let p = trapping
        .post(&format!("/v1/sessions/{id}/messages/x"), &json!(null))
        .await
        .problem(502, "plugin-failed");
    assert_eq!(p["plugin"], "hostile");
    assert_eq!(p["kind"], "trap");

    // A failing start hook with on_error = "deny" vetoes.
    let strict = server.api("key-strict");
    let p = strict
        .post("/v1/sessions", &json!({}))
        .await
        .problem(403, "plugin-denied");
    assert_eq!(p["plugin"], "hostile");
    assert_eq!(p["kind"], "plugin-error");
    assert!(strict.audit_all().await.is_empty());
}

async fn end_queue_is_reported(backend: Backend) {
    let server = TestServer::start(backend, &hostile_tenant("ok", hostile("ok")));
    let api = server.api("key-ok");
    let before = api.get("/v1/ends").await.expect(200).body;
    assert_eq!(before["waiting"], 0);
    assert_eq!(before["claimed"], 0);
    assert_eq!(before["ran"], 0);
    assert!(!before["consumer"].as_str().unwrap().is_empty());
    for _ in 0..3 {
        let s = api.create(&json!({"user": "ivy"})).await;
        assert_eq!(s["user"], "ivy");
    }
    api.delete("/v1/users/ivy/sessions").await.expect(200);
    let after = sessiond_tests::server::eventually(Duration::from_secs(10), || async {
        let q = api.get("/v1/ends").await.expect(200).body;
        // The queue and the counters are read one after the other: wait
        // for both to settle.
        (q["ran"] == 3 && q["waiting"] == 0 && q["claimed"] == 0).then_some(q)
    })
    .await
    .expect("the end worker ran the three end jobs and they left the queue");
    assert_eq!(after["reclaimed"], 0);
    assert_eq!(after["consumer"], before["consumer"]);
    server
        .anonymous()
        .get("/v1/ends")
        .await
        .problem(401, "unauthorized");
}

async fn audit_is_paginated(backend: Backend) {
    let server = TestServer::start(backend, &hostile_tenant("ok", hostile("ok")));
    let api = server.api("key-ok");
    let mut public_ids = BTreeSet::new();
    for _ in 0..5 {
        let s = api.create(&json!({})).await;
        public_ids.insert(s["public_id"].as_str().unwrap().to_string());
    }
    let first = api.get("/v1/audit?limit=2").await.expect(200).body;
    assert_eq!(first["records"].as_array().unwrap().len(), 2);
    let record = &first["records"][0];
    assert_eq!(record["plugin"], "audit-log");
    assert_eq!(record["record"]["type"], "session_started");
    assert!(record["at"].as_str().unwrap().ends_with('Z'));
    assert!(record["at_ms"].is_u64());

    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &after {
            Some(a) => format!("/v1/audit?limit=2&after={a}"),
            None => "/v1/audit?limit=2".into(),
        };
        let page = api.get(&path).await.expect(200).body;
        pages += 1;
        for r in page["records"].as_array().unwrap() {
            seen.push((
                r["id"].as_str().unwrap().to_string(),
                r["session"].as_str().unwrap().to_string(),
            ));
        }
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_string()),
            None => break,
        }
        assert!(pages < 10, "pagination does not end");
    }
    assert_eq!(seen.len(), 5, "{seen:?}");
    let sessions: BTreeSet<_> = seen.iter().map(|(_, s)| s.clone()).collect();
    assert_eq!(sessions, public_ids);
    let ids: Vec<_> = seen.iter().map(|(id, _)| id.clone()).collect();
    let unique: BTreeSet<_> = ids.iter().collect();
    assert_eq!(unique.len(), 5, "no record twice");
    // Default page size holds them all.
    let all = api.get("/v1/audit").await.expect(200).body;
    assert_eq!(all["records"].as_array().unwrap().len(), 5);
    // Ids past 64 bits are refused before the store sees them (a 500 once).
    for after in ["99999999999999999999-0", "1-99999999999999999999"] {
        api.get(&format!("/v1/audit?after={after}"))
            .await
            .problem(400, "bad-query");
    }
    // The largest ids that fit are fine: nothing comes after them.
    let last = api
        .get(&format!("/v1/audit?after={0}-{0}", u64::MAX))
        .await
        .expect(200)
        .body;
    assert_eq!(last["records"], json!([]));
}

#[tokio::test]
async fn plugins_are_listed_with_their_counts() {
    let text = [
        hostile_tenant("ok", hostile("ok")),
        hostile_tenant("failing", hostile("error").on_error("allow")),
    ]
    .concat();
    let server = TestServer::start(Backend::Memory, &text);
    let failing = server.api("key-failing");
    let id = failing.create(&json!({})).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    failing
        .post(&format!("/v1/sessions/{id}/messages/x"), &json!(1))
        .await
        .expect(422);

    let list = failing.get("/v1/plugins").await.expect(200).body;
    let plugins = list["plugins"].as_array().unwrap();
    assert_eq!(plugins.len(), 2);
    let hostile = &plugins[0];
    assert_eq!(hostile["name"], "hostile");
    assert_eq!(hostile["describe"]["name"], "hostile");
    assert!(hostile["describe"]["version"].is_string());
    assert_eq!(hostile["hooks"], json!(["on-message", "on-session-start"]));
    assert!(
        hostile["capabilities"]
            .as_array()
            .unwrap()
            .contains(&json!("log"))
    );
    assert_eq!(hostile["on_error"], "allow");
    assert_eq!(hostile["calls"], 2);
    assert_eq!(hostile["failures"], json!({"plugin-error": 2}));
    let audit = &plugins[1];
    assert_eq!(audit["name"], "audit-log");
    assert_eq!(
        audit["hooks"],
        json!(["on-event", "on-session-end", "on-session-start"])
    );
    assert!(
        audit["capabilities"]
            .as_array()
            .unwrap()
            .contains(&json!("audit"))
    );
    assert_eq!(audit["calls"], 1);
    assert_eq!(audit["failures"], json!({}));

    // Another tenant's plugins have their own counts.
    let ok = server
        .api("key-ok")
        .get("/v1/plugins")
        .await
        .expect(200)
        .body;
    assert_eq!(ok["plugins"][0]["calls"], 0);
    assert_eq!(ok["plugins"][0]["on_error"], "deny");
}

#[tokio::test]
async fn store_outage_is_503_and_readiness_follows() {
    let mut server = TestServer::start(Backend::Redis, &hostile_tenant("ok", hostile("ok")));
    let api = server.api("key-ok");
    let anon = server.anonymous();
    let id = api.create(&json!({})).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    anon.get("/readyz").await.expect(200);

    server.redis().expect("a redis-server").kill();
    let started = Instant::now();
    anon.get("/readyz").await.problem(503, "store-unavailable");
    api.get(&format!("/v1/sessions/{id}"))
        .await
        .problem(503, "store-unavailable");
    let p = api
        .post("/v1/sessions", &json!({}))
        .await
        .problem(503, "store-unavailable");
    assert!(
        !p["detail"].as_str().unwrap().contains("redis://"),
        "no internals: {p}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "503 took {:?}",
        started.elapsed()
    );
    // Liveness does not depend on the store.
    anon.get("/healthz").await.expect(200);

    server.redis().unwrap().restart();
    let back = sessiond_tests::server::eventually(Duration::from_secs(10), || async {
        (anon.get("/readyz").await.status == 200).then_some(())
    })
    .await;
    assert!(back.is_some(), "readiness did not come back");
}

/// A config error stops startup; a plugin that does not load only degrades
/// its tenant (tests/tests/containment.rs), with the reason in its 503.
#[tokio::test]
async fn config_errors_stop_startup_and_load_errors_degrade_the_tenant() {
    let text = Tenant::new("acme")
        .key("k")
        .plugin(Plugin::at_path("gone", "missing.wasm"))
        .toml();
    let server = TestServer::start(Backend::Memory, &text);
    let p = server
        .api("k")
        .get("/v1/plugins")
        .await
        .problem(503, "tenant-degraded");
    assert_eq!(p["plugin"], "gone", "{p}");
    assert!(
        p["detail"].as_str().unwrap().contains("missing.wasm"),
        "{p}"
    );
    drop(server);

    // A reclaim time an end hook could outlast.
    let tenant = Tenant::new("acme")
        .key("k")
        .plugin(Plugin::audit_log().limit("deadline_ms", 600));
    let text = format!("[ends]\nreclaim_after_ms = 1000\n{}", tenant.toml());
    let err = TestServer::try_start(Backend::Memory, &text)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("ends.reclaim_after_ms (1000)") && err.contains("600 ms"),
        "{err}"
    );

    // single-session without the `sessions` grant.
    let text = Tenant::new("acme")
        .key("k")
        .plugin(Plugin::new("single", "single_session"))
        .toml();
    let server = TestServer::start(Backend::Memory, &text);
    let p = server
        .api("k")
        .get("/v1/plugins")
        .await
        .problem(503, "tenant-degraded");
    assert_eq!(p["plugin"], "single", "{p}");
    assert!(p["detail"].as_str().unwrap().contains("sessions"), "{p}");
    drop(server);

    let err = TestServer::try_start(Backend::Memory, "[tenants.acme]\napi_keys = []\nttl = 5\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("sessiond.toml") && err.contains("line 3"),
        "{err}"
    );
}

#[tokio::test]
async fn shutdown_finishes_requests_in_flight() {
    // The start hook spins until its 1 s deadline; on_error = "allow" then
    // lets the session be created.
    let text = hostile_tenant(
        "slow",
        hostile("loop").on_error("allow").limit("deadline_ms", 1000),
    );
    let server = TestServer::start(Backend::Memory, &text);
    let api = server.api("key-slow");
    let url = server.base_url();
    let request = {
        let api = api.clone();
        tokio::spawn(async move { api.post("/v1/sessions", &json!({})).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopped = tokio::task::spawn_blocking(move || server.stop());
    let reply = request.await.unwrap();
    assert_eq!(reply.status, 201, "{}", reply.text);
    stopped.await.unwrap().expect("a clean shutdown");
    // Nothing listens any more.
    assert!(reqwest::get(format!("{url}/healthz")).await.is_err());
}

#[tokio::test]
async fn the_python_plugin_over_http() {
    let text = Tenant::new("plant")
        .key("key-plant")
        .plugin(
            Plugin::new("perspective", "perspective")
                .grants(&["kv", "sessions", "audit"])
                .limit("deadline_ms", 2000),
        )
        .toml();
    let server = TestServer::start(Backend::Memory, &text);
    let api = server.api("key-plant");
    let s = api.create(&json!({"device": "mobile"})).await;
    assert_eq!(s["data"]["viewMode"], "compact", "{s}");
    let id = s["id"].as_str().unwrap().to_string();

    // A page that needs a role the session lacks: vetoed; perspective still
    // counts the refused view in its own state (one write).
    let p = api
        .post(
            &format!("/v1/sessions/{id}/events"),
            &json!({"name": "page-view", "payload": {"page": "/admin/users"}}),
        )
        .await
        .problem(403, "plugin-denied");
    assert_eq!(p["plugin"], "perspective");
    assert_eq!(p["detail"], "unauthorized");
    assert_eq!(
        api.get(&format!("/v1/sessions/{id}")).await.body["version"],
        2
    );

    // Logged in as an administrator, it is allowed and counted.
    let authed = api
        .post(
            &format!("/v1/sessions/{id}/authenticate"),
            &json!({"user": "ops", "roles": ["Administrator"]}),
        )
        .await
        .expect(200);
    assert_eq!(authed.body["data"]["permissions"]["canDelete"], true);
    let id = authed.body["id"].as_str().unwrap().to_string();
    let viewed = api
        .post(
            &format!("/v1/sessions/{id}/events"),
            &json!({"name": "page-view", "payload": {"page": "/admin/users"}}),
        )
        .await
        .expect(200);
    // The refused view counts, as in the seed (it counts before it checks).
    assert_eq!(viewed.body["data"]["pageViews"], 2);

    let reply = api
        .post(
            &format!("/v1/sessions/{id}/messages/updatePreference"),
            &json!({"name": "theme", "value": "dark"}),
        )
        .await
        .expect(200);
    assert_eq!(reply.body["plugin"], "perspective");
    assert_eq!(reply.body["reply"]["status"], "updated");
    let got = api.get(&format!("/v1/sessions/{id}")).await.expect(200);
    assert_eq!(got.body["data"]["preferences"], json!({"theme": "dark"}));
}
