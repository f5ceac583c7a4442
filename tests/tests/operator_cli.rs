//! The operator command line against a real server: from a server with no
//! tenants, `sessiond tenant`, `plugin push` and `chain` make a tenant
//! whose key serves sessions through an uploaded plugin; a refused request
//! exits 1 with the server's status, a missing operator key exits 2.

use std::process::{Command, Output};

use serde_json::json;
use sessiond_tests::server::{TestServer, key_hash};
use sessiond_tests::{Backend, Block, plugin};

const BIN: &str = env!("CARGO_BIN_EXE_sessiond-host");
const OPERATOR_KEY: &str = "operator-cli-test-key";

/// Runs `sessiond args...` against `server`, with `key` as the operator key
/// when given (and no other from the environment).
fn sessiond(server: &TestServer, key: Option<&str>, args: &[&str]) -> Output {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env("SESSIOND_URL", server.base_url())
        .env_remove("SESSIOND_OPERATOR_KEY");
    if let Some(key) = key {
        command.env("SESSIOND_OPERATOR_KEY", key);
    }
    command.output().unwrap()
}

/// Runs an operator command that must succeed; returns its stdout.
fn ok(server: &TestServer, args: &[&str]) -> String {
    let out = sessiond(server, Some(OPERATOR_KEY), args);
    assert!(
        out.status.success(),
        "sessiond {args:?}: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().trim().to_string()
}

#[test]
fn the_operator_cli_takes_a_tenant_from_nothing_to_a_running_plugin() {
    let config = format!("[operator]\napi_keys = [\"{}\"]\n", key_hash(OPERATOR_KEY));
    let server = TestServer::start(Backend::Memory, &config);

    ok(&server, &["tenant", "create", "acme"]);
    let key = first_line(&ok(&server, &["tenant", "key", "create", "acme"]));
    assert!(!key.is_empty());
    let wasm = plugin("audit_log").display().to_string();
    let sha = first_line(&ok(&server, &["plugin", "push", &wasm, "--tenant", "acme"]));
    assert_eq!(sha.len(), 64, "{sha:?}");
    let spec = format!("p={sha},grants=audit");
    ok(
        &server,
        &["chain", "set", "--tenant", "acme", "--plugin", &spec],
    );

    // The key serves sessions, through the uploaded plugin.
    let acme = server.api(&key);
    acme.post("/v1/sessions", &json!({"user": "ann"}))
        .block()
        .expect(201);
    let plugins = acme.get("/v1/plugins").block().expect(200);
    assert_eq!(
        plugins.body["plugins"][0]["describe"]["name"], "audit-log",
        "{}",
        plugins.text
    );

    // A refused request: exit 1, the server's status on stderr.
    let refused = sessiond(
        &server,
        Some(OPERATOR_KEY),
        &["chain", "rollback", "--tenant", "acme", "9"],
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("404"), "{stderr}");

    assert!(
        ok(&server, &["tenant", "list"]).contains("acme"),
        "tenant list does not show acme"
    );

    // No operator key: exit 2, naming where to give one.
    let keyless = sessiond(&server, None, &["tenant", "list"]);
    let stderr = String::from_utf8_lossy(&keyless.stderr);
    assert_eq!(keyless.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("SESSIOND_OPERATOR_KEY"), "{stderr}");
}
