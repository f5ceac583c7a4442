//! The values that cross between the host and a plugin, as idiomatic Rust.
//!
//! The WIT contract carries every JSON value as text; these types parse it
//! into [`serde_json::Value`] on the way in and serialize it on the way out,
//! so plugins only ever see typed values.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::wit::sessiond::plugin::types as wit;
use crate::{Error, Result};

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

fn empty_object() -> Value {
    Value::Object(Map::new())
}

fn is_empty_object(value: &Value) -> bool {
    value.as_object().is_some_and(Map::is_empty)
}

/// Reads `key` of a JSON object as a `T`; `None` when absent or null.
fn field<T: DeserializeOwned>(what: &str, object: &Value, key: &str) -> Result<Option<T>> {
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

/// A session as this plugin sees it.
///
/// It never holds the secret token that REST consumers use: [`Session::id`]
/// is a public identifier that stays the same for the session's whole life.
///
/// The shared data and this plugin's private state are JSON objects; read
/// them typed with [`Session::data`] and [`Session::state`], or raw with
/// [`Session::data_value`] and [`Session::state_value`]. To change them,
/// return [`Changes`] from the hook.
///
/// ```
/// use serde::Deserialize;
/// use sessiond_sdk::Session;
/// use sessiond_sdk::serde_json::json;
///
/// #[derive(Deserialize)]
/// struct Data {
///     theme: String,
/// }
///
/// let session = Session::new("s-1", "acme").with_data(json!({"theme": "dark"}));
/// assert_eq!(session.data::<Data>().unwrap().theme, "dark");
/// assert_eq!(session.data_field::<String>("theme").unwrap().as_deref(), Some("dark"));
/// assert!(session.data_field::<String>("missing").unwrap().is_none());
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Session {
    /// The public id of the session.
    pub id: String,
    /// The tenant that owns the session.
    pub tenant: String,
    /// The authenticated user, or `None` for an anonymous session.
    pub user: Option<String>,
    /// The user's roles.
    pub roles: Vec<String>,
    /// When the session was created.
    pub created_at: Timestamp,
    /// When the session was last used (created, updated or touched).
    pub last_seen_at: Timestamp,
    /// When the session ends at the latest: the earlier of its absolute
    /// lifetime and its idle deadline.
    pub expires_at: Timestamp,
    /// Incremented by every change to the session.
    pub version: u64,
    /// Where the session came from.
    pub client: ClientInfo,
    // Kept as the JSON text the host sent and parsed on first use: most
    // hooks never read the data or the state, and parsing is the most
    // expensive part of receiving a session.
    data: LazyJson,
    state: LazyJson,
}

/// JSON text parsed at most once, when first read.
#[derive(Debug, Clone)]
struct LazyJson {
    text: String,
    value: std::cell::OnceCell<std::result::Result<Value, String>>,
}

impl LazyJson {
    fn text(text: String) -> Self {
        LazyJson {
            text,
            value: std::cell::OnceCell::new(),
        }
    }

    fn value(value: Value) -> Self {
        let cell = std::cell::OnceCell::new();
        let text = value.to_string();
        let _ = cell.set(Ok(value));
        LazyJson { text, value: cell }
    }

    /// The parsed value, or the parse error naming `what`.
    fn get(&self, what: &str) -> Result<&Value> {
        self.value
            .get_or_init(|| serde_json::from_str(&self.text).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|error| Error::new(format!("the host sent invalid JSON for {what}: {error}")))
    }

    /// Deserializes straight from the text, without an intermediate `Value`.
    fn parse<T: DeserializeOwned>(&self, what: &str) -> Result<T> {
        if let Some(Ok(value)) = self.value.get() {
            return from_value(what, value);
        }
        match serde_json::from_str(&self.text) {
            Ok(v) => Ok(v),
            Err(_) => from_value(what, self.get(what)?),
        }
    }

    fn is_empty_object(&self) -> bool {
        let t = self.text.trim();
        t == "{}" || self.get("").map(is_empty_object).unwrap_or(false)
    }
}

impl PartialEq for LazyJson {
    fn eq(&self, other: &Self) -> bool {
        match (self.get(""), other.get("")) {
            (Ok(a), Ok(b)) => a == b,
            _ => self.text == other.text,
        }
    }
}

static NULL: Value = Value::Null;

impl Session {
    /// A session with this id and tenant, no user, no roles, zero times and
    /// empty data and state. The host builds the real ones; this is for
    /// testing hooks natively.
    pub fn new(id: impl Into<String>, tenant: impl Into<String>) -> Self {
        Session {
            id: id.into(),
            tenant: tenant.into(),
            user: None,
            roles: Vec::new(),
            created_at: 0,
            last_seen_at: 0,
            expires_at: 0,
            version: 0,
            client: ClientInfo::default(),
            data: LazyJson::value(empty_object()),
            state: LazyJson::value(empty_object()),
        }
    }

    /// This session with `user` as its user (for tests).
    pub fn with_user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// This session with `data` as its shared data (for tests).
    pub fn with_data(mut self, data: Value) -> Self {
        self.data = LazyJson::value(data);
        self
    }

    /// This session with `state` as this plugin's state (for tests).
    pub fn with_state(mut self, state: Value) -> Self {
        self.state = LazyJson::value(state);
        self
    }

    /// Whether the session has no user yet.
    pub fn is_anonymous(&self) -> bool {
        self.user.is_none()
    }

    /// The shared data (a JSON object), deserialized as a `T`. The error
    /// says what did not match.
    pub fn data<T: DeserializeOwned>(&self) -> Result<T> {
        self.data.parse("the session data")
    }

    /// One key of the shared data, deserialized as a `T`; `Ok(None)` if the
    /// key is absent or null.
    pub fn data_field<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        field("the session data", self.data.get("the session data")?, key)
    }

    /// The shared data, as raw JSON (an object; `null` in the impossible
    /// case that the host sent invalid JSON, which [`Session::data`] reports).
    pub fn data_value(&self) -> &Value {
        self.data.get("the session data").unwrap_or(&NULL)
    }

    /// This plugin's private state for the session, deserialized as a `T`.
    ///
    /// The state is `{}` until the plugin first sets it (with
    /// [`Changes::state`]): use [`Session::state_or_default`] when the hook
    /// may run before that.
    pub fn state<T: DeserializeOwned>(&self) -> Result<T> {
        self.state.parse("the plugin state")
    }

    /// Like [`Session::state`], but `T::default()` while the state is still
    /// the initial `{}`.
    pub fn state_or_default<T: DeserializeOwned + Default>(&self) -> Result<T> {
        if self.has_state() {
            self.state()
        } else {
            Ok(T::default())
        }
    }

    /// Whether this plugin has set its state for this session (it is not the
    /// initial empty object).
    pub fn has_state(&self) -> bool {
        !self.state.is_empty_object()
    }

    /// This plugin's private state, as raw JSON (an object; `null` if the
    /// host sent invalid JSON, which [`Session::state`] reports).
    pub fn state_value(&self) -> &Value {
        self.state.get("the plugin state").unwrap_or(&NULL)
    }

    pub(crate) fn from_wit(session: wit::Session) -> Result<Self> {
        Ok(Session {
            data: LazyJson::text(session.data),
            state: LazyJson::text(session.state),
            id: session.id,
            tenant: session.tenant,
            user: session.user,
            roles: session.roles,
            created_at: session.created_at,
            last_seen_at: session.last_seen_at,
            expires_at: session.expires_at,
            version: session.version,
            client: ClientInfo::from_wit(session.client),
        })
    }
}

