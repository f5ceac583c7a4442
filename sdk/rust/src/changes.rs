//! What a hook answers: [`Changes`] (sent to the host as one JSON object,
//! the WIT `changes`), [`Verdict`], [`UpdateVerdict`] and [`Denial`]
//! ([`MessageReply`](crate::MessageReply) carries changes too).

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::types::{empty_object, from_value, to_object, to_text, to_value};
use crate::wit::sessiond::plugin::types as wit;
use crate::{Error, Result};

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
    /// End the session with this reason once every plugin of the chain has
    /// allowed (the other changes are stored first, so that the end hooks
    /// see them). Not allowed in `on_session_start`.
    pub end: Option<EndRequest>,
    error: Option<String>,
}

/// The reasons a plugin may end a session for ([`Changes::end`]). The
/// session's end hooks then see them as [`EndReason::Logout`](crate::EndReason::Logout) and
/// [`EndReason::Revoked`](crate::EndReason::Revoked).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EndRequest {
    /// The user is done, as if the REST consumer had logged out.
    Logout,
    /// A policy withdraws the session.
    Revoked,
}

impl EndRequest {
    /// The name in the changes document: `"logout"` or `"revoked"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            EndRequest::Logout => "logout",
            EndRequest::Revoked => "revoked",
        }
    }
}

