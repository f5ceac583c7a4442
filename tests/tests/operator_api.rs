//! The operator API's tenants, over real HTTP on every backend: a tenant
//! created with no config change serves sessions with a key made for it,
//! runs a chain of uploaded components, and can be rotated, disabled,
//! changed and rolled back; bad uploads and bad chains change nothing;
//! every admin endpoint refuses tenant keys, missing keys and wrong keys.

use reqwest::Method;
use serde_json::{Value, json};
use sessiond_tests::fixtures::Tenant;
use sessiond_tests::server::{Api, Reply, TestServer, key_hash};
use sessiond_tests::{Backend, every_backend, plugin};

const OPERATOR_KEY: &str = "operator-api-test-key";
const CONFIG_KEY: &str = "config-tenant-key";

fn config() -> String {
    format!(
        "[operator]\napi_keys = [\"{}\"]\nmax_component_bytes = 1048576\n{}",
        key_hash(OPERATOR_KEY),
        Tenant::new("fixed").key(CONFIG_KEY).toml()
    )
}

fn wasm(name: &str) -> Vec<u8> {
    std::fs::read(plugin(name)).expect("a built component")
}

async fn upload(op: &Api, tenant: &str, bytes: Vec<u8>) -> Reply {
    op.send(
        op.request(
            Method::POST,
            &format!("/admin/v1/tenants/{tenant}/components"),
        )
        .header("content-type", "application/wasm")
        .body(bytes),
    )
    .await
}

async fn put_chain(op: &Api, tenant: &str, if_match: Option<&str>, chain: &Value) -> Reply {
    let mut request = op
        .request(Method::PUT, &format!("/admin/v1/tenants/{tenant}/chain"))
        .json(chain);
    if let Some(tag) = if_match {
        request = request.header("if-match", tag);
    }
    op.send(request).await
}

/// `bytes` with every `from` replaced by `to` (same length).
fn patched(mut bytes: Vec<u8>, from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let mut i = 0;
    let mut hits = 0;
    while i + from.len() <= bytes.len() {
        if &bytes[i..i + from.len()] == from {
            bytes[i..i + from.len()].copy_from_slice(to);
            hits += 1;
            i += from.len();
        } else {
            i += 1;
        }
    }
    assert!(hits > 0, "nothing to patch");
    bytes
}

