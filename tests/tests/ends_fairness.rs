//! End hooks of one tenant cannot hold up another's, and shutdown does not
//! wait for hooks that will not finish.
//!
//! - fairness: tenant `a-flood` has hundreds of queued ends whose hook
//!   sleeps to its deadline; tenant `b-victim`'s ends, queued after them,
//!   all run while `a-flood`'s queue is still long (on the memory, embedded
//!   and Redis stores);
//! - shutdown: a `sessiond serve` process whose end hooks sleep to a long
//!   deadline exits on SIGTERM within `ends.shutdown_drain_ms` plus a wide
//!   margin; a second host on the same store then runs every remaining job,
//!   the abandoned ones taken over with their end ids (embedded and Redis).
//!
//! Both use the `ender` fixture: `before_ms` sleeps before its audit
//! record, `after_ms` after it.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};
use sessiond_tests::Backend;
use sessiond_tests::cache_dir;
use sessiond_tests::fixtures::{Plugin, Tenant};
use sessiond_tests::hosts::Host;
use sessiond_tests::redis_server::RedisServer;
use sessiond_tests::server::{Api, TestServer, eventually};

const FLOOD_KEY: &str = "ends-fairness-flood-key";
const VICTIM_KEY: &str = "ends-fairness-victim-key";

/// Creates `n` sessions and logs each out: `n` end jobs queued. Returns
/// their public ids.
async fn ended_sessions(api: &Api, n: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        let s = api.create(&json!({})).await;
        api.delete(&format!("/v1/sessions/{}", s["id"].as_str().unwrap()))
            .await
            .expect(204);
        ids.push(s["public_id"].as_str().unwrap().to_string());
    }
    ids
}

/// The `session_ended` records of the tenant, by session; none while the
/// audit stream cannot be read.
async fn end_records(api: &Api) -> Option<HashMap<String, Vec<Value>>> {
    let mut by_session: HashMap<String, Vec<Value>> = HashMap::new();
    for r in api.try_audit_all().await? {
        if r["record"]["type"] == "session_ended" {
            let session = r["session"].as_str().unwrap_or_default().to_string();
            by_session.entry(session).or_default().push(r);
        }
    }
    Some(by_session)
}

/// `GET /v1/ends`.
async fn end_queue(api: &Api) -> Value {
    api.get("/v1/ends").await.expect(200).body
}

// --- fairness ------------------------------------------------------------

const FLOODED: usize = 300;
const VICTIM_ENDS: usize = 20;
const SLOTS: u64 = 4;

fn fairness_toml() -> String {
    let flood = Tenant::new("a-flood").key(FLOOD_KEY).plugin(
        Plugin::new("ender", "ender")
            .grants(&["audit"])
            .config("before_ms", "3600000")
            .limit("deadline_ms", 1000),
    );
    let victim = Tenant::new("b-victim")
        .key(VICTIM_KEY)
        .plugin(Plugin::new("ender", "ender").grants(&["audit"]));
    format!(
        "[ends]\npoll_interval_ms = 50\nmax_concurrent_per_tenant = {SLOTS}\n\
         reclaim_after_ms = 5000\nshutdown_drain_ms = 500\n{}{}",
        flood.toml(),
        victim.toml()
    )
}

/// `a-flood` is visited first in every round, and each of its hooks holds
/// a slot for its whole deadline; `b-victim`'s jobs must not wait for the
/// flood to drain.
async fn slow_ends_of_one_tenant_do_not_delay_another(backend: Backend) {
    let server = TestServer::start(backend, &fairness_toml());
    let (flood, victim) = (server.api(FLOOD_KEY), server.api(VICTIM_KEY));
    ended_sessions(&flood, FLOODED).await;
    let ended = ended_sessions(&victim, VICTIM_ENDS).await;
    let records = eventually(Duration::from_secs(120), || async {
        let records = end_records(&victim).await?;
        ended
            .iter()
            .all(|s| records.contains_key(s))
            .then_some(records)
    })
    .await;
    let queue = end_queue(&flood).await;
    let left = queue["waiting"].as_u64().unwrap() + queue["claimed"].as_u64().unwrap();
    let records = records.unwrap_or_else(|| {
        panic!("b-victim's end hooks did not all run; a-flood's queue: {queue}")
    });
    assert!(
        records.values().all(|r| r.len() == 1),
        "an end ran twice: {records:?}"
    );
    // At most SLOTS flood jobs run at once, a second each: the flood was
    // nowhere near drained when the victim's jobs were all done.
    assert!(
        left >= (FLOODED / 2) as u64,
        "a-flood had only {left} of {FLOODED} ends left when b-victim's had run: {queue}"
    );
    assert!(queue["claimed"].as_u64().unwrap() <= SLOTS, "{queue}");
}

mod fairness {
    use super::*;

