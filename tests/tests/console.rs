//! The web console at `/console`, driven in headless Chromium by
//! `tests/console/drive.py` (selenium) against a real server: sign in, find
//! a user's sessions, revoke one and see it gone, the plugins with their
//! chart, the audit tail, the end queue and webhooks. The screenshots stay
//! in `target/console-screenshots/` as the test's artifacts.
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
/// A webhook endpoint nothing listens on: its deliveries wait in the outbox.
const WEBHOOK: &str = "http://127.0.0.1:9/sessiond";

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_finds_and_revokes_a_session() {
    let toml = format!(
        "{}\n[[tenants.acme.webhooks]]\nurl = {WEBHOOK:?}\nevents = [\"session.ended\"]\n\
         secret = \"whsec_c2Vzc2lvbmQtd2ViaG9vay10ZXN0LXNlY3JldA==\"\n",
        Tenant::new("acme")
            .key(KEY)
            .plugin(Plugin::audit_log())
            .toml()
    );
    let server = TestServer::start(Backend::Memory, &toml);
    let api = server.api(KEY);

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
            .args(["--revoke", &revoke_arg, "--keep", &keep_arg])
            .args(["--plugin", "audit-log", "--webhook", WEBHOOK])
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
