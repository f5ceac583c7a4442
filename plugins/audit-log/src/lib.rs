//! `audit-log`: writes a record to the tenant's audit stream when a session
//! starts, on each of its events and when it ends (a port of Janssen's
//! session audit and of SPS's `session_ended`). It never denies: when the
//! host cannot append a record, it logs an error and lets the session go on.
//!
//! Hooks: `on-session-start`, `on-event`, `on-session-end`.
//! Capabilities: `audit` and `log`.
//!
//! Config attributes:
//! - `include_payload` (`true`/`false`, default `true`): whether event
//!   records carry the event's payload.
//!
//! Records (the host adds the time, the tenant, the plugin and the
//! session's public id):
//! - `{"type": "session_started", "user", "roles", "client": {"remote_addr",
//!   "user_agent", "device"}, "created_at", "expires_at"}`
//! - `{"type": "session_event", "name", "payload", "user", "events"}`
//!   (`payload` only with `include_payload`; `events` counts this one)
//! - `{"type": "session_ended", "reason", "end_id", "user", "ended_at",
//!   "duration_ms", "events", "details"}` where `details` is the plugin's
//!   state for the session as sorted `key=value` pairs joined by `,`.
//!
//! Per-session state: `{"started_at", "user", "events", "authentications",
//! "last_event"}` (`user` and `last_event` only once known).

use serde::{Deserialize, Serialize};
use sessiond_sdk::serde_json::{Value, json};
use sessiond_sdk::{
    Changes, ClientInfo, Config, EndInfo, Hook, Plugin, Result, Session, Verdict, audit, log,
};

/// The plugin's settings.
struct AuditLog {
    include_payload: bool,
}

impl Default for AuditLog {
    fn default() -> Self {
        AuditLog {
            include_payload: true,
        }
    }
}

/// What the plugin keeps about each session, in its private state.
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
struct State {
    /// When the session was created (ms since the epoch).
    #[serde(default)]
    started_at: u64,
    /// The session's user, once it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    user: Option<String>,
    /// How many events the session had.
    #[serde(default)]
    events: u64,
    /// How many of them were `authenticated`.
    #[serde(default)]
    authentications: u64,
    /// The name of the latest event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_event: Option<String>,
}

impl State {
    /// The state of a session that this plugin has not seen start (it was
    /// enabled later) starts from the session itself.
    fn of(session: &Session) -> State {
        match session.state_or_default::<State>() {
            Ok(state) if session.has_state() => state,
            Ok(_) => State::fresh(session),
            Err(error) => {
                log::warn!("ignoring an unreadable plugin state: {error}");
                State::fresh(session)
            }
        }
    }

    fn fresh(session: &Session) -> State {
        State {
            started_at: session.created_at,
            user: session.user.clone(),
            ..State::default()
        }
    }
}

