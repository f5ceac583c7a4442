//! The runtime against the hostile fixture: every kind of misbehaviour is
//! stopped by the right limit with the right typed failure, the instance is
//! thrown away, and the runtime keeps serving other plugins and tenants.

use std::sync::Arc;

use serde_json::{Value, json};
use sessiond::runtime::{
    Chain, Decision, FailureKind, LimitOverrides, LoadError, LoadedPlugin, MessageOutcome, OnError,
    PluginFailure, PluginSession, Runtime,
};
use sessiond::session::{SessionRecord, now_ms};
use sessiond_tests::{Block, fixtures, memory_runtime, spec};

fn session(tenant: &str, user: Option<&str>) -> SessionRecord {
    let now = now_ms();
    fixtures::session(tenant)
        .token_hash(format!("{now:064x}"))
        .public_id(format!("pub-{now}"))
        .user(user)
        .roles(&["Operator"])
        .at(now)
        .lifetime(3_600_000)
        .idle_timeout(900_000)
        .remote_addr("10.0.0.7")
        .user_agent("test")
        .device("desktop")
        .build()
}

fn hostile(rt: &Runtime, tenant: &str, mode: &str, limits: LimitOverrides) -> Arc<LoadedPlugin> {
    let mut s = spec("hostile", "hostile", &[], &[("mode", mode)]);
    s.limits = limits;
    rt.load(tenant, &s)
        .block()
        .expect("the hostile fixture loads")
}

/// Runs on-session-start once through a one-plugin chain and returns the
/// failure that denied it.
fn start_failure(p: &Arc<LoadedPlugin>) -> PluginFailure {
    let chain = Chain::new(vec![p.clone()], 86_400_000);
    match chain
        .session_start(session(&p.tenant, Some("alice")), now_ms())
        .block()
    {
        Decision::Deny {
            failure: Some(f), ..
        } => *f,
        other => panic!("expected a failure, got {other:?}"),
    }
}

/// After any failure the runtime still serves a well-behaved plugin.
fn assert_still_serving(rt: &Runtime) {
    let ok = hostile(rt, "bystander", "ok", LimitOverrides::default());
    let chain = Chain::new(vec![ok], 86_400_000);
    match chain
        .session_start(session("bystander", None), now_ms())
        .block()
    {
        Decision::Allow(record) => assert_eq!(record.data.get("hostile"), Some(&json!("ok"))),
        other => panic!("a healthy plugin was not served: {other:?}"),
    }
}

#[test]
fn infinite_loop_is_stopped_by_fuel() {
    let (rt, _) = memory_runtime();
    let p = hostile(
        &rt,
        "t-fuel",
        "loop",
        LimitOverrides {
            fuel: Some(2_000_000),
            deadline_ms: Some(60_000),
            ..Default::default()
        },
    );
    let f = start_failure(&p);
    assert_eq!(f.kind, FailureKind::FuelExhausted, "{f:?}");
    assert_eq!(f.plugin, "hostile");
    assert_still_serving(&rt);
}

/// Runs a `mode` call that never ends by itself next to a well-behaved
/// plugin's call, both on one task: the first must be cut off at its
/// deadline, and the other served long before then.
fn cut_off_without_holding_the_thread(mode: &str) {
    let (rt, _) = memory_runtime();
    let tenant = format!("t-{mode}");
    let p = hostile(
        &rt,
        &tenant,
        mode,
        LimitOverrides {
            fuel: Some(u64::MAX / 2),
            deadline_ms: Some(300),
            ..Default::default()
        },
    );
    let bystander = hostile(&rt, "t-bystander", "ok", LimitOverrides::default());
    let view = PluginSession::new(&session(&tenant, None), "hostile");
    let started = std::time::Instant::now();
    let (stuck, served_after) = async {
        let stuck = p.on_message(&view, "anything", "{}");
        let other = async {
            let call = bystander.on_message(&view, "h", "{}").await;
            assert!(call.result.is_ok(), "{:?}", call.result);
            started.elapsed()
        };
        tokio::join!(stuck, other)
    }
    .block();
    let f = stuck.result.expect_err("the call must be cut off");
    assert_eq!(f.kind, FailureKind::DeadlineExceeded, "{f:?}");
    assert!(stuck.report.wall_us >= 300_000, "{:?}", stuck.report);
    assert!(started.elapsed().as_secs() < 5, "{:?}", started.elapsed());
    assert!(
        served_after.as_millis() < 150,
        "the other plugin waited for the {mode} call: {served_after:?}"
    );
    assert_still_serving(&rt);
}