/// Changes a hook asks the host to make to the session. Every part left
/// unset leaves that part of the session as it is.
///
/// Build it by chaining: values are serialized with serde as they are set.
/// A value that cannot be serialized, or that is not a JSON object where an
/// object is required, does not panic: the builder keeps the first such
/// problem and the hook then fails with it as its error (see
/// [`Changes::validate`]).
///
/// ```
/// use sessiond_sdk::Changes;
/// use sessiond_sdk::serde_json::json;
///
/// let changes = Changes::new()
///     .data_patch(&json!({"theme": "dark", "banner": null}))
///     .data_set("visits", &3)
///     .state(&json!({"seen": true}))
///     .roles(["user", "admin"])
///     .ttl_seconds(3600);
/// assert_eq!(
///     changes.data_patch,
///     Some(json!({"theme": "dark", "banner": null, "visits": 3}))
/// );
/// assert!(changes.validate().is_ok());
///
/// let bad = Changes::new().state(&42);
/// assert_eq!(
///     bad.validate().unwrap_err().message(),
///     "the plugin state must be a JSON object, not a number"
/// );
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Changes {
    /// A JSON merge patch (RFC 7386, an object) for the shared data: keys
    /// set to a value are written, keys set to null are removed.
    pub data_patch: Option<Value>,
    /// The session's new roles, replacing the old ones.
    pub roles: Option<Vec<String>>,
    /// This plugin's new private state (an object), replacing the old one.
    pub state: Option<Value>,
    /// The remaining absolute lifetime, in seconds from now. The host caps
    /// it at the tenant's maximum lifetime.
    pub ttl_seconds: Option<u32>,
    error: Option<String>,
}

