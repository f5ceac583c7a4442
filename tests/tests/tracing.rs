//! Traces and JSON logs, as an operator reads them: a `sessiond serve`
//! process with `[log] format = "json"` and `spans = true` logs one JSON
//! object a line; a request that carries a W3C `traceparent` joins that
//! trace (its answer's `traceresponse` says so), and the spans it ran
//! (the request, the chain, the plugin hook with its fuel and memory, the
//! store calls) are logged with that trace id.

use std::time::Duration;

use serde_json::{Value, json};
use sessiond_tests::cache_dir;
use sessiond_tests::fixtures::{Plugin, Tenant};
use sessiond_tests::hosts::Host;
use sessiond_tests::server::eventually;

const BIN: &str = env!("CARGO_BIN_EXE_sessiond-host");
const KEY: &str = "tracing-test-key";
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

/// The log's JSON lines whose spans include the request span of `trace`.
fn lines_of_trace(log: &str, trace: &str) -> Vec<Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| {
            let of_trace = |s: &Value| s["name"] == "request" && s["trace_id"] == trace;
            of_trace(&v["span"])
                || v["spans"]
                    .as_array()
                    .is_some_and(|s| s.iter().any(of_trace))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_is_traced_into_its_plugins_and_store_calls() {
    let toml = format!(
        "[server]\nlisten = \"{{listen}}\"\n\n[runtime]\ncache_dir = \"{}\"\n\n\
         [log]\nformat = \"json\"\nlevel = \"info,sessiond=debug,cranelift=warn,wasmtime=warn\"\n\
         spans = true\n{}",
        cache_dir().display(),
        Tenant::new("acme")
            .key(KEY)
            .plugin(Plugin::audit_log())
            .toml()
    );
    let dir = tempfile::tempdir().unwrap();
    let host = tokio::task::spawn_blocking(move || {
        let host = Host::start_logging_as_configured(
            BIN,
            dir.path(),
            "traced",
            &toml,
            Duration::from_secs(120),
        );
        (host, dir)
    })
    .await
    .unwrap();
    let (host, _dir) = host;

    let http = reqwest::Client::new();
    let created = http
        .post(format!("{}/v1/sessions", host.base_url()))
        .bearer_auth(KEY)
        .header("traceparent", format!("00-{TRACE}-{PARENT}-01"))
        .json(&json!({"user": "alice"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let answer = created.headers()["traceresponse"]
        .to_str()
        .unwrap()
        .to_string();
    let parts: Vec<&str> = answer.split('-').collect();
    assert_eq!((parts[0], parts[1]), ("00", TRACE), "{answer}");
    assert_eq!(parts[2].len(), 16, "a span id of its own: {answer}");
    assert_ne!(parts[2], PARENT);

    // Without one, a request starts a trace of its own.
    let other = http
        .get(format!("{}/v1/plugins", host.base_url()))
        .bearer_auth(KEY)
        .header("traceparent", "not-a-traceparent")
        .send()
        .await
        .unwrap();
    let other_trace = other.headers()["traceresponse"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(!other_trace.contains(TRACE), "{other_trace}");

    let lines = eventually(Duration::from_secs(10), || async {
        let lines = lines_of_trace(&host.log(), TRACE);
        lines
            .iter()
            .any(|l| l["span"]["name"] == "request" && l["fields"]["message"] == "close")
            .then_some(lines)
    })
    .await
    .unwrap_or_else(|| panic!("no closed request span of the trace in:\n{}", host.log()));

    let closed = |name: &str| -> Vec<&Value> {
        lines
            .iter()
            .filter(|l| l["span"]["name"] == name && l["fields"]["message"] == "close")
            .collect()
    };
    let request = closed("request");
    assert_eq!(request.len(), 1, "{request:?}");
    assert_eq!(request[0]["span"]["parent_id"], PARENT);
    assert_eq!(request[0]["span"]["route"], "/v1/sessions");
    assert_eq!(request[0]["span"]["status"], 201);

    let chain = closed("chain");
    assert!(
        chain
            .iter()
            .any(|c| c["span"]["hook"] == "on-session-start"),
        "{chain:?}"
    );

    let plugin = closed("plugin");
    let start = plugin
        .iter()
        .find(|p| p["span"]["hook"] == "on-session-start")
        .unwrap_or_else(|| panic!("no plugin span: {plugin:?}"));
    assert_eq!(start["span"]["plugin"], "audit-log");
    assert_eq!(start["span"]["tenant"], "acme");
    assert_eq!(start["span"]["outcome"], "ok");
    assert!(start["span"]["fuel"].as_u64().unwrap() > 0, "{start}");
    assert!(
        start["span"]["memory_bytes"].as_u64().unwrap() > 0,
        "{start}"
    );
    // The plugin's call ran inside the chain, inside the request (a closing
    // span's line lists its parents).
    let names: Vec<&str> = start["spans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["request", "chain"], "{start}");

    let store = closed("store");
    assert!(
        store.iter().any(|s| s["span"]["operation"] == "create"),
        "{store:?}"
    );
    // Every line is one JSON object with a level and a time.
    for line in host.log().lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            v["level"].is_string() && v["timestamp"].is_string(),
            "{line}"
        );
    }
}
