//! `[log]`: what the server logs and how: text or JSON lines, the levels,
//! and whether every span (request, chain, plugin hook, store call, end
//! job) is logged when it closes, with its fields and timing.

use serde::{Deserialize, Serialize};

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info,cranelift=warn,wasmtime=warn".into(),
            spans: false,
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
        tracing_subscriber::EnvFilter::builder()
            .parse(&self.level)
            .map(drop)
            .map_err(|e| {
                (
                    "level",
                    format!(
                        "{:?} is not a log filter like \"info,sessiond=debug\": {e}",
                        self.level
                    ),
                )
            })
    }
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
}
