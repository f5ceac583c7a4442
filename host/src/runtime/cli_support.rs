//! What `sessiond plugin run` prints of a hook's result, as JSON, and the
//! proposed change it reads from JSON.

use anyhow::{Context, Result};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::types::{Changes, Denial, ListedSessions, UpdateVerdict, Verdict};

/// JSON of a text field that should hold JSON (the text itself if not).
fn json_text(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

/// The changes a hook asked for, as JSON (the members it set; `{}` for
/// none).
pub fn changes_json(c: &Changes) -> Value {
    c.to_json()
}

/// A refusal's message, and the state it keeps when it has one.
fn denial_json(d: &Denial, out: &mut Map<String, Value>) {
    out.insert("message".into(), json!(d.message));
    if let Some(state) = &d.state {
        out.insert("state".into(), json_text(state));
    }
}

pub fn verdict_json(v: &Verdict, out: &mut Map<String, Value>) -> &'static str {
    match v {
        Verdict::Allow(c) => {
            out.insert("changes".into(), changes_json(c));
            "allow"
        }
        Verdict::Deny(d) => {
            denial_json(d, out);
            "deny"
        }
    }
}

pub fn update_verdict_json(v: &UpdateVerdict, out: &mut Map<String, Value>) -> &'static str {
    match v {
        UpdateVerdict::Accept => "accept",
        UpdateVerdict::Rewrite(c) => {
            out.insert("changes".into(), changes_json(c));
            "rewrite"
        }
        UpdateVerdict::Reject(d) => {
            denial_json(d, out);
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
pub fn proposed_changes(payload: &Value) -> Result<Changes> {
    let p: Proposed = if payload.is_null() {
        Proposed::default()
    } else {
        serde_json::from_value(payload.clone())
            .context("the on-session-update payload must look like {\"data_patch\": {...}, \"roles\": [...]}")?
    };
    let patch = p.data_patch.map(Value::Object);
    Ok(Changes::proposal(patch.as_ref(), p.roles.as_deref()))
}

/// The summaries a plugin returned, as JSON (annotations as sent: the
/// JSON they hold, or the text itself if it is not JSON).
pub fn summaries_json(listed: &ListedSessions) -> Value {
    Value::Array(
        listed
            .list
            .iter()
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
