//! `[log]`: what the server logs and how: text or JSON lines, the levels,
//! and whether every span (request, chain, plugin hook, store call, end
//! job) is logged when it closes, with its fields and timing.

use serde::{Deserialize, Serialize};

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` (for a terminal or a journal) or `json` (one object a line,
    /// with the fields of the spans it happened in, the request's
    /// `trace_id` among them).
    pub format: LogFormat,
    /// The levels, as `RUST_LOG` writes them (`info`, or
    /// `info,sessiond=debug`); `RUST_LOG`, when set, wins.
    pub level: String,
    /// Log each span as it closes: the request (`trace_id`, `span_id`,
    /// method, route, status), the chain, each plugin hook (fuel, wall
    /// time, peak memory, outcome), each store call (operation) and each
    /// end job. Spans below the level are not logged: plugin hooks, chains
    /// and store calls are at `debug`.
    pub spans: bool,
    /// `[log.otlp]`: also export spans to an OpenTelemetry collector; none:
    /// spans go to the log only.
    pub otlp: Option<OtlpConfig>,
}

/// `[log.otlp]`: where and how spans are exported over OTLP/HTTP (protobuf
/// bodies).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpConfig {
    /// The collector's traces URL, path included
    /// (`http://127.0.0.1:4318/v1/traces` for a collector on this host).
    pub endpoint: String,
    /// Headers sent with every export, such as an `authorization` the
    /// collector asks for.
    pub headers: std::collections::BTreeMap<String, String>,
    /// How long one export may take before its batch is dropped.
    pub timeout_ms: u64,
    /// How often batched spans are sent.
    pub export_interval_ms: u64,
    /// The `service.name` the spans are reported under.
    pub service_name: String,
    /// Which spans are exported, as `RUST_LOG` writes levels. The default
    /// takes every request and end job (`info`) with the chain, each
    /// plugin hook and each store call inside them (`sessiond=debug`).
    pub level: String,
    /// The share of new traces exported, from 0 to 1 (all). A request whose
    /// caller sent a `traceparent` follows its sampled flag instead.
    pub sample_ratio: f64,
}

impl Default for OtlpConfig {
    fn default() -> Self {
        OtlpConfig {
            endpoint: String::new(),
            headers: Default::default(),
            timeout_ms: 10_000,
            export_interval_ms: 5_000,
            service_name: "sessiond".into(),
            level: "info,sessiond=debug,cranelift=warn,wasmtime=warn".into(),
            sample_ratio: 1.0,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info,cranelift=warn,wasmtime=warn".into(),
            spans: false,
            otlp: None,
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl LogConfig {
    /// The key and message of the first bad setting, if any.
    pub(super) fn check(&self) -> Result<(), (&'static str, String)> {
        check_filter(&self.level).map_err(|m| ("level", m))?;
        let Some(otlp) = &self.otlp else {
            return Ok(());
        };
        check_filter(&otlp.level).map_err(|m| ("otlp.level", m))?;
        let url = reqwest::Url::parse(&otlp.endpoint).map_err(|e| {
            (
                "otlp.endpoint",
                format!(
                    "{:?} is not a URL like \"http://127.0.0.1:4318/v1/traces\": {e}",
                    otlp.endpoint
                ),
            )
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
            return Err((
                "otlp.endpoint",
                format!("{:?} must be an http:// or https:// URL", otlp.endpoint),
            ));
        }
        for (name, value) in &otlp.headers {
            if http::HeaderName::try_from(name.as_str()).is_err()
                || http::HeaderValue::try_from(value.as_str()).is_err()
            {
                return Err((
                    "otlp.headers",
                    format!("{name:?} = {value:?} is not a valid HTTP header"),
                ));
            }
        }
        if otlp.timeout_ms == 0 {
            return Err(("otlp.timeout_ms", "must be at least 1".into()));
        }
        if otlp.export_interval_ms == 0 {
            return Err(("otlp.export_interval_ms", "must be at least 1".into()));
        }
        if !(0.0..=1.0).contains(&otlp.sample_ratio) {
            return Err((
                "otlp.sample_ratio",
                format!(
                    "{} must be from 0 (no new trace) to 1 (every trace)",
                    otlp.sample_ratio
                ),
            ));
        }
        Ok(())
    }
}

/// Checks a level filter such as `info,sessiond=debug`.
fn check_filter(level: &str) -> Result<(), String> {
    tracing_subscriber::EnvFilter::builder()
        .parse(level)
        .map(drop)
        .map_err(|e| format!("{level:?} is not a log filter like \"info,sessiond=debug\": {e}"))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{minimal, parse};

    #[test]
    fn reads_the_format_and_checks_the_level() {
        let config = parse(&format!(
            "[log]\nformat = \"json\"\nlevel = \"info,sessiond=debug\"\nspans = true\n{}",
            minimal()
        ))
        .unwrap();
        assert_eq!(config.log.format, super::LogFormat::Json);
        assert!(config.log.spans);
        let err = parse(&format!("[log]\nlevel = \"info,=[\"\n{}", minimal()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("log.level"), "{err}");
        let err = parse(&format!("[log]\nformat = \"xml\"\n{}", minimal()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("xml"), "{err}");
    }

    #[test]
    fn reads_and_checks_the_otlp_export() {
        let config = parse(&format!(
            "[log.otlp]\nendpoint = \"http://127.0.0.1:4318/v1/traces\"\n\
             headers = {{ authorization = \"Bearer x\" }}\n{}",
            minimal()
        ))
        .unwrap();
        let otlp = config.log.otlp.unwrap();
        assert_eq!(otlp.endpoint, "http://127.0.0.1:4318/v1/traces");
        assert_eq!(otlp.service_name, "sessiond");
        assert_eq!(otlp.headers["authorization"], "Bearer x");
        for (body, field) in [
            ("endpoint = \"collector:4318\"", "log.otlp.endpoint"),
            (
                "endpoint = \"ftp://collector/v1/traces\"",
                "log.otlp.endpoint",
            ),
            (
                "endpoint = \"http://c/v1/traces\"\nheaders = { \"a b\" = \"x\" }",
                "log.otlp.headers",
            ),
            (
                "endpoint = \"http://c/v1/traces\"\ntimeout_ms = 0",
                "log.otlp.timeout_ms",
            ),
            (
                "endpoint = \"http://c/v1/traces\"\nlevel = \"=[\"",
                "log.otlp.level",
            ),
            (
                "endpoint = \"http://c/v1/traces\"\nsample_ratio = 1.5",
                "log.otlp.sample_ratio",
            ),
        ] {
            let err = parse(&format!("[log.otlp]\n{body}\n{}", minimal()))
                .unwrap_err()
                .to_string();
            assert!(err.contains(field), "{body}: {err}");
        }
    }
}
