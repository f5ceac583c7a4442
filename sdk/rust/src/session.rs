//! The session a hook receives, read from the bytes the host sends (the
//! WIT `session`, whose fields are separated by NUL bytes). Its data and
//! state stay JSON text until first read: most hooks never read them, and
//! parsing is the most expensive part of receiving a session.

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::types::{ClientInfo, Timestamp, empty_object, field, from_value, is_empty_object};
use crate::{Error, Result};

/// A session as this plugin sees it.
///
/// It never holds the secret token that REST consumers use: [`Session::id`]
/// is a public identifier that stays the same for the session's whole life.
///
/// The shared data and this plugin's private state are JSON objects; read
/// them typed with [`Session::data`] and [`Session::state`], or raw with
/// [`Session::data_value`] and [`Session::state_value`]. To change them,
/// return [`Changes`](crate::Changes) from the hook.
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
    /// When the session ends at the latest: the earlier of
    /// [`idle_expires_at`](Session::idle_expires_at) and
    /// [`absolute_expires_at`](Session::absolute_expires_at).
    pub expires_at: Timestamp,
    /// The idle deadline: when the session ends if nothing uses it before.
    /// Every use (an update, an event, a message, a touch) slides it.
    pub idle_expires_at: Timestamp,
    /// The end of the session's absolute lifetime, which use does not
    /// slide (a hook may move it with [`Changes::ttl_seconds`](crate::Changes::ttl_seconds)).
    pub absolute_expires_at: Timestamp,
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
            idle_expires_at: 0,
            absolute_expires_at: 0,
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
    /// [`Changes::state`](crate::Changes::state)): use [`Session::state_or_default`] when the hook
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

    /// A session from the bytes the host sent (the WIT `session`: its
    /// fields separated by NUL bytes). The data and the state stay text
    /// until first read.
    pub(crate) fn from_wit(bytes: Vec<u8>) -> Result<Self> {
        let text = String::from_utf8(bytes)
            .map_err(|_| Error::new("the host sent a session that is not UTF-8"))?;
        // A plain byte scan: the fields are short, and a NUL byte is always
        // a character boundary in UTF-8.
        let mut rest = text.as_str();
        let mut next = || {
            let end = rest.bytes().position(|b| b == 0).unwrap_or(rest.len());
            let field = &rest[..end];
            rest = rest.get(end + 1..).unwrap_or_default();
            field
        };
        let (id, tenant, user, roles) = (next(), next(), next(), next());
        let mut number = |what: &str| {
            let digits = next();
            // Up to 19 digits cannot overflow a u64: only longer numbers
            // need checked arithmetic (which wasm does with 128-bit
            // multiplications).
            let short = digits.len() < 20;
            match digits.bytes().try_fold(0u64, |n, d| {
                if !d.is_ascii_digit() {
                    None
                } else if short {
                    Some(n * 10 + u64::from(d - b'0'))
                } else {
                    n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
                }
            }) {
                Some(n) if !digits.is_empty() => Ok(n),
                _ => Err(Error::new(format!(
                    "the host sent a session whose {what} is not a number"
                ))),
            }
        };
        let created_at = number("created-at")?;
        let last_seen_at = number("last-seen-at")?;
        let idle_expires_at = number("idle-expires-at")?;
        let absolute_expires_at = number("absolute-expires-at")?;
        let version = number("version")?;
        let optional = |text: &str| (!text.is_empty()).then(|| text.to_owned());
        let client = ClientInfo {
            remote_addr: optional(next()),
            user_agent: optional(next()),
            device: optional(next()),
        };
        let (data, state) = (next(), next());
        Ok(Session {
            id: id.to_owned(),
            tenant: tenant.to_owned(),
            user: optional(user),
            roles: if roles.is_empty() {
                Vec::new()
            } else {
                roles.split('\u{1f}').map(str::to_owned).collect()
            },
            created_at,
            last_seen_at,
            expires_at: idle_expires_at.min(absolute_expires_at),
            idle_expires_at,
            absolute_expires_at,
            version,
            client,
            data: LazyJson::text(data.to_owned()),
            state: LazyJson::text(state.to_owned()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    /// The bytes a host sends for a session with `data` and `state`.
    pub(crate) fn wit_session(data: &str, state: &str) -> Vec<u8> {
        [
            "s-1",
            "acme",
            "alice",
            "user\u{1f}admin",
            "1000",
            "2000",
            "3000",
            "5000",
            "4",
            "10.0.0.1",
            "",
            "mobile",
            data,
            state,
        ]
        .join("\0")
        .into_bytes()
    }

    #[derive(Debug, Default, PartialEq, Deserialize)]
    struct Counter {
        events: u32,
    }

    #[test]
    fn session_from_wit_reads_every_field() {
        let session = Session::from_wit(wit_session(r#"{"a":1}"#, "{}")).unwrap();
        assert_eq!(
            (session.id.as_str(), session.tenant.as_str()),
            ("s-1", "acme")
        );
        assert_eq!(session.user.as_deref(), Some("alice"));
        assert_eq!(session.roles, ["user", "admin"]);
        assert_eq!((session.created_at, session.last_seen_at), (1000, 2000));
        assert_eq!(session.idle_expires_at, 3000);
        assert_eq!(session.absolute_expires_at, 5000);
        assert_eq!(session.expires_at, 3000);
        assert_eq!(session.version, 4);
        assert_eq!(session.client.remote_addr.as_deref(), Some("10.0.0.1"));
        assert_eq!(session.client.user_agent, None);
        assert_eq!(session.client.device.as_deref(), Some("mobile"));
        assert_eq!(session.data_value(), &json!({"a": 1}));
        assert_eq!(session.data_field::<u32>("a").unwrap(), Some(1));
        assert!(!session.has_state());
        assert_eq!(
            session.state_or_default::<Counter>().unwrap(),
            Counter::default()
        );
        assert!(session.state::<Counter>().is_err());
        let anonymous = "s\0t\0\0\x000\x000\x000\x000\x001\0\0\0\0{}\0{}";
        let session = Session::from_wit(anonymous.as_bytes().to_vec()).unwrap();
        assert!(session.is_anonymous() && session.roles.is_empty());
        assert!(Session::from_wit(b"s\0t\0\0\0x".to_vec()).is_err());
        let big = "s\0t\0\0\x0018446744073709551615\x000\x000\x000\x001\0\0\0\0{}\0{}";
        assert_eq!(
            Session::from_wit(big.as_bytes().to_vec())
                .unwrap()
                .created_at,
            u64::MAX
        );
        let over = "s\0t\0\0\x0018446744073709551616\x000\x000\x000\x001\0\0\0\0{}\0{}";
        assert!(Session::from_wit(over.as_bytes().to_vec()).is_err());
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
}
