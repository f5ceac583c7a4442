//! The values that cross between the host and a plugin, as idiomatic Rust,
//! and the JSON helpers the crate shares. The session has its own module
//! (`session`), and so do the answers of hooks (`changes`).
//!
//! The WIT contract carries JSON as text or bytes; these types parse it
//! into [`serde_json::Value`] on the way in and serialize it on the way out,
//! so plugins only ever see typed values.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::wit::sessiond::plugin::types as wit;
use crate::{Changes, Error, Result};

/// Milliseconds since the Unix epoch, UTC.
pub type Timestamp = u64;

// ---------------------------------------------------------------------------
// JSON helpers shared by the whole crate.

/// Parses JSON text that the host sent.
pub(crate) fn parse_json(what: &str, text: &str) -> Result<Value> {
    serde_json::from_str(text)
        .map_err(|error| Error::new(format!("the host sent invalid JSON for {what}: {error}")))
}

/// Serializes a plugin value into a JSON value.
pub(crate) fn to_value<T: Serialize + ?Sized>(what: &str, value: &T) -> Result<Value> {
    serde_json::to_value(value)
        .map_err(|error| Error::new(format!("{what} cannot be serialized to JSON: {error}")))
}

/// Serializes a plugin value into a JSON value that must be an object.
pub(crate) fn to_object<T: Serialize + ?Sized>(what: &str, value: &T) -> Result<Value> {
    let value = to_value(what, value)?;
    if value.is_object() {
        Ok(value)
    } else {
        Err(Error::new(format!(
            "{what} must be a JSON object, not {}",
            kind_of(&value)
        )))
    }
}

/// Deserializes a JSON value into the plugin's type.
pub(crate) fn from_value<T: DeserializeOwned>(what: &str, value: &Value) -> Result<T> {
    T::deserialize(value)
        .map_err(|error| Error::new(format!("{what} does not have the expected shape: {error}")))
}

/// Serializes a JSON value to text for the host.
pub(crate) fn to_text(value: &Value) -> String {
    // Serializing a `Value` to a string cannot fail: its map keys are strings.
    value.to_string()
}

/// "an array", "a string", ... for error messages.
pub(crate) fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

pub(crate) fn empty_object() -> Value {
    Value::Object(Map::new())
}

pub(crate) fn is_empty_object(value: &Value) -> bool {
    value.as_object().is_some_and(Map::is_empty)
}

/// Reads `key` of a JSON object as a `T`; `None` when absent or null.
pub(crate) fn field<T: DeserializeOwned>(
    what: &str,
    object: &Value,
    key: &str,
) -> Result<Option<T>> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => from_value(&format!("{what} field `{key}`"), value).map(Some),
    }
}

// ---------------------------------------------------------------------------

/// What the host knows about the client that created a session.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientInfo {
    /// The client's address, after the host resolved trusted proxies.
    pub remote_addr: Option<String>,
    /// The `User-Agent` the client sent.
    pub user_agent: Option<String>,
    /// A device class given by the caller, such as `"mobile"` or `"desktop"`.
    pub device: Option<String>,
}

impl ClientInfo {
    pub(crate) fn from_wit(client: wit::ClientInfo) -> Self {
        ClientInfo {
            remote_addr: client.remote_addr,
            user_agent: client.user_agent,
            device: client.device,
        }
    }

    pub(crate) fn into_wit(self) -> wit::ClientInfo {
        wit::ClientInfo {
            remote_addr: self.remote_addr,
            user_agent: self.user_agent,
            device: self.device,
        }
    }
}

/// Why a session ended. Serializes (and displays) as the WIT name, e.g.
/// `"idle-timeout"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EndReason {
    /// The REST consumer ended it.
    Logout,
    /// Its absolute lifetime ran out.
    Expired,
    /// It was not used for longer than the idle timeout.
    IdleTimeout,
    /// It was ended by an operator or by ending all of a user's sessions.
    Revoked,
    /// The user reached the tenant's session limit and this, the least
    /// recently used session, made room for a new one.
    Evicted,
}

impl EndReason {
    /// The WIT name: `"logout"`, `"expired"`, `"idle-timeout"`, `"revoked"`
    /// or `"evicted"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            EndReason::Logout => "logout",
            EndReason::Expired => "expired",
            EndReason::IdleTimeout => "idle-timeout",
            EndReason::Revoked => "revoked",
            EndReason::Evicted => "evicted",
        }
    }

    pub(crate) fn from_wit(reason: wit::EndReason) -> Self {
        match reason {
            wit::EndReason::Logout => EndReason::Logout,
            wit::EndReason::Expired => EndReason::Expired,
            wit::EndReason::IdleTimeout => EndReason::IdleTimeout,
            wit::EndReason::Revoked => EndReason::Revoked,
            wit::EndReason::Evicted => EndReason::Evicted,
        }
    }
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Details of a session's end, passed to `on_session_end`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndInfo {
    /// Why the session ended.
    pub reason: EndReason,
    /// A unique id for this end. The hook runs once per session, but after a
    /// host crash it may run again elsewhere with the same end id: use it to
    /// make side effects idempotent.
    pub end_id: String,
    /// When the session ended.
    pub ended_at: Timestamp,
}

