//! What `sessiond plugin run` prints of a hook's result, as JSON, and the
//! proposed change it reads from JSON.

use anyhow::{Context, Result};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::types::{Changes, ListedSessions, UpdateVerdict, Verdict};

/// JSON of a text field that should hold JSON (the text itself if not).
fn json_text(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

/// The changes a hook asked for, as JSON (unset fields left out).
pub fn changes_json(c: &Changes) -> Value {
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

pub fn verdict_json(v: &Verdict, out: &mut Map<String, Value>) -> &'static str {
    match v {
        Verdict::Allow(c) => {
            out.insert("changes".into(), changes_json(c));
            "allow"
        }
        Verdict::Deny(m) => {
            out.insert("message".into(), json!(m));
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
        UpdateVerdict::Reject(m) => {
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
pub fn proposed_changes(payload: &Value) -> Result<Changes> {
    let p: Proposed = if payload.is_null() {
        Proposed::default()
    } else {
        serde_json::from_value(payload.clone())
            .context("the on-session-update payload must look like {\"data_patch\": {...}, \"roles\": [...]}")?
    };
    Ok(Changes {
        data_patch: p.data_patch.map(|m| Value::Object(m).to_string()),
        roles: p.roles,
        state: None,
        ttl_seconds: None,
    })
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