/// `key=value` pairs of a JSON object, sorted by key and joined by `,`.
/// Strings appear without quotes; nulls are left out.
fn details(state: &Value) -> String {
    let Some(object) = state.as_object() else {
        return String::new();
    };
    let mut pairs: Vec<(&String, String)> = object
        .iter()
        .filter(|(_, value)| !value.is_null())
        .map(|(key, value)| match value {
            Value::String(text) => (key, text.clone()),
            other => (key, other.to_string()),
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Appends a record; a failure is logged, never passed on.
fn append(record: &Value) {
    if let Err(error) = audit::append(record) {
        log::error!("could not write an audit record: {error}");
    }
}

impl Plugin for AuditLog {
    const NAME: &'static str = "audit-log";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HOOKS: &'static [Hook] = &[Hook::SessionStart, Hook::Event, Hook::SessionEnd];

    fn init(&mut self, config: &Config) -> Result<()> {
        self.include_payload = config.parse_or("include_payload", true)?;
        Ok(())
    }

    fn on_session_start(&mut self, session: Session, client: ClientInfo) -> Result<Verdict> {
        append(&json!({
            "type": "session_started",
            "user": session.user,
            "roles": session.roles,
            "client": client,
            "created_at": session.created_at,
            "expires_at": session.expires_at,
        }));
        Ok(Verdict::allow(
            Changes::new().state(&State::fresh(&session)),
        ))
    }

    fn on_event(&mut self, session: Session, name: String, payload: Value) -> Result<Verdict> {
        let mut state = State::of(&session);
        state.events += 1;
        if name == "authenticated" {
            state.authentications += 1;
            state.user = session.user.clone();
        }
        let mut record = json!({
            "type": "session_event",
            "name": name,
            "user": session.user,
            "events": state.events,
        });
        if self.include_payload {
            record["payload"] = payload;
        }
        append(&record);
        state.last_event = Some(name);
        Ok(Verdict::allow(Changes::new().state(&state)))
    }

    fn on_session_end(&mut self, session: Session, end: EndInfo) -> Result<()> {
        let state = State::of(&session);
        let details = details(&sessiond_sdk::serde_json::to_value(&state)?);
        append(&json!({
            "type": "session_ended",
            "reason": end.reason,
            "end_id": end.end_id,
            "user": session.user,
            "ended_at": end.ended_at,
            "duration_ms": end.ended_at.saturating_sub(session.created_at),
            "events": state.events,
            "details": details,
        }));
        Ok(())
    }
}

sessiond_sdk::export_plugin!(AuditLog);

#[cfg(test)]
mod tests {
    use super::*;
    use sessiond_sdk::{EndReason, testing};

    fn session() -> Session {
        let mut session = Session::new("s-1", "acme");
        session.created_at = 1_000;
        session.expires_at = 9_000;
        session.roles = vec!["user".into()];
        session
    }

    fn state_of(verdict: Verdict) -> Value {
        match verdict {
            Verdict::Allow(changes) => changes.state.expect("a state"),
            Verdict::Deny(message) => panic!("denied: {message}"),
        }
    }

    #[test]
    fn audits_a_whole_session() {
        let mut plugin = AuditLog::default();
        plugin.init(&Config::default()).unwrap();
        let client = ClientInfo {
            device: Some("mobile".into()),
            ..ClientInfo::default()
        };
        let state = state_of(plugin.on_session_start(session(), client).unwrap());
        assert_eq!(
            state,
            json!({"started_at": 1000, "events": 0, "authentications": 0})
        );

        let session = session().with_user("alice").with_state(state);
        let state = state_of(
            plugin
                .on_event(
                    session.clone(),
                    "authenticated".into(),
                    json!({"via": "password"}),
                )
                .unwrap(),
        );
        let session = session.with_state(state);
        let state = state_of(
            plugin
                .on_event(session.clone(), "page".into(), json!(1))
                .unwrap(),
        );
        assert_eq!(
            state,
            json!({"started_at": 1000, "user": "alice", "events": 2, "authentications": 1, "last_event": "page"})
        );

        let end = EndInfo {
            reason: EndReason::IdleTimeout,
            end_id: "e-1".into(),
            ended_at: 4_500,
        };
        plugin
            .on_session_end(session.with_state(state), end)
            .unwrap();

        let records = testing::take_audit();
        assert_eq!(records.len(), 4);
        assert_eq!(
            records[0],
            json!({
                "type": "session_started", "user": null, "roles": ["user"],
                "client": {"remote_addr": null, "user_agent": null, "device": "mobile"},
                "created_at": 1000, "expires_at": 9000,
            })
        );
        assert_eq!(
            records[1],
            json!({"type": "session_event", "name": "authenticated", "user": "alice", "events": 1, "payload": {"via": "password"}})
        );
        assert_eq!(
            records[3],
            json!({
                "type": "session_ended", "reason": "idle-timeout", "end_id": "e-1", "user": "alice",
                "ended_at": 4500, "duration_ms": 3500, "events": 2,
                "details": "authentications=1,events=2,last_event=page,started_at=1000,user=alice",
            })
        );
    }

    #[test]
    fn never_denies_when_the_host_fails() {
        let mut plugin = AuditLog::default();
        plugin
            .init(&Config::new([("include_payload", "false")]))
            .unwrap();
        testing::fail_host_calls(Some("store down"));
        let verdict = plugin
            .on_event(session(), "x".into(), json!("secret"))
            .unwrap();
        assert_eq!(state_of(verdict)["events"], json!(1));
        assert_eq!(
            testing::take_logs()[0].1,
            "could not write an audit record: appending an audit record: store down"
        );
        testing::fail_host_calls(None);
        plugin
            .on_event(session(), "x".into(), json!("secret"))
            .unwrap();
        assert!(testing::take_audit()[0].get("payload").is_none());
    }

    #[test]
    fn details_are_sorted_pairs() {
        assert_eq!(
            details(&json!({"b": "x", "a": 1, "n": null, "c": true})),
            "a=1,b=x,c=true"
        );
        assert_eq!(details(&json!([])), "");
    }
}