impl EndInfo {
    pub(crate) fn from_wit(end: wit::EndInfo) -> Self {
        EndInfo {
            reason: EndReason::from_wit(end.reason),
            end_id: end.end_id,
            ended_at: end.ended_at,
        }
    }
}

/// A session in a listing of a user's active sessions: what
/// [`sessions::list_active`](crate::sessions::list_active) returns and what
/// `on_list_active` filters, reorders or annotates.
///
/// ```
/// use sessiond_sdk::SessionSummary;
///
/// let mut summary = SessionSummary::new("s-1");
/// summary.annotate("trusted", &true).unwrap();
/// assert_eq!(summary.annotation::<bool>("trusted").unwrap(), Some(true));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct SessionSummary {
    /// The public id of the session.
    pub id: String,
    /// The user's roles in that session.
    pub roles: Vec<String>,
    /// When the session was created.
    pub created_at: Timestamp,
    /// When it was last used.
    pub last_seen_at: Timestamp,
    /// When it ends at the latest.
    pub expires_at: Timestamp,
    /// Where it came from.
    pub client: ClientInfo,
    annotations: Value,
}

impl SessionSummary {
    /// A summary with this id, zero times and no annotations (for tests).
    pub fn new(id: impl Into<String>) -> Self {
        SessionSummary {
            id: id.into(),
            roles: Vec::new(),
            created_at: 0,
            last_seen_at: 0,
            expires_at: 0,
            client: ClientInfo::default(),
            annotations: empty_object(),
        }
    }

    /// All annotations (a JSON object), deserialized as a `T`.
    pub fn annotations<T: DeserializeOwned>(&self) -> Result<T> {
        from_value("the annotations", &self.annotations)
    }

    /// One annotation deserialized as a `T`; `Ok(None)` if absent or null.
    pub fn annotation<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        field("the annotations", &self.annotations, key)
    }

    /// The annotations, as raw JSON (an object, `{}` if none).
    pub fn annotations_value(&self) -> &Value {
        &self.annotations
    }

    /// Sets one annotation.
    pub fn annotate<T: Serialize + ?Sized>(
        &mut self,
        key: impl Into<String>,
        value: &T,
    ) -> Result<()> {
        let key = key.into();
        let value = to_value(&format!("the annotation `{key}`"), value)?;
        if let Value::Object(map) = &mut self.annotations {
            map.insert(key, value);
        } else {
            self.annotations = Value::Object(Map::from_iter([(key, value)]));
        }
        Ok(())
    }

    /// Replaces all annotations; `annotations` must serialize to a JSON
    /// object.
    pub fn set_annotations<T: Serialize + ?Sized>(&mut self, annotations: &T) -> Result<()> {
        self.annotations = to_object("the annotations", annotations)?;
        Ok(())
    }

    pub(crate) fn from_wit(summary: wit::SessionSummary) -> Result<Self> {
        Ok(SessionSummary {
            annotations: parse_json("the annotations", &summary.annotations)?,
            id: summary.id,
            roles: summary.roles,
            created_at: summary.created_at,
            last_seen_at: summary.last_seen_at,
            expires_at: summary.expires_at,
            client: ClientInfo::from_wit(summary.client),
        })
    }

    pub(crate) fn into_wit(self) -> wit::SessionSummary {
        wit::SessionSummary {
            annotations: to_text(&self.annotations),
            id: self.id,
            roles: self.roles,
            created_at: self.created_at,
            last_seen_at: self.last_seen_at,
            expires_at: self.expires_at,
            client: self.client.into_wit(),
        }
    }
}

/// The reply of a message handler (`on_message`): a JSON value for the
/// caller, and changes to the session.
///
/// ```
/// use sessiond_sdk::{Changes, MessageReply};
/// use sessiond_sdk::serde_json::json;
///
/// let reply = MessageReply::new(&json!({"ok": true}))
///     .unwrap()
///     .with_changes(Changes::new().data_set("pinged", &true));
/// assert_eq!(reply.reply, json!({"ok": true}));
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MessageReply {
    /// The JSON value returned to the caller.
    pub reply: Value,
    /// Changes to apply to the session.
    pub changes: Changes,
}

