//! A plugin's kv quota as the plugin sees it: the `kv_writer` fixture
//! writes entries until `kv.set` fails, and the failure it sees is
//! `quota exceeded: …`; the store holds exactly what the quota allows, and
//! another plugin of the tenant keeps its own quota.

use std::sync::Arc;

use sessiond::runtime::{Capability, Chain, Decision, LimitOverrides, LoadedPlugin, Runtime};
use sessiond::session::now_ms;
use sessiond::store::KvStore;
use sessiond_tests::{Block, fixtures, memory_runtime, spec};

const TENANT: &str = "t-kv";

fn writer(rt: &Runtime, name: &str, limits: LimitOverrides) -> Arc<LoadedPlugin> {
    let mut s = spec(name, "kv_writer", &[Capability::Kv], &[("size", "10")]);
    s.limits = limits;
    rt.load(TENANT, &s)
        .block()
        .expect("the kv_writer fixture loads")
}

/// Runs on-session-start through a one-plugin chain: the denial message,
/// or none when it allowed.
fn start(p: &Arc<LoadedPlugin>) -> Option<String> {
    let chain = Chain::new(vec![p.clone()], 86_400_000);
    let record = fixtures::session(TENANT).at(now_ms()).build();
    match chain.session_start(record, now_ms()).block() {
        Decision::Allow(_) => None,
        Decision::Deny { message, .. } => Some(message),
        other => panic!("unexpected decision {other:?}"),
    }
}

#[test]
fn writes_past_the_key_quota_fail_with_quota_exceeded() {
    let (rt, store) = memory_runtime();
    let limited = writer(
        &rt,
        "limited",
        LimitOverrides {
            kv_max_keys: Some(5),
            ..LimitOverrides::default()
        },
    );
    let denial = start(&limited).expect("the sixth write failed");
    assert!(denial.starts_with("write 5 failed: "), "{denial}");
    assert!(
        denial.contains("quota exceeded: the plugin's kv would hold 6 keys, more than its 5"),
        "{denial}"
    );
    for i in 0..5 {
        let v = store.kv_get(TENANT, "limited", &format!("k{i}")).block();
        assert_eq!(v.unwrap().as_deref(), Some("xxxxxxxxxx"));
    }
    assert_eq!(store.kv_get(TENANT, "limited", "k5").block().unwrap(), None);
    // The next call is refused at once: the quota holds across calls.
    let again = start(&limited).expect("still over quota");
    assert!(
        !again.contains("write 0 failed"),
        "rewriting k0 fits: {again}"
    );
    assert!(again.starts_with("write 5 failed: "), "{again}");
    assert!(again.contains("quota exceeded: "), "{again}");

    // Bytes: 100 entries of 2-3 + 10 bytes are over 500 bytes.
    let small = writer(
        &rt,
        "small",
        LimitOverrides {
            kv_max_bytes: Some(500),
            ..LimitOverrides::default()
        },
    );
    let denial = start(&small).expect("a write past 500 bytes failed");
    assert!(denial.contains("quota exceeded: "), "{denial}");
    assert!(denial.contains("bytes"), "{denial}");

    // The defaults (1,000 keys, 1 MiB) let 100 small entries through.
    let roomy = writer(&rt, "roomy", LimitOverrides::default());
    assert_eq!(start(&roomy), None);
}