async fn a_tenant_lives_through_the_operator_api(backend: Backend) {
    let server = TestServer::start(backend, &config());
    let op = server.api(OPERATOR_KEY);

    // Created with its defaults; a second create of the name is refused,
    // as is the name of a config tenant.
    let created = op
        .post(
            "/admin/v1/tenants",
            &json!({"name": "acme", "settings": {"ttl_seconds": 600}}),
        )
        .await
        .expect(201);
    assert_eq!(created.body["source"], "api");
    assert_eq!(created.body["settings"]["ttl_seconds"], 600);
    op.post("/admin/v1/tenants", &json!({"name": "acme"}))
        .await
        .problem(409, "tenant-exists");
    op.post("/admin/v1/tenants", &json!({"name": "fixed"}))
        .await
        .problem(409, "tenant-exists");
    op.post("/admin/v1/tenants", &json!({"name": "Bad Name"}))
        .await
        .problem(422, "invalid-body");
    let bad = op
        .post(
            "/admin/v1/tenants",
            &json!({"name": "other", "settings": {"ttl_seconds": 10, "max_ttl_seconds": 5}}),
        )
        .await
        .problem(422, "invalid-body");
    assert!(
        bad["detail"]
            .as_str()
            .unwrap()
            .contains("settings.max_ttl_seconds"),
        "{bad}"
    );

    // A key, shown once; it serves sessions at once on this host.
    let key = op
        .post_empty("/admin/v1/tenants/acme/keys")
        .await
        .expect(201);
    let (key_id, plain) = (
        key.body["id"].as_str().unwrap().to_string(),
        key.body["key"].as_str().unwrap().to_string(),
    );
    let listed = op.get("/admin/v1/tenants/acme/keys").await.expect(200);
    assert_eq!(listed.body["keys"][0]["id"], key_id.as_str());
    assert!(!listed.text.contains(&plain), "a listed key shows the key");
    let acme = server.api(&plain);
    let session = acme
        .post("/v1/sessions", &json!({"user": "ann"}))
        .await
        .expect(201);
    let id = session.body["id"].as_str().unwrap().to_string();
    // A tenant key is no operator key, and sees only its own tenant.
    acme.get("/admin/v1/tenants").await.problem(403, "");
    server
        .api(CONFIG_KEY)
        .get(&format!("/v1/sessions/{id}"))
        .await
        .expect(404);

    // Rotation: a second key works beside the first; the first, revoked,
    // gets 401.
    let second = op
        .post_empty("/admin/v1/tenants/acme/keys")
        .await
        .expect(201);
    let next = server.api(second.body["key"].as_str().unwrap());
    next.get(&format!("/v1/sessions/{id}")).await.expect(200);
    acme.get(&format!("/v1/sessions/{id}")).await.expect(200);
    op.delete(&format!("/admin/v1/tenants/acme/keys/{key_id}"))
        .await
        .expect(204);
    acme.get(&format!("/v1/sessions/{id}"))
        .await
        .problem(401, "");
    next.get(&format!("/v1/sessions/{id}")).await.expect(200);

    // Disabled: 403, the session kept; enabled again: served.
    op.patch("/admin/v1/tenants/acme", &json!({"disabled": true}))
        .await
        .expect(200);
    next.get(&format!("/v1/sessions/{id}"))
        .await
        .problem(403, "tenant-disabled");
    let enabled = op
        .patch(
            "/admin/v1/tenants/acme",
            &json!({"disabled": false, "settings": {"max_sessions_per_user": 1}}),
        )
        .await
        .expect(200);
    next.get(&format!("/v1/sessions/{id}")).await.expect(200);
    // The setting holds: ann has her one session.
    next.post("/v1/sessions", &json!({"user": "ann"}))
        .await
        .problem(409, "session-limit");
    // If-Match on a revision that moved is refused.
    let stale = format!("\"{}\"", enabled.body["revision"].as_u64().unwrap() - 1);
    let refused = op
        .send(
            op.request(Method::PATCH, "/admin/v1/tenants/acme")
                .header("if-match", stale)
                .json(&json!({"disabled": true})),
        )
        .await
        .problem(412, "precondition-failed");
    assert!(refused["current_revision"].is_u64(), "{refused}");

    // Config tenants are read here and changed only in the config.
    let fixed = op.get("/admin/v1/tenants/fixed").await.expect(200);
    assert_eq!(fixed.body["source"], "config");
    op.patch("/admin/v1/tenants/fixed", &json!({"disabled": true}))
        .await
        .problem(409, "config-tenant");
    op.post_empty("/admin/v1/tenants/fixed/keys")
        .await
        .problem(409, "config-tenant");
    op.get("/admin/v1/tenants/fixed/chain")
        .await
        .problem(409, "config-tenant");
    op.get("/admin/v1/tenants/nobody")
        .await
        .problem(404, "tenant-not-found");

    // Components: an upload is checked, kept by digest, and idempotent.
    let v1 = upload(&op, "acme", wasm("audit_log")).await.expect(201);
    let v1_sha = v1.body["sha256"].as_str().unwrap().to_string();
    assert!(
        v1.body["hooks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h == "on-session-start"),
        "{}",
        v1.text
    );
    assert!(
        v1.body["imports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i == "audit"),
        "{}",
        v1.text
    );
    assert_eq!(
        upload(&op, "acme", wasm("audit_log"))
            .await
            .expect(200)
            .body["sha256"],
        v1_sha.as_str()
    );
    let v2 = upload(&op, "acme", wasm("single_session"))
        .await
        .expect(201);
    let v2_sha = v2.body["sha256"].as_str().unwrap().to_string();

    // Bad uploads: each a problem, none kept.
    upload(&op, "acme", b"not wasm at all".to_vec())
        .await
        .problem(422, "invalid-component");
    upload(&op, "acme", b"\0asm\x01\0\0\0".to_vec())
        .await
        .problem(422, "invalid-component");
    let version = upload(
        &op,
        "acme",
        patched(
            wasm("audit_log"),
            b"sessiond:plugin/hooks@0.2.0",
            b"sessiond:plugin/hooks@0.1.0",
        ),
    )
    .await
    .problem(422, "invalid-component");
    assert!(
        version["detail"].as_str().unwrap().contains("0.1.0"),
        "{version}"
    );
    upload(
        &op,
        "acme",
        patched(
            wasm("audit_log"),
            b"sessiond:plugin/hooks@",
            b"sessiond:plugix/hooks@",
        ),
    )
    .await
    .problem(422, "invalid-component");
    upload(&op, "acme", vec![0u8; 1024 * 1024 + 1])
        .await
        .problem(413, "");
    let wrong_type = op
        .send(
            op.request(Method::POST, "/admin/v1/tenants/acme/components")
                .header("content-type", "application/octet-stream")
                .body(wasm("audit_log")),
        )
        .await;
    wrong_type.problem(415, "unsupported-media-type");
    let kept = op
        .get("/admin/v1/tenants/acme/components")
        .await
        .expect(200);
    assert_eq!(
        kept.body["components"].as_array().unwrap().len(),
        2,
        "{}",
        kept.text
    );

    // A chain whose component imports what it is not granted is refused,
    // and so is one naming a component the tenant never uploaded.
    let ungranted = put_chain(
        &op,
        "acme",
        None,
        &json!({"plugins": [{"name": "audit-log", "sha256": v1_sha}]}),
    )
    .await
    .problem(422, "invalid-body");
    assert!(
        ungranted["detail"].as_str().unwrap().contains("audit"),
        "{ungranted}"
    );
    put_chain(
        &op,
        "acme",
        None,
        &json!({"plugins": [{"name": "x", "sha256": "00".repeat(32)}]}),
    )
    .await
    .problem(422, "invalid-body");
    assert_eq!(
        op.get("/admin/v1/tenants/acme/chain")
            .await
            .expect(200)
            .header("etag"),
        "\"0\""
    );

    // Revision 1: audit-log. Its hook runs on the next create.
    let chain = put_chain(
        &op,
        "acme",
        Some("\"0\""),
        &json!({"plugins": [{"name": "p", "sha256": v1_sha, "grants": ["audit"]}]}),
    )
    .await
    .expect(200);
    assert_eq!(chain.body["revision"], 1);
    let plugins = next.get("/v1/plugins").await.expect(200);
    assert_eq!(
        plugins.body["plugins"][0]["describe"]["name"], "audit-log",
        "{}",
        plugins.text
    );
    next.post("/v1/sessions", &json!({"user": "bob"}))
        .await
        .expect(201);
    assert!(
        !next.audit_all().await.is_empty(),
        "the uploaded audit-log plugin did not run"
    );
    // A stale If-Match is refused.
    put_chain(&op, "acme", Some("\"0\""), &json!({"plugins": []}))
        .await
        .problem(412, "precondition-failed");
    // Revision 2: single-session; then rollback to 1 as revision 3.
    put_chain(
        &op,
        "acme",
        Some("\"1\""),
        &json!({"plugins": [{"name": "p", "sha256": v2_sha, "grants": ["sessions"]}]}),
    )
    .await
    .expect(200);
    let shown = next.get("/v1/plugins").await.expect(200);
    assert_eq!(
        shown.body["plugins"][0]["describe"]["name"], "single-session",
        "{}",
        shown.text
    );
    // A component a kept revision uses cannot be deleted.
    op.delete(&format!("/admin/v1/tenants/acme/components/{v1_sha}"))
        .await
        .problem(409, "component-in-use");
    let back = op
        .post(
            "/admin/v1/tenants/acme/chain/rollback",
            &json!({"revision": 1}),
        )
        .await
        .expect(200);
    assert_eq!(back.body["revision"], 3);
    assert_eq!(back.body["rollback_of"], 1);
    let shown = next.get("/v1/plugins").await.expect(200);
    assert_eq!(
        shown.body["plugins"][0]["describe"]["name"], "audit-log",
        "{}",
        shown.text
    );
    let revisions = op
        .get("/admin/v1/tenants/acme/chain/revisions")
        .await
        .expect(200);
    assert_eq!(revisions.body["revisions"].as_array().unwrap().len(), 3);
    op.post(
        "/admin/v1/tenants/acme/chain/rollback",
        &json!({"revision": 9}),
    )
    .await
    .problem(404, "chain-revision-not-found");

    // The overview lists both tenants with their source.
    let all = op.get("/admin/v1/tenants").await.expect(200);
    let sources: Vec<(String, String)> = all.body["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().into(),
                t["source"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        sources,
        [
            ("acme".to_string(), "api".to_string()),
            ("fixed".into(), "config".into())
        ]
    );
}

async fn every_admin_endpoint_refuses_other_keys(backend: Backend) {
    let server = TestServer::start(backend, &config());
    let op = server.api(OPERATOR_KEY);
    op.post("/admin/v1/tenants", &json!({"name": "acme"}))
        .await
        .expect(201);
    let routes: &[(Method, &str)] = &[
        (Method::GET, "/admin/v1/tenants"),
        (Method::POST, "/admin/v1/tenants"),
        (Method::GET, "/admin/v1/tenants/acme"),
        (Method::PATCH, "/admin/v1/tenants/acme"),
        (Method::DELETE, "/admin/v1/tenants/acme"),
        (Method::GET, "/admin/v1/tenants/acme/keys"),
        (Method::POST, "/admin/v1/tenants/acme/keys"),
        (Method::DELETE, "/admin/v1/tenants/acme/keys/key_x"),
        (Method::GET, "/admin/v1/tenants/acme/components"),
        (Method::POST, "/admin/v1/tenants/acme/components"),
        (Method::DELETE, "/admin/v1/tenants/acme/components/00"),
        (Method::GET, "/admin/v1/tenants/acme/chain"),
        (Method::PUT, "/admin/v1/tenants/acme/chain"),
        (Method::GET, "/admin/v1/tenants/acme/chain/revisions"),
        (Method::POST, "/admin/v1/tenants/acme/chain/rollback"),
    ];
    let tenant = server.api(CONFIG_KEY);
    let wrong = server.api("not-a-key-of-anyone");
    let nobody = server.anonymous();
    for (method, path) in routes {
        let body = json!({"name": "intruder", "plugins": [], "revision": 1}).to_string();
        for (api, status) in [(&tenant, 403), (&wrong, 401), (&nobody, 401)] {
            let request = api
                .request(method.clone(), path)
                .header("content-type", "application/json")
                .body(body.clone());
            let reply = api.send(request).await;
            assert_eq!(reply.status, status, "{method} {path}: {}", reply.text);
            reply.problem(status, "");
        }
    }
    // Nothing any of them sent changed anything.
    let all = op.get("/admin/v1/tenants").await.expect(200);
    assert_eq!(
        all.body["tenants"].as_array().unwrap().len(),
        2,
        "{}",
        all.text
    );
    assert!(
        op.get("/admin/v1/tenants/acme/keys").await.expect(200).body["keys"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

async fn the_session_quota_is_exact_under_200_concurrent_creates(backend: Backend) {
    let server = TestServer::start(backend, &config());
    let op = server.api(OPERATOR_KEY);
    op.post(
        "/admin/v1/tenants",
        &json!({"name": "capped", "settings": {"quota": {
            "max_sessions": 50, "max_in_flight": 256, "max_queued": 256,
            "queue_timeout_ms": 10000
        }}}),
    )
    .await
    .expect(201);
    let key = op
        .post_empty("/admin/v1/tenants/capped/keys")
        .await
        .expect(201);
    let api = server.api(key.body["key"].as_str().unwrap());
    let mut creates = Vec::new();
    for i in 0..200 {
        let api = api.clone();
        creates.push(tokio::spawn(async move {
            api.post("/v1/sessions", &json!({"user": format!("u{i}")}))
                .await
        }));
    }
    let (mut created, mut refused) = (Vec::new(), 0);
    for create in creates {
        let reply = create.await.unwrap();
        match reply.status {
            201 => created.push(reply.body["id"].as_str().unwrap().to_string()),
            _ => {
                let problem = reply.problem(429, "quota-exceeded");
                assert_eq!(problem["quota"], "max_sessions", "{problem}");
                refused += 1;
            }
        }
    }
    assert_eq!((created.len(), refused), (50, 150));
    // An ended session makes room for exactly one more.
    api.delete(&format!("/v1/sessions/{}", created[0]))
        .await
        .expect(204);
    api.post("/v1/sessions", &json!({"user": "late"}))
        .await
        .expect(201);
    api.post("/v1/sessions", &json!({"user": "later"}))
        .await
        .problem(429, "quota-exceeded");
    // The quota is a setting like any other: raised, it admits more.
    op.patch(
        "/admin/v1/tenants/capped",
        &json!({"settings": {"quota": {"max_sessions": 51}}}),
    )
    .await
    .expect(200);
    api.post("/v1/sessions", &json!({"user": "later"}))
        .await
        .expect(201);
}

async fn component_quotas_hold_per_tenant(backend: Backend) {
    let server = TestServer::start(backend, &config());
    let op = server.api(OPERATOR_KEY);
    op.post(
        "/admin/v1/tenants",
        &json!({"name": "small", "settings": {"max_components": 1, "max_component_bytes": 200000}}),
    )
    .await
    .expect(201);
    // audit_log (219 kB) is over this tenant's 200 kB; single_session fits.
    upload(&op, "small", wasm("audit_log"))
        .await
        .problem(413, "");
    upload(&op, "small", wasm("single_session"))
        .await
        .expect(201);
    let over = upload(&op, "small", wasm("updater"))
        .await
        .problem(429, "quota-exceeded");
    assert_eq!(over["quota"], "max_components", "{over}");
    // The same bytes again are no new component.
    upload(&op, "small", wasm("single_session"))
        .await
        .expect(200);
    let listed = op
        .get("/admin/v1/tenants/small/components")
        .await
        .expect(200);
    assert_eq!(listed.body["max_components"], 1);
    // Another tenant keeps the operator's defaults.
    op.post("/admin/v1/tenants", &json!({"name": "big"}))
        .await
        .expect(201);
    upload(&op, "big", wasm("audit_log")).await.expect(201);
    upload(&op, "big", wasm("updater")).await.expect(201);
}

every_backend!(servers:
    component_quotas_hold_per_tenant,
    a_tenant_lives_through_the_operator_api,
    every_admin_endpoint_refuses_other_keys,
    the_session_quota_is_exact_under_200_concurrent_creates,
);
