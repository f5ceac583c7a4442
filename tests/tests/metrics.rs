//! `GET /metrics`: the Prometheus text after real traffic (sessions, a
//! failing plugin, end hooks), on the memory store and on the stores that
//! keep the end queue elsewhere; and who may read it.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;
use sessiond_tests::Backend;
use sessiond_tests::fixtures::{Plugin, Tenant};
use sessiond_tests::server::{Api, TestServer, eventually, key_hash};

/// One sample line: `name{label="value",...} value`.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A parsed exposition: every sample, and each family's `# TYPE`.
#[derive(Debug)]
struct Exposition {
    samples: Vec<Sample>,
    types: BTreeMap<String, String>,
}

impl Exposition {
    /// Parses the Prometheus text format (0.0.4), panicking with the line
    /// that does not parse, or a sample whose family has no `# TYPE`.
    fn parse(text: &str) -> Exposition {
        let mut samples = Vec::new();
        let mut types = BTreeMap::new();
        for line in text.lines() {
            if line.is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("# TYPE <name> <type>");
                assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                    "{line}"
                );
                let fresh = types.insert(name.to_string(), kind.to_string()).is_none();
                assert!(fresh, "family {name} declared twice");
                continue;
            }
            if line.starts_with("# HELP ") {
                continue;
            }
            assert!(!line.starts_with('#'), "an unexpected comment: {line}");
            let sample = parse_sample(line).unwrap_or_else(|| panic!("not a sample: {line:?}"));
            let family = family_of(&sample.name, &types)
                .unwrap_or_else(|| panic!("{} has no # TYPE before it", sample.name));
            if types[family] == "histogram" {
                assert!(
                    sample.name.ends_with("_bucket")
                        || sample.name.ends_with("_sum")
                        || sample.name.ends_with("_count"),
                    "{line}"
                );
            }
            samples.push(sample);
        }
        Exposition { samples, types }
    }

    /// The value of the sample `name` with exactly `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels == want)
            .map(|s| s.value)
    }

    /// Like [`Exposition::value`], panicking with the family's samples when
    /// there is none.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels).unwrap_or_else(|| {
            let same: Vec<&Sample> = self.samples.iter().filter(|s| s.name == name).collect();
            panic!("no {name} {labels:?}; the family has {same:#?}")
        })
    }
}

/// The family a sample belongs to: its own name, or without the suffix of
/// a histogram's series.
fn family_of<'a>(name: &'a str, types: &BTreeMap<String, String>) -> Option<&'a str> {
    if types.contains_key(name) {
        return Some(name);
    }
    ["_bucket", "_sum", "_count"]
        .iter()
        .filter_map(|suffix| name.strip_suffix(suffix))
        .find(|base| types.get(*base).is_some_and(|t| t == "histogram"))
}