#[test]
fn sleeping_in_the_host_is_stopped_by_the_deadline_and_holds_no_thread() {
    cut_off_without_holding_the_thread("sleep");
}

#[test]
fn spinning_yields_the_thread_to_other_calls_until_its_deadline() {
    cut_off_without_holding_the_thread("loop");
}

#[test]
fn infinite_loop_is_stopped_by_the_deadline() {
    let (rt, _) = memory_runtime();
    let p = hostile(
        &rt,
        "t-deadline",
        "loop",
        LimitOverrides {
            fuel: Some(u64::MAX / 2),
            deadline_ms: Some(50),
            ..Default::default()
        },
    );
    let started = std::time::Instant::now();
    let call = p
        .on_message(
            &PluginSession::new(&session("t-deadline", None), "hostile"),
            "anything",
            "{}",
        )
        .block();
    let f = call.result.expect_err("the loop must be interrupted");
    assert_eq!(f.kind, FailureKind::DeadlineExceeded, "{f:?}");
    // The report's wall time shows the deadline, not a runaway.
    assert!(call.report.wall_us >= 50_000, "{:?}", call.report);
    assert!(started.elapsed().as_secs() < 30);
    assert_still_serving(&rt);
}

#[test]
fn memory_hog_is_stopped_by_the_memory_cap() {
    let (rt, _) = memory_runtime();
    let p = hostile(
        &rt,
        "t-mem",
        "memory",
        LimitOverrides {
            memory_mib: Some(16),
            ..Default::default()
        },
    );
    let f = start_failure(&p);
    assert_eq!(f.kind, FailureKind::MemoryLimit, "{f:?}");
    assert!(
        f.message.contains("16777216"),
        "names the cap: {}",
        f.message
    );
    assert_still_serving(&rt);
}

#[test]
fn unbounded_recursion_is_stopped_by_the_stack_limit() {
    let (rt, _) = memory_runtime();
    let p = hostile(&rt, "t-stack", "recursion", LimitOverrides::default());
    let f = start_failure(&p);
    assert_eq!(f.kind, FailureKind::StackOverflow, "{f:?}");
    assert_still_serving(&rt);
}

#[test]
fn huge_return_value_is_stopped_by_the_output_cap() {
    let (rt, _) = memory_runtime();
    let p = hostile(
        &rt,
        "t-out",
        "huge-output",
        LimitOverrides {
            max_output_bytes: Some(1 << 20),
            ..Default::default()
        },
    );
    let f = start_failure(&p);
    assert_eq!(f.kind, FailureKind::OutputTooLarge, "{f:?}");
    assert_still_serving(&rt);
}

#[test]
fn output_nested_past_the_json_bound_is_invalid() {
    let (rt, _) = memory_runtime();
    let p = hostile(&rt, "t-deep", "deep", LimitOverrides::default());
    let f = start_failure(&p);
    assert_eq!(f.kind, FailureKind::InvalidOutput, "{f:?}");
    assert!(f.message.contains("data_patch"), "{f:?}");
    let chain = Chain::new(vec![p.clone()], 86_400_000);
    match chain
        .message(session("t-deep", None), "h", &json!({}), now_ms())
        .block()
    {
        MessageOutcome::Failed(f) => {
            assert_eq!(f.kind, FailureKind::InvalidOutput, "{f:?}");
            assert!(f.message.contains("reply"), "{f:?}");
        }
        other => panic!("a 40-level reply must fail: {other:?}"),
    }
    assert_still_serving(&rt);
}

#[test]
fn host_call_flood_is_stopped_by_the_host_call_cap() {
    let (rt, _) = memory_runtime();
    let p = hostile(
        &rt,
        "t-calls",
        "host-calls",
        LimitOverrides {
            max_host_calls: Some(100),
            fuel: Some(u64::MAX / 2),
            deadline_ms: Some(10_000),
            ..Default::default()
        },
    );
    let f = start_failure(&p);
    assert_eq!(f.kind, FailureKind::HostCallLimit, "{f:?}");
    assert_still_serving(&rt);
}

