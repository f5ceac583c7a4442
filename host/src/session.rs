//! The session model shared by the stores, the plugin runtime and the API.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Milliseconds since the Unix epoch.
pub type Millis = u64;

/// The current wall-clock time in milliseconds since the Unix epoch.
pub fn now_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}

/// Where a session came from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_addr: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
}

/// A stored session. The secret token never appears here: the store is keyed
/// by `token_hash` (hex SHA-256 of the token), so a dump of the store yields
/// no usable token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Hex SHA-256 of the secret token; the store's key.
    pub token_hash: String,
    /// The public id shown to plugins, in logs and audit records. It stays the
    /// same when authentication rotates the token.
    pub public_id: String,
    pub tenant: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    pub created_at: Millis,
    pub last_seen_at: Millis,
    /// The end of the absolute lifetime.
    pub absolute_expires_at: Millis,
    /// The idle timeout; the idle deadline is `last_seen_at + idle_timeout_ms`.
    pub idle_timeout_ms: Millis,
    /// Starts at 1 and grows by one with every change.
    pub version: u64,
    #[serde(default)]
    pub client: ClientInfo,
    /// Data shared by the REST consumer and every plugin (a JSON object).
    #[serde(default)]
    pub data: Map<String, Value>,
    /// Each plugin's private state, by plugin name (each a JSON object).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub plugin_state: BTreeMap<String, Value>,
    /// The `last_seen_at` of the idle period the tenant's idle warning was
    /// sent for (`idle_warning_seconds`): set by the warning, cleared by
    /// the next write that slides the idle deadline (which then sends
    /// `idle-reset` through `on-event`). None: not warned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_warned_at: Option<Millis>,
}

impl SessionRecord {
    /// When the idle timeout ends the session, if nothing touches it.
    pub fn idle_expires_at(&self) -> Millis {
        self.last_seen_at.saturating_add(self.idle_timeout_ms)
    }

    /// When the session ends at the latest: the earlier of both deadlines.
    pub fn expires_at(&self) -> Millis {
        self.absolute_expires_at.min(self.idle_expires_at())
    }

    /// Whether the session is over at `now`.
    pub fn is_expired(&self, now: Millis) -> bool {
        self.expires_at() <= now
    }

    /// Why the session ends when it runs out: its lifetime or its idleness.
    pub fn expiry_reason(&self) -> EndReason {
        if self.absolute_expires_at <= self.idle_expires_at() {
            EndReason::Expired
        } else {
            EndReason::IdleTimeout
        }
    }

    /// The summary shown in a listing of a user's active sessions.
    pub fn summary(&self) -> SessionSummary {
        SessionSummary {
            id: self.public_id.clone(),
            roles: self.roles.clone(),
            created_at: self.created_at,
            last_seen_at: self.last_seen_at,
            expires_at: self.expires_at(),
            client: self.client.clone(),
            annotations: Map::new(),
        }
    }
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EndReason {
    Logout,
    Expired,
    IdleTimeout,
    Revoked,
    Evicted,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Logout => "logout",
            EndReason::Expired => "expired",
            EndReason::IdleTimeout => "idle-timeout",
            EndReason::Revoked => "revoked",
            EndReason::Evicted => "evicted",
        }
    }

    /// The reason named by [`EndReason::as_str`]'s text.
    pub fn parse(text: &str) -> Option<EndReason> {
        [
            EndReason::Logout,
            EndReason::Expired,
            EndReason::IdleTimeout,
            EndReason::Revoked,
            EndReason::Evicted,
        ]
        .into_iter()
        .find(|r| r.as_str() == text)
    }
}

/// A session in a listing of a user's active sessions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionSummary {
    pub id: String,
    pub roles: Vec<String>,
    pub created_at: Millis,
    pub last_seen_at: Millis,
    pub expires_at: Millis,
    pub client: ClientInfo,
    #[serde(default)]
    pub annotations: Map<String, Value>,
}

/// One record in a tenant's audit stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Position in the tenant's stream; increases with every append.
    pub id: String,
    pub at: Millis,
    pub tenant: String,
    pub plugin: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// What the plugin wrote (a JSON object).
    pub record: Value,
}

/// `ms` since the epoch as RFC 3339 UTC (`2025-01-31T12:00:00.123Z`).
pub fn rfc3339(ms: Millis) -> String {
    i128::from(ms)
        .checked_mul(1_000_000)
        .and_then(|nanos| OffsetDateTime::from_unix_timestamp_nanos(nanos).ok())
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "9999-12-31T23:59:59.999Z".into())
}
