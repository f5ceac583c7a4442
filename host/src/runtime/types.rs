//! The host's own types for what crosses into and out of a plugin: hooks,
//! verdicts, changes, log levels, and the bytes each counts against a call's
//! input and output caps. `convert` maps them to and from the WIT shapes;
//! nothing else in the crate sees those.
//!
//! JSON a plugin returns (its changes document, a denial's state, a reply,
//! annotations) stays the bytes it sent until the host applies it, so that a
//! bad value fails where it is used, with the same message, and sizes count
//! the bytes that actually crossed.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::session::{ClientInfo, EndReason, Millis, SessionSummary};

/// A hook a plugin can implement, in WIT order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Hook {
    SessionStart,
    SessionUpdate,
    SessionEnd,
    Event,
    Message,
    ListActive,
}

/// Every hook's WIT name, in WIT order (the order of [`Hook`]).
pub const HOOK_NAMES: [&str; 6] = [
    "on-session-start",
    "on-session-update",
    "on-session-end",
    "on-event",
    "on-message",
    "on-list-active",
];

impl Hook {
    /// The hook's WIT name, such as `on-session-start`.
    pub fn as_str(self) -> &'static str {
        HOOK_NAMES[self as usize]
    }
}

/// What `describe` returned.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Description {
    pub name: String,
    pub version: String,
    pub hooks: Vec<&'static str>,
    #[serde(skip)]
    pub(crate) hook_set: Vec<Hook>,
}

impl Description {
    pub(crate) fn new(name: String, version: String, mut hook_set: Vec<Hook>) -> Description {
        // WIT order, so listings read like the contract.
        hook_set.sort();
        hook_set.dedup();
        Description {
            name,
            version,
            hooks: hook_set.iter().map(|h| h.as_str()).collect(),
            hook_set,
        }
    }

    /// Whether the plugin implements `hook`.
    pub fn implements(&self, hook: Hook) -> bool {
        self.hook_set.contains(&hook)
    }
}

/// How severe a line a plugin logs is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// One line a plugin logged during a call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogLine {
    pub level: &'static str,
    pub message: String,
}

/// Changes a hook asks the host to make: the JSON object (`changes` in the
/// WIT) as it crossed the boundary, kept as sent until the chain applies it
/// ([`Changes::parse`]). Empty bytes mean no changes (`allow-unchanged`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    pub(crate) doc: Vec<u8>,
}

/// What a changes document asks for, checked.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ChangeSet {
    /// A JSON merge patch of the shared data.
    pub data_patch: Option<Map<String, Value>>,
    /// Replaces the session's roles.
    pub roles: Option<Vec<String>>,
    /// Replaces the plugin's private state.
    pub state: Option<Map<String, Value>>,
    /// Sets the remaining absolute lifetime, in seconds from now.
    pub ttl_seconds: Option<u32>,
    /// Ends the session with this reason once the chain allowed.
    pub end: Option<EndReason>,
}

/// The members of a changes document, before their values are checked.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Members {
    #[serde(default)]
    data_patch: Option<Value>,
    #[serde(default)]
    roles: Option<Vec<String>>,
    #[serde(default)]
    state: Option<Value>,
    #[serde(default)]
    ttl_seconds: Option<u32>,
    #[serde(default)]
    end: Option<String>,
}

impl Changes {
    /// No changes.
    pub fn none() -> Changes {
        Changes::default()
    }

    /// A changes document from its JSON (an object; see the WIT `changes`).
    pub fn from_json(doc: &Value) -> Changes {
        Changes {
            doc: doc.to_string().into_bytes(),
        }
    }

    /// A change of the shared data and the roles, as a REST consumer asks
    /// for one in `on-session-update`.
    pub fn proposal(data_patch: Option<&Value>, roles: Option<&[String]>) -> Changes {
        let mut m = Map::new();
        if let Some(patch) = data_patch {
            m.insert("data_patch".into(), patch.clone());
        }
        if let Some(roles) = roles {
            m.insert("roles".into(), Value::from(roles.to_vec()));
        }
        Changes::from_json(&Value::Object(m))
    }

    /// The document as it crossed (empty for no changes).
    pub fn as_bytes(&self) -> &[u8] {
        &self.doc
    }

    /// Whether this asks for nothing at all.
    pub fn is_none(&self) -> bool {
        self.doc.is_empty()
    }