    #[tokio::test]
    async fn memory() {
        slow_ends_of_one_tenant_do_not_delay_another(Backend::Memory).await
    }

    #[tokio::test]
    async fn embedded() {
        slow_ends_of_one_tenant_do_not_delay_another(Backend::Embedded).await
    }

    #[tokio::test]
    async fn redis() {
        slow_ends_of_one_tenant_do_not_delay_another(Backend::Redis).await
    }
}

// --- shutdown --------------------------------------------------------------

const BIN: &str = env!("CARGO_BIN_EXE_sessiond-host");
const KEY: &str = "ends-shutdown-key";
const QUEUED: usize = 60;
const RUNNING: usize = 6;
const DRAIN_MS: u64 = 1000;

/// A host config; `store` is its `[store]` table's keys, `ender` the end
/// hook's `config` and `limits`, `reclaim_after_ms` more than twice its
/// deadline.
fn host_toml(store: &str, ender: Plugin, reclaim_after_ms: u64) -> String {
    format!(
        r#"
[server]
listen = "{{listen}}"

[store]
{store}

[runtime]
cache_dir = "{cache}"

[ends]
poll_interval_ms = 50
max_concurrent_per_tenant = {RUNNING}
reclaim_after_ms = {reclaim_after_ms}
shutdown_drain_ms = {DRAIN_MS}
{tenant}"#,
        cache = cache_dir().display(),
        tenant = Tenant::new("acme")
            .key(KEY)
            .ttl(600)
            .idle(600)
            .plugin(ender.grants(&["audit"]))
            .toml(),
    )
}

/// The first host's hooks write their record at once, then sleep to a
/// one-minute deadline; the second host's return at once and take jobs
/// over after a second.
fn shutdown_abandons_hooks_and_a_later_host_runs_them(store: &str) {
    let dir = tempfile::Builder::new()
        .prefix("sessiond-ends-shutdown-")
        .tempdir()
        .expect("temp dir");
    let sleeper = Plugin::new("ender", "ender")
        .config("after_ms", "3600000")
        .limit("deadline_ms", 60_000);
    let mut first = Host::start(
        BIN,
        dir.path(),
        "first",
        &host_toml(store, sleeper, 130_000),
        Duration::from_secs(300),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let api = first.api(KEY);
    let ended = rt.block_on(async {
        let ended = ended_sessions(&api, QUEUED).await;
        // Every slot holds a hook that has written its record and sleeps.
        let written = eventually(Duration::from_secs(60), || async {
            let n = end_records(&api).await?.len();
            (n >= RUNNING).then_some(n)
        })
        .await;
        assert_eq!(written, Some(RUNNING), "{}", first.log());
        ended
    });
    // The one bound this test is about: the hooks' deadline is a minute
    // away, the drain deadline a second.
    let status = first.terminate(Duration::from_millis(DRAIN_MS) + Duration::from_secs(10));
    assert!(status.success(), "{status}:\n{}", first.log());

    let quick = Plugin::new("ender", "ender");
    let second = Host::start(
        BIN,
        dir.path(),
        "second",
        &host_toml(store, quick, 1000),
        Duration::from_secs(300),
    );
    let api = second.api(KEY);
    rt.block_on(async {
        let records = eventually(Duration::from_secs(120), || async {
            let records = end_records(&api).await?;
            ended
                .iter()
                .all(|s| records.contains_key(s))
                .then_some(records)
        })
        .await
        .unwrap_or_else(|| panic!("not every end ran:\n{}", second.log()));
        // The abandoned hooks ran again with the end ids they had: their
        // records, written on the first host, were not written twice.
        for (session, r) in &records {
            assert_eq!(r.len(), 1, "{session} ended more than once: {r:?}");
            let end_id = r[0]["record"]["end_id"].as_str().unwrap();
            assert!(end_id.starts_with(&format!("{session}.")), "{r:?}");
        }
        assert_eq!(records.len(), QUEUED);
        let queue = eventually(Duration::from_secs(30), || async {
            let queue = end_queue(&api).await;
            (queue["waiting"] == 0 && queue["claimed"] == 0).then_some(queue)
        })
        .await
        .expect("the end queue emptied");
        assert_eq!(queue["ran"], QUEUED, "{queue}");
        assert_eq!(queue["reclaimed"], RUNNING, "{queue}");
    });
}

mod shutdown {
    use super::*;

    #[test]
    fn embedded() {
        shutdown_abandons_hooks_and_a_later_host_runs_them(
            "backend = \"embedded\"\npath = \"data\"",
        );
    }

    #[test]
    fn redis() {
        let redis = RedisServer::start();
        shutdown_abandons_hooks_and_a_later_host_runs_them(&format!(
            "backend = \"redis\"\nurls = [\"{}\"]",
            redis.url()
        ));
    }
}
