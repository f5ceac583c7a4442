//! The web console at `/console`, driven in headless Chromium by
//! `tests/console/drive.py` (selenium) against a real server: sign in, find
//! a user's sessions, revoke one and see it gone, the plugins with their
//! chart and p99s, the audit tail, the end queue and webhooks (with the
//! last failed delivery); then, signed in with an operator key, every
//! tenant. The screenshots stay in `target/console-screenshots/` as the
//! test's artifacts. The operator API the page uses is checked here too.
//!
//! `scripts/ensure-tools.sh` (`just setup`) installs Debian's chromium and
//! chromium-driver and selenium when missing.

use std::path::PathBuf;
use std::process::Command;

use serde_json::json;
use sessiond_tests::Backend;
use sessiond_tests::fixtures::{Plugin, Tenant};
use sessiond_tests::server::TestServer;

const KEY: &str = "console-test-key";
const OTHER_KEY: &str = "console-test-other-key";
const OPERATOR_KEY: &str = "console-test-operator-key";
/// A webhook endpoint nothing listens on: its deliveries wait in the outbox.
const WEBHOOK: &str = "http://127.0.0.1:9/sessiond";

/// acme (the audit-log plugin, a webhook nothing listens on) and globex,
/// with an operator key.
fn two_tenants() -> String {
    format!(
        "[operator]\napi_keys = [{:?}]\n\n{}\n[[tenants.acme.webhooks]]\nurl = {WEBHOOK:?}\n\
         events = [\"session.ended\"]\n\
         secret = \"whsec_c2Vzc2lvbmQtd2ViaG9vay10ZXN0LXNlY3JldA==\"\n\n{}",
        sessiond::config::hash_api_key(OPERATOR_KEY),
        Tenant::new("acme")
            .key(KEY)
            .plugin(Plugin::audit_log())
            .toml(),
        Tenant::new("globex").key(OTHER_KEY).toml()
    )
}

/// The operator API answers operator keys only, and shows every tenant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_api_shows_every_tenant_to_operator_keys_only() {
    let server = TestServer::start(Backend::Memory, &two_tenants());
    for user in ["ann", "ann", "ben"] {
        server.api(KEY).create(&json!({"user": user})).await;
    }
    server.api(OTHER_KEY).create(&json!({"user": "cy"})).await;

    let refused = server
        .anonymous()
        .get("/admin/v1/tenants")
        .await
        .expect(401);
    assert!(
        refused
            .content_type()
            .starts_with("application/problem+json")
    );
    server
        .api("no-such-key")
        .get("/admin/v1/tenants")
        .await
        .expect(401);
    let tenant = server.api(KEY).get("/admin/v1/tenants").await.expect(403);
    assert!(
        tenant.body["detail"]
            .as_str()
            .unwrap()
            .contains("operator key"),
        "{}",
        tenant.body
    );
    // An operator key is no tenant's key.
    server
        .api(OPERATOR_KEY)
        .get("/v1/plugins")
        .await
        .expect(401);

    let listed = server
        .api(OPERATOR_KEY)
        .get("/admin/v1/tenants")
        .await
        .expect(200);
    let tenants = listed.body["tenants"].as_array().unwrap();
    let names: Vec<&str> = tenants
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["acme", "globex"]);
    let (acme, globex) = (&tenants[0], &tenants[1]);
    assert_eq!(acme["sessions"], 3);
    assert_eq!(globex["sessions"], 1);
    assert_eq!(acme["source"], "config");
    assert_eq!(acme["webhooks_held"], 0);
    assert!(globex["webhooks_held"].is_null(), "globex has no webhooks");
    assert_eq!(acme["ends_waiting"], 0);
    let plugin = &acme["plugins"][0];
    assert_eq!(plugin["name"], "audit-log");
    assert_eq!(plugin["calls"], 3);
    // Each create ran the plugin once; its percentiles are over those calls.
    assert_eq!(plugin["recent"]["calls"], 3);
    let wall = &plugin["recent"]["wall_us"];
    assert!(wall["p50"].as_u64().unwrap() > 0, "{plugin}");
    assert!(wall["p50"].as_u64() <= wall["p99"].as_u64(), "{plugin}");
    assert_eq!(wall["p99"], wall["max"], "p99 of 3 calls is the slowest");
    assert!(
        plugin["recent"]["fuel"]["p99"].as_u64().unwrap() > 0,
        "{plugin}"
    );
    assert_eq!(globex["plugins"], json!([]));
    server.stop().unwrap();
}

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_finds_and_revokes_a_session() {
    let server = TestServer::start(Backend::Memory, &two_tenants());
    let api = server.api(KEY);
    server.api(OTHER_KEY).create(&json!({"user": "bob"})).await;

    // The page needs no key, and carries its policy.
    let page = server.anonymous().get("/console").await.expect(200);
    assert!(
        page.content_type().starts_with("text/html"),
        "{}",
        page.content_type()
    );
    let csp = page.header("content-security-policy");
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert_eq!(page.header("x-content-type-options"), "nosniff");
    let script = server.anonymous().get("/console/app.js").await.expect(200);
    assert!(
        script.content_type().contains("javascript"),
        "{}",
        script.content_type()
    );

    let revoke = api
        .create(&json!({"user": "alice", "device": "laptop"}))
        .await;
    let keep = api
        .create(&json!({"user": "alice", "device": "phone"}))
        .await;
    let (revoke_id, keep_id) = (
        revoke["public_id"].as_str().unwrap().to_string(),
        keep["public_id"].as_str().unwrap().to_string(),
    );

    let shots = workspace().join("target/console-screenshots");
    let base = server.base_url();
    let script = workspace().join("tests/console/drive.py");
    let (revoke_arg, keep_arg) = (revoke_id.clone(), keep_id.clone());
    let output = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(script)
            .args(["--base", &base, "--key", KEY, "--user", "alice"])
            // `--name=value`: a public id may start with `-`, which
            // argparse would take for an option.
            .arg(format!("--revoke={revoke_arg}"))
            .arg(format!("--keep={keep_arg}"))
            .args(["--plugin", "audit-log", "--webhook", WEBHOOK])
            .args(["--operator-key", OPERATOR_KEY, "--other-tenant", "globex"])
            .arg("--shots")
            .arg(&shots)
            .output()
    })
    .await
    .unwrap()
    .expect("running python3 tests/console/drive.py (just setup installs what it needs)");
    assert!(
        output.status.success(),
        "the console test failed (screenshots in target/console-screenshots/):\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );

    // What the page did is what the API sees.
    let left = api.get("/v1/users/alice/sessions").await.expect(200);
    let ids: Vec<&str> = left.body["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["public_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [keep_id.as_str()]);
    server.stop().unwrap();
}
