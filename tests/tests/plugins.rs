//! The example plugins, each through the real runtime and a real store: the
//! ports of the seeds behave as the seeds do.

use serde_json::{Value, json};
use sessiond::runtime::{Capability, Chain, Decision, MessageOutcome};
use sessiond::session::{EndReason, SessionRecord, now_ms};
use sessiond::store::memory::MemoryStore;
use sessiond::store::{AuditStore, CreateLimit, KvStore, SessionStore};
use sessiond_tests::{Block, fixtures, memory_runtime, spec, tokio};

const DAY_MS: u64 = 86_400_000;

fn session(tenant: &str, user: Option<&str>, roles: &[&str], device: &str) -> SessionRecord {
    let now = now_ms();
    fixtures::session(tenant)
        .user(user)
        .roles(roles)
        .at(now)
        .created_at(now - 5_000)
        .lifetime(3_600_000)
        .idle_timeout(900_000)
        .remote_addr("192.0.2.10")
        .user_agent("Firefox 139.0")
        .device(device)
        .build()
}

fn allowed(d: Decision) -> SessionRecord {
    match d {
        Decision::Allow(r) => *r,
        other => panic!("expected allow, got {other:?}"),
    }
}

fn audit_records(store: &MemoryStore, tenant: &str) -> Vec<Value> {
    let page = tokio()
        .block_on(store.audit_page(tenant, None, 1000))
        .unwrap();
    page.records.into_iter().map(|r| r.record).collect()
}

#[test]
fn single_session_denies_a_second_session_of_the_same_user() {
    let (rt, store) = memory_runtime();
    let p = rt
        .load(
            "t1",
            &spec(
                "single-session",
                "single_session",
                &[Capability::Sessions],
                &[],
            ),
        )
        .block()
        .unwrap();
    let chain = Chain::new(vec![p], DAY_MS);
    // No active session yet: allowed.
    let first = allowed(
        chain
            .session_start(session("t1", Some("alice"), &[], "desktop"), now_ms())
            .block(),
    );
    tokio()
        .block_on(store.create(&first, CreateLimit::NONE, false, now_ms()))
        .unwrap();
    // Alice now has one: denied with Janssen's message.
    match chain
        .session_start(session("t1", Some("alice"), &[], "desktop"), now_ms())
        .block()
    {
        Decision::Deny {
            plugin,
            message,
            failure,
            ..
        } => {
            assert_eq!(plugin, "single-session");
            assert_eq!(message, "Please, end active session first!");
            assert!(failure.is_none());
        }
        other => panic!("expected a deny, got {other:?}"),
    }
    // Another user and an anonymous session are not affected.
    allowed(
        chain
            .session_start(session("t1", Some("bob"), &[], "desktop"), now_ms())
            .block(),
    );
    allowed(
        chain
            .session_start(session("t1", None, &[], "desktop"), now_ms())
            .block(),
    );
    // Starting anonymous and authenticating as alice is denied the same way.
    let mut anon = allowed(
        chain
            .session_start(session("t1", None, &[], "desktop"), now_ms())
            .block(),
    );
    anon.user = Some("alice".into());
    match chain
        .event(anon, "authenticated", &json!({"user": "alice"}), now_ms())
        .block()
    {
        Decision::Deny { message, .. } => assert_eq!(message, "Please, end active session first!"),
        other => panic!("authenticating into a second session must be denied: {other:?}"),
    }
}

