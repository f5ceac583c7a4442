//! Conversions between the WIT shapes and JSON, for `sessiond plugin run`.

use anyhow::{Context, Result};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::bindings::sessiond::plugin::types;
use super::host::to_wit_summary;
use crate::session::{EndReason, Millis, SessionSummary};

pub use super::chain::view;
pub use types::Verdict;

pub use super::plugin::HOOK_NAMES;
/// JSON of a text field that should hold JSON (the text itself if not).
fn json_text(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

/// The changes a hook asked for, as JSON (unset fields left out).
pub fn changes_json(c: &types::Changes) -> Value {
    let mut m = Map::new();
    if let Some(p) = &c.data_patch {
        m.insert("data_patch".into(), json_text(p));
    }
    if let Some(r) = &c.roles {
        m.insert("roles".into(), json!(r));
    }
    if let Some(s) = &c.state {
        m.insert("state".into(), json_text(s));
    }
    if let Some(t) = c.ttl_seconds {
        m.insert("ttl_seconds".into(), json!(t));
    }
    Value::Object(m)
}

pub fn verdict_json(v: &types::Verdict, out: &mut Map<String, Value>) -> &'static str {
    match v {
        types::Verdict::Allow(c) => {
            out.insert("changes".into(), changes_json(c));
            "allow"
        }
        types::Verdict::Deny(m) => {
            out.insert("message".into(), json!(m));
            "deny"
        }
    }
}

pub fn update_verdict_json(v: &types::UpdateVerdict, out: &mut Map<String, Value>) -> &'static str {
    match v {
        types::UpdateVerdict::Accept => "accept",
        types::UpdateVerdict::Rewrite(c) => {
            out.insert("changes".into(), changes_json(c));
            "rewrite"
        }
        types::UpdateVerdict::Reject(m) => {
            out.insert("message".into(), json!(m));
            "reject"
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Proposed {
    data_patch: Option<Map<String, Value>>,
    roles: Option<Vec<String>>,
}

/// The proposed change of `on-session-update` from `{"data_patch": ..,
/// "roles": ..}` (null: an empty change).
pub fn proposed_changes(payload: &Value) -> Result<types::Changes> {
    let p: Proposed = if payload.is_null() {
        Proposed::default()
    } else {
        serde_json::from_value(payload.clone())
            .context("the on-session-update payload must look like {\"data_patch\": {...}, \"roles\": [...]}")?
    };
    Ok(types::Changes {
        data_patch: p.data_patch.map(|m| Value::Object(m).to_string()),
        roles: p.roles,
        state: None,
        ttl_seconds: None,
    })
}

pub fn end_info(reason: EndReason, end_id: &str, ended_at: Millis) -> types::EndInfo {
    super::chain::end_info(reason, end_id, ended_at)
}

pub fn summary_view(s: &SessionSummary) -> types::SessionSummary {
    to_wit_summary(s)
}

pub fn summaries_json(list: &[types::SessionSummary]) -> Value {
    Value::Array(
        list.iter()
            .map(|s| {
                json!({
                    "id": s.id,
                    "roles": s.roles,
                    "created_at": s.created_at,
                    "last_seen_at": s.last_seen_at,
                    "expires_at": s.expires_at,
                    "annotations": json_text(&s.annotations),
                })
            })
            .collect(),
    )
}