    /// The document as JSON, for display (`{}` for no changes; the text
    /// itself when it is not JSON).
    pub fn to_json(&self) -> Value {
        if self.doc.is_empty() {
            return Value::Object(Map::new());
        }
        serde_json::from_slice(&self.doc)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&self.doc).into_owned()))
    }

    /// Checks the document; the error says what is wrong with it.
    pub(crate) fn parse(&self) -> Result<ChangeSet, String> {
        if self.doc.is_empty() {
            return Ok(ChangeSet::default());
        }
        let m: Members = serde_json::from_slice(&self.doc)
            .map_err(|e| format!("the changes are not a valid changes object: {e}"))?;
        let object = |v: Option<Value>, what: &str| match v {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(m)) => Ok(Some(m)),
            Some(_) => Err(format!("{what} must be a JSON object")),
        };
        let end = match m.end.as_deref() {
            None => None,
            Some("logout") => Some(EndReason::Logout),
            Some("revoked") => Some(EndReason::Revoked),
            Some(other) => {
                return Err(format!(
                    "end must be \"logout\" or \"revoked\", not {other:?}"
                ));
            }
        };
        Ok(ChangeSet {
            data_patch: object(m.data_patch, "data_patch")?,
            roles: m.roles,
            state: object(m.state, "state")?,
            ttl_seconds: m.ttl_seconds,
            end,
        })
    }
}

/// A refusal: the message for the caller, and the refusing plugin's new
/// private state (JSON text, an object), stored although the request is
/// refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Denial {
    pub message: String,
    pub state: Option<String>,
}

impl Denial {
    /// A refusal with `message` and no state change.
    pub fn new(message: impl Into<String>) -> Denial {
        Denial {
            message: message.into(),
            state: None,
        }
    }
}

/// The answer of a hook that may veto.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Go on, applying these changes (none for `allow-unchanged`).
    Allow(Changes),
    /// Refuse.
    Deny(Denial),
}

/// The answer of `on-session-update`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateVerdict {
    /// Let the proposed change through as it is.
    Accept,
    /// Apply these changes instead of the proposed ones.
    Rewrite(Changes),
    /// Refuse the change.
    Reject(Denial),
}

/// The reply of a message handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageReply {
    /// The JSON text returned to the caller.
    pub reply: String,
    pub changes: Changes,
}

/// Details of a session's end, for `on-session-end`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndInfo {
    pub reason: EndReason,
    /// Unique per end: a hook run again for the same end sees the same id.
    pub end_id: String,
    pub ended_at: Millis,
}

/// One summary as a plugin returned it from `on-list-active`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Listed {
    pub id: String,
    pub roles: Vec<String>,
    pub created_at: Millis,
    pub last_seen_at: Millis,
    pub expires_at: Millis,
    pub client: ClientInfo,
    /// JSON text, unchecked.
    pub annotations: String,
}

/// The summaries a plugin returned from `on-list-active`, as it sent them;
/// [`ListedSessions::into_checked`] checks their annotations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListedSessions {
    pub(crate) list: Vec<Listed>,
}

impl ListedSessions {
    /// The summaries, or why one of them is unusable (annotations that are
    /// not a JSON object).
    pub fn into_checked(self) -> Result<Vec<SessionSummary>, String> {
        self.list
            .into_iter()
            .map(|s| {
                Ok(SessionSummary {
                    annotations: parse_object(&s.annotations, "annotations")?,
                    id: s.id,
                    roles: s.roles,
                    created_at: s.created_at,
                    last_seen_at: s.last_seen_at,
                    expires_at: s.expires_at,
                    client: s.client,
                })
            })
            .collect()
    }

    /// Bytes the list carried across the boundary.
    pub(crate) fn size(&self) -> u64 {
        self.list
            .iter()
            .map(|s| summary_bytes(&s.id, &s.roles, &s.client, s.annotations.len()))
            .sum::<usize>() as u64
    }
}

/// A JSON object from its text; `what` names it in the error.
pub(crate) fn parse_object(text: &str, what: &str) -> Result<Map<String, Value>, String> {
    match serde_json::from_str(text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(format!("{what} must be a JSON object")),
        Err(e) => Err(format!("{what} is not valid JSON: {e}")),
    }
}

// The bytes each value carries across the boundary: its strings, plus a few
// bytes for each fixed part. These count against a call's input and output
// caps.