impl Changes {
    /// No changes.
    pub const fn new() -> Self {
        Changes {
            data_patch: None,
            roles: None,
            state: None,
            ttl_seconds: None,
            end: None,
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

    /// Ends the session with `reason` once every plugin of the chain has
    /// allowed; the session's end hooks then run once, as for any end.
    pub fn end(mut self, reason: EndRequest) -> Self {
        self.end = Some(reason);
        self
    }

    /// Whether nothing would change.
    pub fn is_empty(&self) -> bool {
        self.data_patch.is_none()
            && self.roles.is_none()
            && self.state.is_none()
            && self.ttl_seconds.is_none()
            && self.end.is_none()
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

    /// The changes document the host reads (the WIT `changes`), or `None`
    /// when nothing changes.
    pub(crate) fn into_wit(self) -> Result<Option<Vec<u8>>> {
        self.validate()?;
        if self.is_empty() {
            return Ok(None);
        }
        let mut doc = Map::new();
        if let Some(patch) = self.data_patch {
            doc.insert("data_patch".into(), patch);
        }
        if let Some(roles) = self.roles {
            doc.insert("roles".into(), Value::from(roles));
        }
        if let Some(state) = self.state {
            doc.insert("state".into(), state);
        }
        if let Some(ttl) = self.ttl_seconds {
            doc.insert("ttl_seconds".into(), Value::from(ttl));
        }
        if let Some(end) = self.end {
            doc.insert("end".into(), Value::from(end.as_str()));
        }
        // A map of JSON values always serializes.
        Ok(Some(serde_json::to_vec(&doc).unwrap_or_default()))
    }

    /// Changes from a changes document the host sent (the proposal of
    /// `on_session_update`).
    pub(crate) fn from_wit(doc: &[u8]) -> Result<Self> {
        let what = "the proposed changes";
        let value: Value = serde_json::from_slice(doc).map_err(|error| {
            Error::new(format!("the host sent invalid JSON for {what}: {error}"))
        })?;
        let member = |key: &str| value.get(key).filter(|v| !v.is_null()).cloned();
        Ok(Changes {
            data_patch: member("data_patch"),
            roles: member("roles")
                .map(|roles| from_value(&format!("{what} roles"), &roles))
                .transpose()?,
            state: member("state"),
            ttl_seconds: member("ttl_seconds")
                .map(|ttl| from_value(&format!("{what} ttl_seconds"), &ttl))
                .transpose()?,
            end: None,
            error: None,
        })
    }
}

/// A refusal: the message for the caller and, optionally, a new private
/// state for this plugin that the host stores even though it refuses the
/// request, so that a refused attempt can still be counted.
///
/// ```
/// use sessiond_sdk::{Denial, Verdict};
/// use sessiond_sdk::serde_json::json;
///
/// let verdict = Verdict::Deny(Denial::new("unauthorized").with_state(&json!({"refused": 1})));
/// assert!(verdict.is_deny());
/// assert_eq!(Denial::new("no").to_string(), "no");
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Denial {
    /// The message the caller gets.
    pub message: String,
    /// This plugin's new private state (a JSON object), stored although
    /// the request is refused. Ignored in `on_session_start`, where there
    /// is no session to hold it.
    pub state: Option<Value>,
    error: Option<String>,
}

impl Denial {
    /// A refusal with `message` and no state change.
    pub fn new(message: impl Into<String>) -> Self {
        Denial {
            message: message.into(),
            state: None,
            error: None,
        }
    }

    /// Also replaces this plugin's private state with `state`, which must
    /// serialize to a JSON object (otherwise the hook fails with that
    /// problem as its error).
    pub fn with_state<T: Serialize + ?Sized>(mut self, state: &T) -> Self {
        match to_object("the plugin state", state) {
            Ok(value) => self.state = Some(value),
            Err(error) => self.error = Some(error.message().to_owned()),
        }
        self
    }

    pub(crate) fn into_wit(self) -> Result<wit::Denial> {
        if let Some(message) = self.error {
            return Err(Error::new(message));
        }
        Ok(wit::Denial {
            message: self.message,
            state: self.state.as_ref().map(to_text),
        })
    }
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The answer of a hook that may veto: `on_session_start` and `on_event`.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Go on, applying these changes (empty: change nothing).
    Allow(Changes),
    /// Refuse, with a message for the caller (and maybe a state change for
    /// this plugin). Later plugins do not run.
    Deny(Denial),
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
        Verdict::Deny(Denial::new(message))
    }

    /// Refuse, with `message` for the caller, and still replace this
    /// plugin's private state with `state` (a JSON object): the host stores
    /// it although it refuses the request, e.g. to count refused attempts.
    pub fn deny_with_state<T: Serialize + ?Sized>(message: impl Into<String>, state: &T) -> Self {
        Verdict::Deny(Denial::new(message).with_state(state))
    }

    /// Whether this verdict refuses.
    pub fn is_deny(&self) -> bool {
        matches!(self, Verdict::Deny(_))
    }

    pub(crate) fn into_wit(self) -> Result<wit::Verdict> {
        Ok(match self {
            Verdict::Allow(changes) => match changes.into_wit()? {
                Some(doc) => wit::Verdict::Allow(doc),
                None => wit::Verdict::AllowUnchanged,
            },
            Verdict::Deny(denial) => wit::Verdict::Deny(denial.into_wit()?),
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
    /// Refuse the change, with a message for the caller (and maybe a state
    /// change for this plugin).
    Reject(Denial),
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
        UpdateVerdict::Reject(Denial::new(message))
    }

    pub(crate) fn into_wit(self) -> Result<wit::UpdateVerdict> {
        Ok(match self {
            UpdateVerdict::Accept => wit::UpdateVerdict::Accept,
            UpdateVerdict::Rewrite(changes) => {
                wit::UpdateVerdict::Rewrite(changes.into_wit()?.unwrap_or_else(|| b"{}".to_vec()))
            }
            UpdateVerdict::Reject(denial) => wit::UpdateVerdict::Reject(denial.into_wit()?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Debug, Default, PartialEq, Serialize)]
    struct Counter {
        events: u32,
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
        assert!(!Changes::new().end(EndRequest::Logout).is_empty());
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
    fn changes_become_one_json_document() {
        let changes = Changes::new()
            .data_set("x", &json!([1, 2]))
            .state(&Counter { events: 2 })
            .roles(["a", "b"])
            .ttl_seconds(60)
            .end(EndRequest::Revoked);
        let doc = changes.clone().into_wit().unwrap().unwrap();
        let value: Value = serde_json::from_slice(&doc).unwrap();
        assert_eq!(
            value,
            json!({"data_patch": {"x": [1, 2]}, "state": {"events": 2}, "roles": ["a", "b"],
                   "ttl_seconds": 60, "end": "revoked"})
        );
        assert_eq!(Changes::new().into_wit().unwrap(), None);
        let proposed = Changes::from_wit(br#"{"data_patch": {"k": 1}, "roles": ["r"]}"#).unwrap();
        assert_eq!(proposed.data_patch, Some(json!({"k": 1})));
        assert_eq!(proposed.roles, Some(vec!["r".to_owned()]));
        assert_eq!(
            proposed
                .data_patch_as::<serde_json::Map<String, Value>>()
                .unwrap()
                .unwrap()
                .len(),
            1
        );
        assert!(Changes::from_wit(b"{").is_err());
    }

    #[test]
    fn verdicts_convert() {
        assert!(matches!(
            Verdict::deny("no").into_wit().unwrap(),
            wit::Verdict::Deny(wit::Denial { message, state: None }) if message == "no"
        ));
        assert!(matches!(
            Verdict::default().into_wit().unwrap(),
            wit::Verdict::AllowUnchanged
        ));
        assert!(matches!(
            Verdict::allow(Changes::new().data_set("a", &1))
                .into_wit()
                .unwrap(),
            wit::Verdict::Allow(_)
        ));
        assert!(Verdict::allow(Changes::new().state(&1)).into_wit().is_err());
        let kept = Verdict::deny_with_state("no", &json!({"n": 1}))
            .into_wit()
            .unwrap();
        assert!(matches!(
            kept,
            wit::Verdict::Deny(wit::Denial { state: Some(s), .. }) if s == r#"{"n":1}"#
        ));
        assert!(Verdict::deny_with_state("no", &3).into_wit().is_err());
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
}