impl Changes {
    /// No changes.
    pub const fn new() -> Self {
        Changes {
            data_patch: None,
            roles: None,
            state: None,
            ttl_seconds: None,
            error: None,
        }
    }

    fn fail(mut self, error: Error) -> Self {
        if self.error.is_none() {
            self.error = Some(error.message().to_owned());
        }
        self
    }

    fn merge_patch(mut self, key: String, value: Value) -> Self {
        let patch = self.data_patch.get_or_insert_with(empty_object);
        if let Value::Object(map) = patch {
            map.insert(key, value);
        }
        self
    }

    /// Merges `patch` (which must serialize to a JSON object) into the data
    /// patch: its top-level keys are added to the patch, replacing keys set
    /// earlier. A key set to null removes that key from the shared data.
    pub fn data_patch<T: Serialize + ?Sized>(self, patch: &T) -> Self {
        match to_object("the data patch", patch) {
            Ok(Value::Object(map)) => map.into_iter().fold(self, |changes, (key, value)| {
                changes.merge_patch(key, value)
            }),
            Ok(_) => unreachable!("to_object returns objects"),
            Err(error) => self.fail(error),
        }
    }

    /// Sets one key of the shared data to `value`.
    pub fn data_set<T: Serialize + ?Sized>(self, key: impl Into<String>, value: &T) -> Self {
        let key = key.into();
        match to_value(&format!("the data value for `{key}`"), value) {
            Ok(value) => self.merge_patch(key, value),
            Err(error) => self.fail(error),
        }
    }

    /// Removes one key from the shared data (sets it to null in the patch).
    pub fn data_remove(self, key: impl Into<String>) -> Self {
        self.merge_patch(key.into(), Value::Null)
    }

    /// Replaces this plugin's private state with `state`, which must
    /// serialize to a JSON object.
    pub fn state<T: Serialize + ?Sized>(mut self, state: &T) -> Self {
        match to_object("the plugin state", state) {
            Ok(value) => {
                self.state = Some(value);
                self
            }
            Err(error) => self.fail(error),
        }
    }

    /// Replaces the session's roles.
    pub fn roles<I, S>(mut self, roles: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.roles = Some(roles.into_iter().map(Into::into).collect());
        self
    }

    /// Sets the remaining absolute lifetime, in seconds from now.
    pub fn ttl_seconds(mut self, seconds: u32) -> Self {
        self.ttl_seconds = Some(seconds);
        self
    }

    /// Whether nothing would change.
    pub fn is_empty(&self) -> bool {
        self.data_patch.is_none()
            && self.roles.is_none()
            && self.state.is_none()
            && self.ttl_seconds.is_none()
    }

    /// The data patch deserialized as a `T`, e.g. to inspect what a REST
    /// consumer proposes in `on_session_update`; `Ok(None)` if there is none.
    pub fn data_patch_as<T: DeserializeOwned>(&self) -> Result<Option<T>> {
        self.data_patch
            .as_ref()
            .map(|patch| from_value("the data patch", patch))
            .transpose()
    }

    /// The first problem met while building, if any: a value that did not
    /// serialize, or a data patch or state that is not a JSON object. A hook
    /// that returns these changes fails with this error.
    pub fn validate(&self) -> Result<()> {
        match &self.error {
            Some(message) => Err(Error::new(message.clone())),
            None => Ok(()),
        }
    }

    pub(crate) fn into_wit(self) -> Result<wit::Changes> {
        self.validate()?;
        Ok(wit::Changes {
            data_patch: self.data_patch.as_ref().map(to_text),
            roles: self.roles,
            state: self.state.as_ref().map(to_text),
            ttl_seconds: self.ttl_seconds,
        })
    }