impl MessageReply {
    /// A reply of `reply` serialized to JSON, with no changes.
    pub fn new<T: Serialize + ?Sized>(reply: &T) -> Result<Self> {
        Ok(MessageReply::from_value(to_value(
            "the message reply",
            reply,
        )?))
    }

    /// A reply of this raw JSON value, with no changes.
    pub fn from_value(reply: Value) -> Self {
        MessageReply {
            reply,
            changes: Changes::new(),
        }
    }

    /// This reply, also applying `changes` to the session.
    pub fn with_changes(mut self, changes: Changes) -> Self {
        self.changes = changes;
        self
    }

    pub(crate) fn into_wit(self) -> Result<wit::MessageReply> {
        Ok(wit::MessageReply {
            reply: to_text(&self.reply),
            changes: self.changes.into_wit()?,
        })
    }
}

/// A hook a plugin can implement; list the ones you implement in
/// [`Plugin::HOOKS`](crate::Plugin::HOOKS).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Hook {
    /// [`Plugin::on_session_start`](crate::Plugin::on_session_start)
    SessionStart,
    /// [`Plugin::on_session_update`](crate::Plugin::on_session_update)
    SessionUpdate,
    /// [`Plugin::on_session_end`](crate::Plugin::on_session_end)
    SessionEnd,
    /// [`Plugin::on_event`](crate::Plugin::on_event)
    Event,
    /// [`Plugin::on_message`](crate::Plugin::on_message)
    Message,
    /// [`Plugin::on_list_active`](crate::Plugin::on_list_active)
    ListActive,
}

impl Hook {
    /// Every hook, in WIT order.
    pub const ALL: [Hook; 6] = [
        Hook::SessionStart,
        Hook::SessionUpdate,
        Hook::SessionEnd,
        Hook::Event,
        Hook::Message,
        Hook::ListActive,
    ];

    /// The WIT name of the hook's function, e.g. `"on-session-start"`.
    pub const fn function_name(self) -> &'static str {
        match self {
            Hook::SessionStart => "on-session-start",
            Hook::SessionUpdate => "on-session-update",
            Hook::SessionEnd => "on-session-end",
            Hook::Event => "on-event",
            Hook::Message => "on-message",
            Hook::ListActive => "on-list-active",
        }
    }

    pub(crate) fn into_wit(self) -> wit::Hook {
        match self {
            Hook::SessionStart => wit::Hook::SessionStart,
            Hook::SessionUpdate => wit::Hook::SessionUpdate,
            Hook::SessionEnd => wit::Hook::SessionEnd,
            Hook::Event => wit::Hook::Event,
            Hook::Message => wit::Hook::Message,
            Hook::ListActive => wit::Hook::ListActive,
        }
    }
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.function_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn end_reason_names() {
        assert_eq!(
            EndReason::from_wit(wit::EndReason::IdleTimeout),
            EndReason::IdleTimeout
        );
        assert_eq!(EndReason::IdleTimeout.to_string(), "idle-timeout");
        assert_eq!(
            serde_json::to_value(EndReason::Evicted).unwrap(),
            json!("evicted")
        );
        let end = EndInfo::from_wit(wit::EndInfo {
            reason: wit::EndReason::Logout,
            end_id: "e".into(),
            ended_at: 9,
        });
        assert_eq!(end.reason, EndReason::Logout);
    }

    #[test]
    fn summaries_round_trip() {
        let summary = SessionSummary::from_wit(wit::SessionSummary {
            id: "s".into(),
            roles: vec![],
            created_at: 1,
            last_seen_at: 2,
            expires_at: 3,
            client: wit::ClientInfo {
                remote_addr: None,
                user_agent: Some("curl".into()),
                device: None,
            },
            annotations: r#"{"k":"v"}"#.into(),
        })
        .unwrap();
        let mut summary = summary;
        summary.annotate("n", &1).unwrap();
        assert_eq!(
            summary.annotation::<String>("k").unwrap().as_deref(),
            Some("v")
        );
        assert!(summary.set_annotations(&"x").is_err());
        let wit = summary.into_wit();
        assert_eq!(wit.annotations, r#"{"k":"v","n":1}"#);
        assert_eq!(wit.client.user_agent.as_deref(), Some("curl"));
    }

    #[test]
    fn hooks_have_wit_names() {
        assert_eq!(Hook::ALL.len(), 6);
        assert_eq!(Hook::ListActive.to_string(), "on-list-active");
    }

    #[test]
    fn message_reply_converts() {
        let reply = MessageReply::new("pong").unwrap().into_wit().unwrap();
        assert_eq!(reply.reply, r#""pong""#);
        assert!(reply.changes.is_none());
        let bad = MessageReply::default()
            .with_changes(Changes::new().data_patch(&1))
            .into_wit();
        assert!(bad.is_err());
    }
}