fn parse_sample(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' '])?;
    let name = &line[..name_end];
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    {
        return None;
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(after) = rest.strip_prefix('{') {
        let mut chars = after.char_indices();
        let mut key = String::new();
        loop {
            let (_, c) = chars.next()?;
            match c {
                '}' if key.is_empty() => break,
                '=' => {
                    if chars.next()?.1 != '"' {
                        return None;
                    }
                    let mut value = String::new();
                    loop {
                        match chars.next()?.1 {
                            '"' => break,
                            '\\' => match chars.next()?.1 {
                                'n' => value.push('\n'),
                                c @ ('\\' | '"') => value.push(c),
                                _ => return None,
                            },
                            c => value.push(c),
                        }
                    }
                    labels.insert(std::mem::take(&mut key), value);
                    match chars.next()?.1 {
                        ',' => {}
                        '}' => break,
                        _ => return None,
                    }
                }
                c if c.is_ascii_alphanumeric() || c == '_' => key.push(c),
                _ => return None,
            }
        }
        let consumed = chars.next().map_or(after.len(), |(i, _)| i);
        rest = &after[consumed..];
    }
    let value = rest.strip_prefix(' ')?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

#[test]
fn the_parser_reads_labels_and_escapes() {
    let text = "# TYPE a_total counter\na_total{x=\"1\",y=\"q\\\"\\\\\"} 2\n\
                # TYPE h histogram\nh_bucket{le=\"+Inf\"} 3\nh_count 3\n";
    let e = Exposition::parse(text);
    assert_eq!(e.get("a_total", &[("x", "1"), ("y", "q\"\\")]), 2.0);
    assert_eq!(e.get("h_bucket", &[("le", "+Inf")]), 3.0);
    assert_eq!(e.get("h_count", &[]), 3.0);
}

/// The hostile fixture in `mode`.
fn hostile(mode: &str) -> Plugin {
    Plugin::new("hostile", "hostile").config("mode", mode)
}

/// An end hook that takes `ms` (so the end queue holds its job a while).
fn slow_ender(ms: u64) -> Plugin {
    Plugin::new("ender", "ender")
        .grants(&["audit"])
        .config("delay_ms", &ms.to_string())
        .limit("deadline_ms", ms * 3)
}

async fn scrape(server: &TestServer) -> (String, Exposition) {
    let reply = Api::new(&server.base_url(), None)
        .get("/metrics")
        .await
        .expect(200);
    assert_eq!(reply.content_type(), "text/plain", "{:?}", reply.headers);
    assert!(reply.header("content-type").contains("version=0.0.4"));
    let parsed = Exposition::parse(&reply.text);
    (reply.text, parsed)
}

const USER: &str = "user-who-never-appears";

async fn metrics_after_traffic(backend: Backend) {
    let text = [
        Tenant::new("ok")
            .key("key-ok")
            .plugin(hostile("ok"))
            .plugin(slow_ender(600))
            .toml(),
        Tenant::new("failing")
            .key("key-failing")
            .plugin(hostile("error").on_error("allow"))
            .toml(),
    ]
    .concat();
    let server = TestServer::start(backend, &text);
    let ok = server.api("key-ok");
    let failing = server.api("key-failing");

    let mut ids = Vec::new();
    for _ in 0..2 {
        let s = ok.create(&json!({"user": USER})).await;
        ids.push(s["id"].as_str().unwrap().to_string());
    }
    ok.get(&format!("/v1/sessions/{}", ids[0]))
        .await
        .expect(200);
    ok.get("/v1/sessions/not-a-session-at-all-0000000000000000000000")
        .await
        .expect(404);
    // The start hook fails, and is let through (on_error = allow); the
    // message handler fails and answers 422.
    let f = failing.create(&json!({"user": USER})).await;
    let failing_id = f["id"].as_str().unwrap().to_string();
    failing
        .post(
            &format!("/v1/sessions/{failing_id}/messages/refreshData"),
            &json!({}),
        )
        .await
        .expect(422);
    for id in &ids {
        ok.delete(&format!("/v1/sessions/{id}")).await.expect(204);
    }

    // While the slow end hooks run, the queue holds their jobs.
    let queued = eventually(Duration::from_secs(10), || async {
        let (_, m) = scrape(&server).await;
        let waiting = m.get(
            "sessiond_end_queue_jobs",
            &[("tenant", "ok"), ("state", "waiting")],
        );
        let claimed = m.get(
            "sessiond_end_queue_jobs",
            &[("tenant", "ok"), ("state", "claimed")],
        );
        let age = m.get("sessiond_end_queue_oldest_age_seconds", &[("tenant", "ok")]);
        (waiting + claimed >= 1.0 && age > 0.0).then_some(())
    })
    .await;
    assert!(
        queued.is_some(),
        "the end queue never showed a job and its age"
    );
    // Then it drains, and the worker says so. (A scrape reads the queue
    // before the worker's counters, so one scrape can show a job both
    // claimed and ran: its acknowledgement landed in between.)
    let (text, m) = eventually(Duration::from_secs(20), || async {
        let (text, m) = scrape(&server).await;
        let ran = m.get("sessiond_end_worker_jobs_total", &[("outcome", "ran")]) == 2.0;
        let claimed = m.get(
            "sessiond_end_queue_jobs",
            &[("tenant", "ok"), ("state", "claimed")],
        );
        (ran && claimed == 0.0).then_some((text, m))
    })
    .await
    .expect("the end worker never ran both jobs");

    for state in ["waiting", "claimed"] {
        let labels = [("tenant", "ok"), ("state", state)];
        assert_eq!(m.get("sessiond_end_queue_jobs", &labels), 0.0, "{state}");
    }
    assert_eq!(
        m.get("sessiond_end_dead_letters", &[("tenant", "failing")]),
        0.0
    );
    assert_eq!(
        m.get("sessiond_end_queue_oldest_age_seconds", &[("tenant", "ok")]),
        0.0,
        "an empty queue has no oldest job"
    );
    // Live sessions: both of ok's ended, failing's one lives.
    assert_eq!(m.get("sessiond_sessions", &[("tenant", "ok")]), 0.0);
    assert_eq!(m.get("sessiond_sessions", &[("tenant", "failing")]), 1.0);

    // Requests, by route template.
    let route = |route: &str, method: &str, status: &str| {
        m.value(
            "sessiond_http_requests_total",
            &[("route", route), ("method", method), ("status", status)],
        )
    };
    assert_eq!(route("/v1/sessions/{id}", "GET", "200"), Some(1.0));
    assert_eq!(route("/v1/sessions/{id}", "GET", "404"), Some(1.0));
    assert_eq!(route("/v1/sessions/{id}", "DELETE", "204"), Some(2.0));
    assert_eq!(route("/v1/sessions", "POST", "201"), Some(3.0));
    assert_eq!(
        route("/v1/sessions/{id}/messages/{handler}", "POST", "422"),
        Some(1.0)
    );
    assert!(route("/metrics", "GET", "200").unwrap() >= 2.0);
    assert_eq!(
        m.types["sessiond_http_request_duration_seconds"],
        "histogram"
    );
    assert_eq!(
        m.get(
            "sessiond_http_request_duration_seconds_count",
            &[("route", "/v1/sessions/{id}"), ("method", "GET")]
        ),
        2.0
    );

    // Plugin calls and failures, by tenant, plugin, hook and kind.
    let hook = |tenant: &'static str, plugin: &'static str, hook: &'static str| {
        [("tenant", tenant), ("plugin", plugin), ("hook", hook)]
    };
    let calls = |labels: &[(&str, &str)]| m.get("sessiond_plugin_calls_total", labels);
    assert_eq!(calls(&hook("ok", "hostile", "on-session-start")), 2.0);
    assert_eq!(calls(&hook("ok", "ender", "on-session-end")), 2.0);
    assert_eq!(calls(&hook("failing", "hostile", "on-session-start")), 1.0);
    assert_eq!(calls(&hook("failing", "hostile", "on-message")), 1.0);
    for h in ["on-session-start", "on-message"] {
        let [t, p, k] = hook("failing", "hostile", h);
        assert_eq!(
            m.get(
                "sessiond_plugin_failures_total",
                &[t, p, k, ("kind", "plugin-error")]
            ),
            1.0,
            "{h}"
        );
    }
    assert!(
        !m.samples
            .iter()
            .any(|s| s.name == "sessiond_plugin_failures_total" && s.labels["tenant"] == "ok"),
        "the ok tenant has no failure"
    );
    for (name, sum_at_least) in [
        ("sessiond_plugin_call_fuel", 1.0),
        ("sessiond_plugin_call_duration_seconds", 0.6),
        ("sessiond_plugin_call_peak_memory_bytes", 65_536.0),
    ] {
        assert_eq!(m.types[name], "histogram");
        let labels = hook("ok", "ender", "on-session-end");
        assert_eq!(m.get(&format!("{name}_count"), &labels), 2.0, "{name}");
        assert!(
            m.get(&format!("{name}_sum"), &labels) >= sum_at_least,
            "{name}"
        );
    }
    // Every call got an instance, warm or fresh; loading leaves one warm.
    let instances = |plugin: &str, kind: &str| {
        m.value(
            "sessiond_plugin_instances_total",
            &[("tenant", "ok"), ("plugin", plugin), ("instance", kind)],
        )
        .unwrap_or(0.0)
    };
    assert_eq!(
        instances("ender", "warm") + instances("ender", "fresh"),
        2.0
    );
    assert!(instances("hostile", "warm") >= 1.0);

    // Sessions and the store.
    assert_eq!(
        m.get("sessiond_sessions_created_total", &[("tenant", "ok")]),
        2.0
    );
    assert_eq!(
        m.get(
            "sessiond_sessions_ended_total",
            &[("tenant", "ok"), ("reason", "logout")]
        ),
        2.0
    );
    for op in [
        "create",
        "get",
        "remove",
        "claim_ends",
        "ack_ends",
        "end_queue",
    ] {
        assert!(
            m.get("sessiond_store_operations_total", &[("operation", op)]) >= 1.0,
            "{op}"
        );
    }
    assert!(
        m.get(
            "sessiond_store_operation_duration_seconds_count",
            &[("operation", "get")]
        ) >= 2.0
    );

    assert_eq!(
        m.get(
            "sessiond_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );

    // Nothing that names a session or a user.
    let public_ids = [f["public_id"].as_str().unwrap_or("-")];
    for secret in ids
        .iter()
        .map(String::as_str)
        .chain([failing_id.as_str(), USER])
        .chain(public_ids)
    {
        assert!(!text.contains(secret), "{secret} is in the metrics");
    }
}

mod memory {
    #[tokio::test]
    async fn metrics_after_traffic() {
        super::metrics_after_traffic(super::Backend::Memory).await
    }
}

mod redis {
    #[tokio::test]
    async fn metrics_after_traffic() {
        super::metrics_after_traffic(super::Backend::Redis).await
    }
}

mod embedded {
    #[tokio::test]
    async fn metrics_after_traffic() {
        super::metrics_after_traffic(super::Backend::Embedded).await
    }
}

fn plain_tenant() -> String {
    Tenant::new("demo").key("key-demo").toml()
}

#[tokio::test]
async fn loopback_only_by_default_and_behind_a_proxy_the_client_counts() {
    let server = TestServer::start(
        Backend::Memory,
        &format!(
            "[server]\ntrusted_proxies = [\"127.0.0.1\"]\n{}",
            plain_tenant()
        ),
    );
    let api = Api::new(&server.base_url(), None);
    api.get("/metrics").await.expect(200);
    // Through a trusted proxy, from a remote client: refused.
    let p = api
        .send(
            api.request(reqwest::Method::GET, "/metrics")
                .header("x-forwarded-for", "203.0.113.9"),
        )
        .await
        .problem(403, "forbidden");
    assert!(p["detail"].as_str().unwrap().contains("metrics.allow"));
}

#[tokio::test]
async fn a_client_outside_allow_is_refused() {
    let server = TestServer::start(
        Backend::Memory,
        &format!("[metrics]\nallow = [\"10.0.0.0/8\"]\n{}", plain_tenant()),
    );
    // Not even with a tenant's API key.
    server
        .api("key-demo")
        .get("/metrics")
        .await
        .problem(403, "forbidden");
}

#[tokio::test]
async fn the_token_is_required_when_configured() {
    let server = TestServer::start(
        Backend::Memory,
        &format!(
            "[metrics]\nbearer_token_sha256 = \"{}\"\n{}",
            key_hash("scrape-token"),
            plain_tenant()
        ),
    );
    let none = Api::new(&server.base_url(), None).get("/metrics").await;
    assert!(none.header("www-authenticate").starts_with("Bearer"));
    none.problem(401, "unauthorized");
    server
        .api("key-demo")
        .get("/metrics")
        .await
        .problem(401, "unauthorized");
    server
        .api("scrape-token-not")
        .get("/metrics")
        .await
        .problem(401, "unauthorized");
    let reply = server.api("scrape-token").get("/metrics").await.expect(200);
    Exposition::parse(&reply.text);
    assert!(reply.text.contains("sessiond_build_info"));
}

#[tokio::test]
async fn disabled_metrics_are_not_there() {
    let server = TestServer::start(
        Backend::Memory,
        &format!("[metrics]\nenabled = false\n{}", plain_tenant()),
    );
    Api::new(&server.base_url(), None)
        .get("/metrics")
        .await
        .problem(404, "about:blank");
}