    pub(crate) fn from_wit(changes: wit::Changes) -> Result<Self> {
        Ok(Changes {
            data_patch: changes
                .data_patch
                .map(|text| parse_json("the data patch", &text))
                .transpose()?,
            roles: changes.roles,
            state: changes
                .state
                .map(|text| parse_json("the plugin state", &text))
                .transpose()?,
            ttl_seconds: changes.ttl_seconds,
            error: None,
        })
    }
}

/// The answer of a hook that may veto: `on_session_start` and `on_event`.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Go on, applying these changes (empty: change nothing).
    Allow(Changes),
    /// Refuse, with a message for the caller. Later plugins do not run.
    Deny(String),
}

impl Verdict {
    /// Go on, applying `changes`.
    pub fn allow(changes: Changes) -> Self {
        Verdict::Allow(changes)
    }

    /// Go on without changing anything.
    pub const fn allow_unchanged() -> Self {
        Verdict::Allow(Changes::new())
    }

    /// Refuse, with `message` for the caller.
    pub fn deny(message: impl Into<String>) -> Self {
        Verdict::Deny(message.into())
    }

    /// Whether this verdict refuses.
    pub fn is_deny(&self) -> bool {
        matches!(self, Verdict::Deny(_))
    }

    pub(crate) fn into_wit(self) -> Result<wit::Verdict> {
        Ok(match self {
            Verdict::Allow(changes) => wit::Verdict::Allow(changes.into_wit()?),
            Verdict::Deny(message) => wit::Verdict::Deny(message),
        })
    }
}

impl Default for Verdict {
    /// [`Verdict::allow_unchanged`].
    fn default() -> Self {
        Verdict::allow_unchanged()
    }
}

/// The answer of `on_session_update`.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum UpdateVerdict {
    /// Let the proposed change through as it is.
    #[default]
    Accept,
    /// Apply these changes instead of the proposed ones.
    Rewrite(Changes),
    /// Refuse the change, with a message for the caller.
    Reject(String),
}

impl UpdateVerdict {
    /// Let the proposed change through as it is.
    pub const fn accept() -> Self {
        UpdateVerdict::Accept
    }

    /// Apply `changes` instead of the proposed ones.
    pub fn rewrite(changes: Changes) -> Self {
        UpdateVerdict::Rewrite(changes)
    }

    /// Refuse the change, with `message` for the caller.
    pub fn reject(message: impl Into<String>) -> Self {
        UpdateVerdict::Reject(message.into())
    }

