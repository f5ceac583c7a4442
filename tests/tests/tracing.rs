//! Traces and JSON logs, as an operator reads them: a `sessiond serve`
//! process with `[log] format = "json"` and `spans = true` logs one JSON
//! object a line; a request that carries a W3C `traceparent` joins that
//! trace (its answer's `traceresponse` says so), and the spans it ran
//! (the request, the chain, the plugin hook with its fuel and memory, the
//! store calls) are logged with that trace id. With `[log.otlp]` the same
//! spans reach an OTLP collector (one the test starts on loopback), and the
//! end worker's `end_job` span continues the trace of the request that
//! ended the session.

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

/// A `sessiond serve` process for tenant acme (the audit-log plugin) with
/// `log` as its `[log]` table (and subtables), logging as that says.
async fn traced_host(log: String) -> (Host, tempfile::TempDir) {
    let toml = format!(
        "[server]\nlisten = \"{{listen}}\"\n\n[runtime]\ncache_dir = \"{}\"\n\n{log}\n{}",
        cache_dir().display(),
        Tenant::new("acme")
            .key(KEY)
            .plugin(Plugin::audit_log())
            .toml()
    );
    let dir = tempfile::tempdir().unwrap();
    tokio::task::spawn_blocking(move || {
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
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_is_traced_into_its_plugins_and_store_calls() {
    let (host, _dir) = traced_host(
        "[log]\nformat = \"json\"\nlevel = \"info,sessiond=debug,cranelift=warn,wasmtime=warn\"\n\
         spans = true"
            .into(),
    )
    .await;

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

/// A span as the collector received it.
#[derive(Debug, Clone)]
struct Exported {
    name: String,
    trace_id: String,
    span_id: String,
    parent_id: String,
    attributes: serde_json::Map<String, Value>,
}

/// An OTLP/HTTP collector on loopback: every span posted to `/v1/traces`,
/// and the `service.name` of the batches they came in.
#[derive(Default)]
struct Collector {
    spans: Vec<Exported>,
    services: Vec<String>,
}

fn any_value(v: &opentelemetry_proto::tonic::common::v1::AnyValue) -> Value {
    use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
    match &v.value {
        Some(V::StringValue(s)) => json!(s),
        Some(V::IntValue(i)) => json!(i),
        Some(V::BoolValue(b)) => json!(b),
        Some(V::DoubleValue(d)) => json!(d),
        other => json!(format!("{other:?}")),
    }
}

async fn start_collector() -> (String, std::sync::Arc<std::sync::Mutex<Collector>>) {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message as _;
    let got = std::sync::Arc::new(std::sync::Mutex::new(Collector::default()));
    let sink = got.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let sink = sink.clone();
            async move {
                let request = ExportTraceServiceRequest::decode(body).expect("an OTLP body");
                let mut got = sink.lock().unwrap();
                for batch in request.resource_spans {
                    for kv in batch.resource.iter().flat_map(|r| &r.attributes) {
                        if kv.key == "service.name" {
                            let name = kv.value.as_ref().map(any_value).unwrap_or_default();
                            got.services.push(name.as_str().unwrap_or_default().into());
                        }
                    }
                    for span in batch.scope_spans.into_iter().flat_map(|s| s.spans) {
                        got.spans.push(Exported {
                            name: span.name,
                            trace_id: hex(&span.trace_id),
                            span_id: hex(&span.span_id),
                            parent_id: hex(&span.parent_span_id),
                            attributes: span
                                .attributes
                                .iter()
                                .map(|kv| {
                                    let v = kv.value.as_ref().map(any_value).unwrap_or_default();
                                    (kv.key.clone(), v)
                                })
                                .collect(),
                        });
                    }
                }
                (
                    [("content-type", "application/x-protobuf")],
                    Vec::<u8>::new(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, got)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A host exporting to a collector of its own, with `otlp` as further
/// lines of `[log.otlp]`.
async fn exporting_host(
    otlp: &str,
) -> (
    Host,
    tempfile::TempDir,
    std::sync::Arc<std::sync::Mutex<Collector>>,
) {
    let (endpoint, collector) = start_collector().await;
    let (host, dir) = traced_host(format!(
        "[log.otlp]\nendpoint = \"{endpoint}\"\nexport_interval_ms = 200\n{otlp}"
    ))
    .await;
    (host, dir, collector)
}

/// With `sample_ratio = 0`, no new trace is exported, and a caller's
/// `traceparent` decides for its own: sampled, it is exported whole; not
/// sampled, not at all. `traceresponse` carries the decision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_is_exported_as_its_sampled_flag_says() {
    const SAMPLED: &str = "11111111111111111111111111111111";
    const UNSAMPLED: &str = "22222222222222222222222222222222";
    let (host, _dir, collector) = exporting_host("sample_ratio = 0.0").await;
    let http = reqwest::Client::new();
    let create = |traceparent: Option<String>| {
        let mut request = http
            .post(format!("{}/v1/sessions", host.base_url()))
            .bearer_auth(KEY)
            .json(&json!({}));
        if let Some(t) = traceparent {
            request = request.header("traceparent", t);
        }
        request.send()
    };
    let fresh = create(None).await.unwrap();
    assert_eq!(fresh.status(), 201);
    let fresh_header = fresh.headers()["traceresponse"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(fresh_header.ends_with("-00"), "not sampled: {fresh_header}");
    let fresh_trace = fresh_header.split('-').nth(1).unwrap().to_string();
    let unsampled = create(Some(format!("00-{UNSAMPLED}-{PARENT}-00")))
        .await
        .unwrap();
    assert!(
        unsampled.headers()["traceresponse"]
            .to_str()
            .unwrap()
            .ends_with("-00")
    );
    let sampled = create(Some(format!("00-{SAMPLED}-{PARENT}-01")))
        .await
        .unwrap();
    let sampled_header = sampled.headers()["traceresponse"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(sampled_header.ends_with("-01"), "{sampled_header}");

    // The sampled request's whole tree arrives; by then the others' would
    // have (they were answered first, and go out in the same batches).
    let spans = eventually(Duration::from_secs(20), || async {
        let got = collector.lock().unwrap();
        got.spans
            .iter()
            .any(|s| s.trace_id == SAMPLED && s.name == "plugin")
            .then(|| got.spans.clone())
    })
    .await
    .expect("the sampled request's plugin span");
    assert!(
        spans
            .iter()
            .any(|s| s.trace_id == SAMPLED && s.name == "request")
    );
    let strays: Vec<&Exported> = spans
        .iter()
        .filter(|s| s.trace_id == UNSAMPLED || s.trace_id == fresh_trace)
        .collect();
    assert!(
        strays.is_empty(),
        "unsampled spans were exported: {strays:#?}"
    );
}

/// The span id a `traceresponse` header names.
fn answered_span(response: &reqwest::Response) -> String {
    let header = response.headers()["traceresponse"].to_str().unwrap();
    header.split('-').nth(2).unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_an_otlp_collector_and_the_end_job_continues_the_ending_requests_trace() {
    const END_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
    const END_PARENT: &str = "b7ad6b7169203331";
    let (host, _dir, collector) = exporting_host("service_name = \"sessiond-under-test\"").await;

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
    let create_span = answered_span(&created);
    let token = created.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let ended = http
        .delete(format!("{}/v1/sessions/{token}", host.base_url()))
        .bearer_auth(KEY)
        .header("traceparent", format!("00-{END_TRACE}-{END_PARENT}-01"))
        .send()
        .await
        .unwrap();
    assert!(ended.status().is_success(), "{}", ended.status());
    let ending_span = answered_span(&ended);

    // The end hooks run after the answer, on the end worker.
    let spans = eventually(Duration::from_secs(20), || async {
        let got = collector.lock().unwrap();
        got.spans
            .iter()
            .any(|s| {
                s.name == "plugin"
                    && s.trace_id == END_TRACE
                    && s.attributes.get("hook") == Some(&json!("on-session-end"))
            })
            .then(|| got.spans.clone())
    })
    .await
    .unwrap_or_else(|| {
        let got = collector.lock().unwrap();
        panic!(
            "no on-session-end plugin span in the ending request's trace; got {:#?}\n{}",
            got.spans,
            host.log()
        )
    });
    let one = |name: &str, trace: &str, hook: Option<&str>| -> Exported {
        let found: Vec<&Exported> = spans
            .iter()
            .filter(|s| s.name == name && s.trace_id == trace)
            .filter(|s| hook.is_none_or(|h| s.attributes.get("hook") == Some(&json!(h))))
            .collect();
        assert_eq!(found.len(), 1, "{name} {hook:?} in {trace}: {spans:#?}");
        found[0].clone()
    };

    // The create: the request joins the caller's trace under the caller's
    // span, with the id its answer gave; the chain, the plugin hook and the
    // store call nest inside it.
    let request = one("request", TRACE, None);
    assert_eq!(request.parent_id, PARENT);
    assert_eq!(request.span_id, create_span);
    assert_eq!(request.attributes["route"], "/v1/sessions");
    assert_eq!(request.attributes["status"], 201);
    let chain = one("chain", TRACE, Some("on-session-start"));
    assert_eq!(chain.parent_id, request.span_id);
    let plugin = one("plugin", TRACE, Some("on-session-start"));
    assert_eq!(plugin.parent_id, chain.span_id);
    assert_eq!(plugin.attributes["plugin"], "audit-log");
    assert!(
        plugin.attributes["fuel"].as_i64().unwrap() > 0,
        "{plugin:?}"
    );
    assert!(
        plugin.attributes["memory_bytes"].as_i64().unwrap() > 0,
        "{plugin:?}"
    );
    assert!(
        spans.iter().any(|s| s.name == "store"
            && s.trace_id == TRACE
            && s.attributes.get("operation") == Some(&json!("create"))),
        "no store span of the create: {spans:#?}"
    );

    // The end: the end worker's job is a child of the DELETE that ended the
    // session, and the end hook runs inside it.
    let delete = one("request", END_TRACE, None);
    assert_eq!(delete.span_id, ending_span);
    assert_eq!(delete.parent_id, END_PARENT);
    let job = one("end_job", END_TRACE, None);
    assert_eq!(job.parent_id, delete.span_id);
    assert_eq!(job.attributes["reason"], "logout");
    let end_hook = one("plugin", END_TRACE, Some("on-session-end"));
    let end_chain = one("chain", END_TRACE, Some("on-session-end"));
    assert_eq!(end_chain.parent_id, job.span_id);
    assert_eq!(end_hook.parent_id, end_chain.span_id);

    let services = collector.lock().unwrap().services.clone();
    assert!(
        !services.is_empty() && services.iter().all(|s| s == "sessiond-under-test"),
        "{services:?}"
    );
}