#[test]
fn panic_is_a_trap_with_a_named_backtrace() {
    let (rt, _) = memory_runtime();
    let p = hostile(&rt, "t-panic", "panic", LimitOverrides::default());
    let f = start_failure(&p);
    assert_eq!(f.kind, FailureKind::Trap, "{f:?}");
    let bt = f.backtrace.expect("a trap carries a wasm backtrace");
    assert!(
        bt.contains("hostile"),
        "backtrace names the plugin's functions:\n{bt}"
    );
    // What the guest wrote to stderr (the panic message) comes with it.
    let output = f.output.expect("the panic message is kept");
    assert!(
        output.contains("hostile fixture panicked on purpose"),
        "{output}"
    );
    assert_still_serving(&rt);
}

#[test]
fn plugin_error_carries_the_plugins_message() {
    let (rt, _) = memory_runtime();
    let p = hostile(&rt, "t-err", "error", LimitOverrides::default());
    let f = start_failure(&p);
    assert_eq!(f.kind, FailureKind::PluginError);
    assert_eq!(f.message, "hostile fixture error");
}

#[test]
fn failing_init_stops_the_plugin_from_loading_with_its_message() {
    let (rt, _) = memory_runtime();
    let err = rt
        .load(
            "t-init",
            &spec("hostile", "hostile", &[], &[("mode", "init-error")]),
        )
        .block()
        .expect_err("init refused");
    assert!(matches!(err, LoadError::Start(_)), "{err:?}");
    assert!(
        err.to_string().contains("init refused: bad config"),
        "{err}"
    );
}

#[test]
fn a_trapped_instance_is_never_reused_but_a_plugin_error_keeps_it() {
    let (rt, _) = memory_runtime();
    let view = PluginSession::new(&session("t-reuse", None), "hostile");
    let ok = hostile(&rt, "t-reuse", "ok", LimitOverrides::default());
    // The instance created at load serves the first call warm.
    assert!(
        !ok.on_message(&view, "h", "{}")
            .block()
            .report
            .fresh_instance
    );
    assert!(
        !ok.on_message(&view, "h", "{}")
            .block()
            .report
            .fresh_instance
    );

    let panics = hostile(&rt, "t-reuse", "panic", LimitOverrides::default());
    let first = panics.on_message(&view, "h", "{}").block();
    assert_eq!(first.result.unwrap_err().kind, FailureKind::Trap);
    let second = panics.on_message(&view, "h", "{}").block();
    assert!(
        second.report.fresh_instance,
        "a trapped instance was reused"
    );

    let errs = hostile(&rt, "t-reuse", "error", LimitOverrides::default());
    errs.on_message(&view, "h", "{}")
        .block()
        .result
        .unwrap_err();
    assert!(
        !errs
            .on_message(&view, "h", "{}")
            .block()
            .report
            .fresh_instance
    );
}

#[test]
fn fail_open_policy_lets_the_chain_go_on() {
    let (rt, _) = memory_runtime();
    let mut s = spec("broken", "hostile", &[], &[("mode", "error")]);
    s.on_error = OnError::Allow;
    let broken = rt.load("t-open", &s).block().unwrap();
    let ok = rt
        .load("t-open", &spec("fine", "hostile", &[], &[("mode", "ok")]))
        .block()
        .unwrap();
    let chain = Chain::new(vec![broken.clone(), ok], 86_400_000);
    match chain
        .session_start(session("t-open", None), now_ms())
        .block()
    {
        Decision::Allow(r) => assert_eq!(r.data.get("hostile"), Some(&json!("ok"))),
        other => panic!("fail-open must allow: {other:?}"),
    }
    // The failure is still counted.
    let (calls, failures) = broken.stats.snapshot();
    assert_eq!(calls, 1);
    assert_eq!(failures.get("plugin-error"), Some(&1));
}

#[test]
fn input_cap_refuses_oversized_arguments_before_running() {
    let (rt, _) = memory_runtime();
    let p = hostile(
        &rt,
        "t-in",
        "ok",
        LimitOverrides {
            max_input_bytes: Some(1_000),
            ..Default::default()
        },
    );
    let mut record = session("t-in", None);
    record
        .data
        .insert("blob".into(), Value::String("x".repeat(5_000)));
    let chain = Chain::new(vec![p], 86_400_000);
    match chain.session_start(record, now_ms()).block() {
        Decision::Deny {
            failure: Some(f), ..
        } => assert_eq!(f.kind, FailureKind::InputTooLarge),
        other => panic!("{other:?}"),
    }
}
