//! `single-session`: lets each user hold at most `max_sessions` concurrent
//! sessions (one by default), a port of Janssen's `startSession` veto.
//!
//! Hook: `on-session-start`. When the new session has a user and that user
//! already has `max_sessions` or more active sessions in the tenant, it
//! denies with `Please, end active session first!` and logs why. Anonymous
//! sessions are always allowed.
//!
//! Capabilities: `sessions` (to list the user's active sessions) and `log`.
//!
//! Config attributes:
//! - `max_sessions` (integer >= 1, default 1): deny when the user's active
//!   sessions are at least this many.

use sessiond_sdk::{
    ClientInfo, Config, Hook, Plugin, Result, Session, Value, Verdict, log, sessions,
};

/// The message a denied caller gets, as in Janssen's script.
pub const DENY_MESSAGE: &str = "Please, end active session first!";

/// The plugin: its only setting is the limit.
struct SingleSession {
    max_sessions: usize,
}

impl Default for SingleSession {
    fn default() -> Self {
        SingleSession { max_sessions: 1 }
    }
}

impl Plugin for SingleSession {
    const NAME: &'static str = "single-session";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HOOKS: &'static [Hook] = &[Hook::SessionStart, Hook::Event];

    fn init(&mut self, config: &Config) -> Result<()> {
        self.max_sessions = config.parse_or("max_sessions", 1)?;
        if self.max_sessions == 0 {
            return Err("config attribute `max_sessions` must be at least 1".into());
        }
        Ok(())
    }

    fn on_session_start(&mut self, session: Session, _client: ClientInfo) -> Result<Verdict> {
        self.check(&session)
    }

    /// An anonymous session that authenticates becomes one more session of
    /// its user: the same check applies, or the veto could be bypassed by
    /// starting anonymous.
    fn on_event(&mut self, session: Session, name: String, _payload: Value) -> Result<Verdict> {
        if name == "authenticated" {
            return self.check(&session);
        }
        Ok(Verdict::allow_unchanged())
    }
}

impl SingleSession {
    /// Denies when the session's user already has `max_sessions` other
    /// active sessions (the session being created or authenticated is not
    /// counted).
    fn check(&self, session: &Session) -> Result<Verdict> {
        let Some(user) = session.user.as_deref() else {
            return Ok(Verdict::allow_unchanged());
        };
        let active = sessions::list_active(user)?
            .iter()
            .filter(|s| s.id != session.id)
            .count();
        if active >= self.max_sessions {
            log::info!(
                "denied a session for user {user:?}: {active} active, at most {} allowed",
                self.max_sessions
            );
            return Ok(Verdict::deny(DENY_MESSAGE));
        }
        Ok(Verdict::allow_unchanged())
    }
}

sessiond_sdk::export_plugin!(SingleSession);

#[cfg(test)]
mod tests {
    use super::*;
    use sessiond_sdk::{SessionSummary, testing};

    fn start(plugin: &mut SingleSession, session: Session) -> Verdict {
        plugin
            .on_session_start(session, ClientInfo::default())
            .unwrap()
    }

    #[test]
    fn denies_a_second_session() {
        let mut plugin = SingleSession::default();
        plugin.init(&Config::default()).unwrap();
        let alice = Session::new("s-2", "acme").with_user("alice");
        assert_eq!(
            start(&mut plugin, alice.clone()),
            Verdict::allow_unchanged()
        );

        testing::set_active_sessions("alice", vec![SessionSummary::new("s-1")]);
        assert_eq!(start(&mut plugin, alice), Verdict::deny(DENY_MESSAGE));
        let logs = testing::take_logs();
        assert_eq!(logs.len(), 1);
        assert!(logs[0].1.contains("\"alice\": 1 active"), "{logs:?}");
    }

    #[test]
    fn authenticating_into_a_user_with_a_session_is_denied() {
        let mut plugin = SingleSession::default();
        plugin.init(&Config::default()).unwrap();
        testing::set_active_sessions("carol", vec![SessionSummary::new("s-1")]);
        let now_carol = Session::new("s-9", "t").with_user("carol");
        let verdict = plugin
            .on_event(now_carol, "authenticated".into(), Value::Null)
            .unwrap();
        assert_eq!(verdict, Verdict::deny(DENY_MESSAGE));
        // Re-authenticating the one session the user has is fine.
        let same = Session::new("s-1", "t").with_user("carol");
        let verdict = plugin
            .on_event(same, "authenticated".into(), Value::Null)
            .unwrap();
        assert!(!verdict.is_deny());
    }

    #[test]
    fn allows_anonymous_sessions_and_honours_the_limit() {
        let mut plugin = SingleSession::default();
        plugin.init(&Config::new([("max_sessions", "2")])).unwrap();
        testing::set_active_sessions("bob", vec![SessionSummary::new("s-1")]);
        assert!(!start(&mut plugin, Session::new("s-2", "t").with_user("bob")).is_deny());
        testing::set_active_sessions(
            "bob",
            vec![SessionSummary::new("s-1"), SessionSummary::new("s-2")],
        );
        assert!(start(&mut plugin, Session::new("s-3", "t").with_user("bob")).is_deny());
        assert!(!start(&mut plugin, Session::new("s-4", "t")).is_deny());
    }

    #[test]
    fn rejects_bad_config() {
        let mut plugin = SingleSession::default();
        let error = plugin
            .init(&Config::new([("max_sessions", "0")]))
            .unwrap_err();
        assert_eq!(
            error.message(),
            "config attribute `max_sessions` must be at least 1"
        );
        assert!(
            plugin
                .init(&Config::new([("max_sessions", "one")]))
                .is_err()
        );
    }

    #[test]
    fn host_errors_are_plugin_errors() {
        let mut plugin = SingleSession::default();
        testing::fail_host_calls(Some("store down"));
        let error = plugin
            .on_session_start(Session::new("s", "t").with_user("u"), ClientInfo::default())
            .unwrap_err();
        assert_eq!(
            error.message(),
            "listing the active sessions of \"u\": store down"
        );
    }
}
