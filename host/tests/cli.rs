//! `sessiond plugin check` and `sessiond plugin run` on the real example
//! plugins and on files that are not valid plugins.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::Value;

/// The built components; builds them first if this runs on its own.
fn plugins() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let out = Command::new(root.join("scripts/build-plugins.sh"))
            .output()
            .expect("running scripts/build-plugins.sh");
        assert!(
            out.status.success(),
            "building the plugins failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    })
}

fn sessiond(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sessiond"))
        .args(args)
        .env("SESSIOND_CACHE_DIR", cache_dir())
        .output()
        .expect("running sessiond")
}

fn cache_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/sessiond-test-cache")
}

fn wasm(name: &str) -> String {
    plugins().join(format!("{name}.wasm")).display().to_string()
}

fn run_json(args: &[&str]) -> (i32, Value) {
    let out = sessiond(args);
    let text = String::from_utf8_lossy(&out.stdout);
    let json = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON object ({e}):\n{text}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), json)
}

#[test]
fn check_prints_name_version_hooks_and_capabilities() {
    for (file, name, hooks, caps) in [
        (
            "single_session",
            "single-session",
            "on-session-start",
            "log, sessions",
        ),
        (
            "audit_log",
            "audit-log",
            "on-session-start, on-session-end, on-event",
            "log, audit",
        ),
        ("perspective", "perspective", "on-session-start", "kv"),
    ] {
        let out = sessiond(&["plugin", "check", &wasm(file)]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{file}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains(&format!("name:         {name}")), "{text}");
        assert!(text.contains("version:"), "{text}");
        assert!(text.contains(hooks), "{file} hooks: {text}");
        assert!(text.contains(caps), "{file} capabilities: {text}");
    }
}

#[test]
fn check_rejects_what_is_not_a_plugin_with_a_clear_reason() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, Vec<u8>, &str); 3] = [
        (
            "text.wasm",
            b"hello, not wasm".to_vec(),
            "not a WebAssembly file",
        ),
        (
            "core.wasm",
            b"\0asm\x01\0\0\0".to_vec(),
            "core WebAssembly module, not a component",
        ),
        (
            "empty.wasm",
            b"\0asm\x0d\0\x01\0".to_vec(),
            "does not export sessiond:plugin/hooks@0.2.0",
        ),
    ];
    for (name, bytes, reason) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let out = sessiond(&["plugin", "check", path.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {err}");
        assert!(err.contains(reason), "{name}: {err}");
    }
}

/// Rewrites every `sessiond:plugin/...@0.2.0` name in a built component, so
/// that it targets another version or imports an unknown interface.
fn rewritten(from: &str, to: &str) -> PathBuf {
    assert_eq!(from.len(), to.len(), "same length keeps the binary valid");
    let bytes = std::fs::read(wasm("single_session")).unwrap();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i..].starts_with(from.as_bytes()) {
            out.extend_from_slice(to.as_bytes());
            i += from.len();
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let path = std::env::temp_dir().join(format!(
        "sessiond-cli-{}.wasm",
        to.replace(['/', ':', '@'], "-")
    ));
    std::fs::write(&path, out).unwrap();
    path
}