#[test]
fn audit_log_records_start_events_and_end_with_duration_and_details() {
    let (rt, store) = memory_runtime();
    let p = rt
        .load(
            "t2",
            &spec("audit-log", "audit_log", &[Capability::Audit], &[]),
        )
        .block()
        .unwrap();
    let chain = Chain::new(vec![p], DAY_MS);
    let now = now_ms();
    let r = allowed(
        chain
            .session_start(session("t2", Some("alice"), &["user"], "desktop"), now)
            .block(),
    );
    let r = allowed(
        chain
            .event(r, "page", &json!({"url": "/home"}), now)
            .block(),
    );
    let end = chain
        .session_end(&r, EndReason::IdleTimeout, "end-42", now + 1_000)
        .block();
    assert!(end.failures.is_empty(), "{:?}", end.failures);

    let records = audit_records(&store, "t2");
    let kinds: Vec<&str> = records
        .iter()
        .map(|r| r["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["session_started", "session_event", "session_ended"]);
    let ended = &records[2];
    assert_eq!(ended["reason"], "idle-timeout");
    assert_eq!(ended["end_id"], "end-42");
    assert_eq!(ended["duration_ms"], json!(now + 1_000 - r.created_at));
    let details = ended["details"].as_str().unwrap();
    assert!(
        details.contains("events=1") && details.contains("user=alice"),
        "{details}"
    );
    // SPS's format: sorted key=value pairs joined by commas.
    let keys: Vec<&str> = details
        .split(',')
        .map(|kv| kv.split('=').next().unwrap())
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
}

fn perspective(rt: &sessiond::runtime::Runtime, tenant: &str) -> Chain {
    let p = rt
        .load(
            tenant,
            &spec(
                "perspective",
                "perspective",
                &[Capability::Kv, Capability::Audit],
                &[],
            ),
        )
        .block()
        .unwrap();
    Chain::new(vec![p], DAY_MS)
}

#[test]
fn perspective_startup_sets_view_mode_login_time_and_counters() {
    let (rt, _) = memory_runtime();
    let chain = perspective(&rt, "t3");
    let mobile = allowed(
        chain
            .session_start(session("t3", Some("op"), &["Operator"], "mobile"), now_ms())
            .block(),
    );
    assert_eq!(mobile.data["viewMode"], "compact");
    assert_eq!(mobile.data["pageViews"], 0);
    assert!(mobile.data["loginTime"].as_u64().unwrap() > 0);
    let desktop = allowed(
        chain
            .session_start(session("t3", None, &[], "desktop"), now_ms())
            .block(),
    );
    assert_eq!(desktop.data["viewMode"], "full");
}

#[test]
fn perspective_page_views_count_and_enforce_roles() {
    let (rt, _) = memory_runtime();
    let chain = perspective(&rt, "t4");
    let r = allowed(
        chain
            .session_start(
                session("t4", Some("op"), &["Operator"], "desktop"),
                now_ms(),
            )
            .block(),
    );
    let r = allowed(
        chain
            .event(r, "page-view", &json!({"page": "/control/line1"}), now_ms())
            .block(),
    );
    let r = allowed(
        chain
            .event(r, "page-view", &json!({"page": "/home"}), now_ms())
            .block(),
    );
    assert_eq!(r.data["pageViews"], 2);
    match chain
        .event(r, "page-view", &json!({"page": "/admin/users"}), now_ms())
        .block()
    {
        Decision::Deny {
            message, plugin, ..
        } => {
            assert_eq!(message, "unauthorized");
            assert_eq!(plugin, "perspective");
        }
        other => panic!("an Operator must not open /admin: {other:?}"),
    }
}

#[test]
fn perspective_preferences_go_to_kv_and_come_back_at_startup() {
    let (rt, store) = memory_runtime();
    let chain = perspective(&rt, "t5");
    let r = allowed(
        chain
            .session_start(
                session("t5", Some("eng"), &["Engineer"], "desktop"),
                now_ms(),
            )
            .block(),
    );
    let r = match chain
        .message(
            r,
            "updatePreference",
            &json!({"name": "theme", "value": "dark"}),
            now_ms(),
        )
        .block()
    {
        MessageOutcome::Reply {
            reply,
            record,
            plugin,
            ..
        } => {
            assert_eq!(plugin, "perspective");
            assert_eq!(reply, json!({"status": "updated", "preference": "theme"}));
            *record
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(r.data["preferences"]["theme"], "dark");
    let stored = tokio()
        .block_on(store.kv_get("t5", "perspective", "prefs:eng"))
        .unwrap()
        .expect("preferences are stored in kv");
    assert_eq!(
        serde_json::from_str::<Value>(&stored).unwrap()["theme"],
        "dark"
    );
    // A new session of the same user starts with them.
    let next = allowed(
        chain
            .session_start(
                session("t5", Some("eng"), &["Engineer"], "desktop"),
                now_ms(),
            )
            .block(),
    );
    assert_eq!(next.data["preferences"]["theme"], "dark");
    // refreshData answers; an unknown handler is a plugin error.
    match chain
        .message(
            next.clone(),
            "refreshData",
            &json!({"type": "alarms"}),
            now_ms(),
        )
        .block()
    {
        MessageOutcome::Reply { reply, .. } => assert_eq!(reply["status"], "refreshed"),
        other => panic!("{other:?}"),
    }
    match chain
        .message(next, "noSuchHandler", &json!({}), now_ms())
        .block()
    {
        MessageOutcome::Failed(f) => assert_eq!(f.plugin, "perspective"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn perspective_shutdown_writes_a_metrics_record() {
    let (rt, store) = memory_runtime();
    let chain = perspective(&rt, "t6");
    let r = allowed(
        chain
            .session_start(
                session("t6", Some("sup"), &["Supervisor"], "desktop"),
                now_ms(),
            )
            .block(),
    );
    let r = allowed(
        chain
            .event(r, "page-view", &json!({"page": "/reports/daily"}), now_ms())
            .block(),
    );
    let end = chain
        .session_end(&r, EndReason::Logout, "end-7", now_ms())
        .block();
    assert!(end.failures.is_empty(), "{:?}", end.failures);
    let metrics: Vec<Value> = audit_records(&store, "t6")
        .into_iter()
        .filter(|r| r["metric"] == "session")
        .collect();
    assert_eq!(metrics.len(), 1, "one metrics record");
    assert_eq!(metrics[0]["page_views"], 1);
    assert_eq!(metrics[0]["username"], "sup");
    assert_eq!(metrics[0]["reason"], "logout");
    assert!(metrics[0]["duration_ms"].as_u64().is_some());
    // The same end id again (a host that crashed mid-hook) writes nothing new.
    chain
        .session_end(&r, EndReason::Logout, "end-7", now_ms())
        .block();
    let again = audit_records(&store, "t6")
        .into_iter()
        .filter(|r| r["metric"] == "session")
        .count();
    assert_eq!(again, 1);
}

#[test]
fn perspective_logout_ends_the_session_and_a_refused_view_is_counted() {
    let (rt, _) = memory_runtime();
    let chain = perspective(&rt, "t9");
    let r = allowed(
        chain
            .session_start(
                session("t9", Some("op"), &["Operator"], "desktop"),
                now_ms(),
            )
            .block(),
    );
    // Refused, but the view is counted in the plugin's own state.
    match chain
        .event(r.clone(), "page-view", &json!({"page": "/admin"}), now_ms())
        .block()
    {
        Decision::Deny { message, state, .. } => {
            assert_eq!(message, "unauthorized");
            assert_eq!(state.expect("a state to keep")["page_views"], 1);
        }
        other => panic!("{other:?}"),
    }
    let mut r = r;
    r.data.insert("temp".into(), json!({"draftData": null}));
    match chain.event(r, "logout", &Value::Null, now_ms()).block() {
        Decision::End {
            record,
            plugin,
            reason,
        } => {
            assert_eq!(
                (plugin.as_str(), reason),
                ("perspective", EndReason::Logout)
            );
            assert!(
                !record.data.contains_key("temp"),
                "the logout's changes come first"
            );
        }
        other => panic!("logout must end the session: {other:?}"),
    }
}

#[test]
fn an_end_request_is_refused_at_start_and_honoured_in_a_message() {
    let (rt, _) = memory_runtime();
    let p = rt
        .load("t10", &spec("hostile", "hostile", &[], &[("mode", "end")]))
        .block()
        .unwrap();
    let chain = Chain::new(vec![p], DAY_MS);
    match chain
        .session_start(session("t10", None, &[], "desktop"), now_ms())
        .block()
    {
        Decision::Deny {
            failure: Some(f), ..
        } => assert!(f.message.contains("cannot end the session"), "{f:?}"),
        other => panic!("{other:?}"),
    }
    let r = session("t10", None, &[], "desktop");
    match chain.message(r, "h", &Value::Null, now_ms()).block() {
        MessageOutcome::Reply { end, reply, .. } => {
            assert_eq!((end, reply), (Some(EndReason::Revoked), json!("bye")));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_chain_stops_at_a_deny_and_composes_changes_in_order() {
    let (rt, store) = memory_runtime();
    let single = rt
        .load(
            "t7",
            &spec(
                "single-session",
                "single_session",
                &[Capability::Sessions],
                &[],
            ),
        )
        .block()
        .unwrap();
    let persp = rt
        .load(
            "t7",
            &spec(
                "perspective",
                "perspective",
                &[Capability::Kv, Capability::Audit],
                &[],
            ),
        )
        .block()
        .unwrap();
    let audit = rt
        .load(
            "t7",
            &spec("audit-log", "audit_log", &[Capability::Audit], &[]),
        )
        .block()
        .unwrap();
    let chain = Chain::new(vec![single, persp, audit], DAY_MS);
    let first = allowed(
        chain
            .session_start(
                session("t7", Some("ann"), &["Operator"], "mobile"),
                now_ms(),
            )
            .block(),
    );
    // perspective's data and audit-log's state both landed.
    assert_eq!(first.data["viewMode"], "compact");
    assert!(first.plugin_state.contains_key("audit-log"));
    assert!(first.plugin_state.contains_key("perspective"));
    tokio()
        .block_on(store.create(&first, CreateLimit::NONE, false, now_ms()))
        .unwrap();
    let before = audit_records(&store, "t7").len();
    // single-session denies first: the plugins after it do not run.
    assert!(matches!(
        chain
            .session_start(
                session("t7", Some("ann"), &["Operator"], "mobile"),
                now_ms()
            )
            .block(),
        Decision::Deny { .. }
    ));
    assert_eq!(
        audit_records(&store, "t7").len(),
        before,
        "no plugin ran after the deny"
    );
}

#[test]
fn a_plugin_without_a_granted_capability_does_not_load() {
    let (rt, _) = memory_runtime();
    let err = rt
        .load("t8", &spec("single-session", "single_session", &[], &[]))
        .block()
        .expect_err("sessions is not granted");
    assert_eq!(
        err.to_string(),
        "the component imports the `sessions` capability, which the config does not grant it"
    );
    let err = rt
        .load(
            "t8",
            &spec("perspective", "perspective", &[Capability::Kv], &[]),
        )
        .block()
        .expect_err("audit is not granted");
    assert!(err.to_string().contains("`audit`"), "{err}");
}

#[test]
fn a_compiled_component_leaves_memory_with_its_last_plugin() {
    let (rt, _store) = memory_runtime();
    let audit = spec("audit", "audit_log", &[Capability::Audit], &[]);
    let first = rt.load("t", &audit).block().unwrap();
    let second = rt.load("u", &audit).block().unwrap();
    // Both plugins share the one compiled component: nothing to drop.
    assert_eq!(rt.prune(), 0);
    drop(first);
    assert_eq!(rt.prune(), 0, "the second plugin still uses it");
    drop(second);
    assert_eq!(rt.prune(), 1, "its last plugin has gone");
    // Loading it again works (from the disk cache).
    assert!(rt.load("t", &audit).block().is_ok());
}
