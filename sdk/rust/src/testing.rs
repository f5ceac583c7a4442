//! In-memory fakes of the host's capabilities, for testing plugins natively.
//!
//! In a native build (`cargo test` on your machine) the capability functions
//! ([`log`](crate::log), [`clock`](crate::clock), [`kv`](crate::kv),
//! [`sessions`](crate::sessions), [`audit`](crate::audit)) do not call a host:
//! they use the fakes below, which keep their data per thread (so each test,
//! which runs on its own thread, starts empty). Call a plugin's hooks
//! directly and inspect what it did:
//!
//! ```
//! use sessiond_sdk::{audit, log, testing};
//! use sessiond_sdk::serde_json::json;
//!
//! testing::set_now(1_700_000_000_000);
//! log::info!("hello {}", "world");
//! audit::append(&json!({"event": "x"})).unwrap();
//!
//! assert_eq!(sessiond_sdk::clock::now(), 1_700_000_000_000);
//! assert_eq!(testing::take_logs(), vec![(log::Level::Info, "hello world".to_owned())]);
//! assert_eq!(testing::take_audit(), vec![json!({"event": "x"})]);
//! ```
//!
//! This module exists only in native builds, not in components.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::log::Level;
use crate::{SessionSummary, Timestamp};

#[derive(Default)]
struct Fakes {
    now: Option<Timestamp>,
    kv: BTreeMap<String, (String, Option<Timestamp>)>,
    sessions: HashMap<String, Vec<SessionSummary>>,
    audit: Vec<Value>,
    logs: Vec<(Level, String)>,
    failure: Option<String>,
}

thread_local! {
    static FAKES: RefCell<Fakes> = RefCell::new(Fakes::default());
}

fn with<R>(f: impl FnOnce(&mut Fakes) -> R) -> R {
    FAKES.with(|fakes| f(&mut fakes.borrow_mut()))
}

/// Forgets everything the fakes hold on this thread and goes back to the
/// real clock.
pub fn reset() {
    with(|fakes| *fakes = Fakes::default());
}

/// Makes [`clock::now`](crate::clock::now) return `now` (milliseconds since
/// the Unix epoch) instead of the system time.
pub fn set_now(now: Timestamp) {
    with(|fakes| fakes.now = Some(now));
}

/// Sets what [`sessions::list_active`](crate::sessions::list_active) returns
/// for `user`.
pub fn set_active_sessions(user: &str, sessions: Vec<SessionSummary>) {
    with(|fakes| fakes.sessions.insert(user.to_owned(), sessions));
}

/// Makes every fallible capability (kv, sessions, audit) fail with `message`,
/// as a host would when its store is down; `None` makes them work again.
pub fn fail_host_calls(message: Option<&str>) {
    with(|fakes| fakes.failure = message.map(str::to_owned));
}

/// Removes and returns the audit records appended so far.
pub fn take_audit() -> Vec<Value> {
    with(|fakes| std::mem::take(&mut fakes.audit))
}

/// Removes and returns the log lines written so far.
pub fn take_logs() -> Vec<(Level, String)> {
    with(|fakes| std::mem::take(&mut fakes.logs))
}

/// The keys and values in the fake kv store that have not expired.
pub fn kv_entries() -> BTreeMap<String, String> {
    let now = fake::now();
    with(|fakes| {
        fakes
            .kv
            .iter()
            .filter(|(_, (_, expires))| expires.is_none_or(|at| now < at))
            .map(|(key, (value, _))| (key.clone(), value.clone()))
            .collect()
    })
}

/// The fake backend behind the capability functions.
pub(crate) mod fake {
    use super::*;

    fn check(fakes: &Fakes) -> Result<(), String> {
        match &fakes.failure {
            Some(message) => Err(message.clone()),
            None => Ok(()),
        }
    }

    pub(crate) fn log(level: Level, message: &str) {
        with(|fakes| fakes.logs.push((level, message.to_owned())));
    }

    pub(crate) fn now() -> Timestamp {
        with(|fakes| fakes.now).unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |elapsed| {
                    u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
                })
        })
    }

    pub(crate) fn kv_get(key: &str) -> Result<Option<String>, String> {
        let now = now();
        with(|fakes| {
            check(fakes)?;
            Ok(match fakes.kv.get(key) {
                Some((value, expires)) if expires.is_none_or(|at| now < at) => Some(value.clone()),
                _ => None,
            })
        })
    }

    pub(crate) fn kv_set(key: &str, value: &str, ttl_seconds: Option<u32>) -> Result<(), String> {
        let expires = ttl_seconds.map(|ttl| now().saturating_add(u64::from(ttl) * 1000));
        with(|fakes| {
            check(fakes)?;
            fakes.kv.insert(key.to_owned(), (value.to_owned(), expires));
            Ok(())
        })
    }

    pub(crate) fn kv_delete(key: &str) -> Result<bool, String> {
        let was_set = kv_get(key)?.is_some();
        with(|fakes| fakes.kv.remove(key));
        Ok(was_set)
    }

    pub(crate) fn list_active(user: &str) -> Result<Vec<SessionSummary>, String> {
        with(|fakes| {
            check(fakes)?;
            Ok(fakes.sessions.get(user).cloned().unwrap_or_default())
        })
    }

    pub(crate) fn audit_append(record: &str) -> Result<(), String> {
        with(|fakes| {
            check(fakes)?;
            let record = serde_json::from_str(record).map_err(|error| error.to_string())?;
            fakes.audit.push(record);
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{audit, clock, kv, sessions};
    use serde_json::json;

    #[test]
    fn kv_honours_ttl_on_the_fake_clock() {
        set_now(10_000);
        kv::set("a", "1", Some(2)).unwrap();
        kv::set_json("b", &json!({"x": 1}), None).unwrap();
        assert_eq!(kv::get("a").unwrap().as_deref(), Some("1"));
        set_now(12_000);
        assert_eq!(kv::get("a").unwrap(), None);
        assert_eq!(kv::get_json::<Value>("b").unwrap(), Some(json!({"x": 1})));
        assert_eq!(kv_entries().len(), 1);
        assert!(kv::delete("b").unwrap());
        assert!(!kv::delete("b").unwrap());
        kv::set("c", "not json", None).unwrap();
        let error = kv::get_json::<u32>("c").unwrap_err();
        assert!(
            error
                .message()
                .starts_with("kv get `c`: the value is not the expected JSON"),
            "{error}"
        );
    }

    #[test]
    fn failures_carry_context() {
        fail_host_calls(Some("store down"));
        assert_eq!(
            kv::get("k").unwrap_err().message(),
            "kv get `k`: store down"
        );
        assert_eq!(
            sessions::list_active("bob").unwrap_err().message(),
            "listing the active sessions of \"bob\": store down"
        );
        assert_eq!(
            audit::append(&json!({})).unwrap_err().message(),
            "appending an audit record: store down"
        );
        reset();
        assert!(kv::get("k").unwrap().is_none());
    }

    #[test]
    fn sessions_and_audit() {
        set_active_sessions("bob", vec![SessionSummary::new("s-1")]);
        assert_eq!(sessions::list_active("bob").unwrap().len(), 1);
        assert!(sessions::list_active("eve").unwrap().is_empty());
        assert!(audit::append(&[1]).is_err());
        assert!(take_audit().is_empty());
        reset();
        assert!(clock::now() > 1_600_000_000_000);
    }
}