#[test]
fn check_rejects_a_wrong_version_and_an_unknown_import() {
    let wrong = rewritten("@0.2.0", "@0.9.0");
    let out = sessiond(&["plugin", "check", wrong.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("sessiond:plugin@0.9.0") && err.contains("implements sessiond:plugin@0.2.0"),
        "{err}"
    );

    let unknown = rewritten("sessiond:plugin/sessions@", "sessiond:plugin/sessionz@");
    let out = sessiond(&["plugin", "check", unknown.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("imports sessiond:plugin/sessionz@0.2.0, which this host does not provide"),
        "{err}"
    );
}

#[test]
fn run_allow_prints_changes_logs_and_costs() {
    let dir = tempfile::tempdir().unwrap();
    let session = dir.path().join("s.json");
    std::fs::write(
        &session,
        r#"{"user": "alice", "roles": ["Operator"], "client": {"device": "mobile"}}"#,
    )
    .unwrap();
    let (code, out) = run_json(&[
        "plugin",
        "run",
        &wasm("perspective"),
        "on-session-start",
        "--session",
        session.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out:#}");
    assert_eq!(out["outcome"], "allow");
    assert_eq!(
        out["changes"]["data_patch"]["viewMode"], "compact",
        "{out:#}"
    );
    assert!(out["fuel_consumed"].as_u64().unwrap() > 0);
    assert!(out["wall_us"].as_u64().unwrap() > 0);
    assert!(out["peak_memory_bytes"].as_u64().unwrap() > 1 << 20);
    assert!(!out["logs"].as_array().unwrap().is_empty(), "{out:#}");
}

#[test]
fn run_deny_exits_1_with_the_message() {
    let (code, out) = run_json(&[
        "plugin",
        "run",
        &wasm("perspective"),
        "on-event",
        "--event",
        "page-view",
        "--payload",
        r#"{"page": "/admin/users"}"#,
    ]);
    assert_eq!(code, 1, "{out:#}");
    assert_eq!(out["outcome"], "deny");
    assert_eq!(out["message"], "unauthorized");
}

#[test]
fn run_message_prints_the_reply() {
    let (code, out) = run_json(&[
        "plugin",
        "run",
        &wasm("perspective"),
        "on-message",
        "--handler",
        "refreshData",
        "--payload",
        r#"{"type": "alarms"}"#,
    ]);
    assert_eq!(code, 0, "{out:#}");
    assert_eq!(out["reply"]["status"], "refreshed");
}

#[test]
fn run_end_prints_audit_records() {
    let (code, out) = run_json(&[
        "plugin",
        "run",
        &wasm("audit_log"),
        "on-session-end",
        "--reason",
        "expired",
    ]);
    assert_eq!(code, 0, "{out:#}");
    assert_eq!(out["outcome"], "ok");
    let audit = out["audit"].as_array().unwrap();
    assert_eq!(audit.len(), 1, "{out:#}");
    assert_eq!(audit[0]["reason"], "expired");
}

#[test]
fn run_limits_exit_2_and_name_the_limit() {
    let (code, out) = run_json(&[
        "plugin",
        "run",
        &wasm("hostile"),
        "on-session-start",
        "--config",
        "mode=loop",
        "--fuel",
        "1000000",
    ]);
    assert_eq!(code, 2, "{out:#}");
    assert_eq!(out["outcome"], "limit");
    assert_eq!(out["failure"]["kind"], "fuel-exhausted");

    let (code, out) = run_json(&[
        "plugin",
        "run",
        &wasm("hostile"),
        "on-session-start",
        "--config",
        "mode=memory",
        "--memory-mib",
        "8",
    ]);
    assert_eq!(code, 2, "{out:#}");
    assert_eq!(out["failure"]["kind"], "memory-limit");

    let (code, out) = run_json(&[
        "plugin",
        "run",
        &wasm("hostile"),
        "on-session-start",
        "--config",
        "mode=loop",
        "--deadline-ms",
        "30",
        "--fuel",
        "1000000000000",
    ]);
    assert_eq!(code, 2, "{out:#}");
    assert_eq!(out["failure"]["kind"], "deadline-exceeded");

    let (code, out) = run_json(&[
        "plugin",
        "run",
        &wasm("hostile"),
        "on-session-start",
        "--config",
        "mode=panic",
    ]);
    assert_eq!(code, 2, "{out:#}");
    assert_eq!(out["outcome"], "trap");
    let output = out["failure"]["output"].as_str().unwrap_or_default();
    assert!(output.contains("panicked on purpose"), "{out:#}");
}

#[test]
fn run_plugin_error_exits_1() {
    let (code, out) = run_json(&[
        "plugin",
        "run",
        &wasm("hostile"),
        "on-session-start",
        "--config",
        "mode=error",
    ]);
    assert_eq!(code, 1, "{out:#}");
    assert_eq!(out["outcome"], "error");
    assert_eq!(out["failure"]["message"], "hostile fixture error");
}

#[test]
fn run_checks_the_output_as_the_server_does() {
    // The changes document is not JSON: the server refuses the request
    // (fail-closed), and `run` says so instead of printing an allow.
    let (code, out) = run_json(&[
        "plugin",
        "run",
        &wasm("attacker"),
        "on-session-start",
        "--config",
        "mode=invalid-output",
    ]);
    assert_eq!(code, 1, "{out:#}");
    assert_eq!(out["outcome"], "error", "{out:#}");
    assert_eq!(out["failure"]["kind"], "invalid-output", "{out:#}");
    assert!(out.get("changes").is_none(), "{out:#}");
}
