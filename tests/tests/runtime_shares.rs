//! A tenant's share of the host, through the real runtime and the hostile
//! fixture: its plugin calls running at once, its plugins' memory and the
//! host's memory budget, and guest code that burns little fuel still handing
//! the thread back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use sessiond::runtime::{
    EngineSettings, FailureKind, HostStores, LimitOverrides, LoadedPlugin, PluginSession, Runtime,
};
use sessiond::session::SessionRecord;
use sessiond::store::memory::MemoryStore;
use sessiond_tests::{Block, fixtures, spec, test_settings};

fn runtime_with(settings: EngineSettings) -> Runtime {
    Runtime::new(settings, HostStores::of(Arc::new(MemoryStore::new()))).expect("runtime")
}

fn hostile(
    rt: &Runtime,
    tenant: &str,
    name: &str,
    mode: &str,
    limits: LimitOverrides,
) -> Arc<LoadedPlugin> {
    let mut s = spec(name, "hostile", &[], &[("mode", mode)]);
    s.limits = limits;
    rt.load(tenant, &s)
        .block()
        .expect("the hostile fixture loads")
}

fn record(tenant: &str) -> SessionRecord {
    fixtures::session(tenant).build()
}

fn hoard_failure(rt: &Runtime, tenant: &str) -> sessiond::runtime::PluginFailure {
    let p = hostile(
        rt,
        tenant,
        "hostile",
        "memory",
        LimitOverrides {
            memory_mib: Some(64),
            fuel: Some(u64::MAX / 2),
            deadline_ms: Some(10_000),
            ..Default::default()
        },
    );
    let view = PluginSession::new(&record(tenant), "hostile");
    p.on_message(&view, "anything", "{}")
        .block()
        .result
        .expect_err("hoarding must fail")
}

#[test]
fn a_tenant_cannot_grow_its_plugins_past_its_memory_share() {
    let rt = runtime_with(test_settings());
    let share = rt.set_share("t-small", 4, 16);
    let before = share.memory_used();
    let f = hoard_failure(&rt, "t-small");
    assert_eq!(f.kind, FailureKind::MemoryBudget, "{f:?}");
    assert!(
        f.message.contains("memory share of 16 MiB"),
        "{}",
        f.message
    );
    // The failed instance was dropped, and what it held went back.
    assert_eq!(share.memory_used(), before);
    // Within its own cap, another tenant's plugin hoards up to the cap only.
    let f = hoard_failure(&rt, "t-big");
    assert_eq!(f.kind, FailureKind::MemoryLimit, "{f:?}");
}

#[test]
fn the_host_budget_bounds_every_tenant_together() {
    let rt = runtime_with(EngineSettings {
        memory_budget_mib: 24,
        ..test_settings()
    });
    rt.set_share("t-any", 4, 1024);
    let f = hoard_failure(&rt, "t-any");
    assert_eq!(f.kind, FailureKind::MemoryBudget, "{f:?}");
    assert!(
        f.message.contains("memory budget of 24 MiB"),
        "{}",
        f.message
    );
    assert!(rt.memory().used() <= rt.memory().limit());
}

#[test]
fn calls_past_the_tenants_slots_wait_then_fail_busy_and_others_run() {
    let rt = runtime_with(test_settings());
    rt.set_share("t-one", 1, 1024);
    let sleeper = hostile(
        &rt,
        "t-one",
        "sleeper",
        "sleep",
        LimitOverrides {
            deadline_ms: Some(1_000),
            ..Default::default()
        },
    );
    let quick = hostile(
        &rt,
        "t-one",
        "quick",
        "ok",
        LimitOverrides {
            deadline_ms: Some(50),
            ..Default::default()
        },
    );
    let other = hostile(&rt, "t-other", "quick", "ok", LimitOverrides::default());
    let r = record("t-one");
    let started = Arc::new(AtomicBool::new(false));
    let (slept, waited, served) = async {
        let sleep = async {
            started.store(true, Ordering::Release);
            sleeper
                .on_message(&PluginSession::new(&r, "sleeper"), "h", "{}")
                .await
        };
        let second = async {
            while !started.load(Ordering::Acquire) {
                tokio::task::yield_now().await;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            quick
                .on_message(&PluginSession::new(&r, "quick"), "h", "{}")
                .await
        };
        let third = async {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            other
                .on_message(&PluginSession::new(&record("t-other"), "quick"), "h", "{}")
                .await
        };
        tokio::join!(sleep, second, third)
    }
    .block();
    assert_eq!(
        slept.result.expect_err("the sleeper is cut off").kind,
        FailureKind::DeadlineExceeded
    );
    let busy = waited.result.expect_err("no slot freed in time");
    assert_eq!(busy.kind, FailureKind::Busy, "{busy:?}");
    assert!(
        busy.message.contains("max_plugin_calls"),
        "{}",
        busy.message
    );
    assert!(
        served.result.is_ok(),
        "another tenant's call: {:?}",
        served.result
    );
}

/// A call growing its memory to a large cap, on a runtime with one thread:
/// the other task still runs while it is under way (every epoch tick, and
/// every fuel yield interval, the call hands the thread back).
#[test]
fn guest_code_that_burns_little_fuel_still_hands_the_thread_back() {
    let rt = runtime_with(test_settings());
    let p = hostile(
        &rt,
        "t-grow",
        "hostile",
        "memory",
        LimitOverrides {
            memory_mib: Some(256),
            fuel: Some(u64::MAX / 2),
            deadline_ms: Some(10_000),
            ..Default::default()
        },
    );
    let r = record("t-grow");
    let one_thread = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let done = AtomicBool::new(false);
    let ran_meanwhile = AtomicU32::new(0);
    let call = one_thread.block_on(async {
        let hoard = async {
            let call = p
                .on_message(&PluginSession::new(&r, "hostile"), "h", "{}")
                .await;
            done.store(true, Ordering::Release);
            call
        };
        let other = async {
            while !done.load(Ordering::Acquire) {
                tokio::task::yield_now().await;
                if !done.load(Ordering::Acquire) {
                    ran_meanwhile.fetch_add(1, Ordering::Relaxed);
                }
            }
        };
        tokio::join!(hoard, other).0
    });
    let f = call.result.expect_err("the hoard hits its cap");
    assert_eq!(f.kind, FailureKind::MemoryLimit, "{f:?}");
    // The other task ran while the call was under way (on the one thread).
    assert!(
        ran_meanwhile.load(Ordering::Relaxed) >= 2,
        "{ran_meanwhile:?}"
    );
}
