//! One hook call through the real runtime with every limit armed: Rust and
//! Python plugins, on a warm (reused) instance and on a fresh instance.
//!
//! `just bench` (or `cargo bench -p sessiond-tests --bench hooks`).

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use sessiond::runtime::{Capability, LoadedPlugin, PluginSession};
use sessiond::session::SessionRecord;
use sessiond_tests::{Block, fixtures, memory_runtime, spec};

fn record(user: Option<&str>) -> SessionRecord {
    fixtures::session("bench")
        .token_hash("ab".repeat(32))
        .public_id("bench-session")
        .user(user)
        .roles(&["Operator"])
        .lifetime(3_600_000)
        .idle_timeout(900_000)
        .remote_addr("10.1.2.3")
        .user_agent("bench/1.0")
        .device("desktop")
        .data(serde_json::json!({"theme": "dark", "pageViews": 3}))
        .build()
}

fn start(p: &LoadedPlugin, r: &SessionRecord) {
    let s = PluginSession::new(r, &p.name);
    let call = p.on_session_start(&s).block();
    assert!(call.result.is_ok(), "{:?}", call.result);
}

fn event(p: &LoadedPlugin, r: &SessionRecord) {
    let s = PluginSession::new(r, &p.name);
    let call = p.on_event(&s, "noop", "{}").block();
    assert!(call.result.is_ok(), "{:?}", call.result);
}

fn hooks(c: &mut Criterion) {
    let (rt, _store) = memory_runtime();
    let load = |name: &str, file: &str, grants: &[Capability], reuse: bool| -> Arc<LoadedPlugin> {
        let mut s = spec(name, file, grants, &[]);
        s.instance_reuse = reuse;
        rt.load("bench", &s).block().expect("load")
    };
    let anon = record(None);
    let alice = record(Some("alice"));

    let mut g = c.benchmark_group("hook");
    g.sample_size(200);

    // Rust: single-session's on-session-start. Anonymous: no host call;
    // with a user: one `sessions.list-active` host call to the store.
    let rust_warm = load(
        "single-session",
        "single_session",
        &[Capability::Sessions],
        true,
    );
    g.bench_function("rust/warm/start-anonymous", |b| {
        b.iter(|| start(&rust_warm, &anon))
    });
    g.bench_function("rust/warm/start-with-host-call", |b| {
        b.iter(|| start(&rust_warm, &alice))
    });
    let rust_cold = load(
        "single-session",
        "single_session",
        &[Capability::Sessions],
        false,
    );
    g.bench_function("rust/fresh/start-anonymous", |b| {
        b.iter(|| start(&rust_cold, &anon))
    });

    // Python: perspective's on-event for an event it ignores (the smallest
    // hook), and its full on-session-start (clock, kv, log, JSON).
    let grants = [Capability::Kv, Capability::Audit];
    let py_warm = load("perspective", "perspective", &grants, true);
    g.bench_function("python/warm/event-noop", |b| {
        b.iter(|| event(&py_warm, &anon))
    });
    g.bench_function("python/warm/start", |b| b.iter(|| start(&py_warm, &alice)));
    let py_cold = load("perspective", "perspective", &grants, false);
    // A Python component outside the repo (no SDK), for comparisons:
    // SESSIOND_BENCH_EXTRA=/path/to/plugin.wasm (it must implement on-event).
    if let Some(path) = std::env::var_os("SESSIOND_BENCH_EXTRA") {
        let mut s = spec("extra", "perspective", &[], &[]);
        s.path = path.into();
        let extra = rt
            .load("bench", &s)
            .block()
            .expect("load the extra component");
        g.bench_function("extra/warm/event-noop", |b| b.iter(|| event(&extra, &anon)));
        // The same component on a hook that carries no session record.
        g.bench_function("extra/warm/list-active-empty", |b| {
            b.iter(|| assert!(extra.on_list_active("alice", &[]).block().result.is_ok()))
        });
    }
    g.sample_size(30);
    g.bench_function("python/fresh/event-noop", |b| {
        b.iter(|| event(&py_cold, &anon))
    });
    g.finish();
}

criterion_group!(benches, hooks);
criterion_main!(benches);