impl Changes {
    pub(crate) fn size(&self) -> u64 {
        self.doc.len() as u64
    }
}

impl Denial {
    pub(crate) fn size(&self) -> u64 {
        (self.message.len() + self.state.as_ref().map_or(0, String::len)) as u64
    }
}

impl Verdict {
    pub(crate) fn size(&self) -> u64 {
        match self {
            Verdict::Allow(c) => c.size(),
            Verdict::Deny(d) => d.size(),
        }
    }
}

impl UpdateVerdict {
    pub(crate) fn size(&self) -> u64 {
        match self {
            UpdateVerdict::Accept => 0,
            UpdateVerdict::Rewrite(c) => c.size(),
            UpdateVerdict::Reject(d) => d.size(),
        }
    }
}

impl MessageReply {
    pub(crate) fn size(&self) -> u64 {
        self.reply.len() as u64 + self.changes.size()
    }
}

pub(crate) fn client_size(c: &ClientInfo) -> usize {
    [&c.remote_addr, &c.user_agent, &c.device]
        .iter()
        .map(|o| o.as_ref().map_or(0, String::len))
        .sum()
}

/// Bytes of a summary as the host sends it: its annotations travel as
/// compact JSON text.
pub(crate) fn summary_size(s: &SessionSummary) -> usize {
    summary_bytes(&s.id, &s.roles, &s.client, json_len(&s.annotations))
}

fn summary_bytes(id: &str, roles: &[String], client: &ClientInfo, annotations: usize) -> usize {
    id.len() + roles.iter().map(String::len).sum::<usize>() + client_size(client) + annotations + 24
}

/// The length of `m` as compact JSON text, counted without building it.
fn json_len(m: &Map<String, Value>) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // A map of JSON values always serializes.
    let _ = serde_json::to_writer(&mut count, m);
    count.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::SessionRecord;

    #[test]
    fn hooks_sort_and_name_in_wit_order() {
        let d = Description::new(
            "p".into(),
            "1".into(),
            vec![Hook::ListActive, Hook::SessionStart, Hook::ListActive],
        );
        assert_eq!(d.hooks, ["on-session-start", "on-list-active"]);
        assert!(d.implements(Hook::ListActive) && !d.implements(Hook::Event));
    }

    #[test]
    fn changes_documents_are_checked_when_parsed() {
        assert_eq!(Changes::none().parse().unwrap(), ChangeSet::default());
        let c = Changes::from_json(&serde_json::json!({
            "data_patch": {"a": 1}, "roles": ["r"], "state": {"n": 2},
            "ttl_seconds": 60, "end": "logout"
        }));
        let set = c.parse().unwrap();
        assert_eq!(set.end, Some(EndReason::Logout));
        assert_eq!(set.ttl_seconds, Some(60));
        assert_eq!(set.roles.as_deref(), Some(&["r".to_string()][..]));
        let bad = |v: Value| Changes::from_json(&v).parse().unwrap_err();
        assert_eq!(
            bad(serde_json::json!({"state": [1]})),
            "state must be a JSON object"
        );
        assert!(bad(serde_json::json!({"end": "expired"})).starts_with("end must be"));
        assert!(bad(serde_json::json!({"data-patch": {}})).contains("unknown field"));
        assert_eq!(
            Changes::proposal(Some(&serde_json::json!({"k": 1})), None).to_json(),
            serde_json::json!({"data_patch": {"k": 1}})
        );
    }

    #[test]
    fn a_summary_counts_its_annotations_as_json_text() {
        let mut s = SessionRecord {
            token_hash: String::new(),
            public_id: "id".into(),
            tenant: "t".into(),
            user: None,
            roles: vec!["r".into()],
            created_at: 0,
            last_seen_at: 0,
            absolute_expires_at: 0,
            idle_timeout_ms: 0,
            version: 1,
            client: ClientInfo {
                device: Some("dev".into()),
                ..ClientInfo::default()
            },
            data: Map::new(),
            plugin_state: Default::default(),
            idle_warned_at: None,
        }
        .summary();
        assert_eq!(summary_size(&s), 2 + 1 + 3 + 2 + 24);
        s.annotations
            .insert("k".into(), serde_json::json!([1, "x"]));
        let text = Value::Object(s.annotations.clone()).to_string();
        assert_eq!(summary_size(&s), 2 + 1 + 3 + text.len() + 24);
    }
}