    pub(crate) fn into_wit(self) -> Result<wit::UpdateVerdict> {
        Ok(match self {
            UpdateVerdict::Accept => wit::UpdateVerdict::Accept,
            UpdateVerdict::Rewrite(changes) => wit::UpdateVerdict::Rewrite(changes.into_wit()?),
            UpdateVerdict::Reject(message) => wit::UpdateVerdict::Reject(message),
        })
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

    fn wit_session(data: &str, state: &str) -> wit::Session {
        wit::Session {
            id: "s-1".into(),
            tenant: "acme".into(),
            user: Some("alice".into()),
            roles: vec!["user".into()],
            created_at: 1_000,
            last_seen_at: 2_000,
            expires_at: 3_000,
            version: 4,
            client: wit::ClientInfo {
                remote_addr: Some("10.0.0.1".into()),
                user_agent: None,
                device: Some("mobile".into()),
            },
            data: data.into(),
            state: state.into(),
        }
    }

    #[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
    struct Counter {
        events: u32,
    }

    #[test]
    fn session_from_wit_parses_json() {
        let session = Session::from_wit(wit_session(r#"{"a":1}"#, "{}")).unwrap();
        assert_eq!(session.user.as_deref(), Some("alice"));
        assert_eq!(session.client.device.as_deref(), Some("mobile"));
        assert_eq!(session.data_value(), &json!({"a": 1}));
        assert_eq!(session.data_field::<u32>("a").unwrap(), Some(1));
        assert!(!session.has_state());
        assert_eq!(
            session.state_or_default::<Counter>().unwrap(),
            Counter::default()
        );
        assert!(session.state::<Counter>().is_err());
    }

    #[test]
    fn session_from_wit_reports_bad_json_when_read() {
        let session = Session::from_wit(wit_session("{", "{}")).unwrap();
        assert!(!session.has_state());
        let error = session.data::<Value>().unwrap_err();
        assert!(
            error
                .message()
                .starts_with("the host sent invalid JSON for the session data"),
            "{error}"
        );
    }

    #[test]
    fn typed_errors_are_clear() {
        let session = Session::new("s", "t").with_state(json!({"events": "many"}));
        let error = session.state::<Counter>().unwrap_err();
        assert!(
            error
                .message()
                .starts_with("the plugin state does not have the expected shape: invalid type"),
            "{error}"
        );
        let error = session
            .with_data(json!({"n": "x"}))
            .data_field::<u32>("n")
            .unwrap_err();
        assert!(
            error
                .message()
                .starts_with("the session data field `n` does not have"),
            "{error}"
        );
    }

    #[test]
    fn changes_builder_merges_patches() {
        let changes = Changes::new()
            .data_patch(&json!({"a": 1, "b": 2}))
            .data_patch(&json!({"b": 3}))
            .data_remove("c")
            .data_set("d", "text");
        assert_eq!(
            changes.data_patch,
            Some(json!({"a": 1, "b": 3, "c": null, "d": "text"}))
        );
        assert!(!changes.is_empty());
        assert!(Changes::new().is_empty());
    }

    #[test]
    fn changes_builder_keeps_first_error() {
        let changes = Changes::new()
            .data_patch(&[1, 2])
            .state(&"no")
            .state(&Counter { events: 1 });
        assert_eq!(
            changes.validate().unwrap_err().message(),
            "the data patch must be a JSON object, not an array"
        );
        assert_eq!(changes.state, Some(json!({"events": 1})));
        assert!(changes.into_wit().is_err());
    }

    #[test]
    fn changes_round_trip_through_wit() {
        let changes = Changes::new()
            .data_set("x", &json!([1, 2]))
            .state(&Counter { events: 2 })
            .roles(["a", "b"])
            .ttl_seconds(60);
        let wit = changes.clone().into_wit().unwrap();
        assert_eq!(wit.data_patch.as_deref(), Some(r#"{"x":[1,2]}"#));
        assert_eq!(wit.state.as_deref(), Some(r#"{"events":2}"#));
        assert_eq!(wit.roles, Some(vec!["a".to_owned(), "b".to_owned()]));
        assert_eq!(wit.ttl_seconds, Some(60));
        let back = Changes::from_wit(wit).unwrap();
        assert_eq!(back, changes);
        assert_eq!(
            back.data_patch_as::<serde_json::Map<String, Value>>()
                .unwrap()
                .unwrap()
                .len(),
            1
        );
        let empty = Changes::new().into_wit().unwrap();
        assert!(empty.data_patch.is_none() && empty.roles.is_none() && empty.state.is_none());
    }

    #[test]
    fn verdicts_convert() {
        assert!(matches!(
            Verdict::deny("no").into_wit().unwrap(),
            wit::Verdict::Deny(message) if message == "no"
        ));
        assert!(matches!(
            Verdict::default().into_wit().unwrap(),
            wit::Verdict::Allow(wit::Changes {
                data_patch: None,
                ..
            })
        ));
        assert!(Verdict::allow(Changes::new().state(&1)).into_wit().is_err());
        assert!(matches!(
            UpdateVerdict::reject("r").into_wit().unwrap(),
            wit::UpdateVerdict::Reject(_)
        ));
        assert!(matches!(
            UpdateVerdict::default().into_wit().unwrap(),
            wit::UpdateVerdict::Accept
        ));
        assert!(Verdict::deny("x").is_deny());
    }

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
    fn message_reply_converts() {
        let reply = MessageReply::new("pong").unwrap().into_wit().unwrap();
        assert_eq!(reply.reply, r#""pong""#);
        let bad = MessageReply::default()
            .with_changes(Changes::new().data_patch(&1))
            .into_wit();
        assert!(bad.is_err());
    }

    #[test]
    fn hooks_have_wit_names() {
        assert_eq!(Hook::ALL.len(), 6);
        assert_eq!(Hook::ListActive.to_string(), "on-list-active");
    }
}
